"""Small morphology helpers shared by the anatomy modules (internal).

Everything here works on 3D boolean arrays ``(z, y, x)``; a 2D slice is handled as a volume of one
slice. "Per slice" operations use a 3x3x3 structuring element whose upper and lower planes are
empty, so a single SciPy call processes every axial slice independently (no Python loop).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

__all__ = [
    "INPLANE_CROSS",
    "INPLANE_SQUARE",
    "fill_holes_per_slice",
    "label_per_slice",
    "largest_component",
    "bbox_slices",
    "closing_3x3",
    "convex_hull_2d",
    "dilate_3x3",
]


def _inplane(full: bool) -> np.ndarray:
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = ndi.generate_binary_structure(2, 2 if full else 1)
    return s


#: 4-connectivity inside each axial slice, no connection between slices.
INPLANE_CROSS = _inplane(full=False)
#: 8-connectivity inside each axial slice, no connection between slices.
INPLANE_SQUARE = _inplane(full=True)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial slice of a 3D boolean mask ``(z, y, x)`` in one call.

    A hole is background that is not 4-connected, inside its slice, to the slice border.
    Identical to ``ndi.binary_fill_holes(mask, structure=INPLANE_CROSS)``, computed by labelling
    the background once (holes = background components that touch no slice border) instead of
    the iterated propagation from the border: 1.3-4.7 times faster on the body and lung masks
    of the 512 x 512 x 99 CPTAC series (identical on them and on random masks).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        return ndi.binary_fill_holes(mask, structure=INPLANE_CROSS)
    lab, n = ndi.label(~mask, structure=INPLANE_CROSS)
    if n == 0:
        return mask.copy()
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        outside[edge] = True
    outside[0] = False  # label 0 is the mask itself: kept
    return ~outside[lab]


def label_per_slice(mask: np.ndarray, full: bool = False) -> tuple[np.ndarray, int]:
    """Label the 2D connected components of every axial slice (labels unique across the volume)."""
    return ndi.label(mask, structure=INPLANE_SQUARE if full else INPLANE_CROSS)


def largest_component(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask`` (empty when ``mask`` is).

    Ties go to the component met first in raster order. MONAI's
    ``get_largest_connected_component_mask(mask, connectivity=1)`` gives the same masks (checked
    on the body tissue and air of the Lung1 CT, 4 phantoms and 20 MSD patches: 75 masks) but
    imports torch, which the anatomy and phantom packages (and their worker processes) otherwise
    never load; ``structure`` also allows the per-slice elements of this module.
    """
    lab, n = ndi.label(mask, structure=structure)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def bbox_slices(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels as slices (with ``margin`` voxels, clipped), or None.

    Kept instead of ``ndi.find_objects`` / MONAI's ``generate_spatial_bounding_box`` for speed:
    one ``any`` reduction per axis is 12 times faster than ``find_objects`` on the same masks
    (identical boxes on 225 masks of real CT and phantoms).
    """
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(
            slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[ax]))
        )
    return tuple(out)


def convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull (pixel centres) of a 2D boolean mask.

    Faster than ``skimage.morphology.convex_hull_image`` for this use: only the first and last
    pixel of every row can be hull vertices, and the convex polygon is filled row by row with
    vectorised edge intersections. A pixel is inside when its centre lies in the closed polygon.
    The result always contains ``mask``.
    """
    out = mask.copy()
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return out
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = mask.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    pts = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    pts = np.unique(pts, axis=0)
    if len(pts) < 3:
        return out
    try:
        hull = ConvexHull(pts)
    except QhullError:  # all points on one line
        if np.ptp(pts[:, 0]) == 0:  # one row: the segment between its extremes
            out[int(pts[0, 0]), int(pts[:, 1].min()) : int(pts[:, 1].max()) + 1] = True
        elif np.ptp(pts[:, 1]) == 0:  # one column
            out[int(pts[:, 0].min()) : int(pts[:, 0].max()) + 1, int(pts[0, 1])] = True
        return out
    v = pts[hull.vertices]  # counter-clockwise, closed below
    a, b = v, np.roll(v, -1, axis=0)
    r = np.arange(rows[0], rows[-1] + 1, dtype=float)[:, None]  # (R, 1)
    y0, x0, y1, x1 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    lo_y, hi_y = np.minimum(y0, y1), np.maximum(y0, y1)
    cross = (r >= lo_y - 1e-9) & (r <= hi_y + 1e-9)  # (R, E)
    dy = np.where(y1 != y0, y1 - y0, 1.0)
    t = np.clip((r - y0) / dy, 0.0, 1.0)
    xs = np.where(y1 != y0, x0 + t * (x1 - x0), np.nan)
    flat = y1 == y0  # horizontal edges: both ends
    xs_lo = np.where(cross, np.where(flat, np.minimum(x0, x1), xs), np.inf)
    xs_hi = np.where(cross, np.where(flat, np.maximum(x0, x1), xs), -np.inf)
    lo = np.ceil(np.nanmin(xs_lo, axis=1) - 1e-6)
    hi = np.floor(np.nanmax(xs_hi, axis=1) + 1e-6)
    cols = np.arange(mask.shape[1])[None, :]
    out[rows[0] : rows[-1] + 1] |= (cols >= lo[:, None]) & (cols <= hi[:, None])
    return out


def dilate_3x3(mask: np.ndarray) -> np.ndarray:
    """Binary dilation of a 2D mask by the 3x3 square (borders padded with False).

    Equal to ``ndi.binary_dilation(mask, np.ones((3, 3)))`` (checked on 192 slices of real CT
    and phantoms) and 4 times faster for these small boolean slices: nine shifted ``|=``.
    """
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def closing_3x3(mask: np.ndarray) -> np.ndarray:
    """Binary closing of every axial slice of ``mask`` ``(z, y, x)`` by a 3x3 square.

    Identical to ``ndi.binary_closing(mask, structure=INPLANE_SQUARE)`` (outside the array
    counts as background, for the dilation and the erosion alike), by separable 1D maximum and
    minimum filters on bytes: 1.4-2.4 times faster on the lung masks of the CPTAC series.
    """
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    dil = ndi.maximum_filter1d(
        ndi.maximum_filter1d(m, 3, axis=1, mode="constant"), 3, axis=2, mode="constant"
    )
    ero = ndi.minimum_filter1d(
        ndi.minimum_filter1d(dil, 3, axis=1, mode="constant"), 3, axis=2, mode="constant"
    )
    return ero.view(bool)
