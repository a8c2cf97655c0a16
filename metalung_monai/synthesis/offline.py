"""Offline lesion insertion into healthy lungs: ``metalung synthesize`` (DeepLungSynth part 2).

:func:`synthesize_datalist` reads a datalist of CT cases (volumes or slices, with or without lung
labels), takes their **healthy axial slices** and writes ``per_case`` new 2D cases for each: the
slice with one lesion of a bank inserted into its free lung parenchyma
(:class:`~metalung_monai.transforms.InsertLesiond`: real lesions of ``metalung lesion-bank`` are
TumorCP's copy-paste, a generator's folder written by its ``sample.json`` inserts generated
ones), the lesion's mask as the case's mask.

Which slices (``healthy``):

* ``"slices"`` (the default): every axial slice of a training case that holds at least
  ``min_lung_mm2`` of lung and no tumour, and lies ``gap_mm`` or more from the nearest tumour
  slice of its case: the tumour-free patients' slices and the tumour-free slices of tumour
  patients. Why: healthy lungs are what insertion needs, and both kinds are healthy by their
  annotation; the default cohort has 3 tumour-free training patients outside fold 0 (199
  slices with lung) but 1,190 healthy slices in all (see ``docs/synthesis.md``); the gap keeps
  the slices next to a real tumour out, where an annotation's partial-volume rim may be
  unlabelled tumour.
* ``"patients"``: only the cases whose mask is absent or empty (a tumour-free patient, such as
  the real CPTAC chest series).

Only the ``training`` section is read, without the patients of the validation fold
(``val_fold``, default 0, as ``metalung lesion-bank`` and the training presets) and of any
``test`` or ``validation`` section: a synthetic case keeps its source's ``patient_id`` and
``fold``, so the training bundles never validate or test on one. ``slices_per_case`` keeps at
most that many slices per case, evenly spaced (``None``: all).

Each healthy slice ``(case, z)`` gets ``per_case`` insertions ``k = 0 .. N-1``, each seeded by
``(seed, case, z, k)`` only (:func:`~metalung_monai.utils.runner.case_streams`: one stream
chooses the lesion, one places it), so a slice's outputs do not depend on the other slices, on
``workers`` or on where a run was interrupted. What is inserted is chosen by ``choose``
(:data:`Chooser`): by default :class:`UniformChoice` (a lesion uniform over the bank's
insertable rows, a scale uniform in ``scale_range``, either lung); a balancing rule (left /
right lung, Lung-RADS mix) plugs in the same way, choosing the lesion row and restricting the
insertion to one lung (label 1 right, 2 left: :data:`~metalung_monai.anatomy.RIGHT_LUNG`,
:data:`~metalung_monai.anatomy.LEFT_LUNG`).

No room (no place where the lesion's footprint fits into free lung) or a lesion that vanishes
at the slice's pixel size: the insertion is skipped, counted and recorded (the thesis: 800
healthy slices gave 708 and 705 cases).

Writes into ``out_dir``::

    images/<case>_z<zzzz>_k<k>.nii.gz   int16 HU, the source slice's grid (a one-slice volume
                                        of a 3D source: its position, spacing and direction)
    masks/<same>.nii.gz                 uint8 {0, 1}: exactly the inserted lesion
    lungs/<case>_z<zzzz>.nii.gz         uint8 lung labels of the slice (shared by its k)
    datalist.json                       the source's training cases (paths pointing back, unless
                                        include_original=False), then the new cases; the
                                        validation and test sections carried over unchanged
    insertions.csv                      one row per (slice, k): inserted or why not, lesion id,
                                        bank, generator / source, scale, centre, lung, diameter
                                        and Lung-RADS class of the inserted lesion
    synthesize.png                      before / after of a few healthy slices, mask outlined
    records/<case>.json                 completion record of each source case (resume)
    .synthesize-manifest.json           settings, fingerprint, cases

Resumable and safe as ``metalung augment`` (:mod:`metalung_monai.utils.runner`): every file is
written atomically, a case's record last; a rerun redoes only the cases without a complete
record (or one of a file it lists missing); a folder made with other settings is refused
unless ``overwrite`` (which deletes only what that run wrote); an ``out_dir`` that is, contains
or lies inside the datalist, a file it lists or the lesion folder is refused, as is a folder
holding a ``datalist.json`` this command did not write.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from ..anatomy import LEFT_LUNG, RIGHT_LUNG, longest_diameter_mm, lung_rads_from_diameter
from ..anatomy import free_space_mask as compute_free_space
from ..anatomy import lung_mask as compute_lung_mask
from ..errors import (
    DatalistError,
    GeometryMismatchError,
    InputError,
    LesionTooSmallError,
    MaskError,
)
from ..io.datalist import PATH_KEYS, SECTIONS, datalist_entries, load_datalist, write_datalist
from ..training.data import slice_affine
from ..transforms.insert_lesion import InsertLesiond
from ..transforms.metalung import metalung_records
from ..transforms.metalung.offline import _case_ids, _check_cases
from ..transforms.metalung.offline_case import _rel
from ..utils.atomic import PARTIAL_NAME, atomic_path, save_figure_atomic, write_image_atomic
from ..utils.orientation import canonical_to_sitk, sitk_to_canonical
from ..utils.paths import (
    check_free_space,
    child_path,
    is_safe_name,
    refuse_overlap,
    safe_name,
)
from ..utils.runner import (
    Manifest,
    case_streams,
    completed,
    file_fingerprint,
    fingerprint,
    init_torch_worker,
    mark_done,
    remove_stale_partials,
    run_pool,
)
from ..utils.runner import progress as progress_bar
from .bank import read_bank
from .insertion import resample_lesion

__all__ = [
    "CSV_COLUMNS",
    "Chooser",
    "DEFAULT_GAP_MM",
    "DEFAULT_MIN_LUNG_MM2",
    "HEALTHY_MODES",
    "HealthySlice",
    "InsertionChoice",
    "MANIFEST",
    "MAX_PER_CASE",
    "UniformChoice",
    "healthy_slice_indices",
    "resolve_lesions",
    "synthesize_case",
    "synthesize_datalist",
]

log = logging.getLogger(__name__)

MANIFEST = ".synthesize-manifest.json"
#: most insertions per healthy slice (each is a full slice on disk)
MAX_PER_CASE = 100
MAX_WORKERS = 256
#: largest ``scale`` (the thesis drew 1-4)
MAX_SCALE = 8.0
#: which slices are healthy: see the module docstring
HEALTHY_MODES = ("slices", "patients")
#: a healthy slice of a tumour patient lies at least this far (mm) from its nearest tumour slice
DEFAULT_GAP_MM = 10.0
#: a slice "contains lung" with at least this much lung (mm^2; 10 cm^2)
DEFAULT_MIN_LUNG_MM2 = 1000.0
#: columns of ``insertions.csv``, in order
CSV_COLUMNS = (
    "case_id",
    "source_case",
    "patient_id",
    "slice_index",
    "k",
    "inserted",
    "reason",
    "bank",
    "lesion_id",
    "source",
    "generator",
    "lesion_lung_rads",
    "scale",
    "seed",
    "centre_y",
    "centre_x",
    "lung",
    "diameter_mm",
    "lung_rads",
    "inserted_voxels",
    "footprint_voxels",
)
_TOP_FILES = ("datalist.json", "insertions.csv", "synthesize.png")
_SLICE_DIRS = ("images", "masks", "lungs")
_SUBDIRS = (*_SLICE_DIRS, "records")
_SIDE_NAMES = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}
#: bytes per new case for its datalist entry, record and CSV row (added to the image estimate)
_ENTRY_BYTES = 3072


# --------------------------------------------------------------------------- choosing
@dataclass(frozen=True)
class HealthySlice:
    """One healthy slice, as a :data:`Chooser` sees it.

    Attributes:
        case_id: the source case (safe file name). slice_index: canonical ``z`` (0 for a 2D case).
        patient_id: the source's patient. spacing: ``(y, x)`` mm.
        lung_mm2: lung area on the slice, ``(right, left)`` in mm^2.
    """

    case_id: str
    slice_index: int
    patient_id: str
    spacing: tuple[float, float]
    lung_mm2: tuple[float, float]


@dataclass(frozen=True)
class InsertionChoice:
    """What one insertion puts where: ``index`` a row of the bank's insertable lesions
    (:func:`~metalung_monai.transforms.insert_lesion.lesion_choices`), ``scale`` its size
    factor (1: its real size in mm), ``side`` the lung it must go into (``RIGHT_LUNG`` 1,
    ``LEFT_LUNG`` 2; ``None``: either)."""

    index: int
    scale: float = 1.0
    side: int | None = None


#: ``choose(slice, k, rng) -> InsertionChoice``: the choice of insertion ``k`` of a healthy
#: slice, drawing only from ``rng`` (seeded by ``(seed, case, slice, k)``). It may carry a
#: ``config`` attribute (JSON): part of the run's fingerprint, so changing the rule redoes the
#: cases. It must be picklable for ``workers > 1`` (a module-level class).
Chooser = Callable[[HealthySlice, int, np.random.Generator], InsertionChoice]


class UniformChoice:
    """The default :data:`Chooser`: a lesion uniform over the ``n_lesions`` rows, a scale
    uniform in ``scale_range``, either lung.

    ``scale_range=(1, 1)`` (the default) keeps each lesion's real size in mm, so the inserted
    Lung-RADS mix is the bank's (the class is a diameter); ``(1, 4)`` is the thesis' random
    enlargement of its 64-pixel patches.
    """

    def __init__(self, n_lesions: int, scale_range: Sequence[float] = (1.0, 1.0)) -> None:
        if int(n_lesions) < 1:
            raise InputError("n_lesions", f"must be >= 1, got {n_lesions}")
        lo, hi = (float(v) for v in scale_range)
        self.n = int(n_lesions)
        self.scale_range = (lo, hi)

    @property
    def config(self) -> dict:
        return {"rule": "uniform", "scale_range": list(self.scale_range)}

    def __call__(self, sl: HealthySlice, k: int, rng: np.random.Generator) -> InsertionChoice:
        index = int(rng.integers(self.n))
        return InsertionChoice(index=index, scale=float(rng.uniform(*self.scale_range)))


class BalancedChoice:
    """A :data:`Chooser` for ``--balance``: the inserted cases approach target shares of lung
    side (``"lung"``: equal right / left) or Lung-RADS class (``"lung-rads"``: uniform over the
    classes the bank holds), each insertion drawn with the target's probabilities.

    The draw is stateless (one insertion's choice depends only on its own seed, so resuming and
    ``workers`` change nothing); with many more inserted cases than tumour cases in the source
    (the default cohort: 1,123 against 20) the whole training set approaches the target too, and
    ``balance.csv`` reports both. ``"lung"``: a lesion uniform over the bank, the side drawn
    50 / 50 among the slice's lungs that have area; ``"lung-rads"``: a class drawn uniformly,
    then a lesion of that class, either lung. Large lesions find no room more often, so the
    measured shares fall short of the target where they are skipped.

    Args:
        mode: ``"lung"`` or ``"lung-rads"``.
        classes: the Lung-RADS class of each insertable bank row, in row order.
        scale_range: the size factor's range, as :class:`UniformChoice`.
    """

    def __init__(
        self, mode: str, classes: Sequence[str], scale_range: Sequence[float] = (1.0, 1.0)
    ) -> None:
        from ..anatomy.balance import check_mode, default_target

        self.mode = check_mode(mode)
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise InputError("lesions", "no insertable lesion to balance")
        lo, hi = (float(v) for v in scale_range)
        self.scale_range = (lo, hi)
        counts = {c: self.classes.count(c) for c in set(self.classes)}
        self.target = default_target(mode, counts)
        self.rows = {c: [i for i, x in enumerate(self.classes) if x == c] for c in self.target}
        if mode == "lung-rads" and not any(self.rows.values()):
            raise InputError("--balance", f"the bank holds none of the classes {list(self.target)}")

    @property
    def config(self) -> dict:
        return {
            "rule": "balance",
            "mode": self.mode,
            "target": self.target,
            "scale_range": list(self.scale_range),
        }

    def __call__(self, sl: HealthySlice, k: int, rng: np.random.Generator) -> InsertionChoice:
        scale = float(rng.uniform(*self.scale_range))
        if self.mode == "lung":
            sides = [(RIGHT_LUNG, "right"), (LEFT_LUNG, "left")]
            ok = [(lab, name) for (lab, name), a in zip(sides, sl.lung_mm2) if a > 0] or sides
            p = np.array([self.target[name] for _, name in ok], float)
            lab = ok[int(rng.choice(len(ok), p=p / p.sum()))][0]
            return InsertionChoice(int(rng.integers(len(self.classes))), scale, lab)
        cats = [c for c in self.target if self.rows[c]]
        p = np.array([self.target[c] for c in cats], float)
        c = cats[int(rng.choice(len(cats), p=p / p.sum()))]
        return InsertionChoice(int(self.rows[c][int(rng.integers(len(self.rows[c])))]), scale)


def balance_report(
    datalist: str | os.PathLike, csv: str | os.PathLike, mode: str, val_fold
) -> pd.DataFrame:
    """Before / after table of a ``synthesize`` run: tumour cases per lung side or Lung-RADS
    class among the source's training cases outside ``val_fold`` (before) and with the inserted
    cases of ``insertions.csv`` added (after), beside the target
    (:func:`~metalung_monai.anatomy.balance.balance_table`)."""
    from ..anatomy.balance import balance_table, default_target, entry_facts

    before: dict[str, int] = {}
    for e in datalist_entries(datalist, "training"):
        if val_fold is not None and e.get("fold") == val_fold:
            continue
        f = entry_facts(e)
        c = f.category(mode) if f.lung_rads not in (None, "LR1") else None
        if c:
            before[c] = before.get(c, 0) + 1
    rows = pd.read_csv(csv)
    rows = rows[rows["inserted"].astype(bool)]
    col = "lung" if mode == "lung" else "lung_rads"
    after = dict(before)
    for c, n in rows[col].astype(str).value_counts().items():
        after[c] = after.get(c, 0) + int(n)
    target = default_target(mode, after)
    return balance_table(before, after, target, mode)


def _check_choice(c: Any, n: int, where: str) -> InsertionChoice:
    if not isinstance(c, InsertionChoice):
        raise InputError("choose", f"returned {type(c).__name__} for {where}, not InsertionChoice")
    if isinstance(c.index, bool) or int(c.index) != c.index or not 0 <= c.index < n:
        raise InputError("choose", f"lesion index {c.index!r} for {where} is not in [0, {n})")
    if not (math.isfinite(float(c.scale)) and 0 < float(c.scale) <= MAX_SCALE):
        raise InputError("choose", f"scale {c.scale!r} for {where} is not in (0, {MAX_SCALE:g}]")
    if c.side not in (None, RIGHT_LUNG, LEFT_LUNG):
        raise InputError(
            "choose", f"side {c.side!r} for {where}: 1 (right lung), 2 (left) or None (either)"
        )
    return c


# --------------------------------------------------------------------------- lesions
def resolve_lesions(path: str | os.PathLike) -> Path:
    """The lesion folder of ``--lesions``: a bank folder (``bank.json``: ``metalung lesion-bank``
    or a generator's ``generated/``), or a generator bundle's output folder holding
    ``generated/``.

    Raises:
        InputError: naming ``path`` when neither holds a ``bank.json``.
    """
    p = Path(path)
    if (p / "bank.json").is_file():
        return p.resolve()
    if (p / "generated" / "bank.json").is_file():
        return (p / "generated").resolve()
    what = "no such folder" if not p.exists() else "no bank.json, nor generated/bank.json"
    raise InputError(
        p,
        f"not a lesion folder ({what}): give a 'metalung lesion-bank' folder or the generated/ "
        "folder a generator bundle's sample.json wrote",
    )


def _bank_key(bank_dir: Path) -> str:
    return fingerprint({n: file_fingerprint(bank_dir / n) for n in ("bank.npz", "lesions.csv")})


@lru_cache(maxsize=2)
def _inserter(
    bank_dir: str, bank_key: str, margin_mm: float, edge_px: float, sigma_px: float
) -> tuple[InsertLesiond, np.ndarray, np.ndarray, str]:
    """One :class:`InsertLesiond` per process and bank (reading the bank once), its 2D patches
    and the bank's name in the records (``"real"`` or the generators')."""
    bank = read_bank(bank_dir)
    bank.meta.setdefault("path", bank_dir)
    t = InsertLesiond(
        keys=("image", "mask"),
        bank=bank,
        lung_key="lung_mask",
        margin_mm=margin_mm,
        edge_px=edge_px,
        sigma_px=sigma_px,
        free_key="free_space",
    )
    if len(t.choices) == 0:  # a bank of 3D lesions only: nothing for a slice
        raise InputError(
            bank_dir, "no 2D lesions to insert (subset 'train'): synthesize fills 2D slices"
        )
    table = t.choices.table
    if "source" in table.columns and (table["source"] == "generated").all():
        name = "+".join(sorted({str(g) for g in table["generator"] if str(g)})) or "generated"
    else:
        name = "real"
    t.name = name
    image2d, mask2d, _ = t.choices.patches("2d")
    return t, image2d, mask2d, name


# --------------------------------------------------------------------------- one case
@dataclass
class _Case:
    """A source case in the canonical layout: ``hu`` int16, ``mask`` / ``lungs`` uint8
    ``(z, y, x)`` (a 2D case as one slice), ``spacing`` ``(z, y, x)`` mm, and what is needed to
    write a slice on the source's grid."""

    hu: np.ndarray
    mask: np.ndarray
    lungs: np.ndarray | None
    spacing: tuple[float, float, float]
    reference: Any  # the SimpleITK image as read
    oriented: Any  # 3D: the image in LPS order (DICOMOrient); 2D: None
    code: str  # 3D: the source's orientation code
    lung_source: str


def _read(path: str, what: str):
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(path, f"unreadable {what} ({' '.join(str(e).split())[:200]})") from e


def _canonical(image, dim: int) -> np.ndarray:
    if dim == 2:
        return sitk_to_canonical(image)[0][None]
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def _load_case(entry: dict, lungs: bool = True) -> _Case:
    """Read a datalist entry (absolute paths) into a :class:`_Case`.

    Without a ``mask`` the mask is empty; without a ``lung_mask`` the lung labels are computed
    (:func:`~metalung_monai.anatomy.lung_mask` on the whole volume) when ``lungs``.
    """
    ref = _read(entry["image"], "image")
    dim = ref.GetDimension()
    if dim not in (2, 3):
        raise InputError(entry["image"], f"expected a 2D or 3D image, got {dim} dimensions")
    if dim == 2:
        arr, sp = sitk_to_canonical(ref)
        hu, spacing, oriented, code = arr[None], (1.0, *sp), None, ""
    else:
        oriented = sitk.DICOMOrient(ref, "LPS")
        hu = sitk.GetArrayFromImage(oriented)
        spacing = tuple(float(s) for s in reversed(oriented.GetSpacing()))
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ref.GetDirection())
    if not np.issubdtype(hu.dtype, np.integer):
        if not np.isfinite(hu).all() or not np.array_equal(hu, np.rint(hu)):
            raise InputError(
                entry["image"], "HU must be integers (convert the file with 'metalung convert')"
            )
    if hu.min() < -32768 or hu.max() > 32767:
        raise InputError(entry["image"], "HU outside the int16 range")
    hu = hu.astype(np.int16)
    if entry.get("mask"):
        mask = _canonical(_read(entry["mask"], "mask"), dim)
        if mask.shape != hu.shape:
            raise GeometryMismatchError(
                entry["mask"], f"mask shape {mask.shape} differs from the image's {hu.shape}"
            )
        if not np.isin(np.unique(mask), (0, 1)).all():
            raise MaskError(entry["mask"], "mask is not binary (expected 0 and 1 only)")
        mask = mask.astype(np.uint8)
    else:
        mask = np.zeros(hu.shape, np.uint8)
    lung, source = None, "none"
    if entry.get("lung_mask"):
        lung = _canonical(_read(entry["lung_mask"], "lung mask"), dim)
        if lung.shape != hu.shape:
            raise GeometryMismatchError(
                entry["lung_mask"], f"lung mask shape {lung.shape} differs from the image's"
            )
        if not np.isin(np.unique(lung), (0, RIGHT_LUNG, LEFT_LUNG)).all():
            raise MaskError(
                entry["lung_mask"], "lung labels must be 0, 1 (right lung) and 2 (left lung)"
            )
        lung, source = lung.astype(np.uint8), "datalist"
    elif lungs:
        if hu.shape[0] == 1:  # a slice (or a one-slice volume): lungs of the slice
            lung = compute_lung_mask(hu[0], spacing[1:], progress=False)[None]
        else:
            lung = compute_lung_mask(hu, spacing, progress=False)
        source = "computed"
    return _Case(hu, mask, lung, spacing, ref, oriented, code, source)  # type: ignore[arg-type]


def _slice_image(case: _Case, z: int, arr: np.ndarray, dtype) -> Any:
    """Canonical slice ``z`` as a ``SimpleITK.Image`` on the source's grid: a 2D source's own
    grid, or the one-slice volume of a 3D source at ``z`` (in the source's axis order)."""
    if case.oriented is None:
        return canonical_to_sitk(np.asarray(arr, dtype=dtype), case.reference)
    ref = case.oriented[:, :, int(z) : int(z) + 1]
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr, dtype=dtype)[None]))
    img.CopyInformation(ref)
    return sitk.DICOMOrient(img, case.code) if case.code != "LPS" else img


def healthy_slice_indices(
    mask: np.ndarray,
    lungs: np.ndarray,
    spacing: Sequence[float],
    healthy: str = "slices",
    gap_mm: float = DEFAULT_GAP_MM,
    min_lung_mm2: float = DEFAULT_MIN_LUNG_MM2,
    slices_per_case: int | None = None,
) -> tuple[list[int], dict[str, int]]:
    """The healthy slices of one case (module docstring) and why the others are not.

    Args:
        mask, lungs: canonical ``(z, y, x)`` tumour mask and lung labels.
        spacing: ``(z, y, x)`` mm.
        healthy, gap_mm, min_lung_mm2, slices_per_case: see :func:`synthesize_datalist`.

    Returns:
        ``(indices, counts)``: the slice indices (ascending) and ``{"slices", "with_lung",
        "tumour" (on or within gap_mm of a tumour slice, or the whole case in "patients" mode),
        "healthy", "used"}``.
    """
    sz, sy, sx = (float(s) for s in spacing)
    lung_area = (lungs > 0).sum(axis=(1, 2)) * sy * sx
    with_lung = lung_area >= float(min_lung_mm2)
    tumour_z = np.flatnonzero(mask.any(axis=(1, 2)))
    near = np.zeros(mask.shape[0], bool)
    if len(tumour_z):
        if healthy == "patients":
            near[:] = True
        else:
            dist = np.abs(np.arange(mask.shape[0])[:, None] - tumour_z[None, :]).min(axis=1) * sz
            near = dist < float(gap_mm) if gap_mm > 0 else np.isin(np.arange(len(near)), tumour_z)
    ok = np.flatnonzero(with_lung & ~near)
    used = ok
    if slices_per_case is not None and len(ok) > slices_per_case:
        used = ok[np.unique(np.linspace(0, len(ok) - 1, int(slices_per_case)).round().astype(int))]
    counts = {
        "slices": int(mask.shape[0]),
        "with_lung": int(with_lung.sum()),
        "tumour": int((with_lung & near).sum()),
        "healthy": int(len(ok)),
        "used": int(len(used)),
    }
    return [int(z) for z in used], counts


def _stem(case_id: str, z: int, k: int | None = None) -> str:
    return safe_name(f"{case_id}_z{z:04d}" + ("" if k is None else f"_k{k}"))


def synthesize_case(
    entry: dict, case_id: str, out_dir: str, cfg: dict, choose: Chooser | None = None
) -> dict:
    """Insert lesions into the healthy slices of one case; returns its record (also written to
    ``records/<case_id>.json``, last).

    ``cfg`` is :func:`synthesize_datalist`'s configuration (``key``, ``bank_dir``, ``bank_key``,
    ``per_case``, ``seed``, ``scale_range``, ``healthy``, ``gap_mm``, ``min_lung_mm2``,
    ``slices_per_case``, ``margin_mm``, ``edge_px``, ``sigma_px``); ``choose`` the
    :data:`Chooser` (``None``: :class:`UniformChoice` over ``scale_range``).
    """
    out = Path(out_dir)
    t, image2d, mask2d, bank_name = _inserter(
        cfg["bank_dir"], cfg["bank_key"], cfg["margin_mm"], cfg["edge_px"], cfg["sigma_px"]
    )
    n_lesions = len(t.choices)
    choose = choose or UniformChoice(n_lesions, cfg["scale_range"])
    table = t.choices.table
    case = _load_case(entry)
    lungs = case.lungs
    assert lungs is not None
    zs, counts = healthy_slice_indices(
        case.mask,
        lungs,
        case.spacing,
        cfg["healthy"],
        cfg["gap_mm"],
        cfg["min_lung_mm2"],
        cfg["slices_per_case"],
    )
    sy, sx = case.spacing[1:]
    pixel_mm = t.pixel_mm
    patient = str(entry.get("patient_id", case_id))
    keep = {
        k: v
        for k, v in entry.items()
        if k not in (*PATH_KEYS, "case_id", "source_case", "augmentation", "lung_rads")
        and k not in ("shape", "spacing", "slice_index", "split")
    }
    if case.oriented is None:
        shape, spacing = [int(n) for n in case.hu.shape[1:]], [float(sy), float(sx)]
    else:
        shape, spacing = [1, *(int(n) for n in case.hu.shape[1:])], [float(s) for s in case.spacing]
    aff = slice_affine((sy, sx))
    entries, rows = [], []
    for z in zs:
        hu, lung = case.hu[z], lungs[z]
        info = HealthySlice(
            case_id,
            int(z),
            patient,
            (float(sy), float(sx)),
            (
                float((lung == RIGHT_LUNG).sum() * sy * sx),
                float((lung == LEFT_LUNG).sum() * sy * sx),
            ),
        )
        free = compute_free_space(hu, lung, (sy, sx), min_distance_mm=cfg["margin_mm"])
        lung_rel = None
        for k in range(cfg["per_case"]):
            rng_choice, rng_place = case_streams(cfg["seed"], f"{case_id}:{z}:{k}", 2)
            c = _check_choice(choose(info, k, rng_choice), n_lesions, f"{case_id} slice {z}")
            seed_k = int(rng_place.integers(2**31 - 1))
            row_b = table.iloc[int(c.index)]
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(
                source_case=case_id,
                patient_id=patient,
                slice_index=int(z),
                k=k,
                inserted=False,
                bank=bank_name,
                lesion_id=str(row_b["lesion_id"]),
                source=str(row_b.get("source", "") or ""),
                generator=str(row_b.get("generator", "") or ""),
                lesion_lung_rads=str(row_b["lung_rads"]),
                scale=float(c.scale),
                seed=seed_k,
                lung="" if c.side is None else _SIDE_NAMES[c.side],
            )
            rows.append(row)
            try:  # a lesion smaller than a pixel of this slice: a recorded skip, not a failure
                resample_lesion(image2d[c.index], mask2d[c.index], pixel_mm, (sy, sx), c.scale)
            except LesionTooSmallError:
                row["reason"] = "lesion vanishes at the slice's pixel size"
                continue
            fr = free if c.side is None else free & (lung == c.side)
            data = {
                "image": MetaTensor(torch.from_numpy(hu[None].copy()), affine=aff.clone()),
                "mask": MetaTensor(torch.zeros((1, *hu.shape), dtype=torch.uint8), affine=aff),
                "lung_mask": torch.from_numpy(lung[None].copy()),
                "free_space": torch.from_numpy(fr[None].astype(np.uint8)),
            }
            t.index, t.scale, t.seed = int(c.index), float(c.scale), seed_k
            res = t(data)
            rec = metalung_records(res["image"])[-1]
            if not rec.get("applied"):
                row["reason"] = str(rec.get("reason", "not applied"))
                continue
            img_out = res["image"].numpy()[0].astype(np.int16)
            m_out = (res["mask"].numpy()[0] > 0).astype(np.uint8)
            stem = _stem(case_id, z, k)
            src = f"case_id {case_id!r}"
            img_path = child_path(out / "images", stem, ".nii.gz", source=src)
            mask_path = child_path(out / "masks", stem, ".nii.gz", source=src)
            if lung_rel is None:
                lung_path = child_path(out / "lungs", _stem(case_id, z), ".nii.gz", source=src)
                write_image_atomic(_slice_image(case, z, lung, np.uint8), lung_path)
                lung_rel = _rel(lung_path, out)
            write_image_atomic(_slice_image(case, z, img_out, np.int16), img_path)
            write_image_atomic(_slice_image(case, z, m_out, np.uint8), mask_path)
            diameter = float(longest_diameter_mm(m_out, (sy, sx)))
            cls = lung_rads_from_diameter(diameter)
            cy, cx = (int(v) for v in rec["centre"])
            row.update(
                case_id=stem,
                inserted=True,
                centre_y=cy,
                centre_x=cx,
                lung=_SIDE_NAMES.get(int(lung[cy, cx]), ""),
                diameter_mm=round(diameter, 3),
                lung_rads=cls,
                inserted_voxels=int(rec["inserted_voxels"]),
                footprint_voxels=int(rec["footprint_voxels"]),
            )
            e = dict(keep)
            e.update(
                image=_rel(img_path, out),
                mask=_rel(mask_path, out),
                lung_mask=lung_rel,
                patient_id=patient,
                case_id=stem,
                source_case=case_id,
                slice_index=int(z),
                lung_rads=cls,
                split="train",
                spacing=spacing,
                shape=shape,
                augmentation={
                    "op": "insert_lesion",
                    "params": {
                        **{k2: v2 for k2, v2 in rec.items() if k2 not in ("op", "lung_rads")},
                        "lesion_lung_rads": rec.get("lung_rads"),
                        "source": row["source"],
                        "diameter_mm": row["diameter_mm"],
                        "lung": row["lung"],
                    },
                },
            )
            entries.append(e)
    record = {
        "case_id": case_id,
        "config": cfg["key"],
        "lung_source": case.lung_source,
        "counts": counts,
        "entries": entries,
        "rows": rows,
    }
    mark_done(child_path(out / "records", case_id, ".json"), record)
    return record


# --------------------------------------------------------------------------- the folder
def _inputs_of(src: Path, raw: dict) -> list[str]:
    base = src.parent
    files = [str(src)]
    for section in SECTIONS:
        for e in raw.get(section, []) or []:
            files += [str((base / e[k]).resolve()) for k in PATH_KEYS if e.get(k)]
    return files


def _read_json(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _owned_files(out: Path, manifest: dict) -> list[str]:
    """Files (relative to ``out``) that the run described by ``manifest`` wrote: its fixed
    files, its cases' records and the slice files they list, and every slice file (or
    ``.partial`` leftover) named after one of its cases. Nothing else."""
    owned: set[str] = {MANIFEST, *_TOP_FILES}
    cases = [c for c in manifest.get("cases", []) if is_safe_name(c)]
    for cid in cases:
        owned.add(f"records/{cid}.json")
        for e in _read_json(out / "records" / f"{cid}.json").get("entries", []):
            for key in PATH_KEYS:
                rel = e.get(key) if isinstance(e, dict) else None
                parts = rel.split("/") if isinstance(rel, str) else []
                if (
                    len(parts) == 2
                    and parts[0] in _SLICE_DIRS
                    and parts[1].endswith(".nii.gz")
                    and is_safe_name(parts[1][: -len(".nii.gz")])
                ):
                    owned.add(rel)
    prefixes = tuple(f"{cid}_z" for cid in cases)
    for sub in _SLICE_DIRS:
        if (out / sub).is_dir():
            for f in os.listdir(out / sub):
                part = PARTIAL_NAME.fullmatch(f)
                stem = part["stem"] if part else f
                if prefixes and stem.startswith(prefixes):
                    owned.add(f"{sub}/{f}")
    if (out / "records").is_dir():
        for f in os.listdir(out / "records"):
            part = PARTIAL_NAME.fullmatch(f)
            if part and part["stem"] in cases:
                owned.add(f"records/{f}")
    return sorted(owned)


def _finished(out: Path, cid: str, key: str) -> dict | None:
    """The record of a finished case: written by a run of this ``key`` and every file it lists
    present (a deleted or half-copied output makes the case unfinished: it is redone)."""
    rec = completed(child_path(out / "records", cid, ".json"), key, key_field="config")
    if rec is None:
        return None
    for e in rec.get("entries", []):
        if not all((out / e[k]).is_file() for k in ("image", "mask", "lung_mask") if e.get(k)):
            return None
    return rec


def _select(src: Path, raw: dict, val_fold: int | None) -> tuple[list[dict], dict[str, str]]:
    """The training entries that may give healthy slices, and the patients left out (why)."""
    train = datalist_entries(src, "training")
    if not train:
        raise DatalistError(
            src, "no 'training' cases: healthy slices are taken from training cases only"
        )
    excluded: dict[str, str] = {}
    for section in ("test", "validation"):
        for e in raw.get(section, []) or []:
            excluded.setdefault(str(e["patient_id"]), f"{section} section")
    if val_fold is not None:
        folds = sorted({int(e["fold"]) for e in train if e.get("fold") is not None})
        if val_fold not in folds:
            have = f"folds {', '.join(map(str, folds))}" if folds else "no 'fold'"
            raise InputError(
                "--val-fold",
                f"no training case of {src} is in fold {val_fold} (its training cases have "
                f"{have}); give the fold the models validate on, or -1 to use every case",
            )
    keep = []
    for e in train:
        pid = str(e["patient_id"])
        if val_fold is not None and e.get("fold") == val_fold:
            excluded.setdefault(pid, f"validation fold {val_fold}")
        elif pid not in excluded:
            keep.append(e)
    if not keep:
        raise InputError(
            src,
            f"every training case is left out ({len(excluded)} patients: validation fold or "
            "test); a healthy datalist of one patient has it in fold 0: use --val-fold -1",
        )
    return keep, excluded


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer, float))
        or not math.isfinite(float(value))
        or int(value) != value
        or value < lo
        or (hi is not None and value > hi)
    ):
        rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise InputError(name, f"must be a whole number {rng}, got {value!r}")
    return int(value)


def _check_mm(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v >= 0):
        raise InputError(name, f"must be a finite length >= 0, got {value!r}")
    return v


def synthesize_datalist(
    datalist: str | os.PathLike,
    lesions: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    per_case: int = 1,
    seed: int = 0,
    scale_range: Sequence[float] = (1.0, 1.0),
    healthy: str = "slices",
    gap_mm: float = DEFAULT_GAP_MM,
    min_lung_mm2: float = DEFAULT_MIN_LUNG_MM2,
    slices_per_case: int | None = None,
    val_fold: int | None = 0,
    margin_mm: float = 1.0,
    edge_px: float = 2.0,
    sigma_px: float = 1.0,
    include_original: bool = True,
    choose: Chooser | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    figure: bool = True,
) -> dict:
    """Insert lesions into the healthy slices of ``datalist`` (see the module docstring).

    Args:
        datalist: the healthy data: a datalist (``metalung phantom`` / ``convert``) of volumes
            or slices, with or without ``lung_mask`` (computed when absent).
        lesions: a lesion bank folder or a generator's generated folder (:func:`resolve_lesions`).
        out_dir: the output folder (created); apart from every input.
        per_case: insertions per healthy slice (1 .. :data:`MAX_PER_CASE`).
        seed: base seed (>= 0).
        scale_range: ``(low, high)`` size factor of the default chooser (1: real size).
        healthy: ``"slices"`` or ``"patients"`` (:data:`HEALTHY_MODES`).
        gap_mm: distance a healthy slice of a tumour patient keeps from its tumour slices.
        min_lung_mm2: lung area a slice needs.
        slices_per_case: at most this many healthy slices per case, evenly spaced (``None``: all).
        val_fold: validation fold whose patients are left out (``None``: none).
        margin_mm, edge_px, sigma_px: :class:`~metalung_monai.transforms.InsertLesiond`'s.
        include_original: list the source's training cases in the new datalist before the new
            ones (an expanded training set, as ``metalung augment``).
        choose: the :data:`Chooser` (``None``: :class:`UniformChoice` over ``scale_range``).
        workers: processes (1: in this process).
        overwrite: replace a folder made with other settings (only its own files are deleted).
        progress: progress bar over the cases. figure: draw ``synthesize.png``.

    Returns:
        A summary: ``datalist``, ``csv``, ``figure`` (paths), ``cases``, ``cases_run`` (this
        call), ``slices`` (healthy slices used), ``requested``, ``inserted``, ``skipped`` (reason
        -> count), ``lung_rads`` (class -> inserted count), ``lungs`` (right / left counts),
        ``excluded_patients``, ``seconds``.

    Raises:
        DatalistError / InputError: a bad option (named), a bad datalist or lesion folder, a bank
            without 2D lesions, an ``out_dir`` that overlaps an input or holds other files or
            another run's settings, no healthy slice at all; a case that cannot be read (named).
    """
    t0 = time.time()
    per_case = _check_int("--per-case", per_case, 1, MAX_PER_CASE)
    seed = _check_int("--seed", seed, 0)
    workers = _check_int("--workers", workers, 1, MAX_WORKERS)
    if slices_per_case is not None:
        slices_per_case = _check_int("--slices-per-case", slices_per_case, 1)
    if healthy not in HEALTHY_MODES:
        raise InputError("--slices", f"must be one of {', '.join(HEALTHY_MODES)}, got {healthy!r}")
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise InputError("--scale", f"must be two numbers LOW HIGH, got {scale_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= MAX_SCALE):
        raise InputError("--scale", f"must be 0 < LOW <= HIGH <= {MAX_SCALE:g}, got {lo}, {hi}")
    gap_mm, min_lung_mm2 = _check_mm("--gap-mm", gap_mm), _check_mm("--min-lung-mm2", min_lung_mm2)
    margin_mm = _check_mm("--margin-mm", margin_mm)
    if val_fold is not None:
        val_fold = _check_int("--val-fold", val_fold, 0)
    src = Path(datalist).resolve()
    out = Path(out_dir).resolve()
    raw = load_datalist(src)
    entries, excluded = _select(src, raw, val_fold)
    bank_dir = resolve_lesions(lesions)
    refuse_overlap(out, [*_inputs_of(src, raw), str(bank_dir)], "--out")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    bank_key = _bank_key(bank_dir)
    t, *_ = _inserter(str(bank_dir), bank_key, margin_mm, float(edge_px), float(sigma_px))
    if choose is None:
        choose = UniformChoice(len(t.choices), (lo, hi))
    try:
        json.dumps(raw, allow_nan=False)
    except ValueError as e:
        raise DatalistError(src, "holds NaN or infinity (not valid JSON for most readers)") from e
    cfg: dict[str, Any] = {
        "source": file_fingerprint(src),
        "bank": bank_key,
        "per_case": per_case,
        "seed": seed,
        "scale_range": [lo, hi],
        "healthy": healthy,
        "gap_mm": gap_mm,
        "min_lung_mm2": min_lung_mm2,
        "slices_per_case": slices_per_case,
        "val_fold": val_fold,
        "margin_mm": margin_mm,
        "edge_px": float(edge_px),
        "sigma_px": float(sigma_px),
        "choose": getattr(choose, "config", type(choose).__name__),
    }
    cfg["key"] = fingerprint(cfg)
    ids = _case_ids(entries)

    manifest = Manifest(out, MANIFEST, what="synthesize", hint="remove it or choose another --out")
    old = manifest.read()
    stale: list[str] = []
    if old is not None and old.get("key") != cfg["key"]:
        if not overwrite:
            shown = {k: old.get(k) for k in cfg if k != "key" and old.get(k) != cfg[k]}
            raise InputError(
                "--out",
                f"{out} holds lesion insertions made with other settings ({shown}); use another "
                "--out, or --overwrite to replace them (only their own files are deleted)",
            )
        stale = _owned_files(out, old)
    elif old is None:
        foreign = [n for n in (*_TOP_FILES, "records") if (out / n).exists()]
        if foreign:
            raise InputError(
                "--out",
                f"{out} holds {', '.join(foreign)} that 'metalung synthesize' did not write (no "
                f"{MANIFEST}); choose a new or empty folder",
            )
    records: dict[str, dict] = {}
    pending: list[str] = []
    for cid in ids:
        rec = None if stale else _finished(out, cid, cfg["key"])
        if rec is not None:
            records[cid] = rec
        else:
            pending.append(cid)
    _check_cases({c: ids[c] for c in pending})
    needed = 0
    for c in pending:
        size = sum(os.path.getsize(ids[c][k]) for k in ("image", "mask") if ids[c].get(k))
        needed += size * (per_case + 1) + _ENTRY_BYTES * per_case
    check_free_space(
        out, needed, f"{len(pending)} cases x {per_case} insertions per healthy slice", "--out"
    )

    # from here on the folder is written
    if stale:
        n = manifest.remove_owned(stale)
        log.info("--overwrite: removed %d files of the previous run in %s", n, out)
    for sub in _SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest.write({**cfg, "datalist": str(src), "lesions": str(bank_dir), "cases": list(ids)})
    n_stale = remove_stale_partials(out, ("", *_SUBDIRS))
    if n_stale:
        log.info("removed %d temporary files of a killed run", n_stale)
    job_cfg = {**cfg, "bank_dir": str(bank_dir), "bank_key": bank_key}
    bar = progress_bar(
        total=len(ids),
        initial=len(records),
        desc="metalung synthesize",
        unit="case",
        enabled=progress,
    )
    tally = {"inserted": 0, "skipped": 0}

    def finished(cid: str, record: dict) -> None:
        records[cid] = record
        n_in = len(record["entries"])
        tally["inserted"] += n_in
        tally["skipped"] += len(record["rows"]) - n_in
        bar.set_postfix_str(f"inserted {tally['inserted']}, skipped {tally['skipped']}")
        bar.update(1)

    try:
        run_pool(
            synthesize_case,
            ((cid, (ids[cid], cid, str(out), job_cfg, choose)) for cid in pending),
            workers,
            on_result=finished,
            initializer=init_torch_worker,
        )
    finally:
        bar.close()

    rows = [r for cid in ids for r in records[cid]["rows"]]
    if not rows:
        counts = pd.DataFrame([records[c]["counts"] for c in ids]).sum()
        raise InputError(
            src,
            f"no healthy slice in its {len(ids)} training cases used ({int(counts['slices'])} "
            f"slices, {int(counts['with_lung'])} with >= {min_lung_mm2:g} mm^2 of lung, "
            f"{int(counts['tumour'])} of them on or near a tumour; --healthy {healthy})",
        )
    new_entries = [e for cid in ids for e in records[cid]["entries"]]

    def rebase(entry: dict) -> dict:
        e = dict(entry)
        for key in PATH_KEYS:
            if e.get(key):
                e[key] = _rel(e[key], out)
        return e

    new = {k: v for k, v in raw.items() if k not in SECTIONS}
    new["name"] = f"{raw.get('name', src.stem)} + inserted lesions"
    new["description"] = (
        f"lesions of {bank_dir} inserted into the healthy slices of {src} (per case {per_case}, "
        f"seed {seed}, healthy {healthy})"
    )
    train_out = [rebase(e) for e in datalist_entries(src, "training")] if include_original else []
    new["training"] = train_out + new_entries
    for section in ("validation", "test"):
        if section in raw:
            new[section] = [rebase(e) for e in datalist_entries(src, section)]
    path = write_datalist(new, out / "datalist.json")
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    with atomic_path(out / "insertions.csv") as tmp:
        tmp.write_text(table.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
    fig_path = None
    if figure and new_entries:
        fig_path = _figure(out, ids, new_entries)
    done = table[table["inserted"]]
    skipped = table.loc[~table["inserted"], "reason"].value_counts()
    return {
        "datalist": path,
        "csv": out / "insertions.csv",
        "figure": fig_path,
        "cases": len(ids),
        "cases_run": len(pending),
        "slices": int(sum(records[c]["counts"]["used"] for c in ids)),
        "requested": len(table),
        "inserted": len(done),
        "skipped": {str(k): int(v) for k, v in skipped.items()},
        "lung_rads": {
            str(k): int(v) for k, v in done["lung_rads"].value_counts().sort_index().items()
        },
        "lungs": {str(k): int(v) for k, v in done["lung"].value_counts().sort_index().items()},
        "excluded_patients": excluded,
        "bank": str(bank_dir),
        "seconds": time.time() - t0,
    }


# --------------------------------------------------------------------------- picture
def _figure(out: Path, ids: dict, new_entries: list[dict], n_show: int = 4) -> Path:
    """``synthesize.png``: a few healthy slices before / after insertion (lung window), whole
    and zoomed on the lesion, its mask outlined; radiological display (patient right on the
    left). The slices shown are evenly spaced over the new cases (over those whose lesion is
    5 mm or more across, when there are ``n_show`` of them)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ..evaluation.figures import TRUTH_COLOR, _draw_outline, zoom_box

    # lesions of 5 mm or more when there are enough (a 1-pixel lesion shows little)
    visible = [e for e in new_entries if e["augmentation"]["params"]["diameter_mm"] >= 5.0]
    pool = visible if len(visible) >= n_show else new_entries
    pick = np.unique(np.linspace(0, len(pool) - 1, min(n_show, len(pool))).round())
    shown = [pool[int(i)] for i in pick]
    fig = Figure(figsize=(4 * 2.4, len(shown) * 2.5 + 0.5), dpi=110)
    axes = fig.subplots(len(shown), 4, squeeze=False)
    window = (-1350, 150)
    cache: dict[str, _Case] = {}
    for r, e in enumerate(shown):
        cid = e["source_case"]
        if cid not in cache:
            cache.clear()
            cache[cid] = _load_case(ids[cid], lungs=False)
        before = cache[cid].hu[e["slice_index"]]
        after = sitk_to_canonical(sitk.ReadImage(str(out / e["image"])))[0].reshape(before.shape)
        mask = sitk_to_canonical(sitk.ReadImage(str(out / e["mask"])))[0].reshape(before.shape)
        y0, y1, x0, x1 = zoom_box(mask > 0, before.shape, min_size=48, context=3.0)
        p = e["augmentation"]["params"]
        panels = (
            (before, None, "before"),
            (after, None, "after"),
            (before[y0:y1, x0:x1], None, "before (zoom)"),
            (after[y0:y1, x0:x1], mask[y0:y1, x0:x1] > 0, "after (zoom) + mask"),
        )
        for c, (img, m, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
            if m is not None:
                _draw_outline(ax, m, TRUTH_COLOR, 1.2)
            if c < 2:
                ax.add_patch(
                    Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="#ffd400")
                )
                ax.text(0.02, 0.97, "R", color="w", fontsize=7, va="top", transform=ax.transAxes)
                ax.text(
                    0.98,
                    0.97,
                    "L",
                    color="w",
                    fontsize=7,
                    va="top",
                    ha="right",
                    transform=ax.transAxes,
                )
            if r == 0:
                ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(
            f"{cid} z{e['slice_index']}\n{p['lesion_id']} x{p['scale']:.2f}\n"
            f"{p['diameter_mm']:.1f} mm {e['lung_rads']}, {p['lung']} lung",
            fontsize=7,
        )
    fig.suptitle(
        f"Lesions inserted into healthy slices ({len(new_entries)} new cases; lung window "
        f"{window[0]}..{window[1]} HU; radiological display)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure_atomic(fig, out / "synthesize.png", dpi=110)
