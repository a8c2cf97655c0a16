"""Shared pytest fixtures and settings.

Real CT cases live in ``../shared/data/real`` (beside the repository; never copied into it).
Tests that need them use the ``real_data`` fixture, which skips with a reason when the folder is
absent (a user's fresh clone) and runs where it is present (CI). ``METALUNG_REAL_DATA`` overrides
the location.

``small_cohort`` is the one phantom cohort that tests *use* (training, bundles, augmentation,
documentation snippets); tests *of* cohort generation make their own. It is generated once per
test session (once for all ``pytest-xdist`` workers) and is read-only: a test that changes files
copies what it changes first. A session that changed it fails at teardown.

Under ``pytest-xdist`` (``scripts/test.sh`` runs ``-n 2 --dist loadfile``: a test file is one unit
of work, so that its module fixtures are built once) every worker uses one thread (torch, OpenMP
and the subprocesses it starts), so that two workers share two cores without oversubscription,
and the files with the most ``slow`` tests run first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("METALUNG_REAL_DATA", REPO.parent / "shared" / "data" / "real"))

#: ``generate_cohort`` arguments of :func:`small_cohort`: 8 patients of 128 x 128 pixels at
#: 2.5 mm (99-118 slices), at most one test patient per Lung-RADS class LR2..LR4B (here 5 training
#: patients, one of them healthy, and 3 test patients).
SMALL_COHORT = {
    "n_patients": 8,
    "seed": 5,
    "size": 128,
    "slice_thickness": 2.5,
    "n_test_per_class": 1,
    "progress": False,
    "figure": False,
}


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses a test starts
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the files with the most ``slow`` tests first.

    ``scripts/test.sh`` hands whole files to the workers in this order (``--no-loadscope-reorder``):
    the longest first, so that the two workers finish together instead of one of them starting
    ``test_bundles.py`` (the longest file) near the end. The order within a file is kept.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    n_slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -n_slow[item.path])  # stable: files stay whole and in order


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the real CT reference cases; skips the test when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT reference data not found at {REAL_DATA} (set METALUNG_REAL_DATA)")
    return REAL_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _digest(folder: Path) -> dict[str, str]:
    """sha1 of every file under ``folder`` (relative names)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _make_small_cohort(out: Path) -> None:
    from metalung_monai.phantom.cohort import generate_cohort

    generate_cohort(out, **SMALL_COHORT)
    dl = json.loads((out / "datalist.json").read_text())
    dl["test"] = dl["test"][:1]
    (out / "datalist_small.json").write_text(json.dumps(dl))
    (out / ".complete").write_text("")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """Folder of an 8-patient 128 x 128 phantom cohort (:data:`SMALL_COHORT`); read-only.

    ``datalist.json`` and ``datalist_small.json``, the same with its first test patient only, so
    that evaluation and inference stay fast (Mask R-CNN is slow on CPU).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one process
        out = tmp_path_factory.mktemp("small_cohort")
        _make_small_cohort(out)
    else:  # pytest-xdist: the first worker generates it, the others wait and read it
        from filelock import FileLock

        out = tmp_path_factory.getbasetemp().parent / "small_cohort"
        with FileLock(str(out) + ".lock"):
            if not (out / ".complete").is_file():
                _make_small_cohort(out)
    before = _digest(out)
    yield out
    changed = sorted({name for name, _ in _digest(out).items() ^ before.items()})
    assert not changed, f"tests changed the read-only small_cohort: {changed}"
