"""Tumours and calcified nodules of the phantom, with their masks.

Tumour types (intrinsic HU before partial volume, blur and noise):

* ``solid``: -100..+100 HU (mean -10..50) with a smooth internal heterogeneity;
* ``part-solid``: a ground-glass halo (-700..-300 HU) around a solid core (30-60 % of the radius);
* ``ggo``: pure ground glass, -700..-300 HU.

Shapes: ``lobulated`` (a radius modulated by a few smooth bumps, slightly anisotropic, randomly
oriented) or ``spiculated`` (a mildly lobulated core with thin tapering spikes; the inner part of
each spike belongs to the mask, its thin tip does not). Calcified nodules are round, 3.5-10 mm,
800-1500 HU intrinsic (dense calcified granulomas, centred on a slice: small ones still read
above 200 HU after partial volume), and are *not* part of the tumour mask (unlabelled distractors of tumour size).

Lesions are placed inside the lung parenchyma of one lung, never in bone or outside the lung:
every voxel is clipped to the lung of its side, so a *juxtapleural* tumour (centre placed less
than one radius from the pleura) is flattened against the chest wall, and a *juxtavascular* one
touches a vessel. The mask is the lesion geometry at the slice centre (before blur and noise); the
HU image sees it through the slice profile (``n_sub`` samples per slice). Sizes are calibrated on
the final grid so that the measured longest axial diameter
(:func:`metalung_monai.anatomy.lung_rads.longest_diameter_mm`) matches the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..anatomy.lung_rads import longest_diameter_mm, lung_rads_from_diameter
from .labels import LABEL_LUNG_L, LABEL_LUNG_R
from .shapes import (
    Canvas,
    Grid,
    random_rotation,
    random_unit_vectors,
    segment_depth,
    soft_occupancy,
)

__all__ = [
    "TUMOUR_TYPES",
    "TUMOUR_SHAPES",
    "LUNG_RADS_RANGES_MM",
    "Lesion",
    "LesionRaster",
    "TumorPlan",
    "rasterise",
    "place_lesions",
    "lung_rads_of_diameter",
]

TUMOUR_TYPES = ("solid", "part-solid", "ggo")
TUMOUR_SHAPES = ("lobulated", "spiculated")

#: target longest-diameter ranges (mm) sampled per Lung-RADS class: inside the class with a margin
#: from its boundaries (d < 6 LR2, 6 <= d < 8 LR3, 8 <= d < 15 LR4A, d >= 15 LR4B)
LUNG_RADS_RANGES_MM = {
    "LR2": (4.0, 5.2),
    "LR3": (6.6, 7.4),
    "LR4A": (9.0, 14.0),
    "LR4B": (16.5, 36.0),
}

_LUNG_LABEL = {"right": LABEL_LUNG_R, "left": LABEL_LUNG_L}
MIN_TUMOUR_DIAMETER_MM = 4.0


def lung_rads_of_diameter(d_mm: float) -> str:
    """Lung-RADS size class (``d < 6 -> LR2 ... d >= 15 -> LR4B``; 0 -> LR1)."""
    return lung_rads_from_diameter(float(d_mm))


def _measure(mask: np.ndarray, spacing) -> float:
    return float(longest_diameter_mm(mask, spacing))


@dataclass
class Lesion:
    """Analytic lesion (tumour or calcification) in anatomical millimetres.

    ``depth`` is a signed distance-like function (> 0 inside); ``scale`` multiplies the size and
    is what the calibration adjusts. Drawn by :meth:`sample_tumour` / :meth:`sample_calcification`
    (get-params), rasterised by :func:`rasterise` (apply).

    Attributes:
        radius: base radius (mm) before ``scale``; ``axes``: relative semi-axes (largest 1) of the
            ellipsoid, turned by ``rotation``.
        bump_directions, bump_amplitudes, bump_concentrations: lobulation: the radius grows by
            ``amplitude * exp(concentration * (cos(angle to direction) - 1))`` per bump.
        spike_directions, spike_lengths, spike_radii: spicules (length as a fraction of the
            radius, base radius in mm); ``spike_mask_fraction`` of each length is annotated.
        hu_mean, hu_sd: solid tissue HU; ``ground_glass_hu_mean`` / ``_sd``: ground-glass HU;
            ``solid_core_fraction``: radius fraction of a part-solid tumour's solid core.
        wave_vectors, wave_phases: plane waves of the smooth HU texture (:meth:`field`).
    """

    kind: str
    shape: str
    lung: str
    centre: np.ndarray
    radius: float
    rotation: np.ndarray
    axes: np.ndarray
    bump_directions: np.ndarray
    bump_amplitudes: np.ndarray
    bump_concentrations: np.ndarray
    spike_directions: np.ndarray
    spike_lengths: np.ndarray
    spike_radii: np.ndarray
    spike_mask_fraction: float
    hu_mean: float
    hu_sd: float
    ground_glass_hu_mean: float
    ground_glass_hu_sd: float
    solid_core_fraction: float
    wave_vectors: np.ndarray
    wave_phases: np.ndarray
    scale: float = 1.0
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def sample_tumour(
        cls, rng, kind: str, shape: str, diameter: float, centre, lung: str
    ) -> Lesion:
        if kind not in TUMOUR_TYPES:
            raise ValueError(f"unknown tumour type {kind!r}")
        if shape not in TUMOUR_SHAPES:
            raise ValueError(f"unknown tumour shape {shape!r}")
        k = int(rng.integers(3, 7))
        amp = rng.uniform(0.1, 0.35, k) if shape == "lobulated" else rng.uniform(0.04, 0.15, k)
        n_sp = int(rng.integers(7, 15)) if shape == "spiculated" else 0
        axes = np.sort(rng.uniform(0.75, 1.0, 3))[::-1].copy()
        axes[0] = 1.0
        lesion = cls(
            kind=kind,
            shape=shape,
            lung=lung,
            centre=np.asarray(centre, dtype=np.float64),
            radius=0.5 * float(diameter),
            rotation=random_rotation(rng),
            axes=axes,
            bump_directions=random_unit_vectors(rng, k),
            bump_amplitudes=amp,
            bump_concentrations=rng.uniform(2.0, 6.0, k),
            spike_directions=random_unit_vectors(rng, n_sp),
            spike_lengths=rng.uniform(0.35, 0.9, n_sp),
            spike_radii=rng.uniform(0.6, 1.1, n_sp),
            spike_mask_fraction=float(rng.uniform(0.3, 0.5)),
            hu_mean=float(rng.uniform(-10.0, 50.0)),
            hu_sd=float(rng.uniform(8.0, 25.0)),
            ground_glass_hu_mean=float(rng.uniform(-640.0, -420.0)),
            ground_glass_hu_sd=float(rng.uniform(25.0, 55.0)),
            solid_core_fraction=float(rng.uniform(0.3, 0.6)),
            wave_vectors=random_unit_vectors(rng, 8)
            * rng.uniform(2 * np.pi / 10.0, 2 * np.pi / 4.0, (8, 1)),
            wave_phases=rng.uniform(0, 2 * np.pi, 8),
        )
        lesion.radius /= lesion._max_modulation()
        return lesion

    @classmethod
    def sample_calcification(cls, rng, diameter: float, centre, lung: str) -> Lesion:
        return cls(
            kind="calcification",
            shape="round",
            lung=lung,
            centre=np.asarray(centre, dtype=np.float64),
            radius=0.5 * float(diameter),
            rotation=random_rotation(rng),
            axes=np.array([1.0, *rng.uniform(0.85, 1.0, 2)]),
            bump_directions=np.zeros((0, 3)),
            bump_amplitudes=np.zeros(0),
            bump_concentrations=np.zeros(0),
            spike_directions=np.zeros((0, 3)),
            spike_lengths=np.zeros(0),
            spike_radii=np.zeros(0),
            spike_mask_fraction=0.0,
            hu_mean=float(rng.uniform(800.0, 1500.0)),
            hu_sd=float(rng.uniform(10.0, 40.0)),
            ground_glass_hu_mean=0.0,
            ground_glass_hu_sd=0.0,
            solid_core_fraction=1.0,
            wave_vectors=random_unit_vectors(rng, 4) * (2 * np.pi / 3.0),
            wave_phases=rng.uniform(0, 2 * np.pi, 4),
        )

    def _max_modulation(self) -> float:
        if "_maxmod" not in self.__dict__:
            u = random_unit_vectors(np.random.default_rng(0), 600)
            self.__dict__["_maxmod"] = float(np.max(self._modulation(u)))
        return self.__dict__["_maxmod"]

    def _modulation(self, u: np.ndarray) -> np.ndarray:
        """Radius factor for local unit directions ``u`` (n, 3)."""
        if len(self.bump_amplitudes) == 0:
            return np.ones(len(u))
        dots = u @ self.bump_directions.T
        return 1.0 + (self.bump_amplitudes * np.exp(self.bump_concentrations * (dots - 1.0))).sum(
            axis=1
        )

    # ------------------------------------------------------------------ geometry
    @property
    def lung_label(self) -> int:
        return _LUNG_LABEL[self.lung]

    def extent(self) -> float:
        """Largest distance (mm) from the centre to any point of the lesion (spikes included)."""
        r = self.radius * self.scale * self._max_modulation() / float(np.min(self.axes))
        if len(self.spike_lengths):
            r = r + float(np.max(self.spike_lengths)) * self.radius * self.scale
        return float(r)

    def _spikes(self, for_mask: bool):
        """(base, tip, r_base, r_tip) of each spike in world mm."""
        out = []
        R = self.radius * self.scale
        for d, ln, rs in zip(self.spike_directions, self.spike_lengths, self.spike_radii):
            local = self.rotation.T @ d
            w = local / self.axes
            t0 = R * float(self._modulation((w / np.linalg.norm(w))[None])[0]) / np.linalg.norm(w)
            length = ln * R
            frac = self.spike_mask_fraction if for_mask else 1.0
            r0 = rs * min(1.0, np.sqrt(self.scale))
            r_tip = 0.25 * r0
            base = self.centre + 0.6 * t0 * d
            tip = self.centre + (t0 + frac * length) * d
            r_end = r0 + (r_tip - r0) * (0.4 * t0 + frac * length) / (0.4 * t0 + length)
            out.append((base, tip, r0, r_end))
        return out

    def depth(self, Z, Y, X, for_mask: bool = False, core: bool = False) -> np.ndarray:
        """Signed depth (mm, > 0 inside) on broadcastable coordinate arrays.

        Args:
            for_mask: truncate the spikes to their annotated (inner) part.
            core: the solid core of a part-solid tumour (no spikes).
        """
        c = self.centre
        v = (Z - float(c[0]), Y - float(c[1]), X - float(c[2]))
        rt = self.rotation.T.tolist()  # local = R^T v
        w = []
        for i in range(3):
            li = rt[i][0] * v[0] + rt[i][1] * v[1] + rt[i][2] * v[2]
            w.append(li * (1.0 / float(self.axes[i])))
        dist = np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
        inv = 1.0 / np.maximum(dist, 1e-6)
        mod = 1.0
        for dvec, a, kap in zip(
            self.bump_directions, self.bump_amplitudes, self.bump_concentrations
        ):
            dots = (w[0] * float(dvec[0]) + w[1] * float(dvec[1]) + w[2] * float(dvec[2])) * inv
            mod = mod + float(a) * np.exp(float(kap) * (dots - 1.0))
        R = self.radius * self.scale * (self.solid_core_fraction if core else 1.0)
        d = (R * mod - dist) * float(np.min(self.axes))
        if core or self.shape != "spiculated":
            return d
        for base, tip, r0, r1 in self._spikes(for_mask):
            d = np.maximum(d, segment_depth(Z, Y, X, base, tip, r0, r1))
        return d

    def field(self, Z, Y, X) -> np.ndarray:
        """Smooth zero-mean, unit-variance random field (sum of plane waves)."""
        out = 0.0
        for k, ph in zip(self.wave_vectors, self.wave_phases):
            out = out + np.cos(float(k[0]) * Z + float(k[1]) * Y + float(k[2]) * X + float(ph))
        return out * np.float32(np.sqrt(2.0 / len(self.wave_phases)))

    def hu(self, Z, Y, X) -> np.ndarray:
        """Intrinsic HU of the lesion tissue at the given points."""
        f = self.field(Z, Y, X)
        if self.kind == "calcification":
            return np.clip(self.hu_mean + self.hu_sd * f, 500.0, 1700.0)
        solid = np.clip(self.hu_mean + self.hu_sd * f, -100.0, 100.0)
        if self.kind == "solid":
            return solid
        ggo = np.clip(self.ground_glass_hu_mean + self.ground_glass_hu_sd * f, -700.0, -300.0)
        if self.kind == "ggo":
            return ggo
        core = self.depth(Z, Y, X, core=True) > 0
        return np.where(core, solid, ggo)


@dataclass
class LesionRaster:
    """A lesion rendered on a box of the output grid.

    Attributes:
        box: ``((k0, k1), (j0, j1), (i0, i1))`` voxel ranges.
        occ: float32 occupancy (slice profile and in-plane edge; 0 outside the lung).
        hu: float32 occupancy-weighted mean intrinsic HU.
        mask: bool geometry at the slice centres, clipped to the lung, largest component only.
    """

    box: tuple
    occ: np.ndarray
    hu: np.ndarray
    mask: np.ndarray

    def paste(self, cv: Canvas, label: int) -> None:
        """Blend into a canvas (HU: ``max`` with what is there, so vessels stay visible in GGO)."""
        sl_cv, sl_r = [], []
        for (a, b), (c0, c1) in zip(self.box, cv.box):
            lo, hi = max(a, c0), min(b, c1)
            if hi <= lo:
                return
            sl_cv.append(slice(lo - c0, hi - c0))
            sl_r.append(slice(lo - a, hi - a))
        sl_cv, sl_r = tuple(sl_cv), tuple(sl_r)
        if cv.hu is not None:
            h = cv.hu[sl_cv]
            h += self.occ[sl_r] * np.maximum(self.hu[sl_r] - h, 0.0)
        cv.label[sl_cv][self.mask[sl_r]] = label


def rasterise(
    lesion: Lesion, grid: Grid, n_sub: int, labels_fn, margin_mm: float = 2.0
) -> LesionRaster | None:
    """Render a lesion on the box of ``grid`` around it.

    Args:
        lesion: the lesion (at its current ``scale``).
        grid: output grid.
        n_sub: samples per slice along z (slice profile).
        labels_fn: ``labels_fn(box) -> uint8`` anatomy labels of that box of the grid.
        margin_mm: extra margin around the lesion's extent.

    Returns:
        The raster, or ``None`` when the lesion falls outside the grid.
    """
    ext = lesion.extent() + margin_mm
    box = []
    for k in range(3):
        a = int(np.floor((lesion.centre[k] - ext - grid.start[k]) / grid.spacing[k]))
        b = int(np.ceil((lesion.centre[k] + ext - grid.start[k]) / grid.spacing[k])) + 1
        a, b = max(a, 0), min(b, grid.shape[k])
        if b <= a:
            return None
        box.append((a, b))
    box = tuple(box)
    cv = Canvas(grid, box, n_sub=n_sub, with_hu=False)
    allowed = labels_fn(box) == lesion.lung_label
    full = (slice(None),) * 3
    Z, Y, X = cv.coords(full)
    mask = (lesion.depth(Z, Y, X, for_mask=True) > 0) & allowed
    if mask.any():
        lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            mask = lab == int(np.argmax(sizes))
    Zs, _, _ = cv.coords(full, sub=True)
    w = float(max(grid.spacing[1], grid.spacing[2]))
    f = soft_occupancy(lesion.depth(Zs, Y, X), w).astype(np.float32)
    h = lesion.hu(Zs, Y, X).astype(np.float32)
    occ = cv.reduce_sub(f)
    hu = cv.reduce_sub(f * h) / np.maximum(occ, 1e-6)
    occ = occ * allowed
    return LesionRaster(box, occ.astype(np.float32), hu.astype(np.float32), mask)


@dataclass
class TumorPlan:
    """What to place: type, shape, target longest axial diameter, placement mode and lung."""

    kind: str
    shape: str
    diameter_mm: float
    mode: str  # "interior" | "juxtapleural" | "juxtavascular"
    lung: str  # "right" | "left"


def _calibrate(lesion: Lesion, target: float, grid, n_sub, labels_fn, max_iter: int = 6):
    """Scale the lesion until its measured longest axial diameter matches ``target`` (mm)."""
    sp = grid.spacing
    best = None
    for _ in range(max_iter):
        r = rasterise(lesion, grid, n_sub, labels_fn)
        if r is None:
            return None, 0.0
        d = _measure(r.mask, sp) if r.mask.any() else 0.0
        if best is None or abs(d - target) < abs(best[1] - target):
            best = (lesion.scale, d, r)
        if d > 0 and abs(d - target) <= 0.25:
            break
        factor = target / d if d > 0 else 1.5
        lesion.scale *= float(np.clip(factor, 0.6, 1.6))
    lesion.scale, d, r = best
    return r, d


def _contact(raster: LesionRaster, labels_fn, lung_label: int) -> bool:
    """Does the mask touch something that is not its lung (pleural contact)?"""
    if not raster.mask.any():
        return False
    lab = labels_fn(raster.box)
    grown = ndimage.binary_dilation(raster.mask, structure=ndimage.generate_binary_structure(3, 1))
    ring = grown & ~raster.mask
    other = (lab != lung_label) & (lab != 0)
    return bool((ring & other).any())


def _touches_vessel(raster: LesionRaster, grid: Grid, segs, min_radius: float = 0.8) -> bool:
    if segs is None or len(segs) == 0 or not raster.mask.any():
        return False
    idx = np.nonzero(ndimage.binary_dilation(raster.mask) & ~raster.mask)
    pts = np.stack(
        [grid.start[k] + grid.spacing[k] * (idx[k] + raster.box[k][0]) for k in range(3)], axis=1
    )
    lo, hi = pts.min(0) - 8.0, pts.max(0) + 8.0
    rmax = np.maximum(segs.ra, segs.rb)
    near = np.flatnonzero(
        (rmax >= min_radius)
        & (segs.kind < 2)
        & np.all(np.minimum(segs.a, segs.b) - rmax[:, None] <= hi, axis=1)
        & np.all(np.maximum(segs.a, segs.b) + rmax[:, None] >= lo, axis=1)
    )
    tol = 0.5 * float(max(grid.spacing[1], grid.spacing[2]))
    for i in near:
        d = segment_depth(
            pts[:, 0], pts[:, 1], pts[:, 2], segs.a[i], segs.b[i], segs.ra[i], segs.rb[i]
        )
        if (d > -tol).any():
            return True
    return False


def place_lesions(
    anatomy,
    pmap,
    segs,
    grid: Grid,
    n_sub: int,
    labels_fn,
    rng: np.random.Generator,
    plans: list[TumorPlan],
    calc_diameters: list[float],
    max_tries: int = 40,
):
    """Place, calibrate and rasterise the tumours (in plan order) and calcified nodules.

    Tumour ``i > 0`` must measure smaller than tumour 0 (the patient's main tumour) and fall in
    the Lung-RADS class of its target. Lesions keep at least 3 mm between their extents.

    Returns:
        ``(tumours, calcifications)``: lists of ``(Lesion, LesionRaster)``; each lesion's ``info``
        holds the measured ``diameter_mm``, ``target_diameter_mm``, ``juxtapleural`` and
        ``juxtavascular`` flags and the placement ``mode``. A plan that cannot be placed after
        ``max_tries`` attempts is dropped (rare; the caller checks the class).
    """
    placed: list[tuple[np.ndarray, float]] = []
    z_lo = grid.start[0] + grid.spacing[0]
    z_hi = grid.start[0] + grid.spacing[0] * (grid.shape[0] - 2)
    lung_pts = {}
    for side, lab in _LUNG_LABEL.items():
        idx = np.argwhere(pmap.label == lab)
        lung_pts[side] = (idx, pmap.edt[tuple(idx.T)])

    def world(idx):
        return np.asarray(pmap.grid.start) + idx * pmap.step

    def snap_z(c, jitter=0.2):
        k = np.rint((c[0] - grid.start[0]) / grid.spacing[0])
        c = c.copy()
        c[0] = grid.start[0] + k * grid.spacing[0] + rng.uniform(-jitter, jitter) * grid.spacing[0]
        return c

    def free(c, ext):
        if c[0] - ext < z_lo or c[0] + ext > z_hi:
            return False
        return all(np.linalg.norm(c - pc) > ext + pe + 3.0 for pc, pe in placed)

    tumours = []
    main_d = None
    for n_plan, plan in enumerate(plans):
        R = 0.5 * plan.diameter_mm
        idx_all, edt_all = lung_pts[plan.lung]
        done = False
        for attempt in range(max_tries):
            mode = plan.mode if attempt < max_tries // 2 else "interior"
            if mode == "juxtavascular":
                sel = np.flatnonzero(
                    (segs.lung == _LUNG_LABEL[plan.lung])
                    & (segs.kind < 2)
                    & (segs.ra >= 1.2)
                    & (segs.ra <= 4.0)
                )
                if len(sel) == 0:
                    continue
                i = int(rng.choice(sel))
                pt = segs.a[i] + rng.uniform(0.2, 0.8) * (segs.b[i] - segs.a[i])
                dvec = segs.b[i] - segs.a[i]
                dvec = dvec / np.linalg.norm(dvec)
                n = np.cross(dvec, random_unit_vectors(rng, 1)[0])
                n /= np.linalg.norm(n)
                c = pt + n * (segs.ra[i] + 0.8 * R)
                if pmap.dist(c[None])[0] < 0.8 * R + 1.5:
                    continue
            elif mode == "juxtapleural":
                ok = (edt_all >= max(0.5 * R, 1.0)) & (edt_all <= R + 3.0)
                if not ok.any():
                    continue
                cand = idx_all[ok]
                pts = world(cand)
                rho, _ = anatomy.cavity(pts[:, 0], pts[:, 1], pts[:, 2])
                periph = rho > 0.75
                if periph.any():
                    cand = cand[periph]
                c = world(cand[int(rng.integers(len(cand)))]) + rng.uniform(-1.0, 1.0, 3)
            else:
                ok = edt_all >= R + 4.0
                if not ok.any():
                    ok = edt_all >= edt_all.max() * 0.7
                cand = idx_all[ok]
                c = world(cand[int(rng.integers(len(cand)))]) + rng.uniform(-1.5, 1.5, 3)
            c = snap_z(c)
            lesion = Lesion.sample_tumour(
                rng, plan.kind, plan.shape, plan.diameter_mm, c, plan.lung
            )
            if not free(c, lesion.extent() * 1.3):
                continue
            raster, d = _calibrate(lesion, plan.diameter_mm, grid, n_sub, labels_fn)
            if raster is None or d <= 0:
                continue
            if mode == "juxtapleural":
                outward = -pmap.gradient_dir(c[None])
                for _ in range(4):
                    if _contact(raster, labels_fn, lesion.lung_label):
                        break
                    lesion.centre = lesion.centre + 1.5 * outward
                    lesion.centre[0] = c[0]
                    raster, d = _calibrate(lesion, plan.diameter_mm, grid, n_sub, labels_fn)
                    if raster is None:
                        break
                if raster is None:
                    continue
            if (
                lung_rads_of_diameter(d) != lung_rads_of_diameter(plan.diameter_mm)
                or d < MIN_TUMOUR_DIAMETER_MM
            ):
                continue
            if main_d is not None and d >= main_d:
                continue
            if not free(lesion.centre, lesion.extent()):
                continue
            lesion.info = {
                "mode": mode,
                "target_diameter_mm": round(float(plan.diameter_mm), 2),
                "diameter_mm": round(float(d), 2),
                "juxtapleural": _contact(raster, labels_fn, lesion.lung_label),
                "juxtavascular": _touches_vessel(raster, grid, segs),
            }
            placed.append((lesion.centre.copy(), lesion.extent()))
            tumours.append((lesion, raster))
            if n_plan == 0:
                main_d = d
            done = True
            break
        if not done and n_plan == 0:
            return tumours, []  # the main tumour could not be placed: caller retries / reports
    calcs = []
    for dia in calc_diameters:
        R = 0.5 * dia
        side = "right" if rng.random() < 0.5 else "left"
        idx_all, edt_all = lung_pts[side]
        ok = edt_all >= R + 2.0
        if not ok.any():
            continue
        for _ in range(20):
            c = snap_z(
                world(idx_all[ok][int(rng.integers(int(ok.sum())))]) + rng.uniform(-1.5, 1.5, 3),
                0.1,
            )
            lesion = Lesion.sample_calcification(rng, dia, c, side)
            if not free(c, lesion.extent()):
                continue
            raster = rasterise(lesion, grid, n_sub, labels_fn)
            if raster is None or not raster.mask.any():
                continue
            lesion.info = {"diameter_mm": round(float(dia), 2)}
            placed.append((c, lesion.extent()))
            calcs.append((lesion, raster))
            break
    return tumours, calcs


#: the British spelling, kept for code written before the public API settled on "tumor"
TumourPlan = TumorPlan
