"""MONAI transforms of metalung-monai (array transforms and their dictionary ``...d`` twins).

* :mod:`.metalung`: the six HU-preserving MetaLung augmentations (mirror, relocate the tumour,
  rotate the image, rotate the tumour, integer noise on the image / the tumour) and
  :class:`MetaLungd` (online random variants or offline expansion).
* :mod:`.insert_lesion`: :class:`InsertLesiond` / :class:`RandInsertLesiond` (with :class:`FreeSpaced`, the free-space
  map to cache), a lesion of a
  bank (real: copy-paste; generated) into free lung of a 2D slice (a 3D lesion into a volume),
  integer HU (issue 13).
* :mod:`.intensity`: HU windowing (:class:`HUWindow`) and CLAHE (:class:`CLAHE`) for display and
  network input (they do not preserve HU: apply them after every HU-based step).
"""

from .insert_lesion import FreeSpaced, InsertLesiond, RandInsertLesiond
from .intensity import CLAHE, WINDOW_PRESETS, CLAHEd, HUWindow, HUWindowd
from .metalung import (
    METALUNG_META_KEY,
    METALUNG_OPS,
    IntegerNoise,
    IntegerNoised,
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
    RelocateTumor,
    RelocateTumord,
    RotateImage,
    RotateImaged,
    RotateTumor,
    RotateTumord,
    TumorNoise,
    TumorNoised,
    axcodes_affine,
    binary_mask,
    metalung_records,
    replay_record,
)

__all__ = [
    "WINDOW_PRESETS",
    "HUWindow",
    "HUWindowd",
    "CLAHE",
    "CLAHEd",
    "FreeSpaced",
    "InsertLesiond",
    "RandInsertLesiond",
    "METALUNG_META_KEY",
    "METALUNG_OPS",
    "metalung_records",
    "replay_record",
    "binary_mask",
    "axcodes_affine",
    "MirrorLR",
    "MirrorLRd",
    "RandMirrorLR",
    "RandMirrorLRd",
    "RotateImage",
    "RotateImaged",
    "RandRotateImage",
    "RandRotateImaged",
    "RelocateTumor",
    "RelocateTumord",
    "RandRelocateTumor",
    "RandRelocateTumord",
    "RotateTumor",
    "RotateTumord",
    "RandRotateTumor",
    "RandRotateTumord",
    "IntegerNoise",
    "IntegerNoised",
    "RandIntegerNoise",
    "RandIntegerNoised",
    "TumorNoise",
    "TumorNoised",
    "RandTumorNoise",
    "RandTumorNoised",
    "MetaLungd",
]
