"""HU conversion: rescale exactly once, padding to air, int16 clipping, NaN rejected."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from metalung_monai.errors import InputError
from metalung_monai.io import read_ct, write_dicom_series
from metalung_monai.io.hu import HU_AIR, finalize_hu, map_padding_to_air, padding_to_hu, to_hu


def test_to_hu_applies_slope_and_intercept():
    stored = np.array([0, 24, 1024, 2048], dtype=np.uint16)
    assert to_hu(stored, 1, -1024).tolist() == [-1024, -1000, 0, 1024]
    assert to_hu(stored, 2, -1024).tolist() == [-1024, -976, 1024, 3072]
    assert to_hu(stored.astype(np.int16), 1, 0).tolist() == [0, 24, 1024, 2048]


def test_to_hu_rejects_bad_input():
    with pytest.raises(InputError, match="RescaleSlope"):
        to_hu(np.zeros(3), 0, 0, source="x.dcm")
    with pytest.raises(InputError, match="x.dcm: 1 NaN"):
        to_hu(np.array([1.0, np.nan]), 1, 0, source="x.dcm")


def test_map_padding_to_air_counts_and_values():
    hu = np.array([-3024, -2048, -2000, -1025, -1024, -1000, 0, 40], dtype=np.int32)
    out, n = map_padding_to_air(hu.copy())
    assert n == 4
    assert out.tolist() == [-1024] * 5 + [-1000, 0, 40]


def test_padding_value_in_tissue_range_is_ignored(caplog):
    hu = np.array([-1100, 0, 0, 50], dtype=np.int32)
    out, n = map_padding_to_air(hu.copy(), padding_hu=0.0, source="p.dcm")
    assert n == 1 and out.tolist() == [-1024, 0, 0, 50]
    assert "tissue range" in caplog.text


def test_padding_value_outside_tissue_range_is_mapped():
    # unsigned padding misread as 63536 (a real vendor pitfall) -> far above any tissue
    hu = np.array([62512, 62512, 40, -500], dtype=np.int64)
    out, n = map_padding_to_air(hu.copy(), padding_hu=padding_to_hu(63536, 1, -1024))
    assert n == 2 and out.tolist() == [-1024, -1024, 40, -500]


def test_padding_range_limit():
    hu = np.array([3500, 3600, 3700, 100], dtype=np.int32)
    out, n = map_padding_to_air(hu.copy(), padding_hu=3500, padding_range_hu=3650)
    assert n == 2 and out.tolist() == [-1024, -1024, 3700, 100]


def test_finalize_rounds_clips_and_casts():
    hu = np.array([-1024.4, -0.6, 0.5, 1.5, 40000.0, -5000.0])
    out, info = finalize_hu(hu)
    assert out.dtype == np.int16
    assert out.tolist() == [-1024, -1, 0, 2, 32767, -1024]
    assert info == {"padding_mapped": 1, "clipped_high": 1, "rounded": True}


def test_finalize_rejects_nan_and_inf():
    with pytest.raises(InputError, match="NaN"):
        finalize_hu(np.array([[0.0, np.nan]]), source="img.nii")
    with pytest.raises(InputError, match="infinite"):
        finalize_hu(np.array([np.inf]), source="img.nii")


def _volume(rng, even=False):
    hu = rng.integers(-1024, 1500, size=(4, 16, 16)).astype(np.int16)
    hu += (np.arange(4) * 50)[:, None, None].astype(np.int16)
    if even:
        hu = (hu // 2 * 2).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.7, 0.7, 2.0))
    return hu, img


@pytest.mark.parametrize("intercept,slope", [(0, 1), (-1024, 1), (-1024, 2), (0, 2)])
def test_rescale_applied_exactly_once(tmp_path, rng, intercept, slope):
    hu, img = _volume(rng, even=slope == 2)
    files = write_dicom_series(
        img,
        tmp_path / "s",
        patient_id="P",
        rescale_intercept=intercept,
        rescale_slope=slope,
        shuffle_names=False,
    )
    ds = pydicom.dcmread(files[0])
    stored = ds.pixel_array.astype(np.int64)
    # the files really hold stored values, not HU
    assert np.array_equal(stored * slope + intercept, hu[0])
    if (intercept, slope) != (0, 1):
        assert not np.array_equal(stored, hu[0])
    # series path (SimpleITK/GDCM applies the rescale; must not be applied again)
    series = read_ct(tmp_path / "s")
    assert np.array_equal(series.array, hu)
    assert series.meta["rescale_intercept"] == intercept and series.meta["rescale_slope"] == slope
    assert series.meta["rescale_applied_by"] == "gdcm"
    # single-slice path (pydicom stored values + to_hu)
    one = read_ct(files[0])
    assert np.array_equal(one.array, hu[0])
    assert int(one.array.min()) >= HU_AIR
