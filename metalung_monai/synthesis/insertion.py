"""Insert a lesion (real from the bank, or generated) into free lung parenchyma of a CT slice
or volume.

The functional core of DeepLungSynth part 2 (issue 13): where a lesion may go, how it is
resampled to the target's pixel size, and how it is blended so that no seam gives it away
(CT-GAN's lesson: the target scanner's own noise texture is re-added), always in integer HU and
never touching a voxel outside the lesion's dilated footprint.

Conventions: arrays in the canonical layout of :mod:`metalung_monai.utils.orientation`: a 2D
axial slice ``(y, x)``, a 3D volume ``(z, y, x)`` (z the slice axis: the bank's 3D cubes
``(D, S3, S3)`` and the anatomy functions' volumes; a MONAI ``(1, H, W, D)`` volume is seen in
this layout by :class:`~metalung_monai.transforms.InsertLesiond`); spacing in mm in the same axis
order (``(y, x)``, ``(z, y, x)``, slice thickness first); HU as integers (int16 in, int16 out);
masks binary. A 2D lesion goes only into a 2D slice, a 3D lesion only into a volume (across its
slices); mixing them raises :class:`InputError`.

* :func:`resample_lesion`: a bank lesion patch (``S x S`` or ``D x S3 x S3`` at ``pixel_mm``)
  to the target spacing times a ``scale``, cropped to its mask's box plus the blending band
  (image (bi/tri)linear, rounded half to even; mask from the linear mask at 0.5).
* :func:`find_lesion_place`: a random centre (seeded) where the lesion mask dilated by the band
  lies inside ``free`` (free parenchyma, e.g. :func:`~metalung_monai.anatomy.free_space_mask`),
  more than ``margin_mm`` from its border; ``None`` when there is no room.
* :func:`blend_lesion`: the insertion itself. With ``w`` = 1 inside the lesion mask and falling
  linearly to 0 across ``edge_px`` pixels outside it, and ``g`` a Gaussian low-pass
  (``sigma_px``), every voxel of the footprint (``w > 0``) becomes
  ``round(w * (g(lesion) + (image - g(image))) + (1 - w) * image)``: the lesion's low-pass shape
  and HU level with the target's own high-pass noise, faded into the target across the band
  (inside the mask ``g`` is normalised by the smoothed mask, so the lesion's own context does not
  darken its edge).
  Voxels with ``w == 0`` are not written. The inserted mask is exactly the placed lesion mask.

In 3D the band and the filters are isotropic in mm: ``edge_px`` and ``sigma_px`` count voxels of
the finest axis (the in-plane pixel of a CT volume), distances along the other axes are measured
in mm (``scipy.ndimage.distance_transform_edt`` with ``sampling = spacing / min(spacing)``) and
the Gaussian's sigma per axis is ``sigma_px / sampling``. On 3 mm slices with 0.56 mm pixels the
2-pixel band is 1.1 mm wide, less than a slice, and the noise filter works within the slice (CT
noise is correlated in-plane, hardly across slices). In 2D both count plain pixels, as always.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from metalung_monai.errors import InputError, LesionTooSmallError

__all__ = ["Placement", "blend_lesion", "find_lesion_place", "resample_lesion"]

#: int16 HU limits of the output
_HU_MIN, _HU_MAX = -32768, 32767


def _check_pair(image: np.ndarray, mask: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim not in (2, 3) or mask.shape != image.shape:
        raise InputError(
            what,
            f"expects a 2D or 3D image and a mask of its shape, got {image.shape}, {mask.shape}",
        )
    if not np.issubdtype(image.dtype, np.integer):
        raise InputError(what, f"HU must be integers, got dtype {image.dtype}")
    if mask.size and not np.isin(np.unique(mask), (0, 1)).all():
        raise InputError(what, "the mask must be binary (0 / 1)")
    return image, mask.astype(bool)


def _spacing_of(spacing: Sequence[float], ndim: int, what: str) -> np.ndarray:
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (ndim,) or not np.isfinite(sp).all() or (sp <= 0).any():
        raise InputError(
            what, f"spacing must be {ndim} positive sizes in mm (the array's axes), got {spacing}"
        )
    return sp


def _sampling(ndim: int, spacing: Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """Voxel size in units of the finest axis (3D: ``spacing / min(spacing)``), the unit of
    ``edge_px`` and ``sigma_px``; ``None`` in 2D (plain pixels)."""
    if ndim == 2:
        return None
    if spacing is None:
        raise InputError(what, "a 3D lesion needs the spacing (z, y, x) in mm")
    sp = _spacing_of(spacing, ndim, what)
    return tuple(float(v) for v in sp / sp.min())


def _same_kind(lesion_ndim: int, data_ndim: int, what: str) -> None:
    if lesion_ndim != data_ndim:
        raise InputError(
            what,
            f"a {lesion_ndim}D lesion into {data_ndim}D data: a 2D lesion goes only into a 2D "
            "slice, a 3D lesion only into a volume",
        )


def resample_lesion(
    hu: np.ndarray,
    mask: np.ndarray,
    pixel_mm: float | Sequence[float],
    spacing: Sequence[float],
    scale: float = 1.0,
    band_px: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """A lesion patch at ``pixel_mm`` resampled to ``spacing`` mm and enlarged by ``scale``,
    cropped to its mask's bounding box plus ``band_px`` voxels on every axis.

    Args:
        hu, mask: integer HU and binary mask, 2D ``(y, x)`` or 3D ``(z, y, x)`` (a bank's
            ``image2d`` / ``image3d`` row).
        pixel_mm: the patch's voxel size in mm: one number (isotropic: the bank's model patches
            and cubes) or one per axis in the array's order (a native window, e.g.
            ``(5.0, 0.57, 0.57)``).
        spacing: the target's voxel size in mm, one per axis in the array's order (``(y, x)`` or
            ``(z, y, x)``); anisotropic is fine (thick slices).
        scale: size factor (1: the lesion's real size in mm).
        band_px: voxels kept around the mask's box (room for the blending band).

    Returns ``(hu int16, mask bool)`` of the array's dimension. Raises :class:`InputError` for an
    empty mask, non-positive sizes or a lesion that vanishes at the target size.
    """
    hu, m = _check_pair(hu, mask, "resample_lesion")
    if not m.any():
        raise InputError("resample_lesion", "the lesion mask is empty")
    sp = np.asarray(spacing, dtype=float)
    px = np.asarray(pixel_mm, dtype=float)
    if (
        px.ndim > 1
        or (px.ndim == 1 and px.shape != sp.shape)
        or (px <= 0).any()
        or float(scale) <= 0
        or sp.shape != (hu.ndim,)
        or (sp <= 0).any()
    ):
        raise InputError(
            "resample_lesion",
            f"pixel_mm, scale and spacing must be positive, got {pixel_mm}, {scale}, {spacing}",
        )
    factor = px * float(scale) / sp
    # resample only the mask's box and what the band needs around it (speed: a 48-pixel MSD
    # patch is 170 pixels at 0.564 mm, its tumour box a fraction of that)
    pad = int(math.ceil((band_px + 1) / float(factor.min()))) + 1
    idx = np.nonzero(m)
    win = tuple(
        slice(max(i.min() - pad, 0), min(i.max() + pad + 1, n)) for i, n in zip(idx, hu.shape)
    )
    hu, m = hu[win], m[win]
    shape = tuple(max(int(round(n * f)), 1) for n, f in zip(hu.shape, factor))
    img = resize(hu.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False)
    msk = resize(m.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False) >= 0.5
    if not msk.any():
        raise LesionTooSmallError(
            "resample_lesion", f"the lesion vanishes at {spacing} mm (scale {scale}): too small"
        )
    crop = tuple(
        slice(max(i.min() - band_px, 0), min(i.max() + band_px + 1, n))
        for i, n in zip(np.nonzero(msk), shape)
    )
    out = np.clip(np.rint(img[crop]), _HU_MIN, _HU_MAX).astype(np.int16)
    return out, msk[crop]


@dataclass
class Placement:
    """Where a lesion crop goes: ``centre`` of the target (``(y, x)`` or ``(z, y, x)``), and the
    crop's box there (one slice per axis)."""

    centre: tuple[int, ...]
    box: tuple[slice, ...]


def _weights(
    mask: np.ndarray, edge_px: float, sampling: tuple[float, ...] | None = None
) -> np.ndarray:
    """1 inside ``mask``, ``1 - d / edge_px`` at distance ``d`` outside, 0 beyond; ``d`` in
    voxels (``sampling``: voxel sizes in units of the finest axis, 3D)."""
    if edge_px <= 0:
        return mask.astype(np.float64)
    d = ndi.distance_transform_edt(~mask, sampling=sampling)
    return np.clip(1.0 - d / float(edge_px), 0.0, 1.0)


#: draws of a place before "no room" when the crop's box keeps leaving the array
_BOX_DRAWS = 8


def find_lesion_place(
    free: np.ndarray,
    lesion_mask: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    edge_px: float = 2.0,
    margin_mm: float = 0.0,
    tries: int = 32,
) -> Placement | None:
    """A random place (``rng``) where the lesion's footprint (its mask dilated by ``edge_px``)
    lies in ``free`` more than ``margin_mm`` inside and the lesion's whole crop inside the array;
    ``None`` when no room.

    ``free`` bool ``(H, W)`` with a 2D lesion mask, or ``(Z, H, W)`` with a 3D one (then the
    whole 3D footprint, across its slices, lies in the free volume); ``spacing`` mm in the same
    axis order. The search is MetaLung's tumour relocation search
    (``transforms.metalung.functional``: per-slice distance maps, then candidate centres checked
    voxel by voxel), imported here on use: ``metalung_monai.transforms`` imports this module for
    :class:`RandInsertLesiond`."""
    from metalung_monai.transforms.metalung.functional import _find_place, _footprint

    free = np.asarray(free, dtype=bool)
    lm = np.asarray(lesion_mask, dtype=bool)
    if free.ndim not in (2, 3) or lm.ndim not in (2, 3):
        raise InputError(
            "find_lesion_place", f"2D or 3D masks expected, got {free.shape}, {lm.shape}"
        )
    _same_kind(lm.ndim, free.ndim, "find_lesion_place")
    sp = tuple(float(s) for s in _spacing_of(spacing, free.ndim, "find_lesion_place"))
    foot = _weights(lm, edge_px, _sampling(lm.ndim, sp, "find_lesion_place")) > 0
    offsets, centre_local, r_xy, half_z = _footprint(foot, sp)
    for _ in range(_BOX_DRAWS):
        hit = _find_place(free, offsets, r_xy, half_z, sp, rng, margin_mm, tries)
        if hit is None:
            return None
        top = np.asarray(hit) - centre_local
        if all(t >= 0 and t + n <= size for t, n, size in zip(top, lm.shape, free.shape)):
            box = tuple(slice(int(t), int(t) + n) for t, n in zip(top, lm.shape))
            return Placement(tuple(int(h) for h in hit), box)
        # the footprint fits but the crop's empty margin leaves the array (free space that
        # reaches the array's edge: a patch cut through the lung): draw again
    return None


def blend_lesion(
    image: np.ndarray,
    lesion_hu: np.ndarray,
    lesion_mask: np.ndarray,
    box: tuple[slice, ...],
    edge_px: float = 2.0,
    sigma_px: float = 1.0,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert the lesion crop at ``box`` of ``image`` (see the module docstring).

    ``image`` a 2D slice ``(H, W)`` with a 2D crop, or a volume ``(Z, H, W)`` with a 3D crop and
    ``spacing`` (``(z, y, x)`` mm, required in 3D: the band and the filters are isotropic in mm;
    ignored in 2D, where they count pixels). The result depends only on the image within
    ``ceil(3 * sigma_px)`` voxels of ``box``, so a window of the image around it gives the same
    voxels.

    Returns ``(out int16, inserted mask bool, footprint bool)``, each of the image's shape;
    ``out`` equals ``image`` outside the footprint. Raises :class:`InputError` when the box leaves
    the image or does not match the crop's shape, or for a 2D lesion into a volume (or back).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or not np.issubdtype(image.dtype, np.integer):
        raise InputError(
            "blend_lesion",
            f"expects a 2D or 3D integer HU image, got {image.shape} {image.dtype}",
        )
    lhu, lm = _check_pair(lesion_hu, lesion_mask, "blend_lesion(lesion)")
    _same_kind(lm.ndim, image.ndim, "blend_lesion")
    box = tuple(box)
    if (
        len(box) != image.ndim
        or any(b.start < 0 or b.stop > n for b, n in zip(box, image.shape))
        or tuple(b.stop - b.start for b in box) != lm.shape
    ):
        raise InputError(
            "blend_lesion", f"box {box} does not hold a {lm.shape} crop in a {image.shape} image"
        )
    sampling = _sampling(image.ndim, spacing, "blend_lesion")
    w = _weights(lm, edge_px, sampling)
    foot = w > 0
    target = image[box].astype(np.float64)
    if sigma_px > 0:
        sigma = sigma_px if sampling is None else tuple(sigma_px / s for s in sampling)
        lf = lhu.astype(np.float64)
        low_lesion = ndi.gaussian_filter(lf, sigma, mode="nearest")
        # inside the mask, mask-normalised smoothing: the lesion's level without its context
        num = ndi.gaussian_filter(lf * lm, sigma, mode="nearest")
        den = ndi.gaussian_filter(lm.astype(np.float64), sigma, mode="nearest")
        low_lesion[lm] = num[lm] / np.maximum(den[lm], 1e-6)
        # the target's noise, from a window around the box so the filter sees real neighbours
        pads = [int(math.ceil(3 * s)) for s in np.broadcast_to(sigma, (image.ndim,))]
        lo = [max(b.start - p, 0) for b, p in zip(box, pads)]
        hi = [min(b.stop + p, n) for b, p, n in zip(box, pads, image.shape)]
        win = image[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float64)
        high = win - ndi.gaussian_filter(win, sigma, mode="nearest")
        noise = high[tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo))]
        content = low_lesion + noise
    else:
        content = lhu.astype(np.float64)
    mixed = w * content + (1.0 - w) * target
    out = image.astype(np.int16, copy=True)
    crop = out[box]
    crop[foot] = np.clip(np.rint(mixed[foot]), _HU_MIN, _HU_MAX).astype(np.int16)
    inserted = np.zeros(image.shape, bool)
    inserted[box] = lm
    footprint = np.zeros(image.shape, bool)
    footprint[box] = foot
    return out, inserted, footprint
