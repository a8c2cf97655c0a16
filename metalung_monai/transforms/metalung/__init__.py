"""MetaLung: six HU-preserving augmentations of a CT slice or volume and its tumour mask.

Three layers as in MONAI: :mod:`.functional` (pure numpy operations on canonical arrays),
:mod:`.array` (transforms on channel-first arrays / MetaTensors) and :mod:`.dictionary`
(the ``...d`` twins and :class:`MetaLungd`).
"""

from .array import (
    METALUNG_META_KEY,
    MirrorLR,
    RandIntegerNoise,
    RandMirrorLR,
    RandRelocateTumor,
    RandRotateImage,
    RandRotateTumor,
    RandTumorNoise,
    axcodes_affine,
    binary_mask,
    metalung_records,
)
from .dictionary import (
    METALUNG_OPS,
    MetaLungd,
    MirrorLRd,
    RandIntegerNoised,
    RandMirrorLRd,
    RandRelocateTumord,
    RandRotateImaged,
    RandRotateTumord,
    RandTumorNoised,
)

__all__ = [
    "METALUNG_META_KEY",
    "METALUNG_OPS",
    "metalung_records",
    "binary_mask",
    "axcodes_affine",
    "MirrorLR",
    "RandMirrorLR",
    "RandRotateImage",
    "RandRelocateTumor",
    "RandRotateTumor",
    "RandIntegerNoise",
    "RandTumorNoise",
    "MirrorLRd",
    "RandMirrorLRd",
    "RandRotateImaged",
    "RandRelocateTumord",
    "RandRotateTumord",
    "RandIntegerNoised",
    "RandTumorNoised",
    "MetaLungd",
]
