"""Insert a lesion (real from the bank, or generated) into free lung parenchyma of a CT slice.

The functional core of DeepLungSynth part 2 (issue 13): where a lesion may go, how it is
resampled to the target's pixel size, and how it is blended so that no seam gives it away
(CT-GAN's lesson: the target scanner's own noise texture is re-added), always in integer HU and
never touching a voxel outside the lesion's dilated footprint.

Conventions: 2D axial slices ``(y, x)`` in canonical orientation, HU as integers (int16 in,
int16 out), masks binary, spacing in mm ``(y, x)``.

* :func:`resample_lesion`: a bank lesion patch (``S x S`` at ``pixel_mm``) to the target
  spacing times a ``scale``, cropped to its mask's box plus the blending band (image bilinear,
  rounded half to even; mask from the bilinear mask at 0.5).
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from metalung_monai.errors import InputError

__all__ = ["Placement", "blend_lesion", "find_lesion_place", "resample_lesion"]

#: int16 HU limits of the output
_HU_MIN, _HU_MAX = -32768, 32767


def _check_pair(image: np.ndarray, mask: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2 or mask.shape != image.shape:
        raise InputError(
            what, f"expects a 2D image and a mask of its shape, got {image.shape}, {mask.shape}"
        )
    if not np.issubdtype(image.dtype, np.integer):
        raise InputError(what, f"HU must be integers, got dtype {image.dtype}")
    if mask.size and not np.isin(np.unique(mask), (0, 1)).all():
        raise InputError(what, "the mask must be binary (0 / 1)")
    return image, mask.astype(bool)


def resample_lesion(
    hu: np.ndarray,
    mask: np.ndarray,
    pixel_mm: float,
    spacing: Sequence[float],
    scale: float = 1.0,
    band_px: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """A lesion patch at ``pixel_mm`` (mm per pixel, both axes) resampled to ``spacing``
    ``(y, x)`` mm and enlarged by ``scale``, cropped to its mask's bounding box plus ``band_px``.

    Returns ``(hu int16 (h, w), mask bool (h, w))``. Raises :class:`InputError` for an empty
    mask, non-positive sizes or a lesion that vanishes at the target size.
    """
    hu, m = _check_pair(hu, mask, "resample_lesion")
    if not m.any():
        raise InputError("resample_lesion", "the lesion mask is empty")
    sp = np.asarray(spacing, dtype=float)
    if float(pixel_mm) <= 0 or float(scale) <= 0 or sp.shape != (2,) or (sp <= 0).any():
        raise InputError(
            "resample_lesion",
            f"pixel_mm, scale and spacing must be positive, got {pixel_mm}, {scale}, {spacing}",
        )
    factor = float(pixel_mm) * float(scale) / sp
    # resample only the mask's box and what the band needs around it (speed: a 48-pixel MSD
    # patch is 170 pixels at 0.564 mm, its tumour box a fraction of that)
    pad = int(math.ceil((band_px + 1) / float(factor.min()))) + 1
    ys0, xs0 = np.nonzero(m)
    win = (
        slice(max(ys0.min() - pad, 0), min(ys0.max() + pad + 1, hu.shape[0])),
        slice(max(xs0.min() - pad, 0), min(xs0.max() + pad + 1, hu.shape[1])),
    )
    hu, m = hu[win], m[win]
    shape = tuple(max(int(round(n * f)), 1) for n, f in zip(hu.shape, factor))
    img = resize(hu.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False)
    msk = resize(m.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False) >= 0.5
    if not msk.any():
        raise InputError(
            "resample_lesion", f"the lesion vanishes at {spacing} mm (scale {scale}): too small"
        )
    ys, xs = np.nonzero(msk)
    y0, y1 = max(ys.min() - band_px, 0), min(ys.max() + band_px + 1, shape[0])
    x0, x1 = max(xs.min() - band_px, 0), min(xs.max() + band_px + 1, shape[1])
    out = np.clip(np.rint(img[y0:y1, x0:x1]), _HU_MIN, _HU_MAX).astype(np.int16)
    return out, msk[y0:y1, x0:x1]


@dataclass
class Placement:
    """Where a lesion crop goes: ``centre`` (y, x) of the target slice, and the crop's box."""

    centre: tuple[int, int]
    box: tuple[slice, slice]


def _weights(mask: np.ndarray, edge_px: float) -> np.ndarray:
    """1 inside ``mask``, ``1 - d / edge_px`` at distance ``d`` (pixels) outside, 0 beyond."""
    if edge_px <= 0:
        return mask.astype(np.float64)
    d = ndi.distance_transform_edt(~mask)
    return np.clip(1.0 - d / float(edge_px), 0.0, 1.0)


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
    lies in ``free`` (bool ``(H, W)``) more than ``margin_mm`` inside; ``None`` when no room.

    The search is MetaLung's tumour relocation search (``transforms.metalung.functional``:
    distance maps, then candidate centres checked voxel by voxel), imported here on use:
    ``metalung_monai.transforms`` imports this module for :class:`RandInsertLesiond`."""
    from metalung_monai.transforms.metalung.functional import _find_place, _footprint

    free = np.asarray(free, dtype=bool)
    lm = np.asarray(lesion_mask, dtype=bool)
    if free.ndim != 2 or lm.ndim != 2:
        raise InputError("find_lesion_place", f"2D masks expected, got {free.shape}, {lm.shape}")
    foot = _weights(lm, edge_px) > 0
    offsets, centre_local, r_xy, half_z = _footprint(foot, tuple(float(s) for s in spacing))
    hit = _find_place(
        free, offsets, r_xy, half_z, tuple(float(s) for s in spacing), rng, margin_mm, tries
    )
    if hit is None:
        return None
    top = np.asarray(hit) - centre_local
    box = (
        slice(int(top[0]), int(top[0]) + lm.shape[0]),
        slice(int(top[1]), int(top[1]) + lm.shape[1]),
    )
    return Placement((int(hit[0]), int(hit[1])), box)


def blend_lesion(
    image: np.ndarray,
    lesion_hu: np.ndarray,
    lesion_mask: np.ndarray,
    box: tuple[slice, slice],
    edge_px: float = 2.0,
    sigma_px: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert the lesion crop at ``box`` of ``image`` (see the module docstring).

    Returns ``(out int16 (H, W), inserted mask bool (H, W), footprint bool (H, W))``; ``out``
    equals ``image`` outside the footprint. Raises :class:`InputError` when the box leaves the
    image or does not match the crop's shape.
    """
    image = np.asarray(image)
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.integer):
        raise InputError(
            "blend_lesion", f"expects a 2D integer HU image, got {image.shape} {image.dtype}"
        )
    lhu, lm = _check_pair(lesion_hu, lesion_mask, "blend_lesion(lesion)")
    (ys, xs) = box
    if (
        ys.start < 0
        or xs.start < 0
        or ys.stop > image.shape[0]
        or xs.stop > image.shape[1]
        or (ys.stop - ys.start, xs.stop - xs.start) != lm.shape
    ):
        raise InputError(
            "blend_lesion", f"box {box} does not hold a {lm.shape} crop in a {image.shape} image"
        )
    w = _weights(lm, edge_px)
    foot = w > 0
    target = image[box].astype(np.float64)
    if sigma_px > 0:
        lf = lhu.astype(np.float64)
        low_lesion = ndi.gaussian_filter(lf, sigma_px, mode="nearest")
        # inside the mask, mask-normalised smoothing: the lesion's level without its context
        num = ndi.gaussian_filter(lf * lm, sigma_px, mode="nearest")
        den = ndi.gaussian_filter(lm.astype(np.float64), sigma_px, mode="nearest")
        low_lesion[lm] = num[lm] / np.maximum(den[lm], 1e-6)
        # the target's noise, from a window around the box so the filter sees real neighbours
        pad = int(math.ceil(3 * sigma_px))
        y0, x0 = max(ys.start - pad, 0), max(xs.start - pad, 0)
        y1, x1 = min(ys.stop + pad, image.shape[0]), min(xs.stop + pad, image.shape[1])
        win = image[y0:y1, x0:x1].astype(np.float64)
        high = win - ndi.gaussian_filter(win, sigma_px, mode="nearest")
        noise = high[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
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
