"""Training and test samples from a datalist: 2D tumour slices (the thesis) or 3D volumes.

Slices are taken in the canonical layout (rows posterior, columns towards the patient's left,
radiological display), whatever the orientation of the files, and carry an affine that says so,
so that MetaLung's orientation-aware operations and anything else downstream see the true
left/right. Each slice sample is a MONAI dictionary::

    {"image": MetaTensor (1, H, W) float32 HU, "label": (1, H, W) {0, 1}, "lung": (1, H, W) 0/1/2,
     "patient_id": str, "case_id": str, "lung_rads": str, "slice_index": int}

Volumes for patch training stay file-based (``image``/``label``/``lung`` paths for ``LoadImaged``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from ..anatomy import lung_mask
from ..errors import DatalistError
from ..io.datalist import datalist_entries
from ..transforms import METALUNG_OPS, MetaLungd, metalung_records
from ..utils.orientation import sitk_to_canonical

__all__ = [
    "CanonicalCase",
    "load_case",
    "slice_affine",
    "split_entries",
    "slice_samples",
    "volume_samples",
    "expand_metalung",
    "expand_samples",
]


@dataclass
class CanonicalCase:
    """One case in the canonical layout: ``hu`` int16, ``mask`` and ``lungs`` uint8, ``(z, y, x)``."""

    entry: dict
    hu: np.ndarray
    mask: np.ndarray
    lungs: np.ndarray
    spacing: tuple[float, ...]

    @property
    def case_id(self) -> str:
        return str(self.entry.get("case_id") or os.path.basename(self.entry["image"]).split(".")[0])


def load_case(entry: dict, lungs: bool = True) -> CanonicalCase:
    """Read a datalist entry (absolute paths) into canonical arrays.

    A 2D case becomes a volume of one slice. Without a ``mask`` the mask is empty; without a
    ``lung_mask`` the lungs are computed by HU thresholds when ``lungs`` is true.
    """

    def read(path):
        return sitk_to_canonical(sitk.ReadImage(str(path)))

    hu, spacing = read(entry["image"])
    mask = read(entry["mask"])[0] if entry.get("mask") else np.zeros(hu.shape, np.uint8)
    if mask.shape != hu.shape:
        raise DatalistError(
            entry.get("mask", "mask"), f"shape {mask.shape} does not match the image's {hu.shape}"
        )
    if entry.get("lung_mask"):
        lung = read(entry["lung_mask"])[0].astype(np.uint8)
    elif lungs:
        lung = lung_mask(hu, spacing, progress=False)
    else:
        lung = np.zeros(hu.shape, np.uint8)
    if hu.ndim == 2:
        hu, mask, lung, spacing = hu[None], mask[None], lung[None], (1.0,) + tuple(spacing)
    return CanonicalCase(
        entry,
        hu.astype(np.int16),
        (mask > 0).astype(np.uint8),
        lung,
        tuple(float(s) for s in spacing),
    )


def slice_affine(spacing_yx: Sequence[float], z_mm: float = 0.0) -> torch.Tensor:
    """RAS affine of a canonical 2D slice: rows towards posterior, columns towards patient left."""
    sy, sx = (float(s) for s in spacing_yx)
    return torch.tensor(
        [[0.0, -sx, 0.0, 0.0], [-sy, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, z_mm], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )


def split_entries(entries: list[dict], val_fold: int | None) -> tuple[list[dict], list[dict]]:
    """``(train, validation)``: training patients of fold ``val_fold`` validate (none when None)."""
    if val_fold is None:
        return entries, []
    val = [e for e in entries if e.get("fold") == val_fold]
    train = [e for e in entries if e.get("fold") != val_fold]
    return train, val


def _slice_sample(case: CanonicalCase, z: int) -> dict:
    aff = slice_affine(case.spacing[1:], z * case.spacing[0])

    def mt(a, dtype):
        return MetaTensor(
            torch.from_numpy(np.ascontiguousarray(a[None]).astype(dtype)), affine=aff.clone()
        )

    e = case.entry
    return {
        "image": mt(case.hu[z], np.float32),
        "label": mt(case.mask[z], np.float32),
        "lung": mt(case.lungs[z], np.float32),
        "patient_id": str(e["patient_id"]),
        "case_id": case.case_id,
        "lung_rads": str(e.get("lung_rads") or "LR1"),
        "slice_index": int(z),
    }


def slice_samples(entries: Iterable[dict], tumour_only: bool = True) -> list[dict]:
    """2D samples of every case: its tumour slices (the thesis' protocol) or all its slices."""
    out = []
    for e in entries:
        case = load_case(e)
        zs = np.flatnonzero(case.mask.any(axis=(1, 2))) if tumour_only else range(case.hu.shape[0])
        out.extend(_slice_sample(case, int(z)) for z in zs)
    return out


def volume_samples(entries: Iterable[dict]) -> list[dict]:
    """File-based 3D samples (``image``, ``label``, ``lung``) for ``LoadImaged`` and patch training."""
    out = []
    for e in entries:
        if not e.get("mask"):
            continue
        s = {
            "image": e["image"],
            "label": e["mask"],
            "patient_id": str(e["patient_id"]),
            "case_id": str(e.get("case_id") or e["patient_id"]),
            "lung_rads": str(e.get("lung_rads") or "LR1"),
        }
        if e.get("lung_mask"):
            s["lung"] = e["lung_mask"]
        out.append(s)
    return out


def _sample_seed(seed: int, sample: dict) -> int:
    key = f"{sample.get('case_id')}:{sample.get('slice_index')}".encode()
    return int(
        np.random.SeedSequence(
            [int(seed), int(hashlib.sha1(key).hexdigest()[:8], 16)]
        ).generate_state(1)[0]
    )


def expand_samples(samples: list[dict], transform, seed: int) -> list[dict]:
    """The samples followed by their variants made by ``transform`` (offline expansion in memory).

    ``transform`` works in ``"expand"`` mode (as :class:`~metalung_monai.transforms.MetaLungd` with
    ``mode="expand"``: a list of variants per sample, the original not included). It is seeded
    per sample by ``(seed, case_id, slice_index)``, so a sample's variants do not depend on the
    other samples. A variant's ``case_id`` is the sample's plus ``+<operation>``. Without a
    transform (``None``: an arm without expansion) the samples are returned as they are.
    """
    if transform is None:
        return samples
    out = list(samples)
    for s in samples:
        transform.set_random_state(_sample_seed(seed, s))
        for v in transform(s):
            v = dict(v)
            v["case_id"] = f"{s['case_id']}+{_last_op(v)}"
            out.append(v)
    return out


def expand_metalung(
    samples: list[dict], seed: int, ops: Sequence[str] | None = None, copies: int = 1
) -> list[dict]:
    """The samples followed by their MetaLung variants (offline expansion in memory, as the thesis).

    Each sample is expanded by :class:`~metalung_monai.transforms.MetaLungd` in ``"expand"`` mode
    with the sample's lung labels (:func:`expand_samples`); variants whose operation could not be
    applied are dropped. The bundles' ``augment_metalung.json`` declares the same transform as
    ``train#expansion``.
    """
    t = MetaLungd(
        keys=("image", "label"),
        lung_key="lung",
        ops=tuple(ops or METALUNG_OPS),
        mode="expand",
        copies=copies,
        include_original=False,
    )
    return expand_samples(samples, t, seed)


def _last_op(sample: dict) -> str:
    recs = metalung_records(sample["image"])
    return recs[-1]["op"] if recs else "original"


def entries_of(datalist: str | os.PathLike, section: str) -> list[dict]:
    """Datalist entries of ``section`` with absolute paths (see :func:`datalist_entries`)."""
    return datalist_entries(datalist, section)
