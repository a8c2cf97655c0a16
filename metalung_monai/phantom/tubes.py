"""Tubular structures of the phantom's chest: great vessels, airways, oesophagus, clavicles.

Each is a :class:`Tube`, a tapered tube along a polyline in anatomical millimetres ``(Z, Y, X)``,
drawn by :func:`sample_tubes` from a chest's scalar parameters
(:class:`~.body_params.BodyParams`) and painted by :class:`~.body.ChestAnatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .labels import LABEL_AIRWAY, LABEL_BONE, LABEL_HEART, LABEL_SOFT

if TYPE_CHECKING:  # body_params calls sample_tubes
    from .body_params import BodyParams

__all__ = ["Tube", "sample_tubes"]


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
        """``(start, end, start_radius, end_radius)`` of each straight piece."""
        for i in range(len(self.points) - 1):
            yield self.points[i], self.points[i + 1], float(self.radii[i]), float(self.radii[i + 1])

    def bbox(self, extra: float = 0.0):
        """``(lo, hi)`` corners (mm) of the box holding the tube, grown by ``extra`` mm."""
        r = float(np.max(self.radii)) + extra
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r


def _bezier(p0, p1, p2, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(v, dtype=np.float64) for v in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def sample_tubes(p: BodyParams, rng: np.random.Generator):
    """Draw the tubes of a chest whose scalar parameters ``p`` are drawn (the last draws of
    :func:`~.body_params.sample_body_params`).

    Returns:
        ``(tubes, artery_hila, vein_hila, bronchus_hila, main_bronchus_radius)``: the
        :class:`Tube` list and, per side (``"right"``, ``"left"``), where the pulmonary artery
        (one point ``(Z, Y, X)``), veins (two points) and main bronchus (one point, with its
        radius) enter the lung.
    """
    u = rng.uniform
    zb, zt = p.scan_bottom_z - 20.0, p.scan_top_z + 20.0
    tubes = []
    blood, heart = p.hu_blood, LABEL_HEART
    # aorta: ascending, arch (over the left main bronchus), descending beside the spine
    hz, hy, hx = p.heart_z, p.heart_y, p.heart_x
    asc0 = (hz + 0.3 * p.heart_semi_axis_z, p.ascending_aorta_y + 6.0, p.ascending_aorta_x + 4.0)
    asc1 = (p.aortic_arch_z - 6.0, p.ascending_aorta_y, p.ascending_aorta_x)
    desc0 = (p.aortic_arch_z - 6.0, p.descending_aorta_y, p.descending_aorta_x)
    ctrl = (
        p.aortic_arch_z + 32.0,
        0.5 * (p.ascending_aorta_y + p.descending_aorta_y),
        p.descending_aorta_x + 14.0,
    )
    arch = _bezier(asc1, ctrl, desc0, 10)
    desc1 = (p.diaphragm.left_z - 10.0, p.descending_aorta_y - 3.0, p.descending_aorta_x * 0.75)
    desc2 = (
        zb,
        p.vertebral_body_y - p.vertebral_body_radius_y - p.descending_aorta_radius * 0.6,
        p.descending_aorta_x * 0.3,
    )
    pts = np.vstack([asc0, arch, desc1, desc2])
    radii = np.concatenate(
        [
            [p.aorta_radius],
            np.linspace(p.aorta_radius, p.descending_aorta_radius, len(arch)),
            [p.descending_aorta_radius, p.descending_aorta_radius * 0.95],
        ]
    )
    tubes.append(Tube("aorta", pts, radii, heart, blood, margin=3.0))
    # arch branches to the top of the volume
    for frac, dx_top, r in (
        (0.15, -18.0, u(5.5, 7.0)),
        (0.35, 10.0, u(4.0, 5.0)),
        (0.55, 28.0, u(4.5, 5.5)),
    ):
        start = arch[int(frac * (len(arch) - 1))]
        top = (zt, start[1] - 4.0, dx_top + u(-4.0, 4.0))
        tubes.append(
            Tube("arch branch", np.vstack([start, top]), np.array([r, r]), heart, blood, margin=2.5)
        )
    # superior vena cava and left brachiocephalic vein, inferior vena cava
    svc_x, svc_y = -(p.trachea_radius + u(18.0, 26.0)), p.ascending_aorta_y + u(2.0, 10.0)
    ra = (
        hz + 0.4 * p.heart_semi_axis_z,
        hy + 0.1 * p.heart_semi_axis_y,
        hx - 0.75 * p.heart_semi_axis_x,
    )
    tubes.append(
        Tube(
            "svc",
            np.vstack([(zt, svc_y, svc_x), (p.aortic_arch_z, svc_y, svc_x), ra]),
            np.full(3, u(8.0, 10.5)),
            heart,
            blood,
            margin=2.5,
        )
    )
    bcv = np.vstack(
        [
            (p.aortic_arch_z + 40.0, p.ascending_aorta_y - 14.0, 45.0),
            (p.aortic_arch_z + 25.0, svc_y, svc_x),
        ]
    )
    tubes.append(
        Tube("brachiocephalic vein", bcv, np.full(2, u(5.0, 6.5)), heart, blood, margin=2.0)
    )
    ivc_r = u(10.0, 12.0)
    tubes.append(
        Tube(
            "ivc",
            np.vstack(
                [
                    (zb, p.vertebral_body_y - p.vertebral_body_radius_y - 16.0, -22.0),
                    (
                        hz - 0.55 * p.heart_semi_axis_z,
                        hy + 0.2 * p.heart_semi_axis_y,
                        hx - 0.6 * p.heart_semi_axis_x,
                    ),
                ]
            ),
            np.full(2, ivc_r),
            heart,
            blood,
            margin=3.0,
        )
    )
    # pulmonary trunk and arteries to the hila
    bif = np.array([p.carina_z - 10.0, p.trachea_y - 10.0, 12.0])
    pt0 = (hz + 0.35 * p.heart_semi_axis_z, p.ascending_aorta_y - 4.0, p.ascending_aorta_x + 26.0)
    tubes.append(
        Tube(
            "pulmonary trunk",
            np.vstack([pt0, bif]),
            np.array([u(12.0, 14.5)] * 2),
            heart,
            blood,
            margin=3.0,
        )
    )
    r_pa = u(9.0, 11.0)
    hil_r = np.array([p.carina_z - 22.0, p.trachea_y - 6.0, -p.hilum_x])
    hil_l = np.array([p.carina_z - 14.0, p.trachea_y + 6.0, p.hilum_x])
    tubes.append(
        Tube(
            "right pulmonary artery",
            np.vstack(
                [bif, (p.carina_z - 16.0, p.trachea_y - 16.0, -p.trachea_radius - 8.0), hil_r]
            ),
            np.array([r_pa, r_pa, 0.8 * r_pa]),
            heart,
            blood,
            margin=2.5,
        )
    )
    tubes.append(
        Tube(
            "left pulmonary artery",
            np.vstack([bif, (p.carina_z - 2.0, p.trachea_y - 2.0, 30.0), hil_l]),
            np.array([r_pa, r_pa, 0.8 * r_pa]),
            heart,
            blood,
            margin=2.5,
        )
    )
    artery_hila = {"right": hil_r, "left": hil_l}
    # pulmonary veins into the left atrium (posterior-upper heart)
    la = np.array(
        [
            hz + 0.25 * p.heart_semi_axis_z,
            hy + 0.55 * p.heart_semi_axis_y,
            hx - 0.15 * p.heart_semi_axis_x,
        ]
    )
    vein_hila = {}
    for side, sx in (("right", -1.0), ("left", 1.0)):
        pts = []
        for dz in (14.0, -14.0):
            end = np.array([la[0] + dz, la[1] + 6.0, sx * (p.hilum_x - 4.0)])
            tubes.append(
                Tube(
                    "pulmonary vein",
                    np.vstack([la, end]),
                    np.array([7.0, 6.0]),
                    heart,
                    blood,
                    margin=2.0,
                )
            )
            pts.append(end)
        vein_hila[side] = pts
    # oesophagus (oversize tube from the top down to the stomach)
    eso = np.vstack(
        [
            (zt, p.oesophagus_y, p.oesophagus_x),
            (p.diaphragm.left_z, p.oesophagus_y - 4.0, p.oesophagus_x + 6.0),
            (
                p.stomach_z + 0.5 * p.stomach_semi_axes[0],
                p.stomach_y + 0.6 * p.stomach_semi_axes[1],
                p.stomach_x - 0.5 * p.stomach_semi_axes[2],
            ),
        ]
    )
    tubes.append(
        Tube(
            "oesophagus",
            eso,
            np.full(3, p.oesophagus_radius),
            LABEL_SOFT,
            p.hu_muscle,
            margin=2.0,
            lumen=(0.3 if p.oesophagus_has_air else 0.0),
        )
    )
    # trachea and main bronchi (air lumen with a soft-tissue wall)
    car = np.array([p.carina_z, p.trachea_y, 0.0])
    tubes.append(
        Tube(
            "trachea",
            np.vstack([(zt, p.trachea_y - 6.0, 0.0), car]),
            np.full(2, p.trachea_radius),
            LABEL_AIRWAY,
            p.hu_airway_wall,
            margin=2.0,
            lumen=1.0 - p.trachea_wall_thickness / p.trachea_radius,
        )
    )
    rb, lb = u(6.0, 7.5), u(5.2, 6.5)
    br_r = hil_r + np.array([-2.0, 12.0, 6.0])
    br_l = hil_l + np.array([-10.0, 12.0, -6.0])
    tubes.append(
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
    tubes.append(
        Tube(
            "left main bronchus",
            np.vstack([car, (p.carina_z - 12.0, p.trachea_y + 6.0, 22.0), br_l]),
            np.array([lb, lb, 0.9 * lb]),
            LABEL_AIRWAY,
            p.hu_airway_wall,
            margin=2.0,
            lumen=1.0 - 1.6 / lb,
        )
    )
    bronchus_hila = {"right": br_r, "left": br_l}
    main_bronchus_radius = {"right": 0.9 * rb, "left": 0.9 * lb}
    # clavicles (at the thoracic inlet)
    for sx in (-1.0, 1.0):
        a = (p.sternum_top_z + 4.0, p.cavity_centre_y - p.cavity_half_depth - 6.0, sx * 22.0)
        b = (
            p.sternum_top_z + 26.0,
            p.cavity_centre_y - 0.35 * p.cavity_half_depth,
            sx * (p.body_half_width - 28.0),
        )
        tubes.append(
            Tube(
                "clavicle",
                np.vstack([a, b]),
                np.full(2, u(5.5, 7.0)),
                LABEL_BONE,
                p.hu_cortical_bone * 0.8,
                margin=None,
            )
        )
    return tubes, artery_hila, vein_hila, bronchus_hila, main_bronchus_radius
