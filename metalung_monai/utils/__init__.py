"""Small shared helpers: atomic file writes, orientation, seeding."""

from .atomic import atomic_path, save_figure_atomic, write_image_atomic, write_json_atomic
from .orientation import (
    canonical_axes,
    canonical_spacing,
    canonical_to_sitk,
    from_canonical,
    sitk_to_canonical,
    to_canonical,
)

__all__ = [
    "atomic_path",
    "write_json_atomic",
    "write_image_atomic",
    "save_figure_atomic",
    "canonical_axes",
    "to_canonical",
    "from_canonical",
    "canonical_spacing",
    "sitk_to_canonical",
    "canonical_to_sitk",
]
