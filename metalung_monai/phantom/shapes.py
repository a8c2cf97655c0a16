"""Rendering helpers of the phantom: grids, canvases, ellipsoids and tapered tubes.

The phantom is described analytically in *anatomical* millimetre coordinates ``(Z, Y, X)``:
``X`` increases towards the patient's left, ``Y`` towards posterior, ``Z`` towards superior (the
canonical LPS layout of :mod:`metalung_monai.utils.orientation`), with ``X = Y = 0`` at the centre
of the body and ``Z = 0`` at the lowest point of the lungs. Every structure is rendered by
evaluating its implicit function on the voxel centres of a :class:`Canvas` (a box of a
:class:`Grid`), restricted to the structure's bounding box so that small objects cost little.

Small objects (vessels, bronchi, lesions) are rendered with ``n_sub`` samples along ``z`` inside
each slice and averaged: the slice-sensitivity profile of a thick reconstruction (partial volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Grid",
    "Canvas",
    "segment_depth",
    "ellipsoid_depth",
    "soft_occupancy",
    "rotation_matrix",
    "random_unit_vectors",
]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in anatomical coordinates.

    Attributes:
        shape: ``(nz, ny, nx)`` voxels.
        spacing: ``(dz, dy, dx)`` in mm.
        start: anatomical coordinate in mm of the centre of voxel ``(0, 0, 0)``, ``(Z, Y, X)``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    start: tuple[float, float, float]

    def axis(self, k: int) -> np.ndarray:
        """Voxel-centre coordinates (mm, float64) along axis ``k`` (0 = z, 1 = y, 2 = x)."""
        return self.start[k] + self.spacing[k] * np.arange(self.shape[k], dtype=np.float64)

    def index_of(self, point_zyx) -> tuple[int, int, int]:
        """Nearest voxel index of an anatomical point ``(Z, Y, X)`` in mm (not clipped)."""
        return tuple(
            int(round((float(p) - s) / d)) for p, s, d in zip(point_zyx, self.start, self.spacing)
        )


class Canvas:
    """A box of a :class:`Grid` being rendered, with its label and HU arrays.

    Args:
        grid: the grid.
        box: ``((k0, k1), (j0, j1), (i0, i1))`` voxel ranges (half open); ``None`` = whole grid.
        n_sub: samples per slice along ``z`` for small objects (partial volume of thick slices).
        with_hu: allocate the float32 HU array (labels only when ``False``).

    Attributes:
        z, y, x: voxel-centre coordinates (mm) of the box along each axis.
        label: uint8 ``(nz, ny, nx)`` internal tissue labels (see :mod:`.body`).
        hu: float32 ``(nz, ny, nx)`` HU before blur and noise (``None`` without ``with_hu``).
        zsub: ``(nz * n_sub,)`` z coordinates of the sub-slice samples, slice by slice.
    """

    def __init__(self, grid: Grid, box=None, n_sub: int = 1, with_hu: bool = True) -> None:
        if box is None:
            box = tuple((0, n) for n in grid.shape)
        self.grid = grid
        self.box = tuple((int(a), int(b)) for a, b in box)
        (k0, k1), (j0, j1), (i0, i1) = self.box
        self.z = grid.axis(0)[k0:k1]
        self.y = grid.axis(1)[j0:j1]
        self.x = grid.axis(2)[i0:i1]
        self.shape = (len(self.z), len(self.y), len(self.x))
        self.n_sub = int(max(1, n_sub))
        dz = grid.spacing[0]
        self.sub_offsets = ((np.arange(self.n_sub) + 0.5) / self.n_sub - 0.5) * dz
        self.zsub = (self.z[:, None] + self.sub_offsets[None, :]).ravel()
        self.label = np.zeros(self.shape, dtype=np.uint8)
        self.hu = np.zeros(self.shape, dtype=np.float32) if with_hu else None

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    def window(self, lo_zyx, hi_zyx, sub: bool = False):
        """Index window of the voxels whose centres lie in the box ``[lo, hi]`` (mm).

        Returns:
            ``(sz, sy, sx)`` slices into the canvas arrays, or ``None`` when the box misses the
            canvas. With ``sub=True`` the z slice indexes :attr:`zsub` instead, widened to whole
            slices (``sz.start`` and ``sz.stop`` are multiples of ``n_sub``).
        """
        out = []
        for k, (lo, hi) in enumerate(zip(lo_zyx, hi_zyx)):
            c = self.z if k == 0 else (self.y if k == 1 else self.x)
            if k == 0 and sub:
                half = 0.5 * self.grid.spacing[0]
                a = int(np.searchsorted(c, lo - half, side="left"))
                b = int(np.searchsorted(c, hi + half, side="right"))
            else:
                a = int(np.searchsorted(c, lo, side="left"))
                b = int(np.searchsorted(c, hi, side="right"))
            if b <= a:
                return None
            out.append(slice(a, b))
        if sub:
            out[0] = slice(out[0].start * self.n_sub, out[0].stop * self.n_sub)
        return tuple(out)

    def coords(self, win, sub: bool = False):
        """Broadcastable coordinate arrays ``(Z[:, None, None], Y[None, :, None], X[None, None, :])``."""
        zc = self.zsub if sub else self.z
        return (
            zc[win[0]].astype(np.float32)[:, None, None],
            self.y[win[1]].astype(np.float32)[None, :, None],
            self.x[win[2]].astype(np.float32)[None, None, :],
        )

    def reduce_sub(self, arr: np.ndarray) -> np.ndarray:
        """Average an array sampled on :attr:`zsub` (first axis) back to whole slices."""
        n = self.n_sub
        if n == 1:
            return arr
        return arr.reshape(arr.shape[0] // n, n, *arr.shape[1:]).mean(axis=1)


def segment_depth(Z, Y, X, a, b, ra: float, rb: float) -> np.ndarray:
    """Signed depth (mm, > 0 inside) of points in a tapered tube (cone with spherical caps).

    Args:
        Z, Y, X: broadcastable coordinate arrays (mm).
        a, b: end points ``(Z, Y, X)`` of the axis (mm).
        ra, rb: radius (mm) at ``a`` and at ``b`` (linear in between).

    Returns:
        ``r(t) - distance to the axis`` with ``t`` the clipped projection on ``[a, b]``; float array
        of the broadcast shape.
    """
    a0, a1, a2 = (float(v) for v in a)
    b0, b1, b2 = (float(v) - w for v, w in zip(b, (a0, a1, a2)))
    ra, rb = float(ra), float(rb)
    l2 = b0 * b0 + b1 * b1 + b2 * b2
    pz, py, px = Z - a0, Y - a1, X - a2
    if l2 < 1e-12:
        return ra - np.sqrt(pz * pz + py * py + px * px)
    t = (pz * b0 + py * b1 + px * b2) * (1.0 / l2)
    np.clip(t, 0.0, 1.0, out=t)
    dz = pz - t * b0
    dy = py - t * b1
    dx = px - t * b2
    return (ra + (rb - ra) * t) - np.sqrt(dz * dz + dy * dy + dx * dx)


def ellipsoid_depth(Z, Y, X, centre, semi_axes, rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed depth (mm, > 0 inside) of points in an ellipsoid.

    Uses ``(1 - rho) * min(semi_axes)`` with ``rho`` the normalised ellipsoidal radius: exact
    sign, distance-like scale near the surface.

    Args:
        Z, Y, X: broadcastable coordinate arrays (mm).
        centre: ``(Z, Y, X)`` in mm.
        semi_axes: ``(c, b, a)`` semi-axes along the (rotated) z, y, x axes, mm.
        rotation: optional 3x3 matrix; rows are the ellipsoid's axes in ``(Z, Y, X)`` coordinates.
    """
    dz, dy, dx = Z - float(centre[0]), Y - float(centre[1]), X - float(centre[2])
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float64).tolist()
        u = [r[i][0] * dz + r[i][1] * dy + r[i][2] * dx for i in range(3)]
    else:
        u = [dz, dy, dx]
    s0, s1, s2 = (float(v) for v in semi_axes)
    rho2 = (u[0] * (1.0 / s0)) ** 2 + (u[1] * (1.0 / s1)) ** 2 + (u[2] * (1.0 / s2)) ** 2
    return (1.0 - np.sqrt(rho2)) * min(s0, s1, s2)


def soft_occupancy(depth: np.ndarray, width: float) -> np.ndarray:
    """Fraction of a voxel covered by a shape from its signed depth (linear ramp of ``width`` mm)."""
    return np.clip(0.5 + depth / width, 0.0, 1.0)


def rotation_matrix(axis, angle: float) -> np.ndarray:
    """3x3 rotation (Rodrigues) about the unit vector ``axis`` by ``angle`` radians."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` directions uniformly distributed on the unit sphere, shape ``(n, 3)``."""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def segment_depth_batch(
    Z, Y, X, a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray
) -> np.ndarray:
    """:func:`segment_depth` for a batch of ``B`` segments at once.

    Args:
        Z, Y, X: coordinate arrays broadcastable to ``(B, ...)`` (the batch on the first axis).
        a, b: ``(B, 3)`` end points; ra, rb: ``(B,)`` radii (mm).

    Returns:
        float32 depth array of the broadcast shape.
    """
    extra = (1,) * (np.ndim(Z) - 1)
    f32 = np.float32
    a = np.asarray(a, dtype=f32)
    ab = np.asarray(b, dtype=f32) - a
    l2 = np.maximum((ab * ab).sum(1), f32(1e-12))
    col = [c.reshape(-1, *extra) for c in (a[:, 0], a[:, 1], a[:, 2], ab[:, 0], ab[:, 1], ab[:, 2])]
    inv = (1.0 / l2).astype(f32).reshape(-1, *extra)
    pz, py, px = Z - col[0], Y - col[1], X - col[2]
    t = (pz * col[3] + py * col[4] + px * col[5]) * inv
    np.clip(t, 0.0, 1.0, out=t)
    dz = pz - t * col[3]
    dy = py - t * col[4]
    dx = px - t * col[5]
    ra_ = np.asarray(ra, dtype=f32).reshape(-1, *extra)
    rb_ = np.asarray(rb, dtype=f32).reshape(-1, *extra)
    return (ra_ + (rb_ - ra_) * t) - np.sqrt(dz * dz + dy * dy + dx * dx)
