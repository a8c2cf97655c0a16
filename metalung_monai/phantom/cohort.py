"""Synthetic chest-CT patients and cohorts: parameters, generation, files, datalist.

A patient is fully determined by ``(seed, index)`` and its Lung-RADS class: every random draw
comes from ``numpy.random.SeedSequence([seed, index])``, so a cohort is byte-identical whatever
the number of workers or the order of generation.

Output layout of :func:`generate_cohort` (paths relative to ``out_dir``)::

    images/<pid>.nii.gz            int16 HU, canonical LPS grid, padding already mapped to -1024
    masks/<pid>.nii.gz             uint8 tumour mask {0, 1}
    truth/<pid>_anatomy.nii.gz     uint8 anatomy labels (table in metalung_monai.phantom.body)
    dicom/<pid>/                   with dicom=True: the same image as a vendor-like DICOM series
    datalist.json                  training / test sections (patient-level split, 5 folds)
    cohort.csv                     one row per patient
    overview.png                   slices per class + HU histograms
    .phantom-manifest.json         generation parameters and finished patients (resume)

Hardening (issue 9): every request is checked before anything is written (the options name
themselves in the errors of ``metalung phantom``), including the free disk space for the
estimated output; patient ids become file names only through
:func:`metalung_monai.utils.paths.safe_name` / :func:`~metalung_monai.utils.paths.child_path`;
``overwrite`` deletes only the files this generator writes (listed by its manifest: the
recorded patients' files and the names derived from its parameters), never anything else in the
folder; partial files left by a killed run are removed on the next run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path, stale_partial, write_image_atomic, write_json_atomic
from ..utils.paths import check_free_space, child_path, remove_owned, safe_name
from .body import (
    LABEL_CALC,
    LABEL_LUNG_L,
    LABEL_LUNG_R,
    LABEL_TUMOUR,
    TRUTH_OF_LABEL,
    ChestAnatomy,
)
from .lesions import LUNG_RADS_RANGES_MM, TumourPlan, lung_rads_of_diameter, place_lesions
from .lungs import ParenchymaTexture
from .scanner import apply_scanner, fov_disc, sample_scanner
from .shapes import Canvas, Grid
from .vessels import PlanningMap, grow_vessel_trees, render_segments

__all__ = [
    "GENERATOR_VERSION",
    "STANDARD_THICKNESSES",
    "PatientParams",
    "PatientVolume",
    "sample_patient_params",
    "generate_patient",
    "write_patient",
    "cohort_classes",
    "generate_cohort",
    "MANIFEST_NAME",
    "HIST_EDGES",
    "MAX_PIXEL_MM",
    "MAX_SIZE",
    "MAX_PATIENTS",
    "MAX_WORKERS",
    "min_size_for_fov",
    "estimate_patient_bytes",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: gastric wall under the diaphragm (gas >= 9 mm below the lung base)
MANIFEST_NAME = ".phantom-manifest.json"
STANDARD_THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
#: HU bin edges of the per-patient histograms kept in the manifest (tumour, calcification, lung)
HIST_EDGES = np.arange(-1030, 2051, 10)
_CLASSES = ("LR2", "LR3", "LR4A", "LR4B")

#: largest in-plane pixel (mm, exclusive) at which every Lung-RADS class can be drawn. Tumour
#: diameters are measured on the pixel grid (Feret diameter of the outline): below 3.0 mm two
#: pixels measure 4-6 mm, an LR2 nodule; from 3.0 mm up no outline falls in LR2's 4-6 mm
#: (measured at a 380 mm field of view: size 126, 3.02 mm pixels, failed for 6 of 6 LR2
#: patients, size 127, 2.99 mm, for none; LR3 at 5.5-5.9 mm pixels fails too).
MAX_PIXEL_MM = 3.0
#: largest axial matrix of a cohort
MAX_SIZE = 1024
#: most patients in one cohort (the manifest, rewritten after every patient, holds them all)
MAX_PATIENTS = 10_000
#: most worker processes
MAX_WORKERS = 256
#: mean scan length (mm): lung height 200-265 mm plus 15-35 mm below and 12-30 mm above
_MEAN_SCAN_MM = 285.0
#: bytes per voxel of the written files (gzip NIfTI; measured on 64-512 px cohorts: image 1.0-1.1,
#: truth 0.05-0.07, lung mask 0.02, tumour mask < 0.01) and of a DICOM series (16 bit + headers)
_BYTES_PER_VOXEL = {"image": 1.1, "mask": 0.01, "truth": 0.07, "lung_mask": 0.02, "dicom": 2.0}
_DICOM_NAME = re.compile(r"IM\d{5}\.dcm")
_OUTPUT_DIRS = ("images", "masks", "truth", "lungs", "dicom")


def min_size_for_fov(fov_max_mm: float) -> int:
    """Smallest axial matrix whose pixels stay below :data:`MAX_PIXEL_MM` at ``fov_max_mm``.

    127 for the default field of view of up to 380 mm (2.99 mm pixels).
    """
    return int(math.floor(float(fov_max_mm) / MAX_PIXEL_MM)) + 1


def _thickness_values(spec) -> list[float]:
    """The thicknesses a patient of ``spec`` may get (a range: its standard thicknesses or ends)."""
    kind, *vals = _check_thickness_spec(spec)
    if kind == "range":
        lo, hi = vals
        std = [t for t in STANDARD_THICKNESSES if lo - 1e-9 <= t <= hi + 1e-9]
        return std or [lo, hi]
    return [float(v) for v in vals]


def estimate_patient_bytes(
    size: int, slice_thickness=(2.5, 5.0), dicom: bool = False, lung_masks: bool = True
) -> float:
    """Estimated bytes one patient adds to a cohort folder (mean over the possible thicknesses).

    About 1.2 bytes per voxel of gzip NIfTI (the image's noise does not compress) plus 2 per voxel
    with DICOM, for a scan of about 285 mm: 6.4 MB at 256 x 256 and 2.5-5 mm, 25 MB at 512.
    """
    slices = float(
        np.mean([math.ceil(_MEAN_SCAN_MM / t) for t in _thickness_values(slice_thickness)])
    )
    voxels = float(size) * float(size) * slices
    per_voxel = _BYTES_PER_VOXEL["image"] + _BYTES_PER_VOXEL["mask"] + _BYTES_PER_VOXEL["truth"]
    if lung_masks:
        per_voxel += _BYTES_PER_VOXEL["lung_mask"]
    if dicom:
        per_voxel += _BYTES_PER_VOXEL["dicom"]
    overview = 1.5 * float(size) * float(size)
    manifest = 2 * 20_000.0  # its summary, twice while the manifest is rewritten
    return voxels * per_voxel + overview + manifest + (slices * 2_000.0 if dicom else 0.0)


def _int_arg(value, name: str) -> int:
    """``value`` as an int, refusing bools, non-integral and non-finite numbers."""
    if isinstance(value, bool):
        raise InputError(name, f"must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if (
        isinstance(value, (float, np.floating))
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        return int(value)
    raise InputError(name, f"must be an integer, got {value!r}")


def _check_cohort_args(
    n_patients, seed, size, slice_thickness, n_test_per_class, workers, fov_range, n_folds
) -> dict:
    """Check every argument of :func:`generate_cohort` that could fail later; normalised values."""
    n = _int_arg(n_patients, "n_patients")
    if n < 1:
        raise InputError("n_patients", f"must be >= 1, got {n}")
    if n > MAX_PATIENTS:
        raise InputError(
            "n_patients",
            f"at most {MAX_PATIENTS} patients per cohort, got {n}; generate several "
            "cohorts with different seeds",
        )
    seed_ = _int_arg(seed, "seed")
    if seed_ < 0:
        raise InputError("seed", f"must be >= 0, got {seed_}")
    try:
        lo_f, hi_f = (float(v) for v in fov_range)
    except (TypeError, ValueError) as e:
        raise InputError("fov_range", f"must be two numbers (mm), got {fov_range!r}") from e
    if not (200.0 <= lo_f <= hi_f <= 500.0):
        raise InputError("fov_range", f"field of view must lie in 200..500 mm, got {fov_range}")
    size_ = _int_arg(size, "size")
    smallest = min_size_for_fov(hi_f)
    if not (smallest <= size_ <= MAX_SIZE):
        raise InputError(
            "size",
            f"must be {smallest}..{MAX_SIZE}, got {size_}: below {smallest} pixels across a "
            f"field of view of up to {hi_f:g} mm the pixels reach {MAX_PIXEL_MM} mm and the "
            "smallest Lung-RADS classes (LR2 nodules of 4-6 mm) cannot be drawn",
        )
    thickness = _check_thickness_spec(slice_thickness)
    k = _int_arg(n_test_per_class, "n_test_per_class")
    if k < 0:
        raise InputError("n_test_per_class", f"must be >= 0, got {k}")
    w = _int_arg(workers, "workers")
    if not (1 <= w <= MAX_WORKERS):
        raise InputError("workers", f"must be >= 1 and at most {MAX_WORKERS}, got {w}")
    folds = _int_arg(n_folds, "n_folds")
    if folds < 1:
        raise InputError("n_folds", f"must be >= 1, got {folds}")
    return {
        "n_patients": n,
        "seed": seed_,
        "size": size_,
        "thickness": thickness,
        "n_test_per_class": k,
        "workers": w,
        "fov_range": (lo_f, hi_f),
        "n_folds": folds,
    }


# ---------------------------------------------------------------------------- parameters
@dataclass
class PatientParams:
    """Everything that defines one synthetic patient (JSON-serialisable).

    Attributes:
        patient_id: e.g. ``"P0001"``.
        seed, index: cohort seed and patient index; all randomness derives from both.
        lung_rads: target class ``"LR1"`` (healthy) .. ``"LR4B"``.
        size: axial matrix (``size x size``).
        slice_thickness: mm (also the slice spacing).
        fov_mm: reconstruction field of view (pixel spacing ``fov_mm / size``).
        lung_height_mm: apex-to-base lung height.
        body_offset_mm: body centre relative to the image centre ``(x, y)`` (LPS mm).
        contrast: intravenous contrast.
        scanner: :func:`metalung_monai.phantom.scanner.sample_scanner` dict.
        tumours: list of plans ``{kind, shape, diameter_mm, mode, lung}``; the first is the main one.
        calcification_diameters_mm: calcified nodules to place.
    """

    patient_id: str
    seed: int
    index: int
    lung_rads: str
    size: int
    slice_thickness: float
    fov_mm: float
    lung_height_mm: float
    body_offset_mm: tuple[float, float]
    contrast: bool
    scanner: dict
    tumours: list[dict]
    calcification_diameters_mm: list[float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["body_offset_mm"] = list(d["body_offset_mm"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PatientParams:
        d = dict(d)
        d["body_offset_mm"] = tuple(d["body_offset_mm"])
        return cls(**d)


def _streams(seed: int, index: int) -> list[np.random.Generator]:
    """Independent generators of one patient: params, anatomy, vessels, lesions, texture, noise."""
    ss = np.random.SeedSequence([int(seed), int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(6)]


def _check_thickness_spec(spec):
    """Normalise a slice-thickness spec to ``("fixed", v)``, ``("range", lo, hi)`` or ``("choices", ...)``."""
    try:
        return _thickness_spec(spec)
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(
            "slice_thickness", f"must be a number of mm, a (min, max) pair or a list, got {spec!r}"
        ) from e


def _thickness_spec(spec):
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        vals = ("fixed", float(spec))
        check = [float(spec)]
    elif isinstance(spec, (set, frozenset)) or (isinstance(spec, (list, tuple)) and len(spec) != 2):
        check = sorted(float(v) for v in spec)
        if not check:
            raise InputError("slice_thickness", "no thickness given")
        vals = ("choices", *check)
    else:
        lo, hi = (float(v) for v in spec)
        for v in (lo, hi):
            if not (1.0 <= v <= 5.0):
                raise InputError("slice_thickness", f"{v} mm is outside the supported 1.0..5.0 mm")
        if lo > hi:
            raise InputError("slice_thickness", f"minimum {lo} mm is larger than maximum {hi} mm")
        vals = ("range", lo, hi)
        check = [lo, hi]
    for v in check:
        if not (1.0 <= v <= 5.0):
            raise InputError("slice_thickness", f"{v} mm is outside the supported 1.0..5.0 mm")
    return vals


def _draw_thickness(rng, spec) -> float:
    kind, *vals = _check_thickness_spec(spec)
    if kind == "fixed":
        return vals[0]
    if kind == "choices":
        return float(vals[int(rng.integers(len(vals)))])
    lo, hi = vals
    std = [t for t in STANDARD_THICKNESSES if lo - 1e-9 <= t <= hi + 1e-9]
    if std:
        return float(std[int(rng.integers(len(std)))])
    return float(round(rng.uniform(lo, hi), 2))


def _class_of(d: float) -> str:
    return lung_rads_of_diameter(d)


def sample_patient_params(
    seed: int,
    index: int,
    lung_rads: str,
    size: int = 512,
    slice_thickness=(2.5, 5.0),
    fov_range: tuple[float, float] = (330.0, 380.0),
    patient_id: str | None = None,
    n_tumours: int | None = None,
) -> PatientParams:
    """Draw the parameters of patient ``index`` of a cohort seeded with ``seed``.

    Args:
        seed: cohort seed.
        index: patient index (0-based); with ``seed`` it seeds every draw.
        lung_rads: ``"LR1"`` (healthy, no tumour) or the class of the largest tumour
            (``"LR2"`` < 6 mm, ``"LR3"`` 6-8, ``"LR4A"`` 8-15, ``"LR4B"`` >= 15 mm).
        size: axial matrix size (32..1024).
        slice_thickness: mm: a number; a ``(min, max)`` pair (a standard thickness of
            :data:`STANDARD_THICKNESSES` in the range, e.g. 2.5, 3.0 or 5.0 for ``(2.5, 5.0)``);
            or a list of 3+ values / a set to choose from. All within 1.0..5.0 mm.
        fov_range: reconstruction field of view range (mm).
        patient_id: default ``"P%04d" % (index + 1)``.
        n_tumours: number of tumours for a tumour patient (default: 1-3 at random).

    Returns:
        :class:`PatientParams`.

    Raises:
        InputError: unknown class, bad size, thickness or field of view.
    """
    if lung_rads not in ("LR1", *_CLASSES):
        raise InputError(
            "lung_rads", f"unknown Lung-RADS class {lung_rads!r} (LR1, LR2, LR3, LR4A, LR4B)"
        )
    if not (32 <= int(size) <= 1024):
        raise InputError("size", f"axial size must be 32..1024, got {size}")
    lo_f, hi_f = (float(v) for v in fov_range)
    if not (200.0 <= lo_f <= hi_f <= 500.0):
        raise InputError("fov_range", f"field of view must lie in 200..500 mm, got {fov_range}")
    rng = _streams(seed, index)[0]
    thickness = _draw_thickness(rng, slice_thickness)
    fov = float(round(rng.uniform(lo_f, hi_f), 1))
    tumours: list[dict] = []
    if lung_rads != "LR1":
        if n_tumours is None:
            n_tumours = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        lo, hi = LUNG_RADS_RANGES_MM[lung_rads]
        main_d = (
            float(rng.uniform(lo, hi)) if lung_rads != "LR4B" else float(lo + rng.exponential(6.0))
        )
        main_d = float(min(main_d, hi))
        diameters = [main_d]
        for _ in range(int(n_tumours) - 1):
            allowed = [c for c in _CLASSES if LUNG_RADS_RANGES_MM[c][0] <= main_d - 1.0]
            if not allowed:
                break
            c = allowed[int(rng.integers(len(allowed)))]
            clo, chi = LUNG_RADS_RANGES_MM[c]
            chi = min(chi, main_d - 1.0)
            diameters.append(float(rng.uniform(clo, chi)))
        for d in diameters:
            kind = str(rng.choice(["solid", "part-solid", "ggo"], p=[0.55, 0.25, 0.2]))
            shape = (
                "lobulated"
                if kind == "ggo"
                else str(rng.choice(["lobulated", "spiculated"], p=[0.6, 0.4]))
            )
            mode = str(
                rng.choice(["interior", "juxtapleural", "juxtavascular"], p=[0.45, 0.3, 0.25])
            )
            lung = "right" if rng.random() < 0.55 else "left"
            tumours.append(
                {
                    "kind": kind,
                    "shape": shape,
                    "diameter_mm": round(d, 3),
                    "mode": mode,
                    "lung": lung,
                }
            )
    n_calc = int(rng.choice([0, 1, 2, 3], p=[0.35, 0.35, 0.2, 0.1]))
    # calcified nodules at least one slice thick: thinner ones would be smeared below 200 HU
    calcs = [round(float(rng.uniform(max(3.5, thickness), 10.0)), 2) for _ in range(n_calc)]
    return PatientParams(
        patient_id=patient_id or f"P{index + 1:04d}",
        seed=int(seed),
        index=int(index),
        lung_rads=lung_rads,
        size=int(size),
        slice_thickness=float(thickness),
        fov_mm=fov,
        lung_height_mm=float(round(rng.uniform(200.0, 265.0), 1)),
        body_offset_mm=(
            float(round(rng.uniform(-12.0, 12.0), 2)),
            float(round(rng.uniform(-15.0, 10.0), 2)),
        ),
        contrast=bool(rng.random() < 0.3),
        scanner=sample_scanner(rng),
        tumours=tumours,
        calcification_diameters_mm=calcs,
    )


# ---------------------------------------------------------------------------- one patient
@dataclass
class PatientVolume:
    """A generated patient, canonical layout ``(z, y, x)`` (LPS: x left, y posterior, z superior).

    Attributes:
        patient_id: identifier.
        hu: int16 HU (air -1000 + noise clipped to >= -1024; outside the field of view -1024).
        mask: uint8 tumour mask {0, 1} (geometry before blur).
        truth: uint8 anatomy labels (:data:`metalung_monai.phantom.body.TRUTH_LABELS`).
        spacing: ``(z, y, x)`` mm.
        origin: LPS position (mm) of voxel ``(0, 0, 0)`` as ``(x, y, z)`` (SimpleITK order).
        fov: bool ``(y, x)``: inside the circular reconstruction field of view.
        scanner: vendor dict (manufacturer, kernel, noise, intercept, padding).
        lung_rads: class measured on the mask (``"LR1"`` without tumour).
        tumours: one dict per tumour: ``type``, ``shape``, ``diameter_mm`` (measured longest axial),
            ``target_diameter_mm``, ``lung_rads``, ``centre_mm`` (LPS x, y, z), ``centre_index``
            (z, y, x), ``lung``, ``juxtapleural``, ``juxtavascular``, ``mode``, ``volume_mm3``,
            ``n_slices``.
        calcifications: one dict per calcified nodule: ``diameter_mm``, ``hu``, ``centre_mm``,
            ``centre_index``, ``lung``.
        params: the :class:`PatientParams`.
        stats: generation statistics (segment counts, timings in s).
    """

    patient_id: str
    hu: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    fov: np.ndarray
    scanner: dict
    lung_rads: str
    tumours: list[dict]
    calcifications: list[dict]
    params: PatientParams
    stats: dict = field(default_factory=dict)

    def to_sitk(self, array: np.ndarray | None = None):
        """SimpleITK image of ``array`` (default: ``hu``) on this patient's grid (identity direction)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.hu if array is None else array))
        img.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return img

    @property
    def n_tumour_slices(self) -> int:
        return int(np.count_nonzero(self.mask.any(axis=(1, 2))))


class _LabelCache:
    """Anatomy labels of boxes of the output grid, rendered once per neighbourhood."""

    def __init__(self, anatomy: ChestAnatomy, grid: Grid, pad: int = 6, keep: int = 6) -> None:
        self.anatomy, self.grid, self.pad, self.keep = anatomy, grid, pad, keep
        self.items: list[tuple[tuple, np.ndarray]] = []

    def __call__(self, box) -> np.ndarray:
        for cbox, lab in self.items:
            if all(c0 <= a and b <= c1 for (a, b), (c0, c1) in zip(box, cbox)):
                return lab[tuple(slice(a - c0, b - c0) for (a, b), (c0, _) in zip(box, cbox))]
        big = tuple(
            (max(0, a - self.pad), min(n, b + self.pad)) for (a, b), n in zip(box, self.grid.shape)
        )
        cv = Canvas(self.grid, big, with_hu=False)
        self.anatomy.render(cv)
        self.items.insert(0, (big, cv.label))
        del self.items[self.keep :]
        return self(box)


def _n_sub(thickness: float) -> int:
    return max(2, int(math.ceil(thickness / 1.7 - 1e-9)))


def generate_patient(params: PatientParams, progress: bool = False) -> PatientVolume:
    """Generate one synthetic chest CT with its tumour mask and anatomy labels.

    Args:
        params: from :func:`sample_patient_params` (or edited / rebuilt with ``from_dict``).
        progress: tqdm bar over slice chunks (on a terminal).

    Returns:
        :class:`PatientVolume` (canonical arrays, spacing, geometry, tumour descriptions).

    Raises:
        InputError: the main tumour could not be placed with its Lung-RADS class (LR2 and LR3 need
            pixels below :data:`MAX_PIXEL_MM`, 3.0 mm).
    """
    t0 = time.perf_counter()
    _, rng_anat, rng_vessel, rng_lesion, rng_tex, rng_noise = _streams(params.seed, params.index)
    anatomy = ChestAnatomy.sample(rng_anat, params.fov_mm, params.contrast, params.lung_height_mm)
    p = anatomy.p
    n = int(params.size)
    dxy = params.fov_mm / n
    dz = float(params.slice_thickness)
    z0, z1 = anatomy.z_extent()
    nz = int(math.ceil((z1 - z0) / dz))
    ox, oy = params.body_offset_mm
    start = (
        z0 + 0.5 * dz,
        -0.5 * params.fov_mm + 0.5 * dxy - oy,
        -0.5 * params.fov_mm + 0.5 * dxy - ox,
    )
    grid = Grid((nz, n, n), (dz, dxy, dxy), start)
    z_shift = -float(round(params.lung_height_mm)) - 100.0
    origin = (start[2] + ox, start[1] + oy, start[0] + z_shift)  # LPS (x, y, z) of voxel 0

    def to_world(c):  # anatomical (Z, Y, X) -> LPS (x, y, z)
        return [
            round(float(c[2] + ox), 2),
            round(float(c[1] + oy), 2),
            round(float(c[0] + z_shift), 2),
        ]

    pmap = PlanningMap(anatomy)
    segs = grow_vessel_trees(anatomy, pmap, rng_vessel)
    t_plan = time.perf_counter()
    n_sub = _n_sub(dz)
    labels = _LabelCache(anatomy, grid)
    plans = [
        TumourPlan(t["kind"], t["shape"], float(t["diameter_mm"]), t["mode"], t["lung"])
        for t in params.tumours
    ]
    tumours, calcs = place_lesions(
        anatomy,
        pmap,
        segs,
        grid,
        n_sub,
        labels,
        rng_lesion,
        plans,
        list(params.calcification_diameters_mm),
    )
    if plans and not tumours:
        raise InputError(
            params.patient_id,
            f"could not place a {params.lung_rads} tumour of {plans[0].diameter_mm:.1f} mm at {dxy:.2f} mm pixels "
            f"(seed {params.seed}, index {params.index}); small classes need pixels below {MAX_PIXEL_MM} mm "
            f"(a size of at least {min_size_for_fov(params.fov_mm)} at this {params.fov_mm:g} mm field of view)",
        )
    t_lesion = time.perf_counter()
    tex = ParenchymaTexture(
        rng_tex,
        (z0 - 5, p.yc - p.b_in - 5, -p.a_in - 5),
        (z1 + 5, p.yc + p.b_in + 5, p.a_in + 5),
        sigma_hu=float(rng_tex.uniform(12.0, 22.0)),
        corr_mm=float(rng_tex.uniform(1.8, 3.0)),
    )
    hu = np.empty(grid.shape, np.int16)
    truth = np.empty(grid.shape, np.uint8)
    mask = np.zeros(grid.shape, np.uint8)
    fov = fov_disc(n, n)
    chunk = max(1, int(3_000_000 // (n * n)))
    ks = range(0, nz, chunk)
    if progress:
        from ..io._progress import progress_iter

        ks = progress_iter(ks, True, desc=f"{params.patient_id} slices", total=len(ks))
    for k0 in ks:
        k1 = min(nz, k0 + chunk)
        cv = Canvas(grid, ((k0, k1), (0, n), (0, n)), n_sub=n_sub)
        anatomy.render(cv)
        lung = (cv.label == LABEL_LUNG_R) | (cv.label == LABEL_LUNG_L)
        cv.hu[lung] += tex.sample(cv.z, cv.y, cv.x)[lung]
        render_segments(cv, segs, p.hu_blood, p.hu_airway_wall)
        for _, r in tumours:
            r.paste(cv, LABEL_TUMOUR)
        for _, r in calcs:
            r.paste(cv, LABEL_CALC)
        truth[k0:k1] = TRUTH_OF_LABEL[cv.label]
        mask[k0:k1] = cv.label == LABEL_TUMOUR
        hu[k0:k1] = apply_scanner(cv.hu, grid.spacing, params.scanner, rng_noise, fov)
    truth[:, ~fov] = 0
    t_render = time.perf_counter()

    spacing = grid.spacing
    tum_out = []
    for lesion, r in tumours:
        sl = tuple(slice(a, b) for a, b in r.box)
        m = r.mask
        cidx = np.argwhere(m).mean(axis=0) + np.array([a for a, _ in r.box])
        c_anat = [grid.start[k] + grid.spacing[k] * cidx[k] for k in range(3)]
        tum_out.append(
            {
                "type": lesion.kind,
                "shape": lesion.shape,
                "diameter_mm": lesion.info["diameter_mm"],
                "target_diameter_mm": lesion.info["target_diameter_mm"],
                "lung_rads": _class_of(lesion.info["diameter_mm"]),
                "centre_mm": to_world(c_anat),
                "centre_index": [int(round(v)) for v in cidx],
                "lung": lesion.lung,
                "juxtapleural": bool(lesion.info["juxtapleural"]),
                "juxtavascular": bool(lesion.info["juxtavascular"]),
                "mode": lesion.info["mode"],
                "volume_mm3": round(float(m.sum() * np.prod(spacing)), 1),
                "n_slices": int(m.any(axis=(1, 2)).sum()),
                "hu_median": float(np.median(hu[sl][m])) if m.any() else None,
            }
        )
    calc_out = []
    for lesion, r in calcs:
        cidx = np.argwhere(r.mask).mean(axis=0) + np.array([a for a, _ in r.box])
        c_anat = [grid.start[k] + grid.spacing[k] * cidx[k] for k in range(3)]
        calc_out.append(
            {
                "diameter_mm": lesion.info["diameter_mm"],
                "hu": round(lesion.hu_mean, 1),
                "centre_mm": to_world(c_anat),
                "centre_index": [int(round(v)) for v in cidx],
                "lung": lesion.lung,
            }
        )
    from ..anatomy.lung_rads import lung_rads_from_mask

    measured = lung_rads_from_mask(mask, spacing)
    if measured != params.lung_rads:
        log.warning(
            "%s: measured Lung-RADS %s differs from the target %s",
            params.patient_id,
            measured,
            params.lung_rads,
        )
    stats = {
        "n_vessel_segments": int(np.count_nonzero(segs.kind < 2)),
        "n_bronchus_segments": int(np.count_nonzero(segs.kind == 2)),
        "n_segments_right": int(np.count_nonzero(segs.lung == LABEL_LUNG_R)),
        "n_segments_left": int(np.count_nonzero(segs.lung == LABEL_LUNG_L)),
        "time_plan_s": round(t_plan - t0, 3),
        "time_lesions_s": round(t_lesion - t_plan, 3),
        "time_render_s": round(t_render - t_lesion, 3),
        "time_total_s": round(time.perf_counter() - t0, 3),
    }
    return PatientVolume(
        patient_id=params.patient_id,
        hu=hu,
        mask=mask,
        truth=truth,
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in origin),
        fov=fov,
        scanner=dict(params.scanner),
        lung_rads=measured,
        tumours=tum_out,
        calcifications=calc_out,
        params=params,
        stats=stats,
    )


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
        from ..anatomy import lung_mask

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
        from ..io import dicom_write

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
    from .figures import save_overview_slice

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


# ---------------------------------------------------------------------------- cohort
def cohort_classes(n_patients: int, seed: int = 0) -> list[str]:
    """Lung-RADS class of each patient index of a cohort of ``n_patients``.

    About 10 % healthy (``LR1``; 4 of 40) and the rest split evenly over LR2, LR3, LR4A and LR4B
    (9 each of 40), in a seeded order.
    """
    n = int(n_patients)
    if n < 1:
        raise InputError("n_patients", f"must be >= 1, got {n_patients}")
    n1 = int(math.floor(n * 0.1 + 0.5)) if n >= 5 else 0
    rest = n - n1
    classes = ["LR1"] * n1 + [_CLASSES[i % 4] for i in range(rest)]
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 7919])).permutation(n)
    return [classes[i] for i in order]


def _params_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _worker(params_dict: dict, out_dir: str, dicom: bool, lung_masks: bool = True) -> dict:
    params = PatientParams.from_dict(params_dict)
    t = time.perf_counter()
    vol = generate_patient(params)
    summary = write_patient(vol, out_dir, dicom=dicom, lung_masks=lung_masks)
    summary["time_s"] = round(time.perf_counter() - t, 3)
    return summary


def _inside(out: Path, rel) -> Path | None:
    """``out / rel`` when ``rel`` (from a manifest) is a relative path that stays inside ``out``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    p = out / rel
    base = out.resolve()
    return p if base in p.resolve().parents else None


def _pid_name(pid) -> str:
    return safe_name(pid, fallback="patient")


def _default_pid(index: int) -> str:
    return f"P{index + 1:04d}"  # as sample_patient_params names patient ``index``


def _summary_files(entry) -> tuple[dict, dict]:
    """``(summary, files)`` of a manifest entry; empty dicts for anything malformed."""
    summary = entry.get("summary") if isinstance(entry, dict) else None
    summary = summary if isinstance(summary, dict) else {}
    files = summary.get("files")
    return summary, files if isinstance(files, dict) else {}


def _complete(
    out: Path, entry: dict | None, phash: str, dicom: bool, lung_masks: bool = True
) -> bool:
    if not isinstance(entry, dict) or entry.get("hash") != phash:
        return False
    summary, files = _summary_files(entry)
    for key in ("image", "mask", "truth") + (("lung_mask",) if lung_masks else ()):
        p = _inside(out, files.get(key))
        if p is None or not p.is_file():
            return False
    if dicom:
        d = out / "dicom" / _pid_name(summary.get("patient_id"))
        if not d.is_dir() or not any(d.glob("*.dcm")):
            return False
    return True


def _load_manifest(out: Path) -> dict | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise InputError(
            path, f"unreadable phantom manifest ({e}); move it away to start afresh"
        ) from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("patients", {}), dict):
        raise InputError(
            path, "not a phantom manifest (no 'patients' table); move it away to start afresh"
        )
    manifest.setdefault("patients", {})
    return manifest


def _refuse_foreign_dicom_files(folder: Path) -> None:
    """A patient's DICOM folder is replaced as a whole: refuse when it holds files phantom did not write."""
    if not folder.is_dir():
        return
    foreign = sorted(
        p.name for p in folder.iterdir() if not (_DICOM_NAME.fullmatch(p.name) and p.is_file())
    )
    if foreign:
        raise InputError(
            folder,
            f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
            "phantom did not write; the patient's series replaces the whole folder: move them",
        )


def _owned_files(out: Path, manifest: dict) -> list[str]:
    """Files (relative to ``out``) that the phantom run of ``manifest`` wrote or may have written.

    The recorded patients' files, plus the names derived from the manifest's parameters (a
    patient being written when a run was killed is not recorded yet): image, mask, truth, lung
    mask, overview slice and the ``IM#####.dcm`` files of ``dicom/<pid>/``; then the datalist,
    ``cohort.csv``, ``overview.png`` and the manifest itself. Nothing else in ``out`` is ever listed.
    """
    from .figures import OVERVIEW_CACHE

    rels: list[str] = []
    patients = manifest.get("patients") if isinstance(manifest.get("patients"), dict) else {}
    params = manifest.get("params") if isinstance(manifest.get("params"), dict) else {}
    pids = [str(pid) for pid in patients]
    try:
        n = min(int(params.get("n_patients", 0)), MAX_PATIENTS)
    except (TypeError, ValueError, OverflowError):
        n = 0
    pids += [_default_pid(i) for i in range(max(n, 0))]
    for entry in patients.values():
        _, files = _summary_files(entry)
        rels += [rel for key, rel in files.items() if key != "dicom" and isinstance(rel, str)]
    for name in dict.fromkeys(_pid_name(p) for p in pids):
        rels += [
            f"images/{name}.nii.gz",
            f"masks/{name}.nii.gz",
            f"truth/{name}_anatomy.nii.gz",
            f"lungs/{name}.nii.gz",
            f"{OVERVIEW_CACHE}/{name}_overview.npz",
        ]
        d = out / "dicom" / name
        if d.is_dir():
            rels += [f"dicom/{name}/{p.name}" for p in d.iterdir() if _DICOM_NAME.fullmatch(p.name)]
    rels += ["datalist.json", "cohort.csv", "overview.png", MANIFEST_NAME]
    return list(dict.fromkeys(rels))


def _owned_bytes(out: Path, rels: list[str]) -> int:
    total = 0
    for rel in rels:
        p = _inside(out, rel)
        if p is not None and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def _remove_stale_partials(out: Path) -> int:
    """Delete the ``.*.partial-<pid>-*`` files and folders a killed run left (their process is gone)."""
    from .figures import OVERVIEW_CACHE

    n = 0
    for folder in (out, *(out / d for d in _OUTPUT_DIRS), out / OVERVIEW_CACHE):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if stale_partial(p.name) is None:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n


def _holds_files(p: Path) -> bool:
    if p.is_dir():
        return any(p.iterdir())
    return p.exists()


def generate_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = 40,
    seed: int = 0,
    size: int = 512,
    slice_thickness=(2.5, 5.0),
    n_test_per_class: int = 4,
    workers: int = 1,
    dicom: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    fov_range: tuple[float, float] = (330.0, 380.0),
    n_folds: int = 5,
    figure: bool = True,
    lung_masks: bool = True,
) -> Path:
    """Generate (or complete) a synthetic cohort and return the path of its ``datalist.json``.

    Composition: :func:`cohort_classes` (40 patients: 4 healthy LR1 + 9 per class LR2..LR4B);
    :func:`metalung_monai.io.datalist.patient_split` holds out ``n_test_per_class`` patients per
    class LR2..LR4B (the thesis held out 4 per class); training patients get ``n_folds`` folds.

    Resumable: patients already written with the same parameters (manifest
    ``.phantom-manifest.json``) are skipped; a folder generated with other parameters raises
    :class:`InputError` unless ``overwrite``. Every file is written atomically; the datalist,
    ``cohort.csv`` and ``overview.png`` last. Partial files of a killed run are removed.

    Every argument is checked, and the output's size (:func:`estimate_patient_bytes`) compared
    with the free disk space, before anything is written. Patients are planned and generated one
    at a time (memory does not grow with ``n_patients``).

    Args:
        out_dir: output folder (created).
        n_patients: number of patients (1..:data:`MAX_PATIENTS`).
        seed: cohort seed (>= 0; patient ``i`` is seeded by ``(seed, i)`` only).
        size: axial matrix size (:func:`min_size_for_fov` of the largest field of view, 127 for
            380 mm, up to :data:`MAX_SIZE`): smaller matrices cannot draw LR2 nodules.
        slice_thickness: see :func:`sample_patient_params`.
        n_test_per_class: held-out patients per class LR2..LR4B (>= 0; a class keeps at least
            one patient in training).
        workers: processes (``ProcessPoolExecutor`` when > 1); results do not depend on it.
        dicom: also write each image as a DICOM series under ``dicom/<pid>/``.
        progress: tqdm progress bar (only on a terminal).
        overwrite: replace a cohort generated with other parameters. Only the files that
            cohort's manifest lists (and the names its parameters give) are deleted; other files
            in ``out_dir`` are kept. A folder without a manifest is never cleared.
        fov_range: reconstruction field-of-view range (mm).
        n_folds: cross-validation folds of the training patients.
        figure: write ``overview.png``.
        lung_masks: also write HU-threshold lung masks (``lungs/``, datalist key ``lung_mask``).

    Returns:
        Path of ``datalist.json``.

    Raises:
        InputError: bad arguments (the source names the argument: ``n_patients``, ``size``, ...),
            not enough free disk space (``n_patients``), ``out_dir`` is a file (``out_dir``), or
            ``out_dir`` holds a different cohort (without ``overwrite``) or files without a
            phantom manifest.
    """
    from ..io.datalist import assign_folds, patient_split, write_datalist

    out = Path(out_dir)
    a = _check_cohort_args(
        n_patients, seed, size, slice_thickness, n_test_per_class, workers, fov_range, n_folds
    )
    n_patients, seed, size, fov_range = a["n_patients"], a["seed"], a["size"], a["fov_range"]
    if out.exists() and not out.is_dir():
        raise InputError("out_dir", f"{out} exists and is not a folder")
    classes = cohort_classes(n_patients, seed)
    gen_params = {
        "generator": "metalung-monai phantom",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_patients": n_patients,
        "size": size,
        "slice_thickness": list(a["thickness"]),
        "fov_range": [float(v) for v in fov_range],
    }
    chash = _params_hash(gen_params)
    manifest = _load_manifest(out) if out.is_dir() else None
    replaced = None
    if manifest is not None and manifest.get("params_hash") != chash:
        if not overwrite:
            raise InputError(
                out,
                "holds a phantom cohort generated with other parameters "
                f"({_describe_diff(manifest.get('params', {}), gen_params)}); use --overwrite to replace it",
            )
        replaced, manifest = manifest, None
    if manifest is None and replaced is None and out.is_dir():
        stale = [n for n in (*_OUTPUT_DIRS, "datalist.json") if _holds_files(out / n)]
        if stale:
            raise InputError(
                out,
                f"holds {', '.join(stale)} but no phantom manifest: phantom did not write them "
                "(or its manifest is gone) and --overwrite deletes only what a manifest lists; "
                "use another folder or move them",
            )

    def plan(i: int) -> PatientParams:
        return sample_patient_params(
            seed, i, classes[i], size=size, slice_thickness=slice_thickness, fov_range=fov_range
        )

    def patient_hash(prm: PatientParams) -> str:
        return _params_hash({"cohort": chash, "patient": prm.to_dict()})

    # plan: indices still to generate (parameters are drawn again when generated: flat memory)
    todo: list[int] = []
    for i in range(n_patients):
        entry = manifest["patients"].get(_default_pid(i)) if manifest is not None else None
        if entry is not None and _complete(out, entry, patient_hash(plan(i)), dicom, lung_masks):
            continue
        todo.append(i)
    if dicom and out.is_dir():
        for i in todo:
            _refuse_foreign_dicom_files(out / "dicom" / _pid_name(_default_pid(i)))
    owned = _owned_files(out, replaced) if replaced is not None else []
    per_patient = estimate_patient_bytes(size, slice_thickness, dicom, lung_masks)
    check_free_space(
        out,
        len(todo) * per_patient - _owned_bytes(out, owned),
        f"{len(todo)} patients of {size} x {size} pixels",
        option="n_patients",
    )

    # from here on files are written
    if replaced is not None:
        n_removed = remove_owned(out, owned)
        log.info("%s: removed %d files of the previous cohort", out, n_removed)
    out.mkdir(parents=True, exist_ok=True)
    if _remove_stale_partials(out):
        log.info("%s: removed partial files of an interrupted run", out)
    if manifest is None:
        manifest = {"params": gen_params, "params_hash": chash, "patients": {}}
    manifest["params"] = gen_params
    manifest["params_hash"] = chash
    write_json_atomic(
        manifest, out / MANIFEST_NAME
    )  # a killed run resumes even before its first patient
    t0 = time.perf_counter()
    generated: list[str] = []

    def record(prm, summary):
        manifest["patients"][prm.patient_id] = {"hash": patient_hash(prm), "summary": summary}
        write_json_atomic(manifest, out / MANIFEST_NAME)
        generated.append(prm.patient_id)

    bar = None
    if progress and todo:
        from ..io._progress import progress_iter

        bar = progress_iter(range(len(todo)), True, desc="phantom patients", total=len(todo))
        bar = bar if hasattr(bar, "update") else None
    n_workers = min(a["workers"], len(todo))
    if n_workers > 1:
        with ProcessPoolExecutor(max_workers=n_workers) as ex:
            queue = iter(todo)
            running: dict = {}

            def submit_next() -> None:
                i = next(queue, None)
                if i is not None:
                    prm = plan(i)
                    running[ex.submit(_worker, prm.to_dict(), str(out), dicom, lung_masks)] = prm

            try:
                for _ in range(
                    2 * n_workers
                ):  # a bounded window: parameters are not all held at once
                    submit_next()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        prm = running.pop(fut)
                        record(prm, fut.result())
                        if bar is not None:
                            bar.update(1)
                        submit_next()
            except BaseException:
                ex.shutdown(
                    wait=True, cancel_futures=True
                )  # finished patients stay in the manifest
                raise
    else:
        for i in todo:
            prm = plan(i)
            record(prm, _worker(prm.to_dict(), str(out), dicom, lung_masks))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    gen_time = time.perf_counter() - t0

    summaries = [manifest["patients"][_default_pid(i)]["summary"] for i in range(n_patients)]
    patient_classes = {s["patient_id"]: s["lung_rads"] for s in summaries}
    train_ids, test_ids = patient_split(
        patient_classes, n_test_per_class=a["n_test_per_class"], seed=seed
    )
    folds = assign_folds(train_ids, n_folds=a["n_folds"], seed=seed)
    test_set = set(test_ids)
    dl = {
        "name": "metalung-phantom",
        "description": (
            f"synthetic chest CT cohort (metalung-monai phantom v{GENERATOR_VERSION}, seed {seed}, "
            f"{n_patients} patients, {size}x{size})"
        ),
        "version": 1,
        "modality": "CT",
        "hu_convention": "int16 HU, air -1024 after padding is mapped, water 0",
        "labels": {"0": "background", "1": "tumour"},
        "training": [],
        "test": [],
    }
    for s in summaries:
        pid = s["patient_id"]
        entry = {
            "image": s["files"]["image"],
            "mask": s["files"]["mask"],
            "patient_id": pid,
            "case_id": pid,
            "lung_rads": s["lung_rads"],
            "split": "test" if pid in test_set else "train",
            "fold": None if pid in test_set else int(folds[pid]),
            "manufacturer": s["scanner"]["manufacturer"],
            "spacing": [float(v) for v in s["spacing"]],
            "shape": [int(v) for v in s["shape"]],
            "source": f"metalung phantom (seed {seed}, patient index {s['index']})",
        }
        if lung_masks and s["files"].get("lung_mask"):
            entry["lung_mask"] = s["files"]["lung_mask"]
        dl["test" if pid in test_set else "training"].append(entry)
        s["split"] = entry["split"]
        s["fold"] = entry["fold"]
    _write_csv(summaries, out / "cohort.csv")
    if figure:
        from .figures import cohort_overview

        cohort_overview(out, summaries, out / "overview.png")
    path = write_datalist(dl, out / "datalist.json")
    manifest["last_run"] = {
        "generated": sorted(generated),
        "time_s": round(gen_time, 2),
        "workers": int(workers),
    }
    write_json_atomic(manifest, out / MANIFEST_NAME)
    return path


def _describe_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs[:4]) or "unknown difference"


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


def _write_csv(summaries: list[dict], path: Path) -> None:
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
