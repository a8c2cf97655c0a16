"""MONAI transforms of metalung-monai (array transforms and their dictionary ``...d`` twins).

* :mod:`.metalung`: the six HU-preserving MetaLung augmentations (mirror, relocate the tumour,
  rotate the image, rotate the tumour, integer noise on the image / the tumour) and
  :class:`MetaLungd` (online random variants or offline expansion).
* :mod:`.intensity`: HU windowing (:class:`HUWindow`) and CLAHE (:class:`CLAHE`) for display and
  network input (they do not preserve HU: apply them after every HU-based step).
"""

from .intensity import CLAHE, WINDOW_PRESETS, CLAHEd, HUWindow, HUWindowd
from .metalung import (
    METALUNG_META_KEY,
    METALUNG_OPS,
    MetaLungd,
    MirrorLR,
    MirrorLRd,
    RandIntegerNoise,
    RandIntegerNoised,
    RandMirrorLR,
    RandMirrorLRd,
    RandRelocateTumor,
    RandRelocateTumord,
    RandRotateImage,
    RandRotateImaged,
    RandRotateTumor,
    RandRotateTumord,
    RandTumorNoise,
    RandTumorNoised,
    axcodes_affine,
    binary_mask,
    metalung_records,
)

__all__ = [
    "WINDOW_PRESETS",
    "HUWindow",
    "HUWindowd",
    "CLAHE",
    "CLAHEd",
    "METALUNG_META_KEY",
    "METALUNG_OPS",
    "metalung_records",
    "binary_mask",
    "axcodes_affine",
    "MirrorLR",
    "MirrorLRd",
    "RandMirrorLR",
    "RandMirrorLRd",
    "RandRotateImage",
    "RandRotateImaged",
    "RandRelocateTumor",
    "RandRelocateTumord",
    "RandRotateTumor",
    "RandRotateTumord",
    "RandIntegerNoise",
    "RandIntegerNoised",
    "RandTumorNoise",
    "RandTumorNoised",
    "MetaLungd",
]
