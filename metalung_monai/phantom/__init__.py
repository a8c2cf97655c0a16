"""Synthetic chest-CT cohort: the project's embedded default data.

Analytic anatomy (body wall, ribs, spine, sternum, scapulae, mediastinum, heart, great vessels,
airways, lungs with diaphragm domes and apices, abdomen below the diaphragm), space-filling
pulmonary vessel trees, tumours (solid, part-solid, ground glass; lobulated or spiculated;
juxtapleural, juxtavascular) with their masks, calcified nodules, and a scanner model (vendor
profiles, reconstruction blur, noise, circular field of view). See ``docs/phantom.md``.

Main entry points: :func:`sample_patient_params` (:mod:`.params`) + :func:`generate_patient`
(:mod:`.generate`) + :func:`write_patient` (:mod:`.write`) for one patient,
:func:`generate_cohort` (:mod:`.cohort`; the command is ``metalung phantom``) for a resumable
cohort with its datalist.
"""

from .body import TRUTH_LABELS
from .cohort import generate_cohort
from .generate import PatientVolume, generate_patient
from .params import PatientParams, cohort_classes, sample_patient_params
from .scanner import VENDOR_PROFILES
from .write import write_patient

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
