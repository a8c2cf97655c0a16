"""What a training or evaluation command needs from a datalist, checked before any work.

A section with cases (:func:`section_entries`), a tumour in some of them (:func:`require_tumour`:
a model cannot be trained, validated or scored on empty masks), and the files the datalist lists
(:func:`datalist_files`), which an output folder must not overwrite or contain
(:func:`~metalung_monai.utils.paths.refuse_overlap`). Each check raises
:class:`~metalung_monai.errors.InputError` naming the datalist or the mask at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.datalist import PATH_KEYS, SECTIONS, datalist_entries, load_datalist

__all__ = ["section_entries", "has_tumor", "require_tumor", "datalist_files"]


def section_entries(datalist: Path, section: str, what: str) -> list[dict]:
    """The entries of ``section`` (absolute paths, files checked); raise unless there are some.

    Args:
        datalist: the datalist file.
        section: ``training``, ``validation`` or ``test``.
        what: what the section is needed for (for the message).
    """
    data = load_datalist(datalist)
    present = ", ".join(f"{k} ({len(data[k])})" for k in SECTIONS if data.get(k)) or "none"
    if section not in data:
        raise InputError(
            datalist, f"has no '{section}' section, needed {what} (sections with cases: {present})"
        )
    entries = datalist_entries(datalist, section)
    if not entries:
        raise InputError(
            datalist,
            f"its '{section}' section is empty, needed {what} (sections with cases: {present})",
        )
    return entries


def has_tumor(entry: dict) -> bool:
    """Whether the entry has a ``mask`` with a non-zero voxel (raise if the mask cannot be read)."""
    if not entry.get("mask"):
        return False
    try:
        img = sitk.ReadImage(str(entry["mask"]))
    except RuntimeError as e:
        raise InputError(
            entry["mask"], f"cannot be read as a mask ({str(e).strip().splitlines()[-1][:200]})"
        ) from None
    # a view of the image's buffer: ``img`` must outlive it (a view of a temporary read freed
    # memory and crashed the process)
    return bool(np.any(sitk.GetArrayViewFromImage(img)))


def require_tumor(datalist: Path, entries: list[dict], where: str, what: str) -> None:
    """Raise unless one of ``entries`` has a mask with a tumour voxel (reads masks until one has).

    Args:
        datalist: the datalist (named in the message).
        entries: its entries to look in (from :func:`section_entries`).
        where: which of its cases these are (``"its 'test' section"``).
        what: what the tumour is needed for (``"to score the models"``).
    """
    if not any(has_tumor(e) for e in entries):
        n_masks = sum(bool(e.get("mask")) for e in entries)
        masks = f"{n_masks} with a mask, all empty" if n_masks else "none with a tumour mask"
        raise InputError(
            datalist,
            f"no case of {where} has a tumour ({len(entries)} cases, {masks}), needed {what}",
        )


def datalist_files(datalist: Path) -> list[Path]:
    """The datalist and every file it lists (all sections), for :func:`refuse_overlap`."""
    data = load_datalist(datalist)
    base = datalist.resolve().parent
    files = [datalist]
    for section in SECTIONS:
        for e in data.get(section) or []:
            files += [base / e[k] for k in PATH_KEYS if e.get(k)]
    return files
