"""The phantom's lungs measure like real chest CT (issue 11, ``docs/phantom.md``): by the fixed
recipe of :mod:`metalung_monai.anatomy.lung_statistics`, the median over six patients of each
statistic lies inside the range of the shared real scans, and every patient lies close to it."""

from __future__ import annotations

import numpy as np
import pytest

from metalung_monai.anatomy.lung_statistics import REAL_LUNG_RANGES, lung_statistics
from metalung_monai.phantom import generate_patient, sample_patient_params

#: how far one patient may lie outside the real range (the real range holds only three scans)
TOLERANCE = {"p5": 20.0, "p50": 15.0, "p95": 25.0, "dense_fraction": 0.005}


@pytest.mark.slow
def test_phantom_lungs_lie_in_the_real_range():
    rows = []
    for i, lr in enumerate(("LR2", "LR3", "LR4A", "LR4B", "LR3", "LR2")):
        vol = generate_patient(sample_patient_params(0, i, lr, size=256))
        rows.append(lung_statistics(vol.hu, vol.spacing).as_dict())
    for key, (lo, hi) in REAL_LUNG_RANGES.items():
        values = np.array([r[key] for r in rows])
        assert lo <= float(np.median(values)) <= hi, (key, values, (lo, hi))
        tol = TOLERANCE[key]
        assert ((values >= lo - tol) & (values <= hi + tol)).all(), (key, values, (lo, hi))
