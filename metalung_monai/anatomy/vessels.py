"""Dense structures inside the lungs: vessels, airway walls, nodules, calcifications.

Aerated lung parenchyma is about -700 to -900 HU. Anything inside the lung mask above
``threshold`` (-500 HU by default, half-way between parenchyma and soft tissue) is a dense
structure: blood vessels (contrast-free 30-60 HU, partial-volumed down to about -500 at their
edges), bronchial walls, nodules and tumours, and calcifications (above 200 HU). Isolated specks
smaller than ``min_size`` (noise of sharp reconstruction kernels) are removed, except those
holding a calcified voxel (above ``calcification_hu``), which are always kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._checks import as_volume, check_mask
from ._images import from_canonical_image, to_canonical_image
from .lung_mask import lungs_canonical

__all__ = ["CALCIFICATION_HU", "vessel_mask", "vessel_mask_image"]

#: voxels above this HU inside the lung are calcium: always dense, never free space
CALCIFICATION_HU = 200.0


def vessel_mask(
    hu,
    lungs,
    spacing,
    threshold: float = -500.0,
    *,
    min_size: float = 2.0,
    calcification_hu: float = CALCIFICATION_HU,
) -> np.ndarray:
    """Boolean mask of the dense structures inside the lungs.

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        lungs: lung mask or labels of the same shape (any value > 0 is lung, e.g. the output of
            :func:`~metalung_monai.anatomy.lung_mask`).
        spacing: voxel size in mm in the same axis order.
        threshold: HU above which a lung voxel is dense (-500).
        min_size: connected components (8-connected in 2D, 26-connected in 3D) smaller than this
            area in mm2 (2D) or volume in mm3 (3D) are dropped as noise, unless they hold a voxel
            above ``calcification_hu``.
        calcification_hu: voxels above this HU are dense whatever ``threshold`` is (200).

    Returns:
        ``bool`` array of the shape of ``hu``; False outside the lungs.

    Raises:
        InputError: bad ``hu`` / ``spacing``.
        GeometryMismatchError: ``lungs`` has another shape.
        MaskError: ``lungs`` holds values other than lung labels 0/1/2.
    """
    vol, sp, was_2d = as_volume(hu, spacing, "vessel_mask(hu)")
    lung = check_mask(lungs, np.shape(hu), "vessel_mask(lungs)", labels=True)
    lung = (lung[None] if was_2d else lung) > 0
    dense = _dense(vol, lung, sp, was_2d, threshold, min_size, calcification_hu)
    return dense[0] if was_2d else dense


def _dense(vol, lung, sp, was_2d, threshold, min_size, calcification_hu, tissue=None) -> np.ndarray:
    """Implementation on volumes; ``tissue`` (``vol > threshold``) may be passed to be reused."""
    above = tissue if tissue is not None else vol > min(threshold, calcification_hu)
    if tissue is not None and calcification_hu < threshold:
        above = above | (vol > calcification_hu)
    dense = above & lung
    if min_size <= 0 or not dense.any():
        return dense
    structure = np.zeros((3, 3, 3), bool)
    if was_2d:
        structure[1] = True
        voxel = sp[1] * sp[2]
    else:
        structure[:] = True
        voxel = sp[0] * sp[1] * sp[2]
    if not voxel < min_size:  # every component is at least one voxel: none is too small
        return dense
    if not 2 * voxel < min_size:  # only single voxels are too small: no labelling needed
        return _drop_isolated(dense, vol, calcification_hu, axes=(1, 2) if was_2d else (0, 1, 2))
    lab, n = ndi.label(dense, structure=structure)
    # the labels of the dense voxels only (a few percent of the lungs): the component sizes,
    # calcified components and dropped voxels follow from them without a pass over the volume
    where = np.flatnonzero(dense)
    lab_d = lab.reshape(-1)[where]
    sizes = np.bincount(lab_d, minlength=n + 1) * voxel
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return dense
    vol_d = vol.reshape(-1)[where] if vol.flags.c_contiguous else vol[dense]
    calc = np.zeros(n + 1, bool)
    calc[np.unique(lab_d[vol_d > calcification_hu])] = True
    drop = small & ~calc
    drop[0] = False
    out = dense.copy()
    out.reshape(-1)[where[drop[lab_d]]] = False
    return out


def _drop_isolated(dense: np.ndarray, vol: np.ndarray, calcification_hu: float, axes) -> np.ndarray:
    """``dense`` without its voxels that have no dense neighbour (a component of one voxel, with
    the neighbourhood of ``axes``: all 26 in 3D, the 8 in-plane ones for slices), unless above
    ``calcification_hu``. The same voxels as labelling and dropping one-voxel components.

    Neighbours are counted by a separable 3-wide box sum (``uint8``, at most 27).
    """
    count = dense.view(np.uint8)
    for ax in axes:
        n = count.shape[ax]
        if n < 2:
            continue
        summed = count.copy()
        lo = [slice(None)] * count.ndim
        hi = [slice(None)] * count.ndim
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        summed[tuple(lo)] += count[tuple(hi)]
        summed[tuple(hi)] += count[tuple(lo)]
        count = summed
    isolated = dense & (count == 1)
    if not isolated.any():
        return dense
    isolated &= ~(vol > calcification_hu)
    return dense & ~isolated


def vessel_mask_image(image, lungs_image=None, **kwargs):
    """:func:`vessel_mask` of a ``SimpleITK.Image``; returns a uint8 {0, 1} image on its grid.

    Args:
        image: HU image (2D or 3D, any orientation).
        lungs_image: lung labels on the same grid; computed with
            :func:`~metalung_monai.anatomy.lung_mask_image` when None.
        **kwargs: passed to :func:`vessel_mask`.
    """
    arr, spacing = to_canonical_image(image)
    lungs = lungs_canonical(image, lungs_image, arr, spacing)
    return from_canonical_image(vessel_mask(arr, lungs, spacing, **kwargs).astype(np.uint8), image)
