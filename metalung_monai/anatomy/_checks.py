"""Argument checks shared by the anatomy functions (internal)."""

from __future__ import annotations

import numpy as np

from ..errors import GeometryMismatchError, InputError, MaskError

__all__ = ["as_volume", "check_spacing", "check_mask", "to_numpy"]


def to_numpy(a) -> np.ndarray:
    """``np.asarray`` that also accepts torch tensors / MetaTensors (detached, on the CPU)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def check_spacing(spacing, ndim: int, source: str) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``ndim`` positive finite floats (mm) or raise InputError."""
    try:
        sp = tuple(float(s) for s in spacing)
    except TypeError as e:
        raise InputError(
            source, f"spacing must be a sequence of {ndim} numbers in mm, got {spacing!r}"
        ) from e
    if len(sp) != ndim:
        raise InputError(source, f"spacing has {len(sp)} values but the array has {ndim} axes")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(source, f"spacing must be positive and finite (mm), got {sp}")
    return sp


def as_volume(hu, spacing, source: str) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    """Check a canonical HU array and view it as a volume ``(z, y, x)``.

    Args:
        hu: canonical 2D ``(y, x)`` or 3D ``(z, y, x)`` array of HU (any real dtype).
        spacing: voxel size in mm in the same axis order.
        source: name used in error messages.

    Returns:
        ``(volume, spacing_zyx, was_2d)``; a 2D slice becomes a volume of one slice with a nominal
        z spacing of 1 mm (unused by the per-slice computations).

    Raises:
        InputError: wrong number of axes, empty array, non-real dtype, NaN/inf values, bad spacing.
    """
    a = to_numpy(hu)
    if a.ndim not in (2, 3):
        raise InputError(
            source, f"expected a canonical 2D (y, x) or 3D (z, y, x) array, got shape {a.shape}"
        )
    if a.size == 0 or min(a.shape) == 0:
        raise InputError(source, f"empty array of shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(source, f"HU array must be integer or float, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(source, "HU array holds NaN or infinite values")
    sp = check_spacing(spacing, a.ndim, source)
    if a.ndim == 2:
        return a[None], (1.0, sp[0], sp[1]), True
    return a, (sp[0], sp[1], sp[2]), False


def check_mask(mask, shape: tuple[int, ...], source: str, labels: bool = False) -> np.ndarray:
    """Check a mask of the same shape as the image; return it as a numpy array.

    Args:
        mask: array-like; binary {0, 1} (or bool), or a label map {0, 1, 2} when ``labels``.
        shape: expected shape.
        source: name used in error messages.
        labels: accept lung labels 0/1/2 instead of a binary mask.

    Raises:
        GeometryMismatchError: the shape differs.
        MaskError: NaN, negative or unexpected values.
    """
    m = to_numpy(mask)
    if m.shape != tuple(shape):
        raise GeometryMismatchError(
            source, f"mask shape {m.shape} does not match the image shape {tuple(shape)}"
        )
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.floating) and not np.isfinite(m).all():
        raise MaskError(source, "mask holds NaN or infinite values")
    top = 2 if labels else 1
    lo, hi = (m.min(), m.max()) if m.size else (0, 0)
    integral = not np.issubdtype(m.dtype, np.floating) or bool((m == np.round(m)).all())
    if lo < 0 or hi > top or not integral:
        kind = "lung labels 0/1/2" if labels else "binary values 0/1"
        bad = np.unique(m[(m < 0) | (m > top) | (m != np.round(m))])[:5].tolist()
        raise MaskError(source, f"expected {kind}, found values {bad}")
    return m
