"""SimpleITK <-> canonical array plumbing for the ``*_image`` wrappers (internal)."""

from __future__ import annotations

import numpy as np

from ..errors import GeometryMismatchError
from ..utils.orientation import canonical_to_sitk, sitk_to_canonical

__all__ = ["to_canonical_image", "from_canonical_image", "check_same_grid"]


def to_canonical_image(image) -> tuple[np.ndarray, tuple[float, ...]]:
    """Canonical array and spacing (mm) of a SimpleITK image; a 3D image of one slice becomes 2D."""
    arr, spacing = sitk_to_canonical(image)
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0], tuple(spacing[1:])
    return arr, tuple(spacing)


def from_canonical_image(arr: np.ndarray, reference):
    """Put a canonical array (as returned for ``reference`` by :func:`to_canonical_image`) back on
    the grid of ``reference``; the pixel type follows the array's dtype."""
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
