"""Generation of one synthetic patient: anatomy, vessels, lesions, texture and scanner, rendered.

:func:`generate_patient` turns a :class:`~.params.PatientParams` into a :class:`PatientVolume`
(canonical ``(z, y, x)`` int16 HU, tumour mask, anatomy labels, geometry, measured tumours). It
uses the patient's own random streams (:func:`~.params._streams`: anatomy, vessels, lesions,
texture, noise), so a patient is the same whatever else is generated.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..anatomy.lung_rads import lung_rads_from_mask
from ..errors import InputError
from ..utils.runner import progress as progress_bar
from .body import LABEL_CALC, LABEL_LUNG_L, LABEL_LUNG_R, LABEL_TUMOUR, TRUTH_OF_LABEL, ChestAnatomy
from .lesions import TumorPlan, lung_rads_of_diameter, place_lesions
from .lungs import ParenchymaTexture
from .params import MAX_PIXEL_MM, PatientParams, _streams, min_size_for_fov
from .scanner import apply_scanner, fov_disc
from .shapes import Canvas, Grid
from .vessels import PlanningMap, grow_vessel_trees, render_segments

__all__ = ["PatientVolume", "generate_patient"]

log = logging.getLogger(__name__)


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
    p = anatomy.params
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
        TumorPlan(t["kind"], t["shape"], float(t["diameter_mm"]), t["mode"], t["lung"])
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
        (z0 - 5, p.cavity_centre_y - p.cavity_half_depth - 5, -p.cavity_half_width - 5),
        (z1 + 5, p.cavity_centre_y + p.cavity_half_depth + 5, p.cavity_half_width + 5),
        sigma_hu=float(rng_tex.uniform(12.0, 22.0)),
        corr_mm=float(rng_tex.uniform(1.8, 3.0)),
    )
    hu = np.empty(grid.shape, np.int16)
    truth = np.empty(grid.shape, np.uint8)
    mask = np.zeros(grid.shape, np.uint8)
    fov = fov_disc(n, n)
    chunk = max(1, int(3_000_000 // (n * n)))
    ks = range(0, nz, chunk)
    ks = progress_bar(
        ks,
        total=len(ks),
        desc=f"{params.patient_id} slices",
        enabled=progress,
        leave=False,
        terminal_only=True,
    )
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
                "lung_rads": lung_rads_of_diameter(lesion.info["diameter_mm"]),
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
