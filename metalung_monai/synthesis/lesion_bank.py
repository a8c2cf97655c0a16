"""Extract the real lesions of a datalist's training cases into a lesion bank (``metalung lesion-bank``).

:func:`build_lesion_bank` reads a MONAI datalist (``image`` / ``mask``, optional ``lung_mask``,
``patient_id``, ``fold``), keeps the **training** cases of the patients that are neither in the
validation fold (``val_fold``, the fold the training presets validate on) nor in a ``test`` /
``validation`` section, and writes every connected tumour component of them into a bank folder in
the format of :mod:`metalung_monai.synthesis.bank`:

* 2D lesions: one per connected component (8-connected) of each axial slice's mask;
* 3D lesions: one per connected component (26-connected) of the volume's mask, for cases with
  more than one slice (the connectivity of :mod:`metalung_monai.anatomy.lung_rads`).

Each lesion keeps a **context window** of fixed size in mm (``context_mm``, the same in every axis)
centred on the centre of its bounding box:

* at native resolution (the image's own voxels, HU exactly as in the source, the lesion mask of
  that component only, the lung mask), ``round(context_mm / spacing)`` voxels per axis;
* resized to the model size (2D: ``size`` x ``size``; 3D: ``size3d`` voxels per axis, an
  isotropic cube), the image by linear interpolation (with Gaussian anti-aliasing when shrinking)
  **rounded to integer HU**, the masks by linear interpolation thresholded at 0.5 (a lesion that
  would vanish keeps its strongest pixel). ``scale`` = model pixels per native pixel in-plane
  (``size / window_x``); one model pixel is ``context_mm / size`` mm.

A window that reaches past the image border is padded with -1000 HU (air) and 0 in the masks
(``padded`` column); ``touches_edge`` says that the lesion itself touches the image border
(clipped by the field of view, or by the scan range in z for 3D lesions); ``clipped`` that the
lesion is larger than the window. The lung mask comes from the case's ``lung_mask`` file when the
datalist gives one, else from :func:`metalung_monai.anatomy.lung_mask` on the image; where that
finds no lung (a patch without body outline, such as the MSD patches) the lung mask is empty
(``lung_source`` ``"computed"`` with an all-zero mask; the case record counts lung voxels).

Lesion measurements (native resolution, the whole component, not only its part in the window):
longest diameter (:func:`~metalung_monai.anatomy.lung_rads.longest_diameter_mm`: the maximal
Feret diameter in 2D, its maximum over the axial slices in 3D), Lung-RADS class from it, HU
statistics, voxel count, area and volume, and the **type by HU**: with ``f`` the fraction of the
lesion's voxels at or above :data:`SOLID_HU` (-300 HU, the solid-tissue threshold),
``solid`` when ``f >= 0.25``, ``ground-glass`` when ``f < 0.03``, ``part-solid`` in between
(:func:`lesion_type`; thresholds set on the phantom cohorts, whose drawn types are known: 27 of
30 3D tumours agree, see ``docs/synthesis.md``).

The bank's patients are split, grouped by patient and seeded, into ``train`` and ``hold``
(``hold_fraction`` of them, at least one when there are two patients or more): generators train
on ``train``; ``hold`` is the real-vs-real baseline of the realism report.

Resumable and atomic (:mod:`metalung_monai.utils.runner`): each case's lesions are written to
``records/<case>.npz`` and vouched for by ``records/<case>.json`` (written after it); a rerun reuses
finished cases and removes a killed run's temporary files; the bank files are written last, each
atomically. A folder made with other settings is refused unless ``overwrite`` (which deletes only
the files a previous bank run wrote there).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.transform import resize

from ..anatomy import lung_mask as compute_lung_mask
from ..anatomy.lung_rads import longest_diameter_mm, lung_rads_from_diameter
from ..errors import DatalistError, GeometryMismatchError, InputError, MaskError
from ..io.datalist import PATH_KEYS, SECTIONS, datalist_entries, load_datalist
from ..utils.atomic import atomic_path, save_figure_atomic
from ..utils.orientation import sitk_to_canonical
from ..utils.paths import (
    child_path,
    refuse_overlap,
    remove_empty_folders,
    remove_owned,
    safe_name,
)
from ..utils.runner import (
    Manifest,
    completed,
    file_fingerprint,
    fingerprint,
    mark_done,
    progress,
    remove_stale_partials,
    run_pool,
    seed_sequence,
)
from .bank import (
    ARRAYS_2D,
    ARRAYS_3D,
    COLUMNS,
    LUNG_RADS_CLASSES,
    LesionBank,
    empty_arrays,
    pack_native,
    write_bank,
)

__all__ = [
    "DEFAULT_CONTEXT_MM",
    "DEFAULT_SIZE",
    "DEFAULT_HOLD_FRACTION",
    "SOLID_HU",
    "PAD_HU",
    "MANIFEST",
    "lesion_type",
    "crop_window",
    "resize_window",
    "select_training",
    "case_lesions",
    "split_patients",
    "build_lesion_bank",
    "overview_figure",
]

log = logging.getLogger(__name__)

#: default context window (mm per side); see docs/synthesis.md for the measured diameters
DEFAULT_CONTEXT_MM = 64.0
#: default model size (the thesis' 64 x 64); the 3D default is half of it
DEFAULT_SIZE = 64
DEFAULT_HOLD_FRACTION = 0.25
#: HU at or above which a lesion voxel counts as solid tissue
SOLID_HU = -300
#: solid share at or above which a lesion is ``solid``, below which (second) ``ground-glass``
SOLID_FRACTION = 0.25
GROUND_GLASS_FRACTION = 0.03
#: HU of the window outside the image (air)
PAD_HU = -1000
MANIFEST = ".lesion-bank-manifest.json"
#: largest context window (mm): about a chest's width
MAX_CONTEXT_MM = 400.0
#: most voxels of one native window (a finer grid than this asks for a smaller --context-mm)
MAX_WINDOW_VOXELS = 1 << 25
#: bank files of the folder (written by :func:`build_lesion_bank`)
BANK_FILES = ("bank.npz", "lesions.csv", "bank.json", "overview.png")
#: bumped when the extraction of a case changes (records of another version are redone)
EXTRACTION_VERSION = 1
_TYPE_SHORT = {"solid": "S", "part-solid": "PS", "ground-glass": "GG"}
_STRUCT = {2: np.ones((3, 3), bool), 3: np.ones((3, 3, 3), bool)}


# --------------------------------------------------------------------------- pieces
def lesion_type(hu: np.ndarray) -> tuple[str, float]:
    """``(type, f)`` of a lesion's HU values: ``f`` the share of voxels ``>= SOLID_HU``.

    ``solid`` when ``f >= 0.25``, ``ground-glass`` when ``f < 0.03``, else ``part-solid``.
    """
    v = np.asarray(hu).ravel()
    if not v.size:
        raise InputError("lesion_type(hu)", "no lesion voxel")
    f = float(np.mean(v >= SOLID_HU))
    if f >= SOLID_FRACTION:
        return "solid", f
    if f < GROUND_GLASS_FRACTION:
        return "ground-glass", f
    return "part-solid", f


def crop_window(
    arr: np.ndarray, center: Sequence[int], size: Sequence[int], fill
) -> tuple[np.ndarray, bool]:
    """The ``size`` window of ``arr`` whose voxel ``size // 2`` is ``center``; ``fill`` outside.

    Returns ``(window, padded)``: ``padded`` is true when part of the window lies outside ``arr``.
    """
    start = [int(c) - int(s) // 2 for c, s in zip(center, size, strict=True)]
    out = np.full(tuple(int(s) for s in size), fill, dtype=arr.dtype)
    src, dst = [], []
    padded = False
    for a0, n, dim in zip(start, size, arr.shape, strict=True):
        lo, hi = max(a0, 0), min(a0 + int(n), dim)
        padded |= lo > a0 or hi < a0 + int(n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - a0, lo - a0 + max(hi - lo, 0)))
    out[tuple(dst)] = arr[tuple(src)]
    return out, bool(padded)


def resize_window(
    image: np.ndarray, mask: np.ndarray, lung: np.ndarray, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A native window resized to the model ``shape``: int16 HU (rounded), uint8 masks.

    ``skimage.transform.resize``: the image by linear interpolation, Gaussian anti-aliasing when
    shrinking (edge mode, so the border does not pull towards 0), rounded half to even to integer
    HU; each mask by linear interpolation thresholded at 0.5; a lesion mask that would vanish (a
    one-voxel lesion shrunk) keeps the voxel where its interpolated value is largest.
    """
    shape = tuple(int(s) for s in shape)
    shrink = any(s < n for s, n in zip(shape, image.shape, strict=True))
    img = resize(
        image.astype(np.float64),
        shape,
        order=1,
        mode="edge",
        anti_aliasing=shrink,
        preserve_range=True,
    )
    img = np.clip(np.rint(img), -32768, 32767).astype(np.int16)

    def mask_resize(m: np.ndarray, keep: bool) -> np.ndarray:
        f = resize(m.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False)
        out = (f >= 0.5).astype(np.uint8)
        if keep and m.any() and not out.any():
            out[np.unravel_index(int(np.argmax(f)), shape)] = 1
        return out

    return img, mask_resize(mask, True), mask_resize(lung, False)


def _window_shape(context_mm: float, spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, round(context_mm / float(s))) for s in spacing)


# --------------------------------------------------------------------------- the datalist
def select_training(
    datalist: str | os.PathLike, val_fold: int = 0
) -> tuple[list[dict], dict[str, str], dict]:
    """The training entries whose lesions may enter the bank, and the patients left out.

    Args:
        datalist: the datalist JSON.
        val_fold: the validation fold (its patients are left out); ``-1``: keep every training
            case (a datalist without folds, or a cross-validation fold's datalist).

    Returns:
        ``(entries, excluded, raw)``: the kept training entries (absolute paths, datalist order);
        patient id -> reason (``"test section"``, ``"validation section"``,
        ``"validation fold <k>"``) for every patient left out; the datalist as read.

    Raises:
        DatalistError / InputError: no training section or case, a validation fold that no
            training case has (naming the folds there are), every training case left out.
    """
    src = Path(datalist)
    raw = load_datalist(src)
    train = datalist_entries(src, "training")
    if not train:
        raise DatalistError(
            src, "no 'training' cases: the lesion bank takes the tumours of training cases only"
        )
    if isinstance(val_fold, bool) or int(val_fold) != val_fold or val_fold < -1:
        raise InputError("--val-fold", f"must be a fold number >= 0 or -1 (none), got {val_fold}")
    excluded: dict[str, str] = {}
    for section in ("test", "validation"):
        for e in raw.get(section, []) or []:
            if e.get("patient_id") is not None:
                excluded.setdefault(str(e["patient_id"]), f"{section} section")
    keep = []
    if val_fold >= 0:
        folds = sorted({int(e["fold"]) for e in train if e.get("fold") is not None})
        if val_fold not in folds:
            have = (
                f"the folds of its training cases are {', '.join(map(str, folds))}"
                if folds
                else "its training cases have no 'fold'"
            )
            raise InputError(
                "--val-fold",
                f"no training case of {src} is in fold {val_fold} ({have}); give the fold the "
                "models validate on, or --val-fold -1 to keep every training case",
            )
    for e in train:
        pid = str(e.get("patient_id"))
        if val_fold >= 0 and e.get("fold") == val_fold:
            excluded.setdefault(pid, f"validation fold {val_fold}")
        elif pid not in excluded:
            keep.append(e)
    if not keep:
        raise InputError(
            src, f"every training case is left out ({len(excluded)} patients): nothing to bank"
        )
    return keep, excluded, raw


def _case_ids(entries: list[dict]) -> dict[str, dict]:
    """Safe, unique file-name ids of the entries (``case_id`` or the image's name) -> entry."""
    ids: dict[str, dict] = {}
    for i, e in enumerate(entries):
        cid = safe_name(str(e.get("case_id") or Path(e["image"]).name.split(".")[0]))
        while cid in ids:
            cid = safe_name(f"{cid}_{i}")
        ids[cid] = e
    return ids


# --------------------------------------------------------------------------- one case
def _read(path: str, what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    try:
        return sitk_to_canonical(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise InputError(path, f"unreadable {what} ({' '.join(str(e).split())[:200]})") from e


def _load(entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, str]:
    """Canonical ``(hu int16, mask uint8, lung uint8, spacing, lung_source)``, (z, y, x)."""
    hu, spacing = _read(entry["image"], "image")
    if np.issubdtype(hu.dtype, np.floating):
        if not np.isfinite(hu).all():
            raise InputError(entry["image"], "image holds NaN or infinite values")
        hu = np.rint(hu)
    hu = np.clip(hu, -32768, 32767).astype(np.int16)
    if entry.get("mask"):
        mask, _ = _read(entry["mask"], "mask")
        if mask.shape != hu.shape:
            raise GeometryMismatchError(
                entry["mask"], f"mask shape {mask.shape} differs from the image's {hu.shape}"
            )
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
            raise MaskError(
                entry["mask"], f"mask is not binary: values {shown} (expected 0 and 1 only)"
            )
        mask = mask.astype(np.uint8)
    else:
        mask = np.zeros(hu.shape, np.uint8)
    if entry.get("lung_mask"):
        lung, _ = _read(entry["lung_mask"], "lung mask")
        if lung.shape != hu.shape:
            raise GeometryMismatchError(
                entry["lung_mask"], f"lung mask shape {lung.shape} differs from the image's"
            )
        source = "datalist"
    else:
        if hu.ndim == 3 and hu.shape[0] == 1:  # a one-slice volume: its slice
            lung = compute_lung_mask(hu[0], spacing[1:], progress=False)[None]
        else:
            lung = compute_lung_mask(hu, spacing, progress=False)
        source = "computed"
    if hu.ndim == 2:
        hu, mask, lung = hu[None], mask[None], lung[None]
        spacing = (1.0, *spacing)
    return hu, mask, (lung > 0).astype(np.uint8), tuple(float(s) for s in spacing), source


def _measure(
    hu: np.ndarray, comp: np.ndarray, spacing: Sequence[float], shape: Sequence[int]
) -> dict:
    """Measurements of one component (``comp``: bool mask on the grid of ``hu``)."""
    vals = hu[comp].astype(np.float64)
    kind, f = lesion_type(vals)
    d = longest_diameter_mm(comp, spacing)
    idx = np.nonzero(comp)
    edge = any(int(i.min()) == 0 or int(i.max()) == n - 1 for i, n in zip(idx, shape, strict=True))
    return {
        "longest_diameter_mm": round(d, 4),
        "lung_rads": lung_rads_from_diameter(d) if d > 0 else "LR2",
        "type": kind,
        "solid_fraction": round(f, 4),
        "hu_mean": round(float(vals.mean()), 3),
        "hu_median": float(np.median(vals)),
        "hu_p5": float(np.percentile(vals, 5)),
        "hu_p95": float(np.percentile(vals, 95)),
        "n_voxels": int(comp.sum()),
        "touches_edge": bool(edge),
        "centroid": [float(i.mean()) for i in idx],
    }


def case_lesions(
    entry: dict, case_id: str, context_mm: float, size: int, size3d: int
) -> tuple[dict[str, np.ndarray], list[dict], dict]:
    """Every lesion of one case: ``(arrays, rows, info)``.

    ``arrays``: ``image2d``/``mask2d``/``lung2d`` (N2, size, size), ``image3d``/... (N3, size3d,
    size3d, size3d) and the packed native windows (2D lesions first, then 3D); ``rows``: one
    dict per lesion (the :data:`~metalung_monai.synthesis.bank.COLUMNS` that belong to the case,
    plus ``padded``, ``clipped``, ``solid_fraction``, ``lung_source``; ``index`` and
    ``native_index`` local to the case); ``info``: case-level facts (shape, spacing, lung source
    and lung voxels).

    Raises:
        InputError: unreadable files, a mask of another shape than the image, a non-binary mask.
    """
    hu, mask, lung, spacing, lung_source = _load(entry)
    sz, sy, sx = spacing
    base = {
        "source": "real",
        "generator": "",
        "case_id": case_id,
        "patient_id": str(entry.get("patient_id")),
        "section": "training",
        "spacing_z": sz,
        "spacing_y": sy,
        "spacing_x": sx,
        "context_mm": float(context_mm),
        "lung_source": lung_source,
    }
    rows: list[dict] = []
    model: dict[str, list[np.ndarray]] = {n: [] for n in ARRAYS_2D + ARRAYS_3D}
    native: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    win2 = _window_shape(context_mm, (sy, sx))
    win3 = _window_shape(context_mm, spacing)
    if int(np.prod(win3 if hu.shape[0] > 1 else win2)) > MAX_WINDOW_VOXELS:
        raise InputError(
            entry["image"],
            f"a {context_mm:g} mm context window is {win3 if hu.shape[0] > 1 else win2} voxels at "
            f"this voxel size ({sz:g} x {sy:g} x {sx:g} mm), more than {MAX_WINDOW_VOXELS:,}; "
            "give a smaller --context-mm",
        )

    def add(hu_k, lung_k, comp_full, kind, window, center, z_range, slice_index, measure):
        sp = (sy, sx) if kind == "2d" else spacing
        model_shape = (size, size) if kind == "2d" else (size3d,) * 3
        img_w, padded = crop_window(hu_k, center, window, PAD_HU)
        m_w, _ = crop_window(comp_full.astype(np.uint8), center, window, 0)
        l_w, _ = crop_window(lung_k, center, window, 0)
        img_m, m_m, l_m = resize_window(img_w, m_w, l_w, model_shape)
        names = ARRAYS_2D if kind == "2d" else ARRAYS_3D
        for n, a in zip(names, (img_m, m_m, l_m), strict=True):
            model[n].append(a)
        index = sum(1 for r in rows if r["kind"] == kind)
        native.append((img_w, m_w, l_w))
        c = measure["centroid"]
        vox = float(np.prod(sp)) if kind == "3d" else sy * sx * sz
        if kind == "2d":
            area = measure["n_voxels"] * sy * sx
        else:
            area = float(comp_full.sum(axis=(1, 2)).max()) * sy * sx
        rows.append(
            {
                **base,
                "kind": kind,
                "index": index,
                "native_index": len(native) - 1,
                "slice_index": slice_index,
                "z0": z_range[0],
                "z1": z_range[1],
                "centroid_z": c[0] if kind == "3d" else float(slice_index),
                "centroid_y": c[-2],
                "centroid_x": c[-1],
                **{k: v for k, v in measure.items() if k != "centroid"},
                "area_mm2": round(area, 4),
                "volume_mm3": round(measure["n_voxels"] * vox, 4),
                "scale": size / window[-1] if kind == "2d" else size3d / window[-1],
                "model_size": size if kind == "2d" else size3d,
                "padded": padded,
                "clipped": bool(m_w.sum() < measure["n_voxels"]),
            }
        )

    # 2D: every component of every axial slice
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        lab, n = ndi.label(mask[z], structure=_STRUCT[2])
        for i, box in enumerate(ndi.find_objects(lab), start=1):
            comp = lab == i
            center = [(s.start + s.stop - 1) // 2 for s in box]
            meas = _measure(hu[z], comp, (sy, sx), hu[z].shape)
            add(hu[z], lung[z], comp, "2d", win2, center, (int(z), int(z) + 1), int(z), meas)
    # 3D: every component of the volume (cases of more than one slice)
    if hu.shape[0] > 1 and mask.any():
        lab, n = ndi.label(mask, structure=_STRUCT[3])
        for i, box in enumerate(ndi.find_objects(lab), start=1):
            comp = lab == i
            center = [(s.start + s.stop - 1) // 2 for s in box]
            meas = _measure(hu, comp, spacing, hu.shape)
            add(hu, lung, comp, "3d", win3, center, (box[0].start, box[0].stop), -1, meas)
    arrays = empty_arrays(size, (size3d,) * 3)
    for n in ARRAYS_2D + ARRAYS_3D:
        if model[n]:
            arrays[n] = np.stack(model[n])
    arrays.update(pack_native(native))
    info = {
        "case_id": case_id,
        "patient_id": base["patient_id"],
        "shape": list(hu.shape),
        "spacing": list(spacing),
        "lung_source": lung_source,
        "lung_voxels": int(lung.sum()),
        "tumour_voxels": int(mask.sum()),
        "n2d": sum(1 for r in rows if r["kind"] == "2d"),
        "n3d": sum(1 for r in rows if r["kind"] == "3d"),
    }
    return arrays, rows, info


def _case_job(entry: dict, case_id: str, out: str, cfg: dict) -> dict:
    """Worker: extract one case, write ``records/<case>.npz`` atomically, return its record."""
    arrays, rows, info = case_lesions(entry, case_id, cfg["context_mm"], cfg["size"], cfg["size3d"])
    npz = child_path(Path(out) / "records", case_id, ".npz")
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return {"key": cfg["case_key"], **info, "rows": rows}


# --------------------------------------------------------------------------- the bank
def split_patients(patients: Sequence[str], hold_fraction: float, seed: int) -> dict[str, str]:
    """Patient id -> ``"train"`` / ``"hold"``: a seeded, patient-grouped split.

    The sorted ids are permuted with ``SeedSequence([seed, sha1("subset")])``; the first
    ``round(hold_fraction * n)`` are ``hold`` (at least one when ``hold_fraction > 0`` and there
    are two patients or more, and never all of them: ``train`` keeps at least one).
    """
    ids = sorted({str(p) for p in patients})
    n = len(ids)
    n_hold = 0
    if hold_fraction > 0 and n >= 2:
        n_hold = min(max(1, round(hold_fraction * n)), n - 1)
    order = np.random.default_rng(seed_sequence(seed, "subset")).permutation(n)
    hold = {ids[i] for i in order[:n_hold]}
    return {p: ("hold" if p in hold else "train") for p in ids}


def _inputs_of(src: Path, raw: dict) -> list[str]:
    files = [str(src)]
    for section in SECTIONS:
        for e in raw.get(section, []) or []:
            for key in PATH_KEYS:
                if e.get(key):
                    files.append(str((src.parent / e[key]).resolve()))
    return files


def _owned(manifest: dict) -> list[str]:
    owned = list(BANK_FILES)
    for cid in manifest.get("cases", []):
        if isinstance(cid, str) and cid == safe_name(cid):
            owned += [f"records/{cid}.json", f"records/{cid}.npz"]
    return owned


def build_lesion_bank(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    val_fold: int = 0,
    context_mm: float = DEFAULT_CONTEXT_MM,
    size: int = DEFAULT_SIZE,
    size3d: int | None = None,
    hold_fraction: float = DEFAULT_HOLD_FRACTION,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress_bar: bool = True,
    figure: bool = True,
) -> LesionBank:
    """Extract the lesions of ``datalist``'s training cases into a bank folder (module docstring).

    Args:
        datalist: a MONAI datalist JSON (``training`` cases with ``image``/``mask``).
        out_dir: the bank folder (created; must not be or lie around an input).
        val_fold: the validation fold whose patients are left out (default 0, the presets'
            ``val_fold``); ``-1`` keeps every training case.
        context_mm: side of the context window in mm (> 0).
        size: model size of the 2D patches (>= 8); ``size3d``: of the 3D cubes (default
            ``size // 2``).
        hold_fraction: share of the bank's patients in the ``hold`` subset (0 <= f < 1).
        seed: seed of the ``train`` / ``hold`` split.
        workers: processes for the cases (1: in this process).
        overwrite: replace a bank made here with other settings (deletes only its files).
        progress_bar: show a progress bar over the cases.
        figure: write ``overview.png``.

    Returns:
        The bank (as written).

    Raises:
        InputError: bad options (naming them), a datalist without training cases, a validation
            fold no case has, a mask that is not binary or not of the image's shape (naming the
            file), no tumour in the training cases kept, an ``out_dir`` that is an input or holds
            another bank or files this command did not write.
    """
    t0 = time.time()
    size3d = size // 2 if size3d is None else size3d
    for name, value, lo, hi in (
        ("--size", size, 8, 512),
        ("--size3d", size3d, 4, 256),
        ("--workers", workers, 1, 256),
    ):
        if isinstance(value, bool) or int(value) != value or not lo <= value <= hi:
            raise InputError(name, f"must be a whole number from {lo} to {hi}, got {value}")
    if not np.isfinite(context_mm) or not 0 < context_mm <= MAX_CONTEXT_MM:
        raise InputError(
            "--context-mm",
            f"must be a length in mm, > 0 and <= {MAX_CONTEXT_MM:g}, got {context_mm}",
        )
    if not 0 <= hold_fraction < 1:
        raise InputError("--hold-fraction", f"must be in [0, 1), got {hold_fraction}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise InputError("--seed", f"must be a whole number >= 0, got {seed}")
    src = Path(datalist).resolve()
    out = Path(out_dir).resolve()
    entries, excluded, raw = select_training(src, val_fold)
    refuse_overlap(out, _inputs_of(src, raw), "--out")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    extraction = {
        "version": EXTRACTION_VERSION,
        "context_mm": float(context_mm),
        "size": int(size),
        "size3d": int(size3d),
    }
    cfg = {
        **extraction,
        "source": file_fingerprint(src),
        "val_fold": int(val_fold),
        "hold_fraction": float(hold_fraction),
        "seed": int(seed),
    }
    key = fingerprint(cfg)
    case_key = fingerprint(extraction)
    ids = _case_ids(entries)

    manifest = Manifest(out, MANIFEST, what="lesion-bank", hint="remove it or choose another --out")
    old = manifest.read()
    if old is not None and old.get("key") != key:
        if not overwrite:
            shown = {k: old.get(k) for k in cfg if old.get(k) != cfg[k]}
            raise InputError(
                "--out",
                f"{out} holds a lesion bank made with other settings ({shown}); use another "
                "--out, or --overwrite to replace it (only its own files are deleted)",
            )
        n = manifest.remove_owned(_owned(old))
        log.info("--overwrite: removed %d files of the previous bank in %s", n, out)
    elif old is None:
        foreign = [n for n in BANK_FILES + ("records",) if (out / n).exists()]
        if foreign:
            raise InputError(
                "--out",
                f"{out} holds {', '.join(foreign)} that 'metalung lesion-bank' did not write "
                f"(no {MANIFEST}); choose a new or empty folder",
            )
    created = out  # the outermost folder this run creates (None: --out existed)
    while not created.parent.exists():
        created = created.parent
    created = None if out.exists() else created
    (out / "records").mkdir(parents=True, exist_ok=True)
    manifest.write({**cfg, "key": key, "datalist": str(src), "cases": list(ids)})
    n_stale = remove_stale_partials(out, ("", "records"))
    if n_stale:
        log.info("removed %d temporary files of a killed run", n_stale)
    records: dict[str, dict] = {}
    try:
        _extract(out, ids, records, {**extraction, "case_key": case_key}, workers, progress_bar)
        bank = _assemble(out, ids, records, size, size3d)
        if not len(bank):
            raise InputError(
                src,
                f"no tumour voxel in the {len(ids)} training cases kept ({len(excluded)} "
                "patients left out): nothing to bank; check the masks or --val-fold",
            )
    except BaseException as e:
        # a folder this run created goes again when nothing worth resuming is in it: no case
        # finished, or every case finished and the bank is refused (no tumour)
        if created is not None and (not records or isinstance(e, InputError)):
            _remove_created(out, created, list(ids))
        raise
    subset = split_patients(bank.table["patient_id"], hold_fraction, seed)
    bank.table["subset"] = bank.table["patient_id"].map(subset)
    kept_patients = sorted({str(e.get("patient_id")) for e in entries})
    lung_sources = pd.Series([r["lung_source"] for r in records.values()]).value_counts()
    bank.meta = {
        "command": "metalung lesion-bank",
        "datalist": str(src),
        "datalist_sha1": file_fingerprint(src, length=40),
        "sections": ["training"],
        "val_fold": int(val_fold),
        "patients": kept_patients,
        "patients_with_lesions": sorted(subset),
        "excluded_patients": dict(sorted(excluded.items())),
        "cases": len(ids),
        "cases_without_tumour": sorted(c for c, r in records.items() if not r["tumour_voxels"]),
        "lung_mask_source": {str(k): int(v) for k, v in lung_sources.items()},
        "cases_with_empty_lung_mask": sum(1 for r in records.values() if not r["lung_voxels"]),
        "model_size": int(size),
        "model_size_3d": [int(size3d)] * 3,
        "context_mm": float(context_mm),
        "model_pixel_mm": float(context_mm) / size,
        "model_voxel_mm_3d": float(context_mm) / size3d,
        "pad_hu": PAD_HU,
        "hu_rounding": "model-size images: linear interpolation rounded half to even to int16",
        "type_rule": (
            f"f = share of lesion voxels >= {SOLID_HU} HU; solid f >= {SOLID_FRACTION}, "
            f"ground-glass f < {GROUND_GLASS_FRACTION}, part-solid otherwise"
        ),
        "connectivity": {"2d": 8, "3d": 26},
        "seed": int(seed),
        "hold_fraction": float(hold_fraction),
        "hold_rule": "seeded permutation of the sorted patient ids; the first "
        "round(hold_fraction * n) (>= 1, < n) patients are 'hold'",
        "subsets": {s: sorted(p for p, v in subset.items() if v == s) for s in ("train", "hold")},
        "key": key,
    }
    # the bank files: the figure first, bank.json (written last by write_bank) vouches for all
    if figure:
        overview_figure(bank, out / "overview.png")
    bank.meta["seconds"] = round(time.time() - t0, 2)
    write_bank(bank, out)
    return bank


def _extract(
    out: Path, ids: dict, records: dict, job_cfg: dict, workers: int, progress_bar: bool
) -> None:
    """Run the unfinished cases (``records`` gets every case's record, finished ones first)."""
    todo = []
    for cid in ids:
        rec = completed(
            child_path(out / "records", cid, ".json"), job_cfg["case_key"], outputs=[f"{cid}.npz"]
        )
        if rec is not None:
            records[cid] = rec
        else:
            todo.append(cid)
    with progress(
        total=len(ids),
        initial=len(records),
        desc="metalung lesion-bank",
        unit="case",
        enabled=progress_bar,
    ) as bar:

        def done(cid: str, record: dict) -> None:
            mark_done(child_path(out / "records", cid, ".json"), record)
            records[cid] = record
            bar.update(1)

        run_pool(
            _case_job,
            ((cid, (ids[cid], cid, str(out), job_cfg)) for cid in todo),
            workers,
            on_result=done,
        )


def _remove_created(out: Path, created: Path, cases: list[str]) -> None:
    """Delete what this run wrote in the folder it created (its files only), then the folders."""
    remove_owned(out, [MANIFEST, *_owned({"cases": cases})])
    if (out / "records").is_dir() and not any((out / "records").iterdir()):
        (out / "records").rmdir()
    remove_empty_folders(out, created)


def _assemble(out: Path, ids: dict, records: dict, size: int, size3d: int) -> LesionBank:
    """Concatenate the case records (datalist order) into one bank (``subset`` not yet set)."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in ARRAYS_2D + ARRAYS_3D}
    windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows: list[dict] = []
    counts = {"2d": 0, "3d": 0}
    for cid in ids:
        rec = records[cid]
        if not rec["rows"]:
            continue
        npz = child_path(out / "records", cid, ".npz")
        try:
            with np.load(npz, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(
                npz, f"unreadable case record ({e}); delete it to redo the case"
            ) from e
        for n in parts:
            parts[n].append(a[n])
        shp, off = a["native_shape"], a["native_offset"]
        for i in range(len(shp)):
            k = int(np.prod(shp[i]))
            o = int(off[i])
            windows.append(
                tuple(
                    a[n][o : o + k].reshape(shp[i])
                    for n in ("native_image", "native_mask", "native_lung")
                )
            )
        n_native = len(windows) - len(shp)
        for r in rec["rows"]:
            r = dict(r)
            kind = r["kind"]
            r["lesion_id"] = f"{cid}:{kind}:{r['index']:04d}"
            r["index"] = counts[kind] + int(r["index"])
            r["native_index"] = n_native + int(r["native_index"])
            rows.append(r)
        counts["2d"] += len(a["image2d"])
        counts["3d"] += len(a["image3d"])
    arrays = empty_arrays(size, (size3d,) * 3)
    for n, p in parts.items():
        if p:
            arrays[n] = np.concatenate(p)
    arrays.update(pack_native(windows))
    table = pd.DataFrame(rows)
    if len(table):
        table["subset"] = ""
        extra = sorted(c for c in table.columns if c not in COLUMNS)
        table = table[[c for c in COLUMNS if c in table.columns] + extra]
    else:
        table = pd.DataFrame(columns=list(COLUMNS))
    return LesionBank(arrays=arrays, table=table, meta={})


# --------------------------------------------------------------------------- figure
def overview_figure(bank: LesionBank, path: str | os.PathLike, per_class: int = 8) -> Path:
    """``overview.png``: 2D model-size patches by Lung-RADS class (rows), lung window.

    Per class, ``per_class`` lesions evenly spaced in longest diameter (smallest to largest),
    the image in a lung window (-1350..150 HU) with the lesion outline in red, titled with the
    longest diameter and the type (S solid, PS part-solid, GG ground-glass); the row label gives
    the class's count of 2D lesions and of patients.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = bank.table[bank.table["kind"] == "2d"]
    classes = [c for c in LUNG_RADS_CLASSES if (t["lung_rads"] == c).any()] or ["LR2"]
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(1.3 * per_class + 0.8, 1.4 * len(classes) + 0.5),
        squeeze=False,
    )
    image = bank.arrays["image2d"]
    mask = bank.arrays["mask2d"]
    for r, cls in enumerate(classes):
        rows = t[t["lung_rads"] == cls].sort_values(["longest_diameter_mm", "lesion_id"])
        pick = (
            rows.iloc[np.unique(np.linspace(0, len(rows) - 1, per_class).round().astype(int))]
            if len(rows)
            else rows
        )
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c >= len(pick):
                continue
            row = pick.iloc[c]
            i = int(row["index"])
            ax.imshow(image[i], cmap="gray", vmin=-1350, vmax=150, interpolation="nearest")
            if mask[i].any():
                ax.contour(mask[i], levels=[0.5], colors="red", linewidths=0.6)
            short = _TYPE_SHORT.get(row["type"], row["type"])
            ax.set_title(f"{row['longest_diameter_mm']:.1f} mm {short}", fontsize=6)
        axes[r, 0].set_ylabel(
            f"{cls}\n{len(rows)} lesions\n{rows['patient_id'].nunique()} patients", fontsize=7
        )
    meta = bank.meta
    fig.suptitle(
        f"Lesion bank: {len(t)} 2D lesions, window {meta.get('context_mm', '?')} mm -> "
        f"{meta.get('model_size', '?')} px (lung window -1350..150 HU)",
        fontsize=8,
    )
    fig.tight_layout()
    try:
        return save_figure_atomic(fig, path, dpi=110)
    finally:
        plt.close(fig)
