"""Training glue for the MONAI bundles: presets, data of each augmentation arm, handlers, reports.

The bundles in ``bundles/`` import this package as ``mt`` in their configs.
"""

from .arms import ARMS, Arm, eval_transforms, get_arm, register_arm, train_transforms
from .data import (
    expand_metalung,
    load_case,
    slice_affine,
    slice_samples,
    split_entries,
    volume_samples,
)
from .handlers import TrainingHistory
from .presets import PRESETS, SETTINGS, SettingError, check_setting, preset
from .report import SegmentationReport, volume_rows
from .workflow import (
    AXCODES,
    Prepared,
    load_pretrained,
    prepare,
    roi_size,
    volume_data,
    volume_inferer,
    volume_transforms,
)

__all__ = [
    "ARMS",
    "Arm",
    "AXCODES",
    "PRESETS",
    "SETTINGS",
    "SettingError",
    "Prepared",
    "SegmentationReport",
    "TrainingHistory",
    "check_setting",
    "eval_transforms",
    "expand_metalung",
    "get_arm",
    "load_case",
    "load_pretrained",
    "prepare",
    "preset",
    "register_arm",
    "roi_size",
    "slice_affine",
    "slice_samples",
    "split_entries",
    "train_transforms",
    "volume_data",
    "volume_inferer",
    "volume_rows",
    "volume_transforms",
    "volume_samples",
]
