"""Lung shapes and parenchyma of the phantom.

Each lung is the part of the thoracic cavity on its side of the mediastinum that lies

* above the diaphragm: two domes (the right one higher) whose union, smoothly floored at
  ``Z = 0``, gives deep posterior costophrenic recesses and a shallow anterior base;
* below the apex: above ``apex_cap_z`` the lung is confined to a rounded, nearly paraboloid cap that
  narrows to a point at ``Z = lung_height``;
* outside the mediastinal exclusion (a midline band, the heart with its pericardial fat, the great
  vessels, airways and oesophagus with a margin, and the paravertebral soft tissue).

The heart, which sits left of the midline, carves the cardiac notch into the left lung.
Parenchyma is about -850 HU with a gravity-dependent gradient (posterior denser in a supine
patient) and a smooth random texture (:class:`ParenchymaTexture`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:  # body_params draws the diaphragm with dome_height: no runtime import back
    from .body_params import BodyParams, Diaphragm

__all__ = ["dome_height", "lung_floor", "apex_ok", "parenchyma_hu", "ParenchymaTexture"]

_FLOOR_SOFTNESS = 12.0  # mm; rounds the junction between the domes and the recess floor Z = 0


def dome_height(diaphragm: Diaphragm, Y, X) -> np.ndarray:
    """Height (mm) of the diaphragm surface under the lungs: upper envelope of both domes.

    Args:
        diaphragm: the domes (``BodyParams.diaphragm``).
        Y, X: broadcastable coordinate arrays (mm).
    """
    d = diaphragm
    out = None
    for top_z, top_x in ((d.right_z, d.right_x), (d.left_z, d.left_x)):
        q = ((X - top_x) / d.radius_x) ** 2 + ((Y - d.y) / d.radius_y) ** 2
        h = top_z * (1.0 - q)
        out = h if out is None else np.maximum(out, h)
    return out


def lung_floor(diaphragm: Diaphragm, Y, X) -> np.ndarray:
    """Lowest ``Z`` (mm) of lung at ``(Y, X)``: the domes, smoothly floored at ``Z = 0``."""
    d = dome_height(diaphragm, Y, X)
    return 0.5 * (d + np.sqrt(d * d + _FLOOR_SOFTNESS**2))


def apex_ok(p: BodyParams, Z, Y, X, side: int) -> np.ndarray:
    """Boolean: inside the apical cap of the lung on ``side`` (-1 right, +1 left), or below it."""
    h = p.lung_height - p.apex_cap_z
    t = np.clip((Z - p.apex_cap_z) / h, 0.0, None)
    lim = (1.0 - t) * (1.0 + 0.3 * t)  # between a paraboloid and an ellipsoid: a rounded point
    xs = side * p.apex_cap_x
    q = ((X - xs) / p.apex_cap_radius_x) ** 2 + ((Y - p.apex_cap_y) / p.apex_cap_radius_y) ** 2
    return (q <= lim) | (Z <= p.apex_cap_z)


def parenchyma_hu(p: BodyParams, Y) -> np.ndarray:
    """Mean parenchyma HU at ``Y``: ``hu_lung`` with a linear anterior-to-posterior gradient."""
    front = p.cavity_centre_y - p.cavity_half_depth
    frac = np.clip((Y - front) / (2.0 * p.cavity_half_depth), 0.0, 1.0)
    return p.hu_lung + p.hu_lung_gradient * (frac - 0.5)


class ParenchymaTexture:
    """Smooth random HU texture of the lung parenchyma, independent of the output grid.

    A gaussian random field is drawn on a coarse isotropic lattice (``step`` mm) covering the
    anatomy, smoothed, normalised to standard deviation ``sigma_hu`` and linearly interpolated on
    demand (separably, so a chunk of a 512x512 volume costs a few array passes).

    Args:
        rng: generator (consumed once, in the constructor).
        lo_zyx, hi_zyx: anatomical box covered (mm).
        sigma_hu: standard deviation of the texture in HU.
        corr_mm: correlation length (gaussian sigma, mm) of the texture.
        step: lattice step (mm).
    """

    def __init__(
        self, rng, lo_zyx, hi_zyx, sigma_hu: float, corr_mm: float = 2.5, step: float = 1.6
    ):
        self.lo = np.asarray(lo_zyx, dtype=np.float64)
        self.step = float(step)
        n = np.ceil((np.asarray(hi_zyx, dtype=np.float64) - self.lo) / self.step).astype(int) + 2
        field = rng.standard_normal(tuple(n), dtype=np.float32)
        field = ndimage.gaussian_filter(field, corr_mm / self.step, mode="wrap")
        sd = float(field.std()) or 1.0
        self.field = (field * (sigma_hu / sd)).astype(np.float32)

    def _weights(self, coords: np.ndarray, k: int):
        u = (np.asarray(coords, dtype=np.float64) - self.lo[k]) / self.step
        u = np.clip(u, 0.0, self.field.shape[k] - 1.000001)
        i0 = np.floor(u).astype(np.intp)
        w = (u - i0).astype(np.float32)
        return i0, w

    def sample(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Texture (float32 HU) on the grid spanned by the 1D coordinate vectors ``z, y, x``."""
        f = self.field
        for k, c in enumerate((z, y, x)):
            i0, w = self._weights(c, k)
            a = np.take(f, i0, axis=k)
            b = np.take(f, i0 + 1, axis=k)
            shape = [1, 1, 1]
            shape[k] = len(w)
            w = w.reshape(shape)
            f = a + (b - a) * w
        return f
