"""Lesion synthesis (issue 12): the lesion bank of real tumours, and what is built on it.

:mod:`~metalung_monai.synthesis.bank` is the bank folder format (read / write, one API for real
and generated lesions); :mod:`~metalung_monai.synthesis.lesion_bank` extracts the real lesions of
a datalist's training cases into a bank (``metalung lesion-bank``);
:mod:`~metalung_monai.synthesis.hu_mapping` maps a generator's output to integer HU by quantile
mapping onto the bank's training lesions (:class:`HUQuantileMap`, :class:`MapToLesionHU`,
:class:`MapToLesionHUd`); :mod:`~metalung_monai.synthesis.generative` is what the generator bundles
share and :mod:`~metalung_monai.synthesis.insertion` puts a lesion into free lung (resampling,
placement, a seamless integer-HU blend). The realism report of generated lesions is
:mod:`metalung_monai.evaluation.realism` (``metalung lesion-realism``).
"""

from __future__ import annotations

from .bank import LesionBank, read_bank, write_bank
from .hu_mapping import HUQuantileMap, MapToLesionHU, MapToLesionHUd

__all__ = [
    "HUQuantileMap",
    "LesionBank",
    "MapToLesionHU",
    "MapToLesionHUd",
    "read_bank",
    "write_bank",
]
