"""The chest of the phantom: body wall, mediastinum, heart, great vessels, airways, bones, abdomen.

All geometry is analytic, in anatomical millimetres ``(Z, Y, X)`` (``X`` to the patient's left,
``Y`` posterior, ``Z`` superior; ``X = Y = 0`` at the body centre, ``Z = 0`` at the lowest point of
the lungs, ``Z = lung_height`` at the apices); see :mod:`metalung_monai.phantom.shapes`.

TorchIO's get-params / apply split: :func:`~.body_params.sample_body_params` draws every number
(:class:`~.body_params.BodyParams`), :class:`ChestAnatomy` only renders them.

Labels (``LABEL_*``) are those of the ground-truth volume written with each patient, except
the internal :data:`LABEL_MEDIASTINUM` (mediastinal fat, where hilar vessels may run) that
:data:`TRUTH_OF_LABEL` maps onto fat (see ``docs/phantom.md``):

===== ================================================================================
truth tissue
===== ================================================================================
0     air outside the patient (and outside the field of view)
1     right lung (parenchyma with the vessels and small bronchi inside it)
2     left lung (idem)
3     trachea and main bronchi (lumen and wall)
4     calcified nodule
5     tumour (identical to the tumour mask)
6     bone (vertebrae, ribs, sternum, scapulae, clavicles)
7     heart and great vessels (aorta, pulmonary trunk and arteries, venae cavae, ...)
8     fat (subcutaneous, intermuscular, mediastinal, abdominal)
9     patient table
10    muscle and other soft tissue (chest wall, diaphragm, oesophagus, discs, spinal canal,
      costal cartilage, thoracic inlet)
11    abdominal organs (liver, spleen, stomach wall and content)
12    gas in the stomach (air inside the body that is not lung)
===== ================================================================================
"""

from __future__ import annotations

import numpy as np

from .body_params import (
    BodyParams,
    cavity_half_axes,
    sample_body_params,
    superellipse_rho,
)
from .labels import (
    LABEL_ABDOMEN,
    LABEL_AIR,
    LABEL_AIRWAY,
    LABEL_BONE,
    LABEL_CALC,
    LABEL_FAT,
    LABEL_GAS,
    LABEL_HEART,
    LABEL_LUNG_L,
    LABEL_LUNG_R,
    LABEL_MEDIASTINUM,
    LABEL_SOFT,
    LABEL_TABLE,
    LABEL_TUMOUR,
    TRUTH_LABELS,
    TRUTH_OF_LABEL,
)
from .lungs import apex_ok, lung_floor, parenchyma_hu
from .shapes import Canvas, ellipsoid_depth, rotation_matrix, segment_depth
from .tubes import Tube

__all__ = [
    "BodyParams",
    "ChestAnatomy",
    "Tube",
    "sample_body_params",
    "TRUTH_LABELS",
    "TRUTH_OF_LABEL",
    "LABEL_AIR",
    "LABEL_LUNG_R",
    "LABEL_LUNG_L",
    "LABEL_AIRWAY",
    "LABEL_CALC",
    "LABEL_TUMOUR",
    "LABEL_BONE",
    "LABEL_HEART",
    "LABEL_FAT",
    "LABEL_SOFT",
    "LABEL_TABLE",
    "LABEL_MEDIASTINUM",
    "LABEL_ABDOMEN",
    "LABEL_GAS",
]


class ChestAnatomy:
    """One patient's chest (:class:`~.body_params.BodyParams`) rendered on a :class:`~.shapes.Canvas`.

    Build with :meth:`sample` (or from logged parameters: ``ChestAnatomy(params)``);
    :attr:`params` holds every sampled number (mm, HU) and the tubular structures
    (``params.tubes``). :meth:`render` paints labels and HU (before vessels, lesions, blur and
    noise); rendering draws nothing at random.
    """

    def __init__(self, params: BodyParams) -> None:
        self.params = params
        self._heart_rot = rotation_matrix((1.0, 0.0, 0.0), params.heart_angle)  # about Z (in-plane)

    @property
    def tubes(self) -> list[Tube]:
        """The vessels, airways, oesophagus and clavicles (``params.tubes``)."""
        return self.params.tubes

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        fov_mm: float,
        contrast: bool,
        lung_height: float | None = None,
    ) -> ChestAnatomy:
        """Draw the anatomy of one patient (:func:`~.body_params.sample_body_params`)."""
        return cls(sample_body_params(rng, fov_mm, contrast, lung_height))

    # ------------------------------------------------------------------ geometry queries
    def z_extent(self) -> tuple[float, float]:
        """Anatomical ``(Z_min, Z_max)`` (mm) that a scan of this patient covers."""
        return float(self.params.scan_bottom_z), float(self.params.scan_top_z)

    def body_half_axes(self) -> tuple[float, float]:
        """Half width (X) and half depth (Y) of the body outline, mm."""
        return float(self.params.body_half_width), float(self.params.body_half_depth)

    def cavity(self, Z, Y, X):
        """Normalised cavity radius ``rho`` (< 1 inside) and radial distance (mm) outside it."""
        a, b = cavity_half_axes(self.params, Z)
        dy = Y - self.params.cavity_centre_y
        rho = np.sqrt((X / a) ** 2 + (dy / b) ** 2)
        r = np.sqrt(X * X + dy * dy)
        return rho, r * (1.0 - 1.0 / np.maximum(rho, 1e-6))

    # ------------------------------------------------------------------ rendering
    def render(self, cv: Canvas) -> None:
        """Paint the anatomy (no intrapulmonary vessels, lesions, texture, blur or noise).

        Fills ``cv.label`` (internal labels) and ``cv.hu`` (float32 HU) of the canvas.
        """
        p = self.params
        lab, hu = cv.label, cv.hu
        have_hu = hu is not None
        full = (slice(None), slice(None), slice(None))
        Z, Y, X = cv.coords(full)
        Y2, X2 = Y[0], X[0]  # (ny, 1), (1, nx)

        def paint(mask, label, value, where=full):
            if mask.shape != lab[where].shape:
                mask = np.broadcast_to(mask, lab[where].shape)
            lab[where][mask] = label
            if have_hu:
                if np.ndim(value) == 0:
                    hu[where][mask] = value
                else:
                    hu[where][mask] = np.broadcast_to(value, mask.shape)[mask]

        lab[:] = LABEL_AIR
        if have_hu:
            hu[:] = p.hu_air
        # table (curved carbon shell over a foam core)
        if p.has_table:
            ts = p.table_y - p.table_curvature * X2 * X2
            wide = np.abs(X2) < 215.0
            shell = (((Y2 >= ts) & (Y2 < ts + 4.0)) | ((Y2 >= ts + 34.0) & (Y2 < ts + 38.0))) & wide
            foam = (Y2 >= ts + 4.0) & (Y2 < ts + 34.0) & wide
            paint(foam, LABEL_TABLE, -960.0)
            paint(shell, LABEL_TABLE, p.hu_table)
        # body: subcutaneous fat then muscle (2D, the same on every slice)
        rho_b = superellipse_rho(
            Y2,
            X2,
            0.0,
            p.body_half_width,
            p.body_half_depth,
            p.body_half_depth,
            p.outline_exponent_front,
            p.outline_exponent_back,
        )
        rho_m = superellipse_rho(
            Y2,
            X2,
            0.0,
            p.muscle_half_width,
            p.muscle_half_depth,
            p.muscle_half_depth,
            p.outline_exponent_front,
            p.outline_exponent_back,
        )
        paint(rho_b <= 1.0, LABEL_FAT, p.hu_fat)
        muscle2 = rho_m <= 1.0
        paint(muscle2, LABEL_SOFT, p.hu_muscle)
        # thoracic cavity (its outline narrows towards the apex): mediastinal fat
        a, b = cavity_half_axes(p, cv.z)
        ia2 = (1.0 / (a * a)).astype(np.float32)[:, None, None]
        ib2 = (1.0 / (b * b)).astype(np.float32)[:, None, None]
        dy = Y2 - np.float32(p.cavity_centre_y)
        x2, y2 = X2 * X2, dy * dy
        rho_c = np.sqrt(x2 * ia2 + y2 * ib2)
        d_out = np.sqrt(x2 + y2) * (1.0 - 1.0 / np.maximum(rho_c, 1e-6))
        cav = (rho_c < 1.0) & muscle2
        # a thin fat plane between the ribs / intercostal muscles and the outer chest-wall muscles
        paint(
            (d_out > p.rib_layer_thickness + 0.5)
            & (d_out < p.rib_layer_thickness + 0.5 + p.chest_wall_fat_thickness)
            & muscle2,
            LABEL_FAT,
            p.hu_fat,
        )
        paint(cav, LABEL_MEDIASTINUM, p.hu_mediastinal_fat)
        floor = lung_floor(p.diaphragm, Y2, X2)  # (ny, nx)
        self._render_abdomen(cv, cav, floor, paint)
        # lungs
        excl = self._exclusion(cv)
        side_left = X2 >= p.midline_x
        lung = cav & (Z > floor) & (Z < p.lung_height) & ~excl
        k_cap = int(np.searchsorted(cv.z, p.apex_cap_z, side="right"))
        if k_cap < cv.shape[0]:
            zc = Z[k_cap:]
            ok = np.where(side_left, apex_ok(p, zc, Y, X, +1), apex_ok(p, zc, Y, X, -1))
            lung[k_cap:] &= ok
        if k_cap < cv.shape[0]:
            # thoracic inlet: soft tissue (muscle, vessels) around the apices, fat near the midline
            inlet = cav[k_cap:] & ~lung[k_cap:] & (np.abs(X2 - p.midline_x) > 22.0)
            paint(inlet, LABEL_SOFT, p.hu_muscle, (slice(k_cap, None), slice(None), slice(None)))
        lung_lab = np.where(side_left, LABEL_LUNG_L, LABEL_LUNG_R).astype(np.uint8)
        lab[lung] = np.broadcast_to(lung_lab, lab.shape)[lung]
        if have_hu:
            hu[lung] = np.broadcast_to(parenchyma_hu(p, Y2).astype(np.float32), lab.shape)[lung]
        # heart, great vessels, airways, oesophagus, clavicles
        self._render_heart(cv, paint)
        for tube in self.tubes:
            self._render_tube(cv, tube)
        # bones
        self._render_spine(cv, paint)
        self._render_ribs(cv, d_out, muscle2)
        self._render_sternum_scapulae(cv, paint, d_out, muscle2)

    def _render_abdomen(self, cv, cav, floor, paint) -> None:
        p = self.params
        k1 = int(
            np.searchsorted(cv.z, max(p.diaphragm.right_z, p.diaphragm.left_z) + 1.0, side="right")
        )
        if k1 == 0:
            return
        win = (slice(0, k1), slice(None), slice(None))
        Z, Y, X = cv.coords(win)
        below = cav[win] & (Z <= floor)
        if not below.any():
            return
        diaphragm = below & (Z > floor - 4.0)
        paint(diaphragm, LABEL_SOFT, p.hu_muscle, win)
        abd = below & ~diaphragm
        paint(abd, LABEL_FAT, p.hu_abdominal_fat, win)
        # liver: right side, its left lobe reaching across the midline anteriorly
        front = np.clip((p.cavity_centre_y - Y) / p.cavity_half_depth, 0.0, 1.0)
        liver = abd & (X < p.midline_x - 12.0 + 60.0 * front)
        paint(liver, LABEL_ABDOMEN, p.hu_liver, win)
        # spleen; stomach: wall, content, gas anteriorly (supine: gas rises to the front)
        for centre, axes, kind in (
            ((p.spleen_z, p.spleen_y, p.spleen_x), p.spleen_semi_axes, "spleen"),
            ((p.stomach_z, p.stomach_y, p.stomach_x), p.stomach_semi_axes, "stomach"),
        ):
            r = max(axes)
            w = cv.window(np.subtract(centre, r), np.add(centre, r))
            if w is None or w[0].start >= k1:
                continue
            w = (slice(w[0].start, min(w[0].stop, k1)), w[1], w[2])
            z, y, x = cv.coords(w)
            d = ellipsoid_depth(z, y, x, centre, axes)
            ab = abd[w]
            if kind == "spleen":
                paint(ab & (d > 0), LABEL_ABDOMEN, p.hu_spleen, w)
                continue
            paint(ab & (d > 0), LABEL_ABDOMEN, p.hu_muscle, w)
            # content and gas keep a 5 mm gastric wall below the 4 mm diaphragm: 9 mm of soft
            # tissue between the lung base and the gas bubble, as in patients (thinner, thick
            # slices would bridge lung and gas by partial volume)
            inner = ab & (d > 4.0) & (z <= floor[w[1], w[2]] - 9.0)
            paint(inner, LABEL_ABDOMEN, p.hu_stomach, w)
            level = p.stomach_y - p.stomach_semi_axes[1] * (1.0 - 2.0 * p.stomach_gas_fraction)
            paint(inner & (y < level), LABEL_GAS, p.hu_air, w)

    def _exclusion(self, cv) -> np.ndarray:
        """Boolean: mediastinal structures (with their fat margin) that the lungs must avoid."""
        p = self.params
        Z, Y, X = cv.coords((slice(None),) * 3)
        front, back = (
            p.cavity_centre_y - p.cavity_half_depth,
            p.cavity_centre_y + p.cavity_half_depth,
        )
        frac = np.clip((Y - front) / (back - front), 0.0, 1.0)
        width = (
            p.mediastinum_half_width_front
            + (p.mediastinum_half_width_back - p.mediastinum_half_width_front) * frac
        )
        excl = np.broadcast_to(np.abs(X - p.midline_x) < width, cv.shape).copy()
        # paravertebral soft tissue: around and behind the vertebral body
        para = (
            (
                (X / (p.vertebral_body_radius_x + 6.0)) ** 2
                + ((Y - p.vertebral_body_y) / (p.vertebral_body_radius_y + 6.0)) ** 2
            )
            < 1.0
        ) | ((np.abs(X) < p.vertebral_body_radius_x + 6.0) & (Y > p.vertebral_body_y))
        excl |= np.broadcast_to(para, cv.shape)
        # heart with pericardial fat
        c = (p.heart_z, p.heart_y, p.heart_x)
        ax = (p.heart_semi_axis_z, p.heart_semi_axis_y, p.heart_semi_axis_x)
        m = 4.0
        win = cv.window(np.subtract(c, max(ax) + m), np.add(c, max(ax) + m))
        if win is not None:
            z, y, x = cv.coords(win)
            excl[win] |= ellipsoid_depth(z, y, x, c, ax, self._heart_rot) > -m
        for tube in self.tubes:
            if tube.margin is None:
                continue
            for a, b, ra, rb in tube.segments():
                r = max(ra, rb) + tube.margin
                win = cv.window(np.minimum(a, b) - r, np.maximum(a, b) + r)
                if win is None:
                    continue
                z, y, x = cv.coords(win)
                excl[win] |= segment_depth(z, y, x, a, b, ra + tube.margin, rb + tube.margin) > 0
        return excl

    def _render_heart(self, cv, paint) -> None:
        p = self.params
        c = (p.heart_z, p.heart_y, p.heart_x)
        ax = (p.heart_semi_axis_z, p.heart_semi_axis_y, p.heart_semi_axis_x)
        win = cv.window(np.subtract(c, max(ax)), np.add(c, max(ax)))
        if win is None:
            return
        z, y, x = cv.coords(win)
        d = ellipsoid_depth(z, y, x, c, ax, self._heart_rot)
        rho_c, _ = self.cavity(z, y, x)
        inside = (d > 0) & (rho_c < 1.0) & (z > lung_floor(p.diaphragm, y, x) - 8.0)
        paint(inside, LABEL_HEART, p.hu_myocardium, win)
        # chambers (blood pool) with an interventricular septum
        r = self._heart_rot
        ux = r[2, 0] * (z - c[0]) + r[2, 1] * (y - c[1]) + r[2, 2] * (x - c[2])
        uy = r[1, 0] * (z - c[0]) + r[1, 1] * (y - c[1]) + r[1, 2] * (x - c[2])
        septum = np.abs(ux * 0.8 + uy * 0.6 - 8.0) < 5.0
        paint(inside & (d > p.myocardium_thickness) & ~septum, LABEL_HEART, p.hu_blood, win)

    def _render_tube(self, cv, tube: Tube) -> None:
        lab, hu = cv.label, cv.hu
        for a, b, ra, rb in tube.segments():
            r = max(ra, rb)
            win = cv.window(np.minimum(a, b) - r, np.maximum(a, b) + r)
            if win is None:
                continue
            z, y, x = cv.coords(win)
            d = segment_depth(z, y, x, a, b, ra, rb)
            inside = d > 0
            if not inside.any():
                continue
            lab[win][inside] = tube.label
            if hu is not None:
                hu[win][inside] = tube.hu
            if tube.lumen > 0:
                lumen = segment_depth(z, y, x, a, b, ra * tube.lumen, rb * tube.lumen) > 0
                if hu is not None:
                    hu[win][lumen] = self.params.hu_air

    def _render_spine(self, cv, paint) -> None:
        p = self.params
        lo = (
            -1e9,
            p.vertebral_body_y - p.vertebral_body_radius_y - 1,
            -(p.vertebral_body_radius_x + p.spinal_canal_radius + 30.0),
        )
        hi = (
            1e9,
            p.spinal_canal_y + p.spinal_canal_radius + 45.0,
            p.vertebral_body_radius_x + p.spinal_canal_radius + 30.0,
        )
        win = cv.window(lo, hi)
        if win is None:
            return
        z, y, x = cv.coords(win)
        phase = np.mod(z - p.vertebra_phase_z, p.vertebra_height)  # (nz, 1, 1)
        in_disc = phase < p.disc_thickness
        body_q = (x / p.vertebral_body_radius_x) ** 2 + (
            (y - p.vertebral_body_y) / p.vertebral_body_radius_y
        ) ** 2
        body = body_q < 1.0
        inner = (
            (x / (p.vertebral_body_radius_x - p.cortex_thickness)) ** 2
            + ((y - p.vertebral_body_y) / (p.vertebral_body_radius_y - p.cortex_thickness)) ** 2
        ) < 1.0
        body3 = np.broadcast_to(body, np.broadcast_shapes(body.shape, phase.shape))
        paint(body3 & np.broadcast_to(in_disc, body3.shape), LABEL_SOFT, p.hu_disc, win)
        bone_sl = ~in_disc
        cort = body3 & np.broadcast_to(bone_sl, body3.shape)
        paint(cort, LABEL_BONE, p.hu_cortical_bone, win)
        paint(cort & np.broadcast_to(inner, body3.shape), LABEL_BONE, p.hu_marrow, win)
        # posterior elements: neural arch, transverse and spinous processes
        rc = np.sqrt(x * x + (y - p.spinal_canal_y) ** 2)
        arch = (
            (rc > p.spinal_canal_radius)
            & (rc < p.spinal_canal_radius + 5.0)
            & (y > p.vertebral_body_y + 0.5 * p.vertebral_body_radius_y)
        )
        arch_z = (phase > p.disc_thickness) & (phase < 0.85 * p.vertebra_height)
        trans = ((np.abs(x) - (p.spinal_canal_radius + 15.0)) / 12.0) ** 2 + (
            (y - p.spinal_canal_y + 2.0) / 5.0
        ) ** 2 < 1.0
        trans_z = (phase > 0.3 * p.vertebra_height) & (phase < 0.75 * p.vertebra_height)
        spin = (x / 4.0) ** 2 + (
            (y - (p.spinal_canal_y + p.spinal_canal_radius + 18.0)) / 15.0
        ) ** 2 < 1.0
        spin_z = phase > 0.45 * p.vertebra_height
        post = (arch & arch_z) | (trans & trans_z) | (spin & spin_z)
        paint(post, LABEL_BONE, 0.5 * (p.hu_cortical_bone + p.hu_marrow), win)
        canal = np.broadcast_to(rc < p.spinal_canal_radius, post.shape)
        paint(canal, LABEL_SOFT, p.hu_csf, win)

    def _render_ribs(self, cv, d_out, muscle2) -> None:
        p = self.params
        lab, hu = cv.label, cv.hu
        shell = (d_out > 0.0) & (d_out < 2 * p.rib_radius_radial + 1.5) & muscle2
        idx = np.nonzero(shell)
        if len(idx[0]) == 0:
            return
        z = cv.z[idx[0]]
        y = cv.y[idx[1]]
        x = cv.x[idx[2]]
        d = d_out[idx]
        phi = (
            np.arctan2(np.abs(x), y - p.cavity_centre_y) / np.pi
        )  # 0 posterior midline, 1 anterior midline
        u0 = 0.08
        q = z + p.rib_anterior_drop * np.clip(phi - u0, 0.0, None) ** p.rib_drop_exponent
        k = np.rint((p.first_rib_z - q) / p.rib_spacing)
        dzr = q - (p.first_rib_z - k * p.rib_spacing)
        kk = k.astype(int)
        ok = (kk >= 0) & (kk <= 11) & (phi > u0)
        bone_end = np.where(kk <= 6, 0.84, np.where(kk <= 9, 0.78, np.where(kk == 10, 0.55, 0.45)))
        cart_end = np.where(kk <= 6, 0.955, np.where(kk <= 9, 0.86, 0.0))
        az = np.where(kk == 0, 0.75 * p.rib_radius_z, p.rib_radius_z)
        dc = p.rib_radius_radial + 0.5
        e = ((d - dc) / p.rib_radius_radial) ** 2 + (dzr / az) ** 2
        e_in = ((d - dc) / (p.rib_radius_radial - p.cortex_thickness * 0.6)) ** 2 + (
            dzr / (az - p.cortex_thickness)
        ) ** 2
        inside = ok & (e < 1.0)
        bone = inside & (phi <= bone_end)
        cart = inside & (phi > bone_end) & (phi <= cart_end)
        sel = tuple(i[bone] for i in idx)
        lab[sel] = LABEL_BONE
        selc = tuple(i[cart] for i in idx)
        lab[selc] = LABEL_SOFT
        if hu is not None:
            hu[sel] = np.where(e_in[bone] < 1.0, p.hu_marrow, p.hu_cortical_bone).astype(np.float32)
            hu[selc] = p.hu_cartilage

    def _render_sternum_scapulae(self, cv, paint, d_out, muscle2) -> None:
        p = self.params
        # sternum (manubrium wider) just anterior to the cavity
        rx_max = p.sternum_radius_x * 1.6
        w = cv.window(
            (
                p.sternum_bottom_z,
                p.cavity_centre_y - p.cavity_half_depth - 2 * p.sternum_radius_y - 2.0,
                -rx_max,
            ),
            (
                p.sternum_top_z,
                p.cavity_centre_y - p.cavity_half_depth * (1 - p.apex_depth_taper * 1.34) + 1.0,
                rx_max,
            ),
        )
        if w is not None:
            Z, Y, X = cv.coords(w)
            _, b = cavity_half_axes(p, Z)
            yst = p.cavity_centre_y - b - p.sternum_radius_y - 0.5
            rx = np.where(Z > p.sternum_top_z - 45.0, rx_max, p.sternum_radius_x)
            q = (X / rx) ** 2 + ((Y - yst) / p.sternum_radius_y) ** 2
            qi = (X / (rx - p.cortex_thickness)) ** 2 + (
                (Y - yst) / (p.sternum_radius_y - p.cortex_thickness)
            ) ** 2
            st = q < 1.0
            paint(st, LABEL_BONE, p.hu_cortical_bone, w)
            paint(st & (qi < 1.0), LABEL_BONE, p.hu_marrow, w)
        # scapulae: thin plates outside the posterolateral ribs
        k0 = int(np.searchsorted(cv.z, p.carina_z - 75.0, side="left"))
        k1 = int(np.searchsorted(cv.z, p.lung_height + 12.0, side="right"))
        if k1 > k0:
            w = (slice(k0, k1), slice(None), slice(None))
            _, Y, X = cv.coords(w)
            phi = np.arctan2(np.abs(X), Y - p.cavity_centre_y) / np.pi
            dd = d_out[w]
            sc = (
                (phi > 0.13)
                & (phi < 0.34)
                & (dd > p.scapula_depth)
                & (dd < p.scapula_depth + p.scapula_thickness)
                & muscle2
            )
            paint(sc, LABEL_BONE, 0.5 * (p.hu_cortical_bone + p.hu_marrow), w)
