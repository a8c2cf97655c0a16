"""The converted-dataset folder: ``images/``, ``masks/`` and a merged ``datalist.json``.

Shared by :mod:`.convert` and :mod:`.thesis_pickle`. A case is written only after everything about
it was validated, and its image and mask appear together or not at all (both are written to
temporary names and renamed at the end). Entries are keyed by ``case_id``: converting the same
input again replaces its entry and files instead of adding a duplicate.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatalistError
from ..utils.atomic import atomic_path
from .datalist import load_datalist, validate_datalist, write_datalist

__all__ = ["SECTION_OF_SPLIT", "sanitize_id", "Case", "DatasetFolder", "unique_case_id"]

log = logging.getLogger(__name__)

SECTION_OF_SPLIT = {"train": "training", "validation": "validation", "test": "test"}
DATALIST_NAME = "datalist.json"


def sanitize_id(text: str) -> str:
    """File-name-safe identifier: letters, digits, ``-``, ``_``, ``.``; others become ``_``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return s or "case"


def unique_case_id(base: str, source: str, taken: dict[str, str]) -> str:
    """``base`` unless another source already uses it; then ``base_<6 hex of the source path>``.

    Args:
        base: the preferred id.
        source: the input this case comes from (a path string).
        taken: ``case_id -> source`` of the cases already known.
    """
    if base not in taken or taken[base] == source:
        return base
    return f"{base}_{hashlib.sha1(source.encode()).hexdigest()[:6]}"


@dataclass
class Case:
    """One case ready to be written.

    Attributes:
        case_id: file stem of ``images/<case_id>.nii.gz`` and ``masks/<case_id>.nii.gz``.
        entry: datalist fields except ``image``/``mask`` (``patient_id``, ``split``, ...).
        image: ``SimpleITK.Image`` int16 HU.
        mask: ``SimpleITK.Image`` uint8 {0, 1} on the image grid, or ``None``.
    """

    case_id: str
    entry: dict[str, Any]
    image: Any = None
    mask: Any = None
    has_mask: bool = field(default=False)


class DatasetFolder:
    """An output folder with its datalist, loaded (if present) for merging.

    Args:
        out_dir: the folder (created on first write).
        name: ``name`` written in a new datalist.
    """

    def __init__(self, out_dir: str | os.PathLike, name: str = "metalung-convert") -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DATALIST_NAME
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise DatalistError(self.out_dir, "output path exists and is not a folder")
        if self.path.is_file():
            self.datalist = load_datalist(self.path)
        else:
            self.datalist = {
                "name": name,
                "description": "CT cases converted by metalung-monai (int16 HU, uint8 masks)",
                "version": 1,
                "modality": "CT",
                "hu_convention": "int16 HU; air and padding -1024; water 0; rescale applied once",
                "labels": {"0": "background", "1": "tumour"},
            }
        self.written: list[str] = []

    def taken_ids(self) -> dict[str, str]:
        """``case_id -> source`` of the entries already in the datalist."""
        out = {}
        for sec in SECTION_OF_SPLIT.values():
            for e in self.datalist.get(sec, []):
                cid = e.get("case_id") or Path(e["image"]).name.split(".")[0]
                out[cid] = str(e.get("source") or "")
        return out

    @staticmethod
    def rel_paths(case_id: str, has_mask: bool) -> tuple[str, str | None]:
        return f"images/{case_id}.nii.gz", (f"masks/{case_id}.nii.gz" if has_mask else None)

    def _merged(self, datalist: dict, entries: list[dict]) -> dict:
        ids = {e["case_id"] for e in entries}
        images = {e["image"] for e in entries}
        out = dict(datalist)
        for sec in SECTION_OF_SPLIT.values():
            if sec in out:
                out[sec] = [
                    e for e in out[sec] if e.get("case_id") not in ids and e.get("image") not in images
                ]
        for e in entries:
            sec = SECTION_OF_SPLIT[e.get("split", "train")]
            out.setdefault(sec, []).append(e)
        return out

    def full_entry(self, case: Case) -> dict:
        img_rel, mask_rel = self.rel_paths(case.case_id, case.has_mask or case.mask is not None)
        entry = {"image": img_rel, "mask": mask_rel}
        entry.update(case.entry)
        entry["case_id"] = case.case_id
        return entry

    def check(self, cases: list[Case]) -> None:
        """Validate the datalist as it would be after adding ``cases`` (schema, patient leakage)
        without writing anything.

        Raises:
            DatalistError: naming the datalist file and the problem.
        """
        merged = self._merged(copy.deepcopy(self.datalist), [self.full_entry(c) for c in cases])
        validate_datalist(merged, self.path)

    def write_case(self, case: Case) -> dict:
        """Write the case's image (and mask) atomically together; record its entry.

        Like :func:`~metalung_monai.utils.atomic.write_image_atomic`, but the two files are
        renamed into place only after both were written, so a case is complete or absent.

        Returns:
            The datalist entry (paths relative to the datalist).
        """
        import SimpleITK as sitk

        entry = self.full_entry(case)
        img_path = self.out_dir / entry["image"]
        mask_path = self.out_dir / self.rel_paths(case.case_id, True)[1]
        with contextlib.ExitStack() as stack:
            tmp_img = stack.enter_context(atomic_path(img_path))
            tmp_mask = stack.enter_context(atomic_path(mask_path)) if case.mask is not None else None
            sitk.WriteImage(case.image, str(tmp_img), useCompression=True)
            if tmp_mask is not None:
                sitk.WriteImage(case.mask, str(tmp_mask), useCompression=True)
        if case.mask is None and mask_path.exists():  # an earlier conversion of this case had a mask
            mask_path.unlink()
        self.datalist = self._merged(self.datalist, [entry])
        self.written.append(case.case_id)
        return entry

    def save(self) -> Path:
        """Write ``datalist.json`` (validated, atomic)."""
        return write_datalist(self.datalist, self.path)
