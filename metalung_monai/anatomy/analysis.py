"""Lungs, dense structures and free-space distance computed together (one pass, shared masks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_volume
from ._images import from_canonical_image, to_canonical_image
from .free_space import _check_min_distance, _free_distance
from .lung_mask import LEFT_LUNG, RIGHT_LUNG, LungMaskSettings, _lung_labels
from .plausibility import check_lung_mask
from .vessels import CALCIFICATION_HU, _dense

__all__ = ["LungAnatomy", "analyse_lungs", "analyse_lungs_image"]


@dataclass
class LungAnatomy:
    """Lung anatomy of one canonical slice or volume.

    Attributes:
        lungs: ``uint8`` labels, 0 background, 1 right lung, 2 left lung.
        vessels: ``bool`` dense structures inside the lungs (vessels, airway walls, nodules,
            calcifications).
        free_distance: ``float32`` distance in mm from free parenchyma to the nearest dense
            structure or pleura, 0 elsewhere.
        spacing: voxel size in mm, same axis order as the arrays.
    """

    lungs: np.ndarray
    vessels: np.ndarray
    free_distance: np.ndarray
    spacing: tuple[float, ...]

    def free_space(self, min_distance_mm: float) -> np.ndarray:
        """``bool`` mask of the free parenchyma at least ``min_distance_mm`` from dense / pleura."""
        _check_min_distance(min_distance_mm)
        return (self.free_distance > 0) & (self.free_distance >= float(min_distance_mm))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel (pixel x slice thickness of 1 mm for 2D) in ml."""
        return float(np.prod(self.spacing)) / 1000.0

    def volume_ml(self, label: int) -> float:
        """Volume in ml of lung ``label`` (1 right, 2 left); in 2D an area x 1 mm."""
        return int((self.lungs == label).sum()) * self.voxel_ml

    @property
    def right_voxels(self) -> int:
        return int((self.lungs == RIGHT_LUNG).sum())

    @property
    def left_voxels(self) -> int:
        return int((self.lungs == LEFT_LUNG).sum())


def analyse_lungs(
    hu,
    spacing,
    *,
    vessel_threshold: float = -500.0,
    vessel_min_size: float = 2.0,
    calcification_hu: float = CALCIFICATION_HU,
    settings: LungMaskSettings | None = None,
    progress: bool = False,
    require_lungs: bool = False,
) -> LungAnatomy:
    """Lung labels, dense structures and free-space distance of a canonical slice or volume.

    Equivalent to :func:`~metalung_monai.anatomy.lung_mask`, then
    :func:`~metalung_monai.anatomy.vessel_mask` and
    :func:`~metalung_monai.anatomy.free_space_distance` with the same arguments, but the
    thresholded masks are computed once (the body threshold and the vessel threshold are both
    -500 HU by default, so the same "tissue" mask serves both). Meant to be called per sample in
    data pipelines.

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        spacing: voxel size in mm, same axis order.
        vessel_threshold: HU above which a lung voxel is dense (-500).
        vessel_min_size: smallest dense component kept, mm2 (2D) / mm3 (3D).
        calcification_hu: HU above which lung voxels are always dense (200).
        settings: lung-mask thresholds (:class:`~metalung_monai.anatomy.LungMaskSettings`).
        progress: progress bar over slices (volumes, terminal only).
        require_lungs: raise ``InputError("analyse_lungs(hu)", "no lungs found: ...")`` when the
            lungs found are not plausible (:func:`~metalung_monai.anatomy.check_lung_mask`),
            before the dense structures and distances are computed.

    Returns:
        :class:`LungAnatomy` with arrays of the shape of ``hu``.
    """
    vol, sp, was_2d = as_volume(hu, spacing, "analyse_lungs(hu)")
    cfg = settings or LungMaskSettings()
    labels, tissue = _lung_labels(vol, sp, cfg, True, True, progress)
    if require_lungs:
        check_lung_mask(vol, labels, sp, source="analyse_lungs(hu)", settings=cfg)
    lung = labels > 0
    shared = tissue if vessel_threshold == cfg.body_threshold else None
    dense = _dense(
        vol, lung, sp, was_2d, vessel_threshold, vessel_min_size, calcification_hu, tissue=shared
    )
    dist = _free_distance(vol, lung, dense, sp, was_2d, calcification_hu)
    if was_2d:
        return LungAnatomy(labels[0], dense[0], dist[0], (sp[1], sp[2]))
    return LungAnatomy(labels, dense, dist, sp)


def analyse_lungs_image(image, **kwargs) -> dict:
    """:func:`analyse_lungs` of a ``SimpleITK.Image``.

    Returns:
        ``{"lungs": uint8 labels, "vessels": uint8 {0,1}, "free_distance": float32 mm}``, each a
        ``SimpleITK.Image`` on the grid of ``image``.
    """
    arr, spacing = to_canonical_image(image)
    a = analyse_lungs(arr, spacing, **kwargs)
    return {
        "lungs": from_canonical_image(a.lungs, image),
        "vessels": from_canonical_image(a.vessels.astype(np.uint8), image),
        "free_distance": from_canonical_image(a.free_distance, image),
    }
