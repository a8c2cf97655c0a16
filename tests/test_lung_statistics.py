"""The lung-statistics recipe (issue 11): exact on a constructed chest, and the shared real CT
measured again gives the recorded figures (the yardstick for calibrating the phantom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metalung_monai.anatomy._images import to_canonical_image
from metalung_monai.anatomy.lung_statistics import REAL_LUNG_FIGURES, lung_statistics
from metalung_monai.io.readers import read_ct

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FILES = {
    "pyradiomics_lung1": "pyradiomics_lung1/lung1_image.nrrd",
    "cptac_chest_series": "cptac_chest_series",
    "metalung_example": "metalung_example/1-141.dcm",
}


def _chest(dense_rows: int) -> np.ndarray:
    """Two 40 x 30 lungs of -850 HU in a 0 HU body in air; the middle slice's right lung holds a
    vessel of ``dense_rows`` x 12 voxels of 0 HU, away from the pleura."""
    vol = np.full((3, 100, 120), -1000, np.int16)
    vol[:, 10:90, 10:110] = 0  # body
    vol[:, 30:70, 20:50] = -850  # right lung
    vol[:, 30:70, 70:100] = -850  # left lung
    vol[1, 40 : 40 + dense_rows, 30:42] = 0
    return vol


def test_recipe_is_exact_on_a_constructed_chest():
    s = lung_statistics(_chest(0), (2.0, 1.0, 1.0), in_plane_mm=None)
    assert (s.p5, s.p50, s.p95, s.dense_fraction) == (-850.0, -850.0, -850.0, 0.0)
    assert s.lung_voxels == 3 * 2 * 40 * 30
    s = lung_statistics(_chest(10), (2.0, 1.0, 1.0), in_plane_mm=None)
    assert s.dense_fraction == pytest.approx(120 / 7200)  # vessels are holes, filled: counted
    with pytest.raises(ValueError, match="no air"):
        lung_statistics(np.zeros((2, 20, 20), np.int16), (1.0, 1.0, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FILES))
def test_real_chest_ct_gives_the_recorded_figures(name):
    path = REAL / FILES[name]
    if not path.exists():
        pytest.skip(f"shared real data not found at {path}")
    arr, spacing = to_canonical_image(read_ct(path).image)
    got = lung_statistics(arr, spacing).as_dict()
    want = REAL_LUNG_FIGURES[name]
    for key in ("p5", "p50", "p95"):
        assert got[key] == pytest.approx(want[key], abs=0.5)
    assert got["dense_fraction"] == pytest.approx(want["dense_fraction"], abs=5e-4)
