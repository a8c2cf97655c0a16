"""Ingestion: CT files of every common kind into int16 HU images, and the datalist.

``DicomSeriesHUReader`` (imports MONAI/torch) and the pickle converter are loaded on first use so
that ``import metalung_monai.io`` stays light. The converter behind ``metalung convert``
(:mod:`metalung_monai.commands.convert`) is ``metalung_monai.io.convert.convert`` (the name
``convert`` here is that sub-module); ingestion imports nothing from the other stages.
"""

import importlib

from . import hu
from .ct_image import CTImage
from .datalist import (
    LUNG_RADS_CLASSES,
    assign_folds,
    datalist_entries,
    load_datalist,
    patient_split,
    validate_datalist,
    write_datalist,
)
from .dicom_write import circular_fov_mask, write_dicom_series
from .readers import binarize_mask, check_same_grid, detect_format, read_ct, read_mask

_LAZY = {
    "DicomSeriesHUReader": ("monai_reader", "DicomSeriesHUReader"),
    "convert_thesis_pickle": ("thesis_pickle", "convert_thesis_pickle"),
    "safe_load_pickle": ("thesis_pickle", "safe_load_pickle"),
    "normalize_lung_rads": ("thesis_pickle", "normalize_lung_rads"),
    "list_dicom_series": ("dicom_series", "list_dicom_series"),
}

__all__ = [
    "LUNG_RADS_CLASSES",
    "assign_folds",
    "datalist_entries",
    "load_datalist",
    "patient_split",
    "validate_datalist",
    "write_datalist",
    "hu",
    "CTImage",
    "read_ct",
    "read_mask",
    "binarize_mask",
    "check_same_grid",
    "detect_format",
    "write_dicom_series",
    "circular_fov_mask",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
