"""Atomic writes: every output file appears complete or not at all.

A file is first written to a hidden temporary name in the destination folder (same file system,
same extension so that SimpleITK / nibabel / matplotlib pick the right format) and then renamed
over the destination with :func:`os.replace`, which is atomic on POSIX. A crash or a kill during
the write leaves at most a ``.*.partial*`` file, never a truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "write_json_atomic",
    "write_image_atomic",
    "save_figure_atomic",
    "full_suffix",
    "PARTIAL_NAME",
    "stale_partial",
]

#: the temporary name :func:`atomic_path` gives: ``.<stem>.partial-<pid>-<8 hex><suffix>``
PARTIAL_NAME = re.compile(r"\.(?P<stem>.+)\.partial-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>\..*)?")


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running on this machine (unknown counts as alive)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True


def stale_partial(name: str) -> re.Match | None:
    """The :data:`PARTIAL_NAME` match of ``name`` when it is a temporary file of :func:`atomic_path`
    whose writing process is gone (a write killed before its rename), else ``None``.

    A resumable job deletes such leftovers on its next run; a file whose writer is still alive (a
    concurrent run) is not stale.
    """
    m = PARTIAL_NAME.fullmatch(name)
    return m if m is not None and not _process_alive(int(m["pid"])) else None


def full_suffix(path: str | os.PathLike) -> str:
    """Return the full extension of ``path``, keeping double extensions such as ``.nii.gz``."""
    name = Path(path).name
    for double in (".nii.gz", ".tar.gz", ".seg.nrrd"):
        if name.lower().endswith(double):
            return name[-len(double) :]
    return Path(path).suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    The temporary file keeps the extension of ``path``. When the block raises, the temporary file
    is removed and ``path`` is left untouched (an older complete version stays as it was).

    Example::

        with atomic_path("out/case.nii.gz") as tmp:
            sitk.WriteImage(img, str(tmp))
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(final)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    tmp = final.with_name(f".{stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{final}: the writer produced no file")
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically and return the path.

    NaN and infinity are refused (``ValueError``, nothing written): they are not JSON, and most
    readers other than Python's reject a file that holds them.
    """
    text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_image_atomic(image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a ``SimpleITK.Image`` (NIfTI, NRRD, MHA: chosen by extension) atomically."""
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)


def save_figure_atomic(fig, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the extension, PNG by default)."""
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), **kwargs)
    return Path(path)
