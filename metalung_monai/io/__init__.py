"""Ingestion: CT files of every common kind into int16 HU images, and the datalist."""

from .datalist import (
    LUNG_RADS_CLASSES,
    assign_folds,
    datalist_entries,
    load_datalist,
    patient_split,
    validate_datalist,
    write_datalist,
)

__all__ = [
    "LUNG_RADS_CLASSES",
    "assign_folds",
    "datalist_entries",
    "load_datalist",
    "patient_split",
    "validate_datalist",
    "write_datalist",
]
