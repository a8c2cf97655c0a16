"""The chest of the phantom: body wall, mediastinum, heart, great vessels, airways, bones, abdomen.

All geometry is analytic, in anatomical millimetres ``(Z, Y, X)`` (``X`` to the patient's left,
``Y`` posterior, ``Z`` superior; ``X = Y = 0`` at the body centre, ``Z = 0`` at the lowest point of
the lungs, ``Z = H`` at the apices); see :mod:`metalung_monai.phantom.shapes`.

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

import math
from dataclasses import dataclass

import numpy as np

from .lungs import apex_ok, dome_height, lung_floor, parenchyma_hu
from .shapes import Canvas, ellipsoid_depth, rotation_matrix, segment_depth

__all__ = [
    "ChestAnatomy",
    "Params",
    "Tube",
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

LABEL_AIR = 0
LABEL_LUNG_R = 1
LABEL_LUNG_L = 2
LABEL_AIRWAY = 3
LABEL_CALC = 4
LABEL_TUMOUR = 5
LABEL_BONE = 6
LABEL_HEART = 7
LABEL_FAT = 8
LABEL_TABLE = 9
LABEL_SOFT = 10
LABEL_ABDOMEN = 11
LABEL_GAS = 12
LABEL_MEDIASTINUM = 13  # internal: mediastinal fat (hilar vessels may run through it) -> LABEL_FAT

TRUTH_LABELS = {
    0: "air outside the patient",
    1: "right lung (parenchyma incl. vessels and small bronchi)",
    2: "left lung (parenchyma incl. vessels and small bronchi)",
    3: "trachea and main bronchi (lumen and wall)",
    4: "calcified nodule",
    5: "tumour (= tumour mask)",
    6: "bone",
    7: "heart and great vessels",
    8: "fat (subcutaneous, intermuscular, mediastinal, abdominal)",
    9: "patient table",
    10: "muscle and other soft tissue (chest wall, diaphragm, oesophagus, discs, canal, cartilage)",
    11: "abdominal organs (liver, spleen, stomach)",
    12: "gas in the stomach",
}

TRUTH_OF_LABEL = np.arange(256, dtype=np.uint8)
TRUTH_OF_LABEL[LABEL_MEDIASTINUM] = LABEL_FAT


class Params(dict):
    """A dict of named numbers with attribute access (``p.H`` is ``p["H"]``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    __setattr__ = dict.__setitem__


@dataclass
class Tube:
    """A tapered tube along a polyline (vessel, airway, oesophagus, clavicle).

    Attributes:
        name: what it is (for reports).
        points: ``(n, 3)`` centre-line points ``(Z, Y, X)`` in mm.
        radii: ``(n,)`` radius in mm at each point.
        label: internal label painted inside.
        hu: HU inside.
        margin: mm of mediastinal fat kept between the tube and the lungs (``None``: the tube does
            not push the lungs away).
        lumen: for airways, the lumen radius as a fraction of the radius (air inside); 0 = solid.
    """

    name: str
    points: np.ndarray
    radii: np.ndarray
    label: int
    hu: float
    margin: float | None = 2.0
    lumen: float = 0.0

    def segments(self):
        for i in range(len(self.points) - 1):
            yield self.points[i], self.points[i + 1], float(self.radii[i]), float(self.radii[i + 1])

    def bbox(self, extra: float = 0.0):
        r = float(np.max(self.radii)) + extra
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r


def _bezier(p0, p1, p2, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(v, dtype=np.float64) for v in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def _superellipse_rho(Y, X, yc, a, b_front, b_back, p_front, p_back):
    """Normalised superellipse radius (< 1 inside) of the body outline (flatter back)."""
    dy = Y - yc
    back = dy > 0
    b = np.where(back, b_back, b_front)
    pw = np.where(back, p_back, p_front)
    return (np.abs(X / a) ** pw + np.abs(dy / b) ** pw) ** (1.0 / pw)


class ChestAnatomy:
    """Sampled anatomy of one patient, rendered onto any :class:`~.shapes.Canvas`.

    Build with :meth:`sample`; :attr:`p` holds every sampled number (mm, HU), :attr:`tubes` the
    tubular structures. :meth:`render` paints labels and HU (before vessels, lesions, blur and
    noise).
    """

    def __init__(self, p: Params, tubes: list[Tube]) -> None:
        self.p = p
        self.tubes = tubes
        self._heart_rot = rotation_matrix((1.0, 0.0, 0.0), p.heart_angle)  # about Z (in-plane)

    # ------------------------------------------------------------------ sampling
    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        fov_mm: float,
        contrast: bool,
        lung_height: float | None = None,
    ):
        """Draw the anatomy of one patient.

        Args:
            rng: generator (consumed).
            fov_mm: reconstruction field of view (mm); the body is fitted inside its circle.
            contrast: intravenous contrast (blood pool 150-300 HU) or not (30-50 HU).
            lung_height: apex-to-base lung height in mm (default: uniform 200-265).
        """
        u = rng.uniform
        p = Params()
        p.contrast = bool(contrast)
        p.H = float(lung_height if lung_height is not None else u(200.0, 265.0))
        # thoracic cavity and wall
        p.a_in = u(112.0, 134.0)
        p.b_in = u(74.0, 94.0)
        p.t_fat = u(5.0, 28.0)
        p.m_lat = u(6.0, 11.0)
        p.m_ant = u(9.0, 15.0)
        p.m_post = u(30.0, 42.0)
        p.rib_zone = 9.0
        p.p_front = u(2.0, 2.3)
        p.p_back = u(2.5, 3.2)
        # fit the body inside the field-of-view circle (radius fov/2 minus a few mm of air)
        for _ in range(40):
            cls._body_from_cavity(p)
            if cls._body_radius_max(p) <= 0.5 * fov_mm - 6.0:
                break
            if p.t_fat > 6.0:
                p.t_fat = max(5.0, p.t_fat - 3.0)
            else:
                p.a_in *= 0.97
                p.b_in *= 0.97
        p.taper_z0 = 0.25 * p.H
        p.taper_a = u(0.24, 0.32)
        p.taper_b = u(0.12, 0.2)
        # mediastinum midline and band
        p.xm = u(-2.0, 5.0)
        p.band_front = u(1.5, 4.5)
        p.band_back = u(8.0, 13.0)
        # spine
        p.vb_rx = u(16.0, 21.0)
        p.vb_ry = u(13.0, 17.0)
        p.vb_y = p.yc + p.b_in - p.vb_ry - u(2.0, 7.0)
        p.canal_r = u(7.0, 9.0)
        p.canal_y = p.vb_y + p.vb_ry + p.canal_r + 1.0
        p.vert_h = u(23.0, 27.0)
        p.disc_t = u(4.0, 6.0)
        p.vert_z0 = u(0.0, p.vert_h)
        # airway, oesophagus
        p.eso_r = u(6.5, 8.5)
        p.eso_y = p.vb_y - p.vb_ry - p.eso_r - 1.5
        p.eso_x = u(2.0, 8.0)
        p.eso_air = bool(rng.random() < 0.5)
        p.tr_r = u(8.0, 10.0)
        p.tr_wall = u(1.8, 2.6)
        p.tr_y = p.eso_y - p.eso_r - p.tr_r - 2.0
        p.carina_z = p.H * u(0.56, 0.63)
        # diaphragm domes (right higher), apex cap
        p.dome_z_r = p.H * u(0.26, 0.34)
        p.dome_z_l = p.dome_z_r - u(8.0, 22.0)
        p.dome_x_r = -0.45 * p.a_in
        p.dome_x_l = 0.45 * p.a_in
        p.dome_y = p.yc - 0.2 * p.b_in
        p.dome_rx = 0.62 * p.a_in
        p.dome_ry = 1.0 * p.b_in
        p.cap_z0 = p.H - u(70.0, 95.0)
        a0, b0 = cls._cavity_ab(p, p.cap_z0)
        p.cap_x = 0.5 * a0
        p.cap_ax = 0.64 * a0
        p.cap_y = p.yc + 0.1 * b0
        p.cap_ay = 1.08 * b0
        # heart (ellipsoid on the left dome, long axis towards left-anterior)
        p.heart_a = u(52.0, 64.0)
        p.heart_b = u(42.0, 52.0)
        p.heart_c = u(45.0, 55.0)
        p.heart_angle = math.radians(u(25.0, 40.0))
        p.heart_x = u(12.0, 24.0)
        p.heart_y = p.yc - u(0.1, 0.25) * p.b_in
        p.heart_z = p.dome_z_l * 0.55 + 0.72 * p.heart_c
        p.heart_wall = u(7.0, 10.0)
        # great vessels
        p.aorta_r = u(13.0, 16.5)
        p.aorta_r_desc = u(10.0, 12.5)
        p.arch_z = p.carina_z + u(18.0, 30.0)
        p.asc_x = u(-4.0, 6.0)
        p.asc_y = p.tr_y - u(28.0, 38.0)
        p.desc_x = p.vb_rx * 0.7 + p.aorta_r_desc * 0.9
        p.desc_y = p.vb_y - p.vb_ry * 0.55
        p.hilum_x = 0.36 * p.a_in + 8.0
        # sternum, ribs, scapulae
        p.st_top = p.carina_z + u(45.0, 60.0)
        p.st_bot = p.dome_z_r - u(0.0, 15.0)
        p.st_rx = u(13.0, 17.0)
        p.st_ry = u(5.0, 7.0)
        p.rib_top = p.H + u(0.0, 10.0)
        p.rib_dz = u(22.0, 26.0)
        p.rib_drop = u(120.0, 150.0)
        p.rib_pow = u(1.1, 1.3)
        p.wall_fat = u(1.5, 4.0)
        p.rib_ar = u(2.8, 3.6)
        p.rib_az = u(5.0, 6.5)
        p.cortex = u(1.8, 2.4)
        p.scap_d = u(12.0, 16.0)
        p.scap_t = u(3.0, 4.5)
        # table
        p.table = bool(rng.random() < 0.85)
        p.table_y = p.b_b + u(0.0, 8.0)
        p.table_curv = u(0.0003, 0.0009)
        # tissue HU
        p.hu_air = -1000.0
        p.hu_fat = u(-115.0, -85.0)
        p.hu_medfat = p.hu_fat + u(-5.0, 15.0)
        p.hu_muscle = u(35.0, 55.0)
        if contrast:
            p.hu_blood = u(150.0, 300.0)
            p.hu_myo = u(90.0, 130.0)
            p.hu_liver = u(95.0, 125.0)
            p.hu_spleen = u(100.0, 130.0)
        else:
            p.hu_blood = u(35.0, 50.0)
            p.hu_myo = p.hu_blood + u(-2.0, 8.0)
            p.hu_liver = u(50.0, 66.0)
            p.hu_spleen = u(40.0, 52.0)
        p.hu_stomach = u(5.0, 30.0)
        p.hu_abd_fat = u(-95.0, -60.0)
        p.hu_cortical = u(750.0, 1000.0)
        p.hu_marrow = u(180.0, 350.0)
        p.hu_cartilage = u(90.0, 160.0)
        p.hu_disc = u(70.0, 95.0)
        p.hu_csf = u(10.0, 30.0)
        p.hu_airway_wall = u(-20.0, 40.0)
        p.hu_table = u(120.0, 260.0)
        p.lung_hu = u(-870.0, -830.0)
        p.lung_gradient = u(30.0, 70.0)
        # abdomen (stomach with a gas bubble under the left dome, spleen behind it)
        p.st_gas = u(0.12, 0.4)
        p.stom_c = (u(35.0, 45.0), u(32.0, 40.0), u(36.0, 46.0))
        p.stom_x = 0.45 * p.a_in
        p.stom_y = p.yc - 0.25 * p.b_in
        p.stom_z = float(dome_height(p, p.stom_y, p.stom_x)) - 4.0 - 0.8 * p.stom_c[0]
        p.spleen_c = (u(40.0, 50.0), u(30.0, 38.0), u(16.0, 22.0))
        p.spleen_x = 0.72 * p.a_in
        p.spleen_y = p.yc + 0.5 * p.b_in
        p.spleen_z = float(dome_height(p, p.spleen_y, p.spleen_x)) - 6.0 - 0.7 * p.spleen_c[0]
        p.z_bottom = -u(15.0, 35.0)
        p.z_top = p.H + u(12.0, 30.0)
        tubes = cls._make_tubes(p, rng)
        return cls(p, tubes)

    @staticmethod
    def _body_from_cavity(p: Params) -> None:
        ant = p.rib_zone + p.m_ant + p.t_fat
        post = p.rib_zone + p.m_post + p.t_fat
        p.a_b = p.a_in + p.rib_zone + p.m_lat + p.t_fat
        p.b_b = p.b_in + 0.5 * (ant + post)
        p.yc = 0.5 * (ant - post)  # cavity centre (anterior of the body centre: thick back)
        p.a_m = p.a_b - p.t_fat
        p.b_m = p.b_b - p.t_fat

    @staticmethod
    def _body_radius_max(p: Params) -> float:
        t = np.linspace(0, 2 * np.pi, 361)
        c, s = np.cos(t), np.sin(t)
        best = 0.0
        for r in np.linspace(50, 400, 351):
            x, y = r * c, r * s
            rho = _superellipse_rho(y, x, 0.0, p.a_b, p.b_b, p.b_b, p.p_front, p.p_back)
            if np.any(rho <= 1.0):
                best = r
        return best

    @staticmethod
    def _cavity_ab(p: Params, Z):
        s = np.clip((np.asarray(Z, dtype=np.float64) - p.taper_z0) / (p.H - p.taper_z0), 0.0, 1.25)
        s = s**1.6
        return p.a_in * (1.0 - p.taper_a * s), p.b_in * (1.0 - p.taper_b * s)

    @staticmethod
    def _make_tubes(p: Params, rng) -> list[Tube]:
        u = rng.uniform
        zb, zt = p.z_bottom - 20.0, p.z_top + 20.0
        T = []
        blood, H = p.hu_blood, LABEL_HEART
        # aorta: ascending, arch (over the left main bronchus), descending beside the spine
        hz, hy, hx = p.heart_z, p.heart_y, p.heart_x
        asc0 = (hz + 0.3 * p.heart_c, p.asc_y + 6.0, p.asc_x + 4.0)
        asc1 = (p.arch_z - 6.0, p.asc_y, p.asc_x)
        desc0 = (p.arch_z - 6.0, p.desc_y, p.desc_x)
        ctrl = (p.arch_z + 32.0, 0.5 * (p.asc_y + p.desc_y), p.desc_x + 14.0)
        arch = _bezier(asc1, ctrl, desc0, 10)
        desc1 = (p.dome_z_l - 10.0, p.desc_y - 3.0, p.desc_x * 0.75)
        desc2 = (zb, p.vb_y - p.vb_ry - p.aorta_r_desc * 0.6, p.desc_x * 0.3)
        pts = np.vstack([asc0, arch, desc1, desc2])
        radii = np.concatenate(
            [
                [p.aorta_r],
                np.linspace(p.aorta_r, p.aorta_r_desc, len(arch)),
                [p.aorta_r_desc, p.aorta_r_desc * 0.95],
            ]
        )
        T.append(Tube("aorta", pts, radii, H, blood, margin=3.0))
        # arch branches to the top of the volume
        for frac, dx_top, r in (
            (0.15, -18.0, u(5.5, 7.0)),
            (0.35, 10.0, u(4.0, 5.0)),
            (0.55, 28.0, u(4.5, 5.5)),
        ):
            start = arch[int(frac * (len(arch) - 1))]
            top = (zt, start[1] - 4.0, dx_top + u(-4.0, 4.0))
            T.append(
                Tube("arch branch", np.vstack([start, top]), np.array([r, r]), H, blood, margin=2.5)
            )
        # superior vena cava and left brachiocephalic vein, inferior vena cava
        svc_x, svc_y = -(p.tr_r + u(18.0, 26.0)), p.asc_y + u(2.0, 10.0)
        ra = (hz + 0.4 * p.heart_c, hy + 0.1 * p.heart_b, hx - 0.75 * p.heart_a)
        T.append(
            Tube(
                "svc",
                np.vstack([(zt, svc_y, svc_x), (p.arch_z, svc_y, svc_x), ra]),
                np.full(3, u(8.0, 10.5)),
                H,
                blood,
                margin=2.5,
            )
        )
        bcv = np.vstack([(p.arch_z + 40.0, p.asc_y - 14.0, 45.0), (p.arch_z + 25.0, svc_y, svc_x)])
        T.append(Tube("brachiocephalic vein", bcv, np.full(2, u(5.0, 6.5)), H, blood, margin=2.0))
        ivc_r = u(10.0, 12.0)
        T.append(
            Tube(
                "ivc",
                np.vstack(
                    [
                        (zb, p.vb_y - p.vb_ry - 16.0, -22.0),
                        (hz - 0.55 * p.heart_c, hy + 0.2 * p.heart_b, hx - 0.6 * p.heart_a),
                    ]
                ),
                np.full(2, ivc_r),
                H,
                blood,
                margin=3.0,
            )
        )
        # pulmonary trunk and arteries to the hila
        bif = np.array([p.carina_z - 10.0, p.tr_y - 10.0, 12.0])
        pt0 = (hz + 0.35 * p.heart_c, p.asc_y - 4.0, p.asc_x + 26.0)
        T.append(
            Tube(
                "pulmonary trunk",
                np.vstack([pt0, bif]),
                np.array([u(12.0, 14.5)] * 2),
                H,
                blood,
                margin=3.0,
            )
        )
        r_pa = u(9.0, 11.0)
        hil_r = np.array([p.carina_z - 22.0, p.tr_y - 6.0, -p.hilum_x])
        hil_l = np.array([p.carina_z - 14.0, p.tr_y + 6.0, p.hilum_x])
        T.append(
            Tube(
                "right pulmonary artery",
                np.vstack([bif, (p.carina_z - 16.0, p.tr_y - 16.0, -p.tr_r - 8.0), hil_r]),
                np.array([r_pa, r_pa, 0.8 * r_pa]),
                H,
                blood,
                margin=2.5,
            )
        )
        T.append(
            Tube(
                "left pulmonary artery",
                np.vstack([bif, (p.carina_z - 2.0, p.tr_y - 2.0, 30.0), hil_l]),
                np.array([r_pa, r_pa, 0.8 * r_pa]),
                H,
                blood,
                margin=2.5,
            )
        )
        p.art_hilum = {"right": hil_r, "left": hil_l}
        # pulmonary veins into the left atrium (posterior-upper heart)
        la = np.array([hz + 0.25 * p.heart_c, hy + 0.55 * p.heart_b, hx - 0.15 * p.heart_a])
        p.vein_hila = {}
        for side, sx in (("right", -1.0), ("left", 1.0)):
            pts = []
            for dz in (14.0, -14.0):
                end = np.array([la[0] + dz, la[1] + 6.0, sx * (p.hilum_x - 4.0)])
                T.append(
                    Tube(
                        "pulmonary vein",
                        np.vstack([la, end]),
                        np.array([7.0, 6.0]),
                        H,
                        blood,
                        margin=2.0,
                    )
                )
                pts.append(end)
            p.vein_hila[side] = pts
        # oesophagus (oversize tube from the top down to the stomach)
        eso = np.vstack(
            [
                (zt, p.eso_y, p.eso_x),
                (p.dome_z_l, p.eso_y - 4.0, p.eso_x + 6.0),
                (
                    p.stom_z + 0.5 * p.stom_c[0],
                    p.stom_y + 0.6 * p.stom_c[1],
                    p.stom_x - 0.5 * p.stom_c[2],
                ),
            ]
        )
        T.append(
            Tube(
                "oesophagus",
                eso,
                np.full(3, p.eso_r),
                LABEL_SOFT,
                p.hu_muscle,
                margin=2.0,
                lumen=(0.3 if p.eso_air else 0.0),
            )
        )
        # trachea and main bronchi (air lumen with a soft-tissue wall)
        car = np.array([p.carina_z, p.tr_y, 0.0])
        T.append(
            Tube(
                "trachea",
                np.vstack([(zt, p.tr_y - 6.0, 0.0), car]),
                np.full(2, p.tr_r),
                LABEL_AIRWAY,
                p.hu_airway_wall,
                margin=2.0,
                lumen=1.0 - p.tr_wall / p.tr_r,
            )
        )
        rb, lb = u(6.0, 7.5), u(5.2, 6.5)
        br_r = hil_r + np.array([-2.0, 12.0, 6.0])
        br_l = hil_l + np.array([-10.0, 12.0, -6.0])
        T.append(
            Tube(
                "right main bronchus",
                np.vstack([car, br_r]),
                np.array([rb, 0.9 * rb]),
                LABEL_AIRWAY,
                p.hu_airway_wall,
                margin=2.0,
                lumen=1.0 - 1.8 / rb,
            )
        )
        T.append(
            Tube(
                "left main bronchus",
                np.vstack([car, (p.carina_z - 12.0, p.tr_y + 6.0, 22.0), br_l]),
                np.array([lb, lb, 0.9 * lb]),
                LABEL_AIRWAY,
                p.hu_airway_wall,
                margin=2.0,
                lumen=1.0 - 1.6 / lb,
            )
        )
        p.bronchus_hila = {"right": br_r, "left": br_l}
        p.bronchus_r = {"right": 0.9 * rb, "left": 0.9 * lb}
        # clavicles (at the thoracic inlet)
        for sx in (-1.0, 1.0):
            a = (p.st_top + 4.0, p.yc - p.b_in - 6.0, sx * 22.0)
            b = (p.st_top + 26.0, p.yc - 0.35 * p.b_in, sx * (p.a_b - 28.0))
            T.append(
                Tube(
                    "clavicle",
                    np.vstack([a, b]),
                    np.full(2, u(5.5, 7.0)),
                    LABEL_BONE,
                    p.hu_cortical * 0.8,
                    margin=None,
                )
            )
        return T

    # ------------------------------------------------------------------ geometry queries
    def z_extent(self) -> tuple[float, float]:
        """Anatomical ``(Z_min, Z_max)`` (mm) that a scan of this patient covers."""
        return float(self.p.z_bottom), float(self.p.z_top)

    def body_half_axes(self) -> tuple[float, float]:
        """Half width (X) and half depth (Y) of the body outline, mm."""
        return float(self.p.a_b), float(self.p.b_b)

    def cavity(self, Z, Y, X):
        """Normalised cavity radius ``rho`` (< 1 inside) and radial distance (mm) outside it."""
        a, b = self._cavity_ab(self.p, Z)
        dy = Y - self.p.yc
        rho = np.sqrt((X / a) ** 2 + (dy / b) ** 2)
        r = np.sqrt(X * X + dy * dy)
        return rho, r * (1.0 - 1.0 / np.maximum(rho, 1e-6))

    # ------------------------------------------------------------------ rendering
    def render(self, cv: Canvas) -> None:
        """Paint the anatomy (no intrapulmonary vessels, lesions, texture, blur or noise).

        Fills ``cv.label`` (internal labels) and ``cv.hu`` (float32 HU) of the canvas.
        """
        p = self.p
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
        if p.table:
            ts = p.table_y - p.table_curv * X2 * X2
            wide = np.abs(X2) < 215.0
            shell = (((Y2 >= ts) & (Y2 < ts + 4.0)) | ((Y2 >= ts + 34.0) & (Y2 < ts + 38.0))) & wide
            foam = (Y2 >= ts + 4.0) & (Y2 < ts + 34.0) & wide
            paint(foam, LABEL_TABLE, -960.0)
            paint(shell, LABEL_TABLE, p.hu_table)
        # body: subcutaneous fat then muscle (2D, the same on every slice)
        rho_b = _superellipse_rho(Y2, X2, 0.0, p.a_b, p.b_b, p.b_b, p.p_front, p.p_back)
        rho_m = _superellipse_rho(Y2, X2, 0.0, p.a_m, p.b_m, p.b_m, p.p_front, p.p_back)
        paint(rho_b <= 1.0, LABEL_FAT, p.hu_fat)
        muscle2 = rho_m <= 1.0
        paint(muscle2, LABEL_SOFT, p.hu_muscle)
        # thoracic cavity (its outline narrows towards the apex): mediastinal fat
        a, b = self._cavity_ab(p, cv.z)
        ia2 = (1.0 / (a * a)).astype(np.float32)[:, None, None]
        ib2 = (1.0 / (b * b)).astype(np.float32)[:, None, None]
        dy = Y2 - np.float32(p.yc)
        x2, y2 = X2 * X2, dy * dy
        rho_c = np.sqrt(x2 * ia2 + y2 * ib2)
        d_out = np.sqrt(x2 + y2) * (1.0 - 1.0 / np.maximum(rho_c, 1e-6))
        cav = (rho_c < 1.0) & muscle2
        # a thin fat plane between the ribs / intercostal muscles and the outer chest-wall muscles
        paint(
            (d_out > p.rib_zone + 0.5) & (d_out < p.rib_zone + 0.5 + p.wall_fat) & muscle2,
            LABEL_FAT,
            p.hu_fat,
        )
        paint(cav, LABEL_MEDIASTINUM, p.hu_medfat)
        floor = lung_floor(p, Y2, X2)  # (ny, nx)
        self._render_abdomen(cv, cav, floor, paint)
        # lungs
        excl = self._exclusion(cv)
        side_left = X2 >= p.xm
        lung = cav & (Z > floor) & (Z < p.H) & ~excl
        k_cap = int(np.searchsorted(cv.z, p.cap_z0, side="right"))
        if k_cap < cv.shape[0]:
            zc = Z[k_cap:]
            ok = np.where(side_left, apex_ok(p, zc, Y, X, +1), apex_ok(p, zc, Y, X, -1))
            lung[k_cap:] &= ok
        if k_cap < cv.shape[0]:
            # thoracic inlet: soft tissue (muscle, vessels) around the apices, fat near the midline
            inlet = cav[k_cap:] & ~lung[k_cap:] & (np.abs(X2 - p.xm) > 22.0)
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
        p = self.p
        k1 = int(np.searchsorted(cv.z, max(p.dome_z_r, p.dome_z_l) + 1.0, side="right"))
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
        paint(abd, LABEL_FAT, p.hu_abd_fat, win)
        # liver: right side, its left lobe reaching across the midline anteriorly
        front = np.clip((p.yc - Y) / p.b_in, 0.0, 1.0)
        liver = abd & (X < p.xm - 12.0 + 60.0 * front)
        paint(liver, LABEL_ABDOMEN, p.hu_liver, win)
        # spleen; stomach: wall, content, gas anteriorly (supine: gas rises to the front)
        for centre, axes, kind in (
            ((p.spleen_z, p.spleen_y, p.spleen_x), p.spleen_c, "spleen"),
            ((p.stom_z, p.stom_y, p.stom_x), p.stom_c, "stomach"),
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
            level = p.stom_y - p.stom_c[1] * (1.0 - 2.0 * p.st_gas)
            paint(inner & (y < level), LABEL_GAS, p.hu_air, w)

    def _exclusion(self, cv) -> np.ndarray:
        """Boolean: mediastinal structures (with their fat margin) that the lungs must avoid."""
        p = self.p
        Z, Y, X = cv.coords((slice(None),) * 3)
        front, back = p.yc - p.b_in, p.yc + p.b_in
        frac = np.clip((Y - front) / (back - front), 0.0, 1.0)
        width = p.band_front + (p.band_back - p.band_front) * frac
        excl = np.broadcast_to(np.abs(X - p.xm) < width, cv.shape).copy()
        # paravertebral soft tissue: around and behind the vertebral body
        para = (((X / (p.vb_rx + 6.0)) ** 2 + ((Y - p.vb_y) / (p.vb_ry + 6.0)) ** 2) < 1.0) | (
            (np.abs(X) < p.vb_rx + 6.0) & (Y > p.vb_y)
        )
        excl |= np.broadcast_to(para, cv.shape)
        # heart with pericardial fat
        c = (p.heart_z, p.heart_y, p.heart_x)
        ax = (p.heart_c, p.heart_b, p.heart_a)
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
        p = self.p
        c = (p.heart_z, p.heart_y, p.heart_x)
        ax = (p.heart_c, p.heart_b, p.heart_a)
        win = cv.window(np.subtract(c, max(ax)), np.add(c, max(ax)))
        if win is None:
            return
        z, y, x = cv.coords(win)
        d = ellipsoid_depth(z, y, x, c, ax, self._heart_rot)
        rho_c, _ = self.cavity(z, y, x)
        inside = (d > 0) & (rho_c < 1.0) & (z > lung_floor(p, y, x) - 8.0)
        paint(inside, LABEL_HEART, p.hu_myo, win)
        # chambers (blood pool) with an interventricular septum
        r = self._heart_rot
        ux = r[2, 0] * (z - c[0]) + r[2, 1] * (y - c[1]) + r[2, 2] * (x - c[2])
        uy = r[1, 0] * (z - c[0]) + r[1, 1] * (y - c[1]) + r[1, 2] * (x - c[2])
        septum = np.abs(ux * 0.8 + uy * 0.6 - 8.0) < 5.0
        paint(inside & (d > p.heart_wall) & ~septum, LABEL_HEART, p.hu_blood, win)

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
                    hu[win][lumen] = self.p.hu_air

    def _render_spine(self, cv, paint) -> None:
        p = self.p
        lo = (-1e9, p.vb_y - p.vb_ry - 1, -(p.vb_rx + p.canal_r + 30.0))
        hi = (1e9, p.canal_y + p.canal_r + 45.0, p.vb_rx + p.canal_r + 30.0)
        win = cv.window(lo, hi)
        if win is None:
            return
        z, y, x = cv.coords(win)
        phase = np.mod(z - p.vert_z0, p.vert_h)  # (nz, 1, 1)
        in_disc = phase < p.disc_t
        body_q = (x / p.vb_rx) ** 2 + ((y - p.vb_y) / p.vb_ry) ** 2
        body = body_q < 1.0
        inner = ((x / (p.vb_rx - p.cortex)) ** 2 + ((y - p.vb_y) / (p.vb_ry - p.cortex)) ** 2) < 1.0
        body3 = np.broadcast_to(body, np.broadcast_shapes(body.shape, phase.shape))
        paint(body3 & np.broadcast_to(in_disc, body3.shape), LABEL_SOFT, p.hu_disc, win)
        bone_sl = ~in_disc
        cort = body3 & np.broadcast_to(bone_sl, body3.shape)
        paint(cort, LABEL_BONE, p.hu_cortical, win)
        paint(cort & np.broadcast_to(inner, body3.shape), LABEL_BONE, p.hu_marrow, win)
        # posterior elements: neural arch, transverse and spinous processes
        rc = np.sqrt(x * x + (y - p.canal_y) ** 2)
        arch = (rc > p.canal_r) & (rc < p.canal_r + 5.0) & (y > p.vb_y + 0.5 * p.vb_ry)
        arch_z = (phase > p.disc_t) & (phase < 0.85 * p.vert_h)
        trans = ((np.abs(x) - (p.canal_r + 15.0)) / 12.0) ** 2 + (
            (y - p.canal_y + 2.0) / 5.0
        ) ** 2 < 1.0
        trans_z = (phase > 0.3 * p.vert_h) & (phase < 0.75 * p.vert_h)
        spin = (x / 4.0) ** 2 + ((y - (p.canal_y + p.canal_r + 18.0)) / 15.0) ** 2 < 1.0
        spin_z = phase > 0.45 * p.vert_h
        post = (arch & arch_z) | (trans & trans_z) | (spin & spin_z)
        paint(post, LABEL_BONE, 0.5 * (p.hu_cortical + p.hu_marrow), win)
        canal = np.broadcast_to(rc < p.canal_r, post.shape)
        paint(canal, LABEL_SOFT, p.hu_csf, win)

    def _render_ribs(self, cv, d_out, muscle2) -> None:
        p = self.p
        lab, hu = cv.label, cv.hu
        shell = (d_out > 0.0) & (d_out < 2 * p.rib_ar + 1.5) & muscle2
        idx = np.nonzero(shell)
        if len(idx[0]) == 0:
            return
        z = cv.z[idx[0]]
        y = cv.y[idx[1]]
        x = cv.x[idx[2]]
        d = d_out[idx]
        phi = np.arctan2(np.abs(x), y - p.yc) / np.pi  # 0 posterior midline, 1 anterior midline
        u0 = 0.08
        q = z + p.rib_drop * np.clip(phi - u0, 0.0, None) ** p.rib_pow
        k = np.rint((p.rib_top - q) / p.rib_dz)
        dzr = q - (p.rib_top - k * p.rib_dz)
        kk = k.astype(int)
        ok = (kk >= 0) & (kk <= 11) & (phi > u0)
        bone_end = np.where(kk <= 6, 0.84, np.where(kk <= 9, 0.78, np.where(kk == 10, 0.55, 0.45)))
        cart_end = np.where(kk <= 6, 0.955, np.where(kk <= 9, 0.86, 0.0))
        az = np.where(kk == 0, 0.75 * p.rib_az, p.rib_az)
        dc = p.rib_ar + 0.5
        e = ((d - dc) / p.rib_ar) ** 2 + (dzr / az) ** 2
        e_in = ((d - dc) / (p.rib_ar - p.cortex * 0.6)) ** 2 + (dzr / (az - p.cortex)) ** 2
        inside = ok & (e < 1.0)
        bone = inside & (phi <= bone_end)
        cart = inside & (phi > bone_end) & (phi <= cart_end)
        sel = tuple(i[bone] for i in idx)
        lab[sel] = LABEL_BONE
        selc = tuple(i[cart] for i in idx)
        lab[selc] = LABEL_SOFT
        if hu is not None:
            hu[sel] = np.where(e_in[bone] < 1.0, p.hu_marrow, p.hu_cortical).astype(np.float32)
            hu[selc] = p.hu_cartilage

    def _render_sternum_scapulae(self, cv, paint, d_out, muscle2) -> None:
        p = self.p
        # sternum (manubrium wider) just anterior to the cavity
        rx_max = p.st_rx * 1.6
        w = cv.window(
            (p.st_bot, p.yc - p.b_in - 2 * p.st_ry - 2.0, -rx_max),
            (p.st_top, p.yc - p.b_in * (1 - p.taper_b * 1.34) + 1.0, rx_max),
        )
        if w is not None:
            Z, Y, X = cv.coords(w)
            _, b = self._cavity_ab(p, Z)
            yst = p.yc - b - p.st_ry - 0.5
            rx = np.where(Z > p.st_top - 45.0, rx_max, p.st_rx)
            q = (X / rx) ** 2 + ((Y - yst) / p.st_ry) ** 2
            qi = (X / (rx - p.cortex)) ** 2 + ((Y - yst) / (p.st_ry - p.cortex)) ** 2
            st = q < 1.0
            paint(st, LABEL_BONE, p.hu_cortical, w)
            paint(st & (qi < 1.0), LABEL_BONE, p.hu_marrow, w)
        # scapulae: thin plates outside the posterolateral ribs
        k0 = int(np.searchsorted(cv.z, p.carina_z - 75.0, side="left"))
        k1 = int(np.searchsorted(cv.z, p.H + 12.0, side="right"))
        if k1 > k0:
            w = (slice(k0, k1), slice(None), slice(None))
            _, Y, X = cv.coords(w)
            phi = np.arctan2(np.abs(X), Y - p.yc) / np.pi
            dd = d_out[w]
            sc = (
                (phi > 0.13) & (phi < 0.34) & (dd > p.scap_d) & (dd < p.scap_d + p.scap_t) & muscle2
            )
            paint(sc, LABEL_BONE, 0.5 * (p.hu_cortical + p.hu_marrow), w)
