"""Can a classifier find the seam of an inserted lesion? A classifier two-sample test on context
crops (issue 13).

Real tumours seen in their surroundings are compared with lesions inserted into healthy lung,
seen the same way: a ``size`` x ``size`` crop centred on the tumour (the inserted lesion), in
integer HU. The test is :func:`~metalung_monai.evaluation.realism.c2st` (a small CNN, out-of-fold
AUC over patient-grouped folds, bootstrap interval over patients) on the crops at full
resolution (no pooling: a seam is a few pixels wide). An AUC near 0.5, or near the real-vs-real
baseline (real tumours of one half of the patients against the other half), means the classifier
finds nothing; the peers' pastes (hard copy-paste, as TumorCP; a blurred-mask alpha paste, as
SyntheticTumors) at the very same places and with the very same lesions show what the blending
is worth.

Inputs are 2D samples as :func:`~metalung_monai.training.data.slice_samples` gives them
(``image`` HU, ``label``, ``lung`` as ``(1, H, W)`` MetaTensors with their affine), so any
datalist works: the synthetic cohort's test patients, or converted real series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..anatomy import free_space_mask
from ..errors import InputError, LesionTooSmallError
from ..synthesis.generative import bank_pixel_mm
from ..synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion
from ..utils.orientation import array_spacing
from .realism import LesionSet, c2st

__all__ = [
    "PASTE_METHODS",
    "paste_lesion",
    "context_crop",
    "real_context_set",
    "inserted_context_sets",
    "relocated_context_sets",
    "dense_ring_share",
    "seam_c2st",
]

#: how a lesion is put into the image: ours (blend with the target's noise), and the peers
PASTE_METHODS = {
    "blend": "ours: soft 2-pixel edge, the lesion's low-pass plus the target's own high-pass noise",
    "copy": "hard copy-paste of the lesion's voxels inside its mask (TumorCP)",
    "blurred": "alpha paste with a Gaussian-blurred mask, sigma 1.5 px (SyntheticTumors)",
}


def paste_lesion(
    image: np.ndarray,
    lesion_hu: np.ndarray,
    lesion_mask: np.ndarray,
    box: tuple[slice, ...],
    method: str = "blend",
    sigma_px: float = 1.5,
) -> np.ndarray:
    """``image`` (integer HU, 2D or 3D) with the lesion crop put at ``box`` by ``method``
    (:data:`PASTE_METHODS`); int16, rounded half to even where values are mixed.

    Raises:
        InputError: an unknown method (and as :func:`blend_lesion` for ``blend``).
    """
    if method == "blend":
        return blend_lesion(image, lesion_hu, lesion_mask, box)[0]
    m = np.asarray(lesion_mask, bool)
    out = np.asarray(image).astype(np.int16, copy=True)
    if method == "copy":
        out[box][m] = np.asarray(lesion_hu)[m]
    elif method == "blurred":
        a = ndi.gaussian_filter(m.astype(np.float32), sigma_px)
        crop = out[box].astype(np.float32)
        out[box] = np.rint(a * np.asarray(lesion_hu, np.float32) + (1 - a) * crop).astype(np.int16)
    else:
        raise InputError(
            "method", f"unknown paste method {method!r} (choose from {list(PASTE_METHODS)})"
        )
    return out


def context_crop(
    image: np.ndarray, mask: np.ndarray, centre: Sequence[int], size: int, fill: int = -1000
) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` crop of a 2D ``image`` / ``mask`` centred on ``centre`` ``(y, x)``;
    outside the image the crop holds ``fill`` HU (air) and mask 0."""
    img = np.full((size, size), fill, np.int16)
    msk = np.zeros((size, size), np.uint8)
    y0, x0 = int(centre[0]) - size // 2, int(centre[1]) - size // 2
    ys, xs = (
        slice(max(y0, 0), min(y0 + size, image.shape[0])),
        slice(max(x0, 0), min(x0 + size, image.shape[1])),
    )
    if ys.start < ys.stop and xs.start < xs.stop:
        dst = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        img[dst] = image[ys, xs]
        msk[dst] = mask[ys, xs] > 0
    return img, msk


def _plane(x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return a[0] if a.ndim == 3 else a


def _set(name: str, crops: list[tuple[np.ndarray, np.ndarray, str, str]], size: int) -> LesionSet:
    if not crops:
        return LesionSet(
            name,
            np.zeros((0, size, size), np.int16),
            np.zeros((0, size, size), np.uint8),
            np.array([], object),
            np.array([], object),
        )
    img, msk, grp, cls = zip(*crops)
    return LesionSet(
        name, np.stack(img), np.stack(msk), np.array(grp, object), np.array(cls, object)
    )


def _crop_fits(centre: Sequence[int], shape: Sequence[int], size: int) -> bool:
    """Whether the ``size`` crop centred on ``centre`` (as :func:`context_crop` cuts it) lies
    inside an image of ``shape``: no padding for a classifier to see."""
    return all(
        0 <= int(c) - size // 2 and int(c) - size // 2 + size <= n for c, n in zip(centre, shape)
    )


def real_context_set(
    samples: Sequence[Mapping], size: int = 32, min_px: int = 4, fit_crop: bool = False
) -> LesionSet:
    """One crop per tumour component (of at least ``min_px`` pixels) of every sample's slice,
    centred on its centroid; groups: the samples' ``patient_id``. ``fit_crop``: skip a tumour whose
    crop would leave the slice (small patches: padding would tell the sets apart)."""
    crops = []
    for s in samples:
        img, lab = _plane(s["image"]).astype(np.int16), _plane(s["label"]) > 0
        comp, n = ndi.label(lab)
        for c in range(1, n + 1):
            m = comp == c
            if m.sum() < min_px:
                continue
            cy, cx = (int(round(v)) for v in ndi.center_of_mass(m))
            if fit_crop and not _crop_fits((cy, cx), img.shape, size):
                continue
            ci, cm = context_crop(img, m, (cy, cx), size)
            crops.append((ci, cm, str(s["patient_id"]), str(s.get("lung_rads", ""))))
    return _set("real", crops, size)


def _free_map(
    s: Mapping, img: np.ndarray, sp: Sequence[float], margin_mm: float, fit: int | None
) -> np.ndarray:
    """Free lung of sample ``s`` (:func:`~metalung_monai.anatomy.free_space_mask`), off its
    tumours by ``margin_mm`` (a ground-glass tumour is parenchyma to the map's -500 HU
    threshold), and with ``fit`` (a crop size) only where a lesion's crop lies inside the slice:
    the lesion lies inside, so does its centroid, the crop's centre."""
    free = free_space_mask(img, _plane(s["lung"]).astype(np.uint8), sp, min_distance_mm=margin_mm)
    tumour = _plane(s["label"]) > 0 if "label" in s else None
    if tumour is not None and tumour.any():
        r = max(int(np.ceil(margin_mm / min(sp))), 1)
        free &= ~ndi.binary_dilation(tumour, iterations=r)
    if fit:
        h = fit // 2
        inner = np.zeros_like(free)
        inner[h : img.shape[0] - (fit - h) + 1, h : img.shape[1] - (fit - h) + 1] = True
        free &= inner
    return free


def _check_methods(methods: Sequence[str]) -> None:
    bad = [m for m in methods if m not in PASTE_METHODS]
    if bad:
        raise InputError(
            "methods", f"unknown paste methods {bad} (choose from {list(PASTE_METHODS)})"
        )


def _place_and_crop(
    img: np.ndarray,
    free: np.ndarray,
    hu: np.ndarray,
    m: np.ndarray,
    sp: Sequence[float],
    rng: np.random.Generator,
    margin_mm: float,
    methods: Sequence[str],
    size: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The lesion ``hu`` / ``m`` placed in ``free`` (``rng``) and put in by each method, cropped
    around its centroid: ``{method: (crop, mask crop)}``; ``None`` when there is no room."""
    place = find_lesion_place(free, m, sp, rng, edge_px=2, margin_mm=margin_mm)
    if place is None:
        return None
    full = np.zeros(img.shape, bool)
    full[place.box] = m
    cy, cx = (int(round(v)) for v in ndi.center_of_mass(full))
    return {
        method: context_crop(paste_lesion(img, hu, m, place.box, method), full, (cy, cx), size)
        for method in methods
    }


def relocated_context_sets(
    samples: Sequence[Mapping],
    size: int = 32,
    seed: int = 0,
    methods: Sequence[str] = tuple(PASTE_METHODS),
    margin_mm: float = 1.0,
    min_px: int = 4,
    fit_crop: bool = False,
    pad_px: int = 3,
) -> tuple[dict[str, LesionSet], dict[str, int]]:
    """A control for the same-scan test: every real tumour (component of at least ``min_px``
    pixels) moved within its own slice, to free lung off the slice's tumours, by each method,
    and cropped around its new place: ``({method: LesionSet, "real": LesionSet}, counts)``, where
    ``"real"`` holds the same tumours' crops at their own places, in the same order (the paired
    reference: the tumours that found room are not a random subset of all, smaller ones move
    more easily, and comparing with every real tumour would let size tell the sets apart).

    The lesion is the tumour's own pixels at their native resolution (its bounding box grown by
    ``pad_px``), in its own scan and patient: against the real crops, what is left to find is
    the seam and the new place (free lung, a margin off pleura and vessels, where a real tumour
    may touch them: :func:`dense_ring_share`), not the lesion's texture, resampling or patient. Seeded (``seed``); a tumour without room is counted.
    """
    _check_methods(methods)
    rng = np.random.default_rng(seed)
    crops: dict[str, list] = {m: [] for m in (*methods, "real")}
    counts = {"tumours": 0, "no_room": 0, "inserted": 0}
    for s in samples:
        img, lab = _plane(s["image"]).astype(np.int16), _plane(s["label"]) > 0
        comp, n = ndi.label(lab)
        if n == 0:
            continue
        sp = array_spacing(s["image"].affine, 2)
        free = _free_map(s, img, sp, margin_mm, size if fit_crop else None)
        for c in range(1, n + 1):
            m_full = comp == c
            if m_full.sum() < min_px:
                continue
            centre = tuple(int(round(v)) for v in ndi.center_of_mass(m_full))
            if fit_crop and not _crop_fits(centre, img.shape, size):
                continue
            counts["tumours"] += 1
            ys, xs = np.nonzero(m_full)
            box = tuple(
                slice(max(int(v.min()) - pad_px, 0), min(int(v.max()) + pad_px + 1, dim))
                for v, dim in zip((ys, xs), img.shape)
            )
            put = _place_and_crop(
                img, free, img[box], m_full[box], sp, rng, margin_mm, methods, size
            )
            if put is None:
                counts["no_room"] += 1
                continue
            counts["inserted"] += 1
            tag = (str(s["patient_id"]), str(s.get("lung_rads", "")))
            for method, crop in put.items():
                crops[method].append((*crop, *tag))
            crops["real"].append((*context_crop(img, m_full, centre, size), *tag))
    return {k: _set(k, v, size) for k, v in crops.items()}, counts


def inserted_context_sets(
    healthy: Sequence[Mapping],
    bank,
    n: int,
    size: int = 32,
    seed: int = 0,
    methods: Sequence[str] = tuple(PASTE_METHODS),
    margin_mm: float = 1.0,
    min_px: int = 4,
    fit_crop: bool = False,
) -> tuple[dict[str, LesionSet], dict[str, int]]:
    """``n`` lesions of ``bank`` (its rows as :func:`~metalung_monai.transforms.insert_lesion.lesion_choices`
    gives them) inserted into random healthy slices, each put in by every method at the same
    place, and cropped around it: ``({method: LesionSet}, counts)``; groups: the healthy slices'
    ``patient_id``. Lesions are drawn at their real size in mm; a draw without room (or whose
    lesion is smaller than ``min_px`` pixels at the target's spacing) is skipped and counted.

    The "healthy" slices may hold tumours (a same-scan test: lesions inserted beside the real
    tumours of the very slices they come from): the free space then excludes each tumour dilated
    by ``margin_mm``, and a lesion of the slice's own patient is never inserted (skipped, counted
    as ``same_patient``). ``fit_crop``: the lesion is placed only where its whole crop lies inside
    the slice (as :func:`real_context_set` with ``fit_crop``).

    Raises:
        InputError: no healthy slices, or an unknown method.
    """
    from ..transforms.insert_lesion import lesion_choices

    _check_methods(methods)
    if not healthy:
        raise InputError("healthy", "no healthy slices to insert into")
    choices = lesion_choices(bank)
    px = bank_pixel_mm(choices)
    images, masks, _ = choices.patches("2d")
    classes = choices.table["lung_rads"].astype(str).to_numpy()
    lesion_patients = (
        choices.table["patient_id"].astype(str).to_numpy()
        if "patient_id" in choices.table
        else np.full(len(classes), "", object)
    )
    rng = np.random.default_rng(seed)
    free_cache: dict[int, np.ndarray] = {}
    crops: dict[str, list] = {m: [] for m in methods}
    counts = {"drawn": 0, "no_room": 0, "too_small": 0, "same_patient": 0, "inserted": 0}
    attempts = 0
    while counts["inserted"] < n and attempts < 20 * n:
        attempts += 1
        counts["drawn"] += 1
        i, j = int(rng.integers(len(healthy))), int(rng.integers(len(images)))
        s = healthy[i]
        if lesion_patients[j] and lesion_patients[j] == str(s["patient_id"]):
            counts["same_patient"] += 1
            continue
        img = _plane(s["image"]).astype(np.int16)
        sp = array_spacing(s["image"].affine, 2)
        if i not in free_cache:
            free_cache[i] = _free_map(s, img, sp, margin_mm, size if fit_crop else None)
        try:
            hu, m = resample_lesion(images[j], masks[j] > 0, px, sp)
        except LesionTooSmallError:
            counts["too_small"] += 1
            continue
        if m.sum() < min_px:
            counts["too_small"] += 1
            continue
        put = _place_and_crop(img, free_cache[i], hu, m, sp, rng, margin_mm, methods, size)
        if put is None:
            counts["no_room"] += 1
            continue
        counts["inserted"] += 1
        for method, crop in put.items():
            crops[method].append((*crop, str(s["patient_id"]), classes[j]))
    return {k: _set(k, v, size) for k, v in crops.items()}, counts


def dense_ring_share(lesions: LesionSet, ring_px: int = 2, dense_hu: float = -300.0) -> np.ndarray:
    """Per crop, the share of the ``ring_px``-pixel ring around the lesion's mask that is denser
    than ``dense_hu`` HU (pleura, mediastinum, vessels): 0 for a lesion wholly in parenchyma, as
    the free-space placement makes them, more for a juxtapleural or juxtavascular tumour.
    Shape ``(n,)``; NaN for a crop without a lesion."""
    out = np.full(len(lesions), np.nan)
    for k, (img, m) in enumerate(zip(lesions.image, lesions.mask)):
        m = m > 0
        ring = ndi.binary_dilation(m, iterations=ring_px) & ~m
        if ring.any():
            out[k] = float((img[ring] > dense_hu).mean())
    return out


def seam_c2st(
    real: LesionSet,
    inserted: Mapping[str, LesionSet],
    seed: int = 0,
    epochs: int = 15,
    repeats: int = 3,
    min_steps: int = 200,
) -> pd.DataFrame:
    """C2ST AUC [95 % CI] of each inserted set against ``real`` at full crop resolution, and the
    real-vs-real baseline (the real crops of one half of the patients against the other half,
    seeded). One row per comparison: ``comparison``, ``n_a``, ``n_b``, ``auc``, ``lo``, ``hi``."""
    size = int(real.image.shape[-1])
    rows = []
    pats = np.unique(real.groups)
    if len(pats) >= 4:
        half = set(np.random.default_rng(seed).permutation(pats)[: len(pats) // 2])
        a = real.take(np.array([g in half for g in real.groups]))
        b = real.take(np.array([g not in half for g in real.groups]))
        rows.append(("real vs real (patient halves)", a, b))
    rows += [(f"{k} vs real", real, s) for k, s in inserted.items()]
    out = []
    for name, a, b in rows:
        r = c2st(a, b, seed=seed, size=size, epochs=epochs, repeats=repeats, min_steps=min_steps)
        out.append(
            {
                "comparison": name,
                "n_a": len(a),
                "n_b": len(b),
                "auc": r["auc"],
                "lo": r["auc_low"],
                "hi": r["auc_high"],
            }
        )
    return pd.DataFrame(out)
