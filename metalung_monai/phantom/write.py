"""Files of a synthetic patient and of a cohort: NIfTI, DICOM, lung masks, summary, CSV.

:func:`write_patient` writes one :class:`~.generate.PatientVolume` atomically under a cohort
folder (``images/``, ``masks/``, ``truth/``, optionally ``lungs/`` and ``dicom/``) and returns its
summary (files, class, scanner, tumours, HU histograms on :data:`HIST_EDGES`, the overview
slice) as the cohort manifest stores it; :func:`write_cohort_csv` writes ``cohort.csv`` (one row
per patient, :data:`CSV_COLUMNS`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np

from ..anatomy import lung_mask
from ..errors import InputError
from ..io import dicom_write
from ..utils.atomic import atomic_path, write_image_atomic
from ..utils.paths import child_path, safe_name
from .body import LABEL_CALC, LABEL_LUNG_L, LABEL_LUNG_R, LABEL_TUMOUR
from .figures import HIST_EDGES, save_overview_slice  # HU bins shared with the overview
from .generate import PatientVolume

__all__ = ["HIST_EDGES", "CSV_COLUMNS", "DICOM_NAME", "write_patient", "write_cohort_csv"]

#: the files of a patient's DICOM series (``dicom/<pid>/IM00001.dcm`` ...)
DICOM_NAME = re.compile(r"IM\d{5}\.dcm")


def _histograms(vol: PatientVolume) -> dict:
    """HU histograms (counts on :data:`HIST_EDGES`) of tumour, calcification and lung voxels."""
    out = {}
    for name, sel in (
        ("tumour", vol.truth == LABEL_TUMOUR),
        ("calcification", vol.truth == LABEL_CALC),
        ("lung", (vol.truth == LABEL_LUNG_R) | (vol.truth == LABEL_LUNG_L)),
    ):
        vals = vol.hu[sel]
        if name == "lung" and vals.size > 400_000:
            vals = vals[:: vals.size // 400_000 + 1]
            scale = sel.sum() / vals.size
        else:
            scale = 1.0
        h, _ = np.histogram(vals, bins=HIST_EDGES)
        out[name] = [int(round(v * scale)) for v in h]
    return out


def _overview_slice(vol: PatientVolume) -> int:
    """Slice index with the largest tumour area (else the one with most calcification / mid-lung)."""
    area = vol.mask.sum(axis=(1, 2))
    if area.any():
        return int(np.argmax(area))
    calc = (vol.truth == LABEL_CALC).sum(axis=(1, 2))
    if calc.any():
        return int(np.argmax(calc))
    lung = ((vol.truth == LABEL_LUNG_R) | (vol.truth == LABEL_LUNG_L)).sum(axis=(1, 2))
    return int(np.argmax(lung))


def write_patient(
    vol: PatientVolume, out_dir: str | os.PathLike, dicom: bool = False, lung_masks: bool = True
) -> dict:
    """Write a patient's image, mask, truth (and DICOM series) atomically under ``out_dir``.

    With ``lung_masks`` the lung labels found *by HU thresholds* on the image
    (:func:`metalung_monai.anatomy.lung_mask`, what a user would compute on real CT) are written
    to ``lungs/<pid>.nii.gz`` and scored against the phantom's truth (Dice, tumour voxels inside).

    Returns:
        A summary dict (files relative to ``out_dir``, class, scanner, tumours, histograms, ...)
        as stored in the cohort manifest.
    """
    out = Path(out_dir)
    pid = vol.patient_id
    name = safe_name(
        pid, fallback="patient"
    )  # "P0001" stays "P0001"; ids from elsewhere are sanitised
    files = {
        "image": f"images/{name}.nii.gz",
        "mask": f"masks/{name}.nii.gz",
        "truth": f"truth/{name}_anatomy.nii.gz",
    }
    write_image_atomic(vol.to_sitk(vol.hu), child_path(out / "images", name, ".nii.gz", source=pid))
    write_image_atomic(
        vol.to_sitk(vol.mask), child_path(out / "masks", name, ".nii.gz", source=pid)
    )
    write_image_atomic(
        vol.to_sitk(vol.truth), child_path(out / "truth", name, "_anatomy.nii.gz", source=pid)
    )
    lung_check = {}
    if lung_masks:
        files["lung_mask"] = f"lungs/{name}.nii.gz"
        lungs = lung_mask(vol.hu, vol.spacing, progress=False)
        write_image_atomic(
            vol.to_sitk(lungs), child_path(out / "lungs", name, ".nii.gz", source=pid)
        )
        truth_lung = np.isin(vol.truth, (1, 2, 5))
        found = lungs > 0
        lung_check = {
            "dice": round(
                float(2 * (found & truth_lung).sum() / max(found.sum() + truth_lung.sum(), 1)), 4
            ),
            "tumour_voxels": int((vol.mask > 0).sum()),
            "tumour_voxels_inside": int(((vol.mask > 0) & found).sum()),
            "gas_voxels_inside": int((found & (vol.truth == 12)).sum()),
        }
    if dicom:
        files["dicom"] = f"dicom/{name}"
        folder = child_path(out / "dicom", name, source=pid)
        _refuse_foreign_dicom_files(folder)  # the series replaces the whole folder
        fov3 = np.broadcast_to(vol.fov, vol.hu.shape)
        dicom_write.write_dicom_series(
            vol.to_sitk(vol.hu),
            folder,
            patient_id=pid,
            manufacturer=vol.scanner["manufacturer"],
            rescale_intercept=vol.scanner["rescale_intercept"],
            padding_value=vol.scanner["padding_value"],
            fov_mask=np.ascontiguousarray(fov3),
            series_description=f"metalung phantom {vol.scanner['kernel']}",
            seed=vol.params.seed,
            overwrite=True,
        )
    sl = _overview_slice(vol)
    save_overview_slice(out, pid, vol.hu[sl], vol.mask[sl], vol.truth[sl], vol.spacing[1:], sl)
    return {
        "patient_id": pid,
        "index": vol.params.index,
        "lung_rads": vol.lung_rads,
        "target_lung_rads": vol.params.lung_rads,
        "files": files,
        "spacing": list(vol.spacing),
        "shape": list(vol.hu.shape),
        "origin": list(vol.origin),
        "slice_thickness": vol.params.slice_thickness,
        "fov_mm": vol.params.fov_mm,
        "contrast": vol.params.contrast,
        "scanner": vol.scanner,
        "tumours": vol.tumours,
        "calcifications": vol.calcifications,
        "n_tumour_slices": vol.n_tumour_slices,
        "overview_slice": sl,
        "histograms": _histograms(vol),
        "stats": vol.stats,
        "lung_mask_check": lung_check,
    }


def _refuse_foreign_dicom_files(folder: Path) -> None:
    """A patient's DICOM folder is replaced as a whole: refuse when it holds files phantom did not write."""
    if not folder.is_dir():
        return
    foreign = sorted(
        p.name for p in folder.iterdir() if not (DICOM_NAME.fullmatch(p.name) and p.is_file())
    )
    if foreign:
        raise InputError(
            folder,
            f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
            "phantom did not write; the patient's series replaces the whole folder: move them",
        )


CSV_COLUMNS = [
    "patient_id",
    "lung_rads",
    "split",
    "fold",
    "n_tumours",
    "diameters_mm",
    "types",
    "shapes",
    "lungs",
    "juxtapleural",
    "juxtavascular",
    "n_tumour_slices",
    "n_calcifications",
    "calcification_diameters_mm",
    "manufacturer",
    "kernel",
    "kernel_sigma_mm",
    "noise_sigma_hu",
    "rescale_intercept",
    "padding_value",
    "contrast",
    "slice_thickness_mm",
    "pixel_spacing_mm",
    "fov_mm",
    "shape_zyx",
    "time_s",
]


def write_cohort_csv(summaries: list[dict], path: Path) -> None:
    """Write ``cohort.csv`` atomically: one row of :data:`CSV_COLUMNS` per patient summary."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for s in summaries:
        t = s["tumours"]
        sc = s["scanner"]

        def j(vals):
            return ";".join(str(v) for v in vals)

        w.writerow(
            {
                "patient_id": s["patient_id"],
                "lung_rads": s["lung_rads"],
                "split": s.get("split", ""),
                "fold": "" if s.get("fold") is None else s.get("fold"),
                "n_tumours": len(t),
                "diameters_mm": j(x["diameter_mm"] for x in t),
                "types": j(x["type"] for x in t),
                "shapes": j(x["shape"] for x in t),
                "lungs": j(x["lung"] for x in t),
                "juxtapleural": j(int(x["juxtapleural"]) for x in t),
                "juxtavascular": j(int(x["juxtavascular"]) for x in t),
                "n_tumour_slices": s["n_tumour_slices"],
                "n_calcifications": len(s["calcifications"]),
                "calcification_diameters_mm": j(c["diameter_mm"] for c in s["calcifications"]),
                "manufacturer": sc["manufacturer"],
                "kernel": sc["kernel"],
                "kernel_sigma_mm": sc["kernel_sigma_mm"],
                "noise_sigma_hu": sc["noise_sigma_hu"],
                "rescale_intercept": sc["rescale_intercept"],
                "padding_value": sc["padding_value"],
                "contrast": int(bool(s["contrast"])),
                "slice_thickness_mm": s["slice_thickness"],
                "pixel_spacing_mm": round(s["spacing"][1], 4),
                "fov_mm": s["fov_mm"],
                "shape_zyx": "x".join(str(v) for v in s["shape"]),
                "time_s": s.get("time_s", ""),
            }
        )
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
