"""Parameters of a synthetic patient: the typed draw of everything that defines one patient.

A patient is fully determined by ``(seed, index)`` and its Lung-RADS class: every random draw
comes from ``numpy.random.SeedSequence([seed, index])`` (six independent streams, see
:func:`metalung_monai.utils.runner.case_streams`; the first draws the parameters here), so a
cohort is byte-identical whatever the number of workers or the order of generation.

* :class:`PatientParams` and :func:`sample_patient_params`: field of view, slice thickness, lung
  height, body offset, contrast, scanner, tumour plans and calcified nodules of one patient;
* slice-thickness specifications (a number, a ``(min, max)`` range of
  :data:`STANDARD_THICKNESSES`, or a list of choices);
* :func:`cohort_classes`: the Lung-RADS class of each patient of a cohort;
* :data:`MAX_PIXEL_MM` and :func:`min_size_for_fov`: the coarsest grid that can draw every class.

Rendering the volume is :mod:`.generate`, writing its files :mod:`.write`, the resumable cohort
:mod:`.cohort`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from ..utils.runner import case_streams, seed_sequence
from .lesions import LUNG_RADS_RANGES_MM
from .scanner import sample_scanner

__all__ = [
    "STANDARD_THICKNESSES",
    "MAX_PIXEL_MM",
    "PatientParams",
    "sample_patient_params",
    "cohort_classes",
    "min_size_for_fov",
]

STANDARD_THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
#: the Lung-RADS classes of tumour patients (``LR1``: healthy, no tumour)
_CLASSES = ("LR2", "LR3", "LR4A", "LR4B")

#: largest in-plane pixel (mm, exclusive) at which every Lung-RADS class can be drawn. Tumour
#: diameters are measured on the pixel grid (Feret diameter of the outline): below 3.0 mm two
#: pixels measure 4-6 mm, an LR2 nodule; from 3.0 mm up no outline falls in LR2's 4-6 mm
#: (measured at a 380 mm field of view: size 126, 3.02 mm pixels, failed for 6 of 6 LR2
#: patients, size 127, 2.99 mm, for none; LR3 at 5.5-5.9 mm pixels fails too).
MAX_PIXEL_MM = 3.0


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
    return case_streams(seed, index, 6)


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
    order = np.random.default_rng(seed_sequence(seed, 7919)).permutation(n)
    return [classes[i] for i in order]
