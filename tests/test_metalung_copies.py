"""Fast copies of the tumour operations are exact: the blocked transpose of a region of interest
(:func:`metalung_monai.transforms.metalung.array._contiguous`) and the dense-structure mask that
works on the dense voxels' labels only (:func:`metalung_monai.anatomy.vessel_mask`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from metalung_monai.anatomy import vessel_mask
from metalung_monai.transforms.metalung.array import _contiguous

DTYPES = (
    "uint8",
    "int8",
    "int16",
    "uint16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "perm, flip", [((0, 3, 2, 1), ()), ((0, 3, 1, 2), ()), ((0, 1, 2, 3), ()), ((0, 3, 2, 1), (2,))]
)
def test_contiguous_equals_numpy_copy(dtype, perm, flip):
    rng = np.random.default_rng(3)
    native = rng.integers(-100, 100, (1, 37, 29, 11))  # (C, x, y, z) as MONAI stores it
    native = (native > 0) if dtype == "bool" else native.astype(dtype)
    view = np.transpose(native, perm)
    if flip:
        view = np.flip(view, flip)
    roi = view[0][1:10, 2:25, 3:30]  # a box of the canonical (z, y, x) view
    out = _contiguous(roi)
    ref = np.ascontiguousarray(roi)
    assert out.flags.c_contiguous and out.dtype == ref.dtype and out.shape == ref.shape
    assert np.array_equal(out, ref)


def _vessel_mask_reference(hu, lungs, voxel, structure, min_size=2.0, calc_hu=200.0):
    """The formula on the whole array (labels of every voxel), as before the fast version."""
    dense = (hu > -500.0) & (lungs > 0)
    lab, n = ndi.label(dense, structure=structure)
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel
    small = sizes < min_size
    small[0] = False
    calc = np.zeros(n + 1, bool)
    calc[np.unique(lab[dense & (hu > calc_hu)])] = True
    drop = small & ~calc
    drop[0] = False
    return dense & ~drop[lab]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("contiguous", [True, False])
def test_vessel_mask_equals_whole_array_formula(seed, contiguous):
    rng = np.random.default_rng(seed)
    hu = rng.choice([-850.0, -300.0, 40.0, 450.0], size=(9, 40, 50), p=[0.8, 0.1, 0.08, 0.02])
    lungs = np.zeros(hu.shape, np.uint8)
    lungs[:, 3:37, 4:24], lungs[:, 3:37, 26:47] = 1, 2
    if not contiguous:  # a transposed view, as a region of a MONAI volume seen canonically
        hu = np.transpose(np.ascontiguousarray(np.transpose(hu, (2, 1, 0))), (2, 1, 0))
    spacing = (1.0, 0.7, 0.7)
    got = vessel_mask(hu, lungs, spacing)
    ref = _vessel_mask_reference(hu, lungs, 0.49, np.ones((3, 3, 3), bool))
    assert ref.any() and (ref != ((hu > -500) & (lungs > 0))).any()  # something was dropped
    assert np.array_equal(got, ref)
    got2 = vessel_mask(hu[4], lungs[4], spacing[1:])
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    ref2 = _vessel_mask_reference(hu[4][None], lungs[4][None], 0.49, structure)[0]
    assert np.array_equal(got2, ref2)
