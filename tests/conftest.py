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


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """An 8-patient 128 x 128 phantom cohort (one test patient per Lung-RADS group).

    ``datalist_small.json`` keeps one test patient, so that evaluation and inference stay fast
    (Mask R-CNN is slow on CPU).
    """
    import json

    from metalung_monai.phantom.cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(
        out,
        n_patients=8,
        seed=5,
        size=128,
        slice_thickness=2.5,
        n_test_per_class=1,
        progress=False,
        figure=False,
    )
    dl = json.loads((out / "datalist.json").read_text())
    dl["test"] = dl["test"][:1]
    (out / "datalist_small.json").write_text(json.dumps(dl))
    return out
