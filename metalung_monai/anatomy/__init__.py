"""Anatomy by HU: lung masks (1 right, 2 left lung), dense structures, free space, Lung-RADS.

Every function works on *canonical* arrays (2D ``(y, x)`` or 3D ``(z, y, x)``, ``x`` towards the
patient's left; see :mod:`metalung_monai.utils.orientation`) with the voxel size in mm in the
same axis order; the ``*_image`` wrappers take and return ``SimpleITK.Image`` objects on the
input's grid. Method, thresholds and limits: ``docs/anatomy.md``. :func:`check_lung_mask` refuses a
mask that is not a plausible pair of lungs (an image of noise, air or water;
:mod:`~metalung_monai.anatomy.plausibility`).
"""

from .analysis import LungAnatomy, analyse_lungs, analyse_lungs_image
from .free_space import (
    free_space_distance,
    free_space_distance_image,
    free_space_mask,
    free_space_mask_image,
)
from .lung_mask import (
    LEFT_LUNG,
    RIGHT_LUNG,
    LungMaskSettings,
    lung_mask,
    lung_mask_image,
    patch_lung_mask,
)
from .lung_rads import (
    LUNG_RADS_BOUNDARIES_MM,
    longest_diameter_mm,
    lung_rads_from_diameter,
    lung_rads_from_mask,
    lung_rads_from_mask_image,
    tumor_diameters_mm,
)
from .plausibility import check_lung_mask, lung_mask_measures, lung_mask_problems
from .vessels import CALCIFICATION_HU, vessel_mask, vessel_mask_image

__all__ = [
    "RIGHT_LUNG",
    "LEFT_LUNG",
    "LungMaskSettings",
    "lung_mask",
    "lung_mask_image",
    "patch_lung_mask",
    "check_lung_mask",
    "lung_mask_problems",
    "lung_mask_measures",
    "CALCIFICATION_HU",
    "vessel_mask",
    "vessel_mask_image",
    "free_space_distance",
    "free_space_mask",
    "free_space_distance_image",
    "free_space_mask_image",
    "LungAnatomy",
    "analyse_lungs",
    "analyse_lungs_image",
    "LUNG_RADS_BOUNDARIES_MM",
    "lung_rads_from_diameter",
    "longest_diameter_mm",
    "tumor_diameters_mm",
    "lung_rads_from_mask",
    "lung_rads_from_mask_image",
]
