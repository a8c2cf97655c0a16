"""The converted-dataset folder: ``images/``, ``masks/`` and a merged ``datalist.json``.

Shared by :mod:`.convert` and :mod:`.thesis_pickle`. A case is written only after everything about
it was validated, and its image and mask appear together or not at all (both are written to
temporary names and renamed at the end). Entries are keyed by ``case_id``: converting the same
input again replaces its entry and files instead of adding a duplicate.

Case ids come from data (DICOM ``PatientID``, pickle patient values, input file names), so they
are made file-name safe with :func:`metalung_monai.utils.paths.safe_name` before they become a
path (:func:`sanitize_id` is that function without the hash suffix, for ids whose collisions the
caller resolves itself with :func:`unique_case_id`), and :class:`DatasetFolder` places every file
with :func:`~metalung_monai.utils.paths.child_path`, which refuses a name that would leave the
folder. A case id that is not safe when it reaches :meth:`DatasetFolder.write_case` is replaced by
``safe_name(case_id)`` (with a short hash of the original, so two hostile ids never collide).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatalistError, InputError
from ..utils.atomic import atomic_path
from ..utils.paths import MAX_NAME_LENGTH, child_path, is_safe_name, safe_name
from .datalist import load_datalist, validate_datalist, write_datalist

__all__ = ["SECTION_OF_SPLIT", "sanitize_id", "Case", "DatasetFolder", "unique_case_id"]

log = logging.getLogger(__name__)

SECTION_OF_SPLIT = {"train": "training", "validation": "validation", "test": "test"}
DATALIST_NAME = "datalist.json"


def sanitize_id(text: object) -> str:
    """``safe_name(text, disambiguate=False)``: a safe name is kept, anything else has its other
    characters replaced by ``_`` and is shortened (no hash appended: the caller handles
    collisions, e.g. with :func:`unique_case_id`)."""
    return safe_name(text, disambiguate=False)


def unique_case_id(base: str, source: str, taken: dict[str, str]) -> str:
    """``base`` unless another source already uses it; then ``base_<6 hex of the source path>``.

    Args:
        base: the preferred id (a safe name, see :func:`~metalung_monai.utils.paths.is_safe_name`).
        source: the input this case comes from (a path string).
        taken: ``case_id -> source`` of the cases already known.

    Returns:
        A safe name (``base`` is shortened to make room for the suffix when needed).
    """
    if base not in taken or taken[base] == source:
        return base
    tag = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{base[: MAX_NAME_LENGTH - len(tag) - 1]}_{tag}"


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
        """``images/<case_id>.nii.gz`` and ``masks/<case_id>.nii.gz`` (or ``None``).

        Raises:
            InputError: ``case_id`` is not a safe file name (make it with
                :func:`~metalung_monai.utils.paths.safe_name`).
        """
        if not is_safe_name(case_id):
            raise InputError(
                f"case id {case_id!r}", "not a safe file name (make it with utils.paths.safe_name)"
            )
        return f"images/{case_id}.nii.gz", (f"masks/{case_id}.nii.gz" if has_mask else None)

    def _merged(self, datalist: dict, entries: list[dict]) -> dict:
        ids = {e["case_id"] for e in entries}
        images = {e["image"] for e in entries}
        out = dict(datalist)
        for sec in SECTION_OF_SPLIT.values():
            if sec in out:
                out[sec] = [
                    e
                    for e in out[sec]
                    if e.get("case_id") not in ids and e.get("image") not in images
                ]
        for e in entries:
            sec = SECTION_OF_SPLIT[e.get("split", "train")]
            out.setdefault(sec, []).append(e)
        return out

    def full_entry(self, case: Case) -> dict:
        cid = safe_name(case.case_id)  # kept when already safe; else sanitised, with a hash
        img_rel, mask_rel = self.rel_paths(cid, case.has_mask or case.mask is not None)
        entry = {"image": img_rel, "mask": mask_rel}
        entry.update(case.entry)
        entry["case_id"] = cid
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
        cid = entry["case_id"]
        img_path = child_path(self.out_dir / "images", cid, ".nii.gz")
        mask_path = child_path(self.out_dir / "masks", cid, ".nii.gz")
        with contextlib.ExitStack() as stack:
            tmp_img = stack.enter_context(atomic_path(img_path))
            tmp_mask = (
                stack.enter_context(atomic_path(mask_path)) if case.mask is not None else None
            )
            sitk.WriteImage(case.image, str(tmp_img), useCompression=True)
            if tmp_mask is not None:
                sitk.WriteImage(case.mask, str(tmp_mask), useCompression=True)
        if (
            case.mask is None and mask_path.exists()
        ):  # an earlier conversion of this case had a mask
            mask_path.unlink()
        self.datalist = self._merged(self.datalist, [entry])
        self.written.append(cid)
        return entry

    def save(self) -> Path:
        """Write ``datalist.json`` (validated, atomic)."""
        return write_datalist(self.datalist, self.path)
