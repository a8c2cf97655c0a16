"""MetaLung on the real LIDC example slice (skipped when ../shared/data/real is absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from metalung_monai.anatomy import lung_mask
from metalung_monai.transforms import METALUNG_OPS, MetaLungd, metalung_records
from metalung_monai.utils.orientation import canonical_axes, canonical_spacing, to_canonical

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_metalung_figure import load_example  # noqa: E402


def canonical(t):
    ax = canonical_axes(t.affine.numpy(), t.ndim - 1, t.meta.get("space", "RAS"))
    return to_canonical(t[0].numpy(), ax), canonical_spacing(t.affine.numpy(), ax)


@pytest.fixture(scope="module")
def example(real_data):
    return load_example(real_data)


def test_every_op_on_the_real_slice(example):
    hu0, sp = canonical(example["image"])
    m0 = canonical(example["mask"])[0] > 0
    lungs = lung_mask(hu0, sp, progress=False)
    assert (lungs[m0] == 2).all()  # the tumour is in the patient's left lung
    for op in METALUNG_OPS:
        for seed in range(3):
            out = MetaLungd(ops=[op]).set_random_state(seed)(example)
            rec = metalung_records(out["image"])[-1]
            assert rec["op"] == op and rec["applied"], rec
            hu, m = canonical(out["image"])[0], canonical(out["mask"])[0] > 0
            if op.startswith("noise"):
                diff = hu - hu0
                where = np.ones_like(m0) if op == "noise_image" else m0
                assert (
                    diff[where].min() >= 0 and diff[where].max() <= 20 and (diff[~where] == 0).all()
                )
                continue
            pad = {-1024.0} if op == "rotate_image" else set()
            assert set(np.unique(hu)) <= set(np.unique(hu0)) | pad  # no new HU value
            if op in ("mirror", "relocate"):
                assert np.array_equal(np.sort(hu[m]), np.sort(hu0[m0]))  # tumour histogram kept
            if op == "relocate":
                assert (
                    rec["components"][0]["from_lung"] == "left"
                    and rec["components"][0]["to_lung"] == "right"
                )
                assert (lungs[m] == 1).all()  # now in the right lung
                assert not (m & m0).any()
                outside = lungs == 0
                assert np.array_equal(hu[outside], hu0[outside])  # chest wall, heart, air untouched
                filled = hu[
                    m0
                ]  # the vacated place: parenchyma copied from the same lung, not a hole
                assert np.isin(filled, hu0[(lungs == 2) & ~m0]).all()
                assert -950 < filled.mean() < -700 and filled.std() > 10
            if op == "rotate_tumor":
                assert (lungs[m] > 0).all() and m.sum() >= 0.9 * m0.sum()
                far = np.ones_like(m0)
                ys, xs = np.nonzero(m0)
                far[ys.min() - 12 : ys.max() + 12, xs.min() - 12 : xs.max() + 12] = False
                assert np.array_equal(hu[far], hu0[far])
