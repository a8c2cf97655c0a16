"""Synthetic chest-CT cohort: the project's embedded default data.

Analytic anatomy (body wall, ribs, spine, sternum, scapulae, mediastinum, heart, great vessels,
airways, lungs with diaphragm domes and apices, abdomen below the diaphragm), space-filling
pulmonary vessel trees, tumours (solid, part-solid, ground glass; lobulated or spiculated;
juxtapleural, juxtavascular) with their masks, calcified nodules, and a scanner model (vendor
profiles, reconstruction blur, noise, circular field of view). See ``docs/phantom.md``.

Main entry points: :func:`sample_patient_params` + :func:`generate_patient` for one patient,
:func:`generate_cohort` (and ``metalung phantom``) for a resumable cohort with its datalist.
"""

from .body import TRUTH_LABELS
from .cohort import (
    PatientParams,
    PatientVolume,
    cohort_classes,
    generate_cohort,
    generate_patient,
    sample_patient_params,
    write_patient,
)
from .scanner import VENDOR_PROFILES

__all__ = [
    "TRUTH_LABELS",
    "VENDOR_PROFILES",
    "PatientParams",
    "PatientVolume",
    "cohort_classes",
    "generate_cohort",
    "generate_patient",
    "sample_patient_params",
    "write_patient",
]
