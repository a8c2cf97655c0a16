"""Lesion synthesis (issue 12): the lesion bank of real tumours, and what is built on it.

:mod:`~metalung_monai.synthesis.bank` is the bank folder format (read / write, one API for real
and generated lesions); :mod:`~metalung_monai.synthesis.lesion_bank` extracts the real lesions of
a datalist's training cases into a bank (``metalung lesion-bank``).
"""

from __future__ import annotations

from .bank import LesionBank, read_bank, write_bank

__all__ = ["LesionBank", "read_bank", "write_bank"]
