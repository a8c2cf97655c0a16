"""Labels of the phantom's ground-truth anatomy volume (``truth/<pid>_anatomy.nii.gz``).

Internal labels (``LABEL_*``) are painted by :mod:`metalung_monai.phantom.body` and its neighbours;
:data:`TRUTH_OF_LABEL` maps them onto the written truth labels (the internal
:data:`LABEL_MEDIASTINUM`, mediastinal fat where hilar vessels may run, is written as fat), whose
meaning :data:`TRUTH_LABELS` spells out (table in :mod:`metalung_monai.phantom.body`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TRUTH_LABELS",
    "TRUTH_OF_LABEL",
    "LABEL_AIR",
    "LABEL_LUNG_R",
    "LABEL_LUNG_L",
    "LABEL_AIRWAY",
    "LABEL_CALC",
    "LABEL_TUMOUR",
    "LABEL_BONE",
    "LABEL_HEART",
    "LABEL_FAT",
    "LABEL_SOFT",
    "LABEL_TABLE",
    "LABEL_MEDIASTINUM",
    "LABEL_ABDOMEN",
    "LABEL_GAS",
]

LABEL_AIR = 0
LABEL_LUNG_R = 1
LABEL_LUNG_L = 2
LABEL_AIRWAY = 3
LABEL_CALC = 4
LABEL_TUMOUR = 5
LABEL_BONE = 6
LABEL_HEART = 7
LABEL_FAT = 8
LABEL_TABLE = 9
LABEL_SOFT = 10
LABEL_ABDOMEN = 11
LABEL_GAS = 12
LABEL_MEDIASTINUM = 13  # internal: mediastinal fat (hilar vessels may run through it) -> LABEL_FAT

TRUTH_LABELS = {
    0: "air outside the patient",
    1: "right lung (parenchyma incl. vessels and small bronchi)",
    2: "left lung (parenchyma incl. vessels and small bronchi)",
    3: "trachea and main bronchi (lumen and wall)",
    4: "calcified nodule",
    5: "tumour (= tumour mask)",
    6: "bone",
    7: "heart and great vessels",
    8: "fat (subcutaneous, intermuscular, mediastinal, abdominal)",
    9: "patient table",
    10: "muscle and other soft tissue (chest wall, diaphragm, oesophagus, discs, canal, cartilage)",
    11: "abdominal organs (liver, spleen, stomach)",
    12: "gas in the stomach",
}

TRUTH_OF_LABEL = np.arange(256, dtype=np.uint8)
TRUTH_OF_LABEL[LABEL_MEDIASTINUM] = LABEL_FAT
