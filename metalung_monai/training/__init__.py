"""Training glue for the MONAI bundles: presets, arms, data, handlers, reports.

The bundles in ``bundles/`` spell out their pipelines in JSON and import this package as ``mt``
for what JSON cannot say (reading a datalist, checking settings, loading weights).
"""

from .arms import ARMS, Arm, arm_config, get_arm, register_arm
from .data import (
    expand_metalung,
    expand_samples,
    load_case,
    slice_affine,
    slice_samples,
    split_entries,
    volume_samples,
)
from .handlers import TrainingHistory, TrainingProgress
from .presets import (
    PRESETS,
    SETTINGS,
    SettingError,
    bundle_settings,
    check_setting,
    preset,
    read_preset,
)
from .report import SegmentationReport, volume_rows
from .workflow import (
    STAGES,
    CropToLungsd,
    arm_slot,
    bundle_configs,
    bundle_parser,
    datalist_file,
    insertion_banks,
    load_pretrained,
    train_sampler,
    training_samples,
    validation_samples,
    volume_data,
)

__all__ = [
    "ARMS",
    "Arm",
    "CropToLungsd",
    "PRESETS",
    "SETTINGS",
    "STAGES",
    "SegmentationReport",
    "SettingError",
    "TrainingHistory",
    "TrainingProgress",
    "arm_config",
    "arm_slot",
    "bundle_configs",
    "bundle_parser",
    "bundle_settings",
    "check_setting",
    "datalist_file",
    "expand_metalung",
    "expand_samples",
    "get_arm",
    "load_case",
    "load_pretrained",
    "preset",
    "read_preset",
    "register_arm",
    "slice_affine",
    "slice_samples",
    "split_entries",
    "train_sampler",
    "training_samples",
    "validation_samples",
    "volume_data",
    "volume_rows",
    "volume_samples",
    "insertion_banks",
]
