"""Free lung parenchyma: where a synthetic tumour of a given radius fits.

*Free parenchyma* is lung (mask > 0) that is not a dense structure (see
:func:`~metalung_monai.anatomy.vessel_mask`) and not calcified (above 200 HU, whatever mask is
passed). For each free voxel, :func:`free_space_distance` gives the Euclidean distance in mm (true
anisotropic voxel size) from its centre to the centre of the nearest voxel that is *not* free
parenchyma: a vessel, a nodule, a calcification, or anything outside the lung (chest wall,
mediastinum, diaphragm: the pleura). It is 0 on every voxel that is not free parenchyma.

A sphere (3D) or disc (2D) of radius ``r`` centred on a voxel with distance ``>= r + margin``
touches no dense structure and stays inside the lung; :func:`free_space_mask` gives these
centres. In 2D the distance is measured in the slice; in 3D across slices too. Where the lung
touches the edge of the array (a scan cut through the lung) the parenchyma is assumed to go on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._checks import as_volume, check_mask
from ._images import check_same_grid, from_canonical_image, to_canonical_image
from ._morph import bbox_slices
from .lung_mask import lungs_canonical
from .vessels import CALCIFICATION_HU, _dense

__all__ = [
    "free_space_distance",
    "free_space_mask",
    "free_space_distance_image",
    "free_space_mask_image",
]


def free_space_distance(
    hu,
    lungs,
    spacing,
    vessels=None,
    *,
    threshold: float = -500.0,
    calcification_hu: float = CALCIFICATION_HU,
) -> np.ndarray:
    """Distance in mm from each free parenchyma voxel to the nearest dense structure or pleura.

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        lungs: lung mask or labels (0/1/2) of the same shape.
        spacing: voxel size in mm in the same axis order.
        vessels: dense-structure mask of the same shape; computed with
            :func:`~metalung_monai.anatomy.vessel_mask` (``threshold``) when None.
        threshold: HU threshold of the dense structures when ``vessels`` is None (-500).
        calcification_hu: voxels above this HU are never free, even when ``vessels`` misses them.

    Returns:
        ``float32`` array of the shape of ``hu``: distance in mm (``scipy.ndimage.
        distance_transform_edt`` with ``sampling=spacing``), 0 outside free parenchyma.

    Raises:
        InputError, GeometryMismatchError, MaskError: bad arrays, shapes or mask values.
    """
    vol, sp, was_2d = as_volume(hu, spacing, "free_space_distance(hu)")
    lung = check_mask(lungs, np.shape(hu), "free_space_distance(lungs)", labels=True)
    lung = (lung[None] if was_2d else lung) > 0
    if vessels is None:
        dense = _dense(vol, lung, sp, was_2d, threshold, 2.0, calcification_hu)
    else:
        v = check_mask(vessels, np.shape(hu), "free_space_distance(vessels)")
        dense = (v[None] if was_2d else v) > 0
    out = _free_distance(vol, lung, dense, sp, was_2d, calcification_hu)
    return out[0] if was_2d else out


def _free_distance(vol, lung, dense, sp, was_2d, calcification_hu) -> np.ndarray:
    """Implementation on volumes (see :func:`free_space_distance`)."""
    free = lung & ~dense & ~(vol > calcification_hu)
    out = np.zeros(vol.shape, np.float32)
    box = bbox_slices(free, margin=1)
    if box is None:
        return out
    # the crop keeps a margin of non-free voxels wherever the array goes on: same distances
    if was_2d:
        d = ndi.distance_transform_edt(free[box][0], sampling=sp[1:])[None]
    else:
        d = ndi.distance_transform_edt(free[box], sampling=sp)
    out[box] = d
    return out


def free_space_mask(
    hu,
    lungs,
    spacing,
    min_distance_mm: float,
    vessels=None,
    **kwargs,
) -> np.ndarray:
    """Free parenchyma voxels at least ``min_distance_mm`` away from dense structures and pleura.

    Args:
        hu, lungs, spacing, vessels, **kwargs: as :func:`free_space_distance`.
        min_distance_mm: smallest allowed distance in mm (e.g. tumour radius + margin); >= 0.

    Returns:
        ``bool`` array: ``free_space_distance(...) >= min_distance_mm`` on free parenchyma.

    Raises:
        InputError: ``min_distance_mm`` negative or not finite (and as :func:`free_space_distance`).
    """
    _check_min_distance(min_distance_mm)
    d = free_space_distance(hu, lungs, spacing, vessels, **kwargs)
    return (d > 0) & (d >= float(min_distance_mm))


def _check_min_distance(min_distance_mm) -> None:
    try:
        ok = np.isfinite(float(min_distance_mm)) and float(min_distance_mm) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            "min_distance_mm", f"must be a finite distance >= 0 in mm, got {min_distance_mm!r}"
        )


def free_space_distance_image(image, lungs_image=None, vessels_image=None, **kwargs):
    """:func:`free_space_distance` of a ``SimpleITK.Image``; float32 image (mm) on its grid.

    Args:
        image: HU image (2D or 3D, any orientation).
        lungs_image: lung labels on the same grid (computed when None).
        vessels_image: dense-structure mask on the same grid (computed when None).
        **kwargs: passed to :func:`free_space_distance`.
    """
    arr, spacing = to_canonical_image(image)
    lungs = lungs_canonical(image, lungs_image, arr, spacing)
    vessels = None
    if vessels_image is not None:
        check_same_grid(image, vessels_image, "vessels_image")
        vessels, _ = to_canonical_image(vessels_image)
    return from_canonical_image(free_space_distance(arr, lungs, spacing, vessels, **kwargs), image)


def free_space_mask_image(
    image, min_distance_mm: float, lungs_image=None, vessels_image=None, **kwargs
):
    """:func:`free_space_mask` of a ``SimpleITK.Image``; uint8 {0, 1} image on its grid."""
    import SimpleITK as sitk

    _check_min_distance(min_distance_mm)
    d = free_space_distance_image(image, lungs_image, vessels_image, **kwargs)
    return sitk.Cast((d > 0) & (d >= float(min_distance_mm)), sitk.sitkUInt8)
