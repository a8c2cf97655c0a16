"""Thresholds and sizes of the lung-mask method, and its lung labels.

Shared by :mod:`.lung_mask` (which computes the masks) and :mod:`.plausibility` (which checks
them), so that neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RIGHT_LUNG", "LEFT_LUNG", "LungMaskSettings"]

#: label of the patient's right lung (smaller canonical x), as in lungmask / R231
RIGHT_LUNG = 1
#: label of the patient's left lung (larger canonical x)
LEFT_LUNG = 2


@dataclass(frozen=True)
class LungMaskSettings:
    """Thresholds and sizes of the lung-mask method (HU and mm).

    Attributes:
        air_threshold: lung candidates are below this HU (-320: aerated lung is about -700 to
            -900 HU, soft tissue 0 to 60; -320 keeps the pleural partial-volume voxels, about
            -400, and denser dependent lung; on the lungmask reference slice -400 finds 92 %
            and -320 96 % of the learned R231 model's lung pixels).
        body_threshold: the body is tissue above this HU (-500: fat is about -100, skin and
            muscle 0 to 60; lung parenchyma stays below).
        bone_threshold: notch filling never adds voxels at or above this HU (300: cortical bone
            and calcium).
        airway_max_area_mm2: largest axial cross-section of a trachea / main bronchus component
            (700 mm2 = a tube of 30 mm diameter).
        airway_min_area_mm2: smallest cross-section of a trachea seed (20 mm2, 5 mm tube).
        airway_max_offset_mm: largest distance between a trachea seed's centre and the body
            midline (30 mm); lung apices lie further out.
        airway_min_length_mm: in a volume, a trachea seed is followed down and kept only when
            it stays a small tube over this length (25 mm), with an even cross-section (largest
            area at most 4 times the smallest) somewhere along it; a lung apex grows past
            ``airway_max_area_mm2`` within about 10 mm instead. Volumes thinner than this use
            the single-slice rule.
        min_lung_fraction: components smaller than this fraction of the largest are not lung.
        min_depth_mm: a lung component must reach this far (in-plane) inside the body; air gaps
            under the skin, a blanket or clothes stay within a few mm of the surface (15 mm: the
            chest wall with ribs is thicker than that).
        notch_max_diameter_mm: juxtapleural notches are filled up to the area of a disc of this
            diameter (30 mm: Lung-RADS nodules; larger pleural masses are not closed).
        notch_min_radius_mm: a notch is filled only when it holds a disc of this radius (its
            largest distance to the lung or the chest wall); thinner slivers between the lung
            and the ribs (partial volume) are left out.
        notch_min_compactness: a notch is filled only when that radius is at least this fraction
            of the square root of its area (0.3; a half-disc notch left by a round tumour gives
            about 0.4, a shallow sliver along the ribs 0.25 or less).
        max_split_depth_mm: erosion depth tried when separating touching lungs.
        partial_volume_hu: the final 3x3 smoothing of the pleural border adds only pixels below
            this HU (-200: partial volume of air and tissue; fat is -100, muscle 40).
    """

    air_threshold: float = -320.0
    body_threshold: float = -500.0
    bone_threshold: float = 300.0
    airway_max_area_mm2: float = 700.0
    airway_min_area_mm2: float = 20.0
    airway_max_offset_mm: float = 30.0
    airway_min_length_mm: float = 25.0
    min_lung_fraction: float = 0.02
    min_depth_mm: float = 15.0
    notch_max_diameter_mm: float = 30.0
    notch_min_radius_mm: float = 1.0
    notch_min_compactness: float = 0.3
    max_split_depth_mm: float = 25.0
    partial_volume_hu: float = -200.0
