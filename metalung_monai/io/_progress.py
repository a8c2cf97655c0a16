"""tqdm progress bars that stay quiet when not wanted (``progress=False``) or not on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def progress_iter(iterable: Iterable, enabled: bool, desc: str, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)
