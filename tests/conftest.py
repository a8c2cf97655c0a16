"""Shared pytest fixtures.

Real CT cases live in ``../shared/data/real`` (beside the repository; never copied into it).
Tests that need them use the ``real_data`` fixture, which skips with a reason when the folder is
absent (a user's fresh clone) and runs where it is present (CI). ``METALUNG_REAL_DATA`` overrides
the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("METALUNG_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the real CT reference cases; skips the test when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT reference data not found at {REAL_DATA} (set METALUNG_REAL_DATA)")
    return REAL_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
