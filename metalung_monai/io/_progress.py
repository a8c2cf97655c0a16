"""tqdm progress bars that stay quiet when not wanted (``progress=False``) or not on a terminal."""

from __future__ import annotations

from collections.abc import Iterable

from ..utils.runner import progress


def progress_iter(iterable: Iterable, enabled: bool, desc: str, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` and stderr is a terminal.

    The package's one bar, :func:`metalung_monai.utils.runner.progress`, not kept on screen.
    """
    return progress(
        iterable, total=total, desc=desc, enabled=enabled, leave=False, terminal_only=True
    )
