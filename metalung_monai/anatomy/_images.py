"""SimpleITK <-> canonical array plumbing for the ``*_image`` wrappers (internal)."""

from __future__ import annotations

import numpy as np

from ..errors import GeometryMismatchError

__all__ = ["to_canonical_image", "from_canonical_image", "lungs_canonical", "check_same_grid"]


def to_canonical_image(image) -> tuple[np.ndarray, tuple[float, ...]]:
    """Canonical array and spacing (mm) of a SimpleITK image; a 3D image of one slice becomes 2D."""
    from ..utils.orientation import sitk_to_canonical

    arr, spacing = sitk_to_canonical(image)
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0], tuple(spacing[1:])
    return arr, tuple(spacing)


def from_canonical_image(arr: np.ndarray, reference):
    """Put a canonical array (as returned for ``reference`` by :func:`to_canonical_image`) back on
    the grid of ``reference``; the pixel type follows the array's dtype."""
    from ..utils.orientation import canonical_to_sitk

    if reference.GetDimension() == 3 and arr.ndim == 2:
        arr = arr[None]
    return canonical_to_sitk(np.ascontiguousarray(arr), reference)


def check_same_grid(image, other, source: str) -> None:
    """Raise GeometryMismatchError unless ``other`` has the size/spacing/origin/direction of ``image``."""
    same = (
        image.GetSize() == other.GetSize()
        and np.allclose(image.GetSpacing(), other.GetSpacing(), atol=1e-4)
        and np.allclose(image.GetOrigin(), other.GetOrigin(), atol=1e-3)
        and np.allclose(image.GetDirection(), other.GetDirection(), atol=1e-4)
    )
    if not same:
        raise GeometryMismatchError(
            source,
            f"grid {other.GetSize()} spacing {tuple(round(s, 4) for s in other.GetSpacing())} does not match "
            f"the image's {image.GetSize()} spacing {tuple(round(s, 4) for s in image.GetSpacing())}",
        )


def lungs_canonical(image, lungs_image, arr: np.ndarray, spacing) -> np.ndarray:
    """Canonical lung labels for ``image``: from ``lungs_image`` when given, else computed."""
    if lungs_image is None:
        from .lung_mask import lung_mask

        return lung_mask(arr, spacing)
    check_same_grid(image, lungs_image, "lungs_image")
    lungs, _ = to_canonical_image(lungs_image)
    return lungs
