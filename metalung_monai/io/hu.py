"""Hounsfield units: stored DICOM values to int16 HU, padding to air, exactly once.

Conventions used everywhere in metalung-monai:

* An image is ``int16`` HU: air -1024 (after padding is mapped), water 0, values above 32767 are
  clipped to 32767 (the count is reported).
* ``HU = stored * RescaleSlope + RescaleIntercept`` is applied **exactly once**. SimpleITK's GDCM
  reader already applies it, pydicom's ``pixel_array`` does not: the readers of
  :mod:`metalung_monai.io` know which path they are on and call :func:`to_hu` only on raw stored
  values (and cross-check the GDCM path, see :mod:`metalung_monai.io.dicom_series`).
* Values below -1024 HU (outside the reconstruction field of view: -2000, -2048, -3024, or the
  ``PixelPaddingValue`` converted to HU) are *padding*, not tissue, and become -1024
  (:func:`map_padding_to_air`).
* Non-integral HU (a fractional slope, a float NIfTI) are rounded to the nearest integer
  (half to even, :func:`numpy.rint`). NaN is an input error.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import InputError

__all__ = [
    "HU_AIR",
    "HU_MAX",
    "HU_TISSUE_MAX",
    "to_hu",
    "padding_to_hu",
    "map_padding_to_air",
    "finalize_hu",
]

log = logging.getLogger(__name__)

HU_AIR = -1024
"""HU value of air / outside the field of view after ingestion."""
HU_MAX = int(np.iinfo(np.int16).max)
"""Largest HU an ``int16`` image can hold (higher values are clipped)."""
HU_TISSUE_MAX = 3071
"""Upper end of the usual 12-bit CT range; padding values inside (-1024, 3071] are ambiguous."""


def to_hu(
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    source: str | os.PathLike = "<array>",
) -> np.ndarray:
    """Convert raw stored pixel values to HU: ``stored * slope + intercept``.

    Call this once, on *stored* values only (pydicom ``pixel_array``), never on an image that a
    GDCM/SimpleITK reader already rescaled.

    Args:
        stored: stored values (any integer or float dtype, any shape).
        slope: ``RescaleSlope`` (DICOM default 1).
        intercept: ``RescaleIntercept`` (DICOM default 0; -1024 for unsigned CT storage).
        source: file name used in error messages.

    Returns:
        float64 array of HU (same shape); not rounded or clipped yet (see :func:`finalize_hu`).

    Raises:
        InputError: slope is zero/non-finite or the values hold NaN.
    """
    slope = float(1.0 if slope is None else slope)
    intercept = float(0.0 if intercept is None else intercept)
    if not np.isfinite(slope) or slope == 0.0:
        raise InputError(source, f"invalid RescaleSlope {slope!r}")
    if not np.isfinite(intercept):
        raise InputError(source, f"invalid RescaleIntercept {intercept!r}")
    arr = np.asarray(stored)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise InputError(source, f"{int(np.isnan(arr).sum())} NaN pixel value(s)")
    out = arr.astype(np.float64)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    return out


def padding_to_hu(
    padding_value: float | None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> float | None:
    """HU of a stored ``PixelPaddingValue`` (or ``PixelPaddingRangeLimit``); ``None`` passes through."""
    if padding_value is None:
        return None
    return float(padding_value) * float(slope if slope is not None else 1.0) + float(
        intercept if intercept is not None else 0.0
    )


def map_padding_to_air(
    hu: np.ndarray,
    padding_hu: float | None = None,
    padding_range_hu: float | None = None,
    air: int = HU_AIR,
    source: str | os.PathLike = "<array>",
) -> tuple[np.ndarray, int]:
    """Set padding / outside-field-of-view pixels to air (-1024 HU), in place when possible.

    Pixels are padding when they are below ``air`` (any value < -1024 HU: -2000, -2048, -3024 ...)
    or equal to ``padding_hu`` (the DICOM ``PixelPaddingValue`` in HU), or lie between
    ``padding_hu`` and ``padding_range_hu`` (``PixelPaddingRangeLimit``) inclusive. A padding value
    inside the tissue range (-1024, 3071] HU is ambiguous (it could erase real tissue): it is
    ignored with a warning, only the "< -1024" rule applies then.

    Args:
        hu: HU array (float or integer; any shape). Modified in place if it is writeable float or
            a signed integer type.
        padding_hu: ``PixelPaddingValue`` converted to HU (:func:`padding_to_hu`), or ``None``.
        padding_range_hu: ``PixelPaddingRangeLimit`` in HU, or ``None``.
        air: HU written into padding pixels (default -1024).
        source: file name used in error messages and warnings.

    Returns:
        ``(hu, count)``: the array with padding mapped and the number of pixels changed (pixels
        that were already exactly ``air`` are not counted).

    Raises:
        InputError: the array holds NaN.
    """
    arr = np.asarray(hu)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise InputError(source, f"{int(np.isnan(arr).sum())} NaN pixel value(s)")
    if (
        arr.dtype.kind == "u"
    ):  # unsigned HU cannot be below air; nothing to map but padding equality
        arr = arr.astype(np.int32)
    if not arr.flags.writeable:
        arr = arr.copy()
    pad = arr < air
    if padding_hu is not None:
        lo, hi = padding_hu, padding_hu if padding_range_hu is None else padding_range_hu
        lo, hi = min(lo, hi), max(lo, hi)
        if hi <= air or lo > HU_TISSUE_MAX:
            pad |= (arr >= lo) & (arr <= hi)
        elif not (lo == hi == air):
            log.warning(
                "%s: PixelPaddingValue %s HU lies inside the tissue range (-1024, 3071]; ignored "
                "(only values below -1024 HU are treated as padding)",
                source,
                f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}",
            )
    pad &= arr != air
    count = int(np.count_nonzero(pad))
    if count:
        arr[pad] = air
    return arr, count


def finalize_hu(
    hu: np.ndarray,
    padding_hu: float | None = None,
    padding_range_hu: float | None = None,
    source: str | os.PathLike = "<array>",
) -> tuple[np.ndarray, dict]:
    """Round, map padding to air and clip HU to an ``int16`` array.

    Args:
        hu: HU values (any numeric dtype, any shape), e.g. from :func:`to_hu` or from a reader that
            already applied the rescale.
        padding_hu: padding value in HU (see :func:`map_padding_to_air`).
        padding_range_hu: padding range limit in HU.
        source: file name used in error messages.

    Returns:
        ``(int16 array, info)`` with ``info = {"padding_mapped": int, "clipped_high": int,
        "rounded": bool}``.

    Raises:
        InputError: NaN or infinite values.
    """
    arr = np.asarray(hu)
    if arr.dtype.kind not in "biuf":
        raise InputError(source, f"pixel type {arr.dtype} is not numeric")
    rounded = False
    if arr.dtype.kind == "f":
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise InputError(source, f"{n_nan} NaN pixel value(s)")
        if not np.isfinite(arr).all():
            raise InputError(source, "infinite pixel value(s)")
        rounded = bool((arr != np.floor(arr)).any())
        arr = np.rint(arr) if rounded else arr.copy()
    elif arr.dtype.itemsize <= 2 or arr.dtype == np.int32:
        arr = arr.astype(np.int32)  # room for padding values of unsigned data; always a copy
    else:  # int64 / uint32 / uint64: bring into int32 range first (everything above is clipped)
        arr = np.clip(arr, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    arr, n_pad = map_padding_to_air(arr, padding_hu, padding_range_hu, source=source)
    high = arr > HU_MAX
    n_high = int(np.count_nonzero(high))
    if n_high:
        log.warning("%s: %d pixel(s) above %d HU clipped to int16", source, n_high, HU_MAX)
        arr[high] = HU_MAX
    return arr.astype(np.int16, copy=False), {
        "padding_mapped": n_pad,
        "clipped_high": n_high,
        "rounded": rounded,
    }
