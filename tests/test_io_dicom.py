"""DICOM writing and reading: round trips, slice order, series choice, and every bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from metalung_monai.errors import (
    DicomError,
    InputError,
    NoSeriesError,
    SliceSizeError,
    UnsupportedFormatError,
)
from metalung_monai.io import circular_fov_mask, read_ct, write_dicom_series
from metalung_monai.io.dicom_series import list_dicom_series


def gradient_volume(rng, shape=(8, 32, 32), spacing=(0.7, 0.8, 2.5), origin=(-11.2, 20.4, -300.0)):
    """int16 HU volume (z, y, x) whose slices differ by 100 HU steps (order errors are visible)."""
    z = shape[0]
    hu = rng.integers(-200, 200, size=shape).astype(np.int16)
    hu += (np.arange(z) * 100 - 400)[:, None, None].astype(np.int16)
    hu[:, :2, :2] = -1024  # some air
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return hu, img


@pytest.mark.parametrize("intercept", [0, -1024])
@pytest.mark.parametrize("padding", [None, -2000, -3024])
def test_round_trip_identical_hu_and_geometry(tmp_path, rng, intercept, padding):
    hu, img = gradient_volume(rng)
    hu[3, 10, 10] = -1100  # below air: mapped to -1024 on reading
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-11.2, 20.4, -300.0))
    files = write_dicom_series(
        img,
        tmp_path / "ct",
        patient_id="PAT-1",
        rescale_intercept=intercept,
        padding_value=padding,
        seed=3,
    )
    assert len(files) == 8 and all(f.is_file() for f in files)
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.PatientID == "PAT-1" and ds.Manufacturer == "SIEMENS"
    assert float(ds.RescaleIntercept) == intercept and float(ds.RescaleSlope) == 1
    assert ds.BitsAllocated == 16
    signed_needed = intercept == 0 or padding is not None or int(hu.min()) < -1024
    assert ds.PixelRepresentation == (1 if signed_needed else 0)
    assert ("PixelPaddingValue" in ds) == (padding is not None)
    if padding is not None:
        assert ds.PixelPaddingValue == padding
    assert float(ds.SliceThickness) == 2.5 and float(ds.SpacingBetweenSlices) == 2.5
    assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.7]  # rows (y) first

    ct = read_ct(tmp_path / "ct")
    expected = hu.copy()
    if padding is not None:
        expected[~circular_fov_mask(hu.shape)] = -1024
    expected[expected < -1024] = -1024
    assert np.array_equal(ct.array, expected)
    assert ct.image.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    assert ct.image.GetOrigin() == pytest.approx((-11.2, 20.4, -300.0))
    assert ct.image.GetDirection() == pytest.approx(np.eye(3).ravel())
    n_outside = int((~circular_fov_mask(hu.shape)).sum()) if padding is not None else 0
    assert ct.meta["padding_mapped"] == n_outside + (
        1 if (padding is None or circular_fov_mask(hu.shape)[3, 10, 10]) else 0
    )
    assert ct.meta["patient_id"] == "PAT-1"


def test_round_trip_rotated_direction(tmp_path, rng):
    hu, img = gradient_volume(rng, shape=(5, 16, 20))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))  # right-handed, x/y swapped, z towards feet
    write_dicom_series(img, tmp_path / "rot", patient_id="P")
    ct = read_ct(tmp_path / "rot")
    assert np.array_equal(ct.array, hu)
    assert ct.image.GetDirection() == pytest.approx(img.GetDirection())
    assert ct.image.GetOrigin() == pytest.approx(img.GetOrigin())


def test_left_handed_direction_is_written_physically_equivalent(tmp_path, rng):
    hu, img = gradient_volume(rng, shape=(5, 16, 16))
    img.SetDirection(
        (-1, 0, 0, 0, 1, 0, 0, 0, 1)
    )  # det -1: cannot be stacked as DICOM slices as is
    write_dicom_series(img, tmp_path / "lh", patient_id="P")
    ct = read_ct(tmp_path / "lh")
    # same voxels at the same physical places
    back = sitk.Resample(ct.image, img, sitk.Transform(), sitk.sitkNearestNeighbor, -5000)
    assert np.array_equal(sitk.GetArrayFromImage(back), hu)


def test_slice_order_by_position_not_file_name(tmp_path, rng):
    hu, img = gradient_volume(rng)
    files = write_dicom_series(img, tmp_path / "s", patient_id="P", shuffle_names=True, seed=7)
    names = [f.name for f in files]  # slice order z = 0..7
    assert names != sorted(names), "names must be shuffled for this test to mean anything"
    # InstanceNumber follows the slice order, file names do not
    assert [pydicom.dcmread(f).InstanceNumber for f in files] == list(range(1, 9))
    ct = read_ct(tmp_path / "s")
    assert np.array_equal(ct.array, hu)
    assert [os.path.basename(f) for f in ct.meta["files"]] == names
    # reversing InstanceNumber (a pitfall of readers that sort by it) changes nothing
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = 100 - k
        ds.save_as(f)
    assert np.array_equal(read_ct(tmp_path / "s").array, hu)


def test_writer_is_deterministic_and_atomic(tmp_path, rng):
    hu, img = gradient_volume(rng, shape=(3, 8, 8))
    a = write_dicom_series(img, tmp_path / "a", patient_id="P", seed=1)
    b = write_dicom_series(img, tmp_path / "b", patient_id="P", seed=1)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    other = sitk.GetImageFromArray(hu + 1)
    other.CopyInformation(img)
    c = write_dicom_series(other, tmp_path / "c", patient_id="P", seed=1)
    assert pydicom.dcmread(c[0]).SeriesInstanceUID != pydicom.dcmread(a[0]).SeriesInstanceUID
    with pytest.raises(FileExistsError):
        write_dicom_series(img, tmp_path / "a", patient_id="P")
    # a failure mid-way leaves no folder and no temporary folder behind
    with pytest.raises(InputError, match="multiple of the slope"):
        write_dicom_series(img, tmp_path / "odd", patient_id="P", rescale_slope=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    write_dicom_series(other, tmp_path / "a", patient_id="P", overwrite=True)
    assert np.array_equal(read_ct(tmp_path / "a").array, hu + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_fov_mask_argument(tmp_path, rng):
    hu, img = gradient_volume(rng, shape=(2, 8, 8))
    fov = np.ones(hu.shape, bool)
    fov[:, :, :2] = False
    write_dicom_series(
        img, tmp_path / "f", patient_id="P", padding_value=-2048, rescale_intercept=0, fov_mask=fov
    )
    ct = read_ct(tmp_path / "f")
    assert (ct.array[:, :, :2] == -1024).all()
    assert np.array_equal(ct.array[:, :, 2:], hu[:, :, 2:])
    with pytest.raises(InputError, match="fov_mask"):
        write_dicom_series(
            img, tmp_path / "g", patient_id="P", padding_value=-2048, fov_mask=fov[:, :4]
        )
    with pytest.raises(InputError, match="padding_value"):
        write_dicom_series(img, tmp_path / "h", patient_id="P", fov_mask=fov)


# ----------------------------------------------------------------------------------- bad input


def _small_series(tmp_path, rng, name="s", **kw):
    hu, img = gradient_volume(rng, shape=(4, 16, 16))
    return hu, write_dicom_series(img, tmp_path / name, patient_id="P", shuffle_names=False, **kw)


def test_garbage_dcm(tmp_path):
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(os.urandom(600))
    with pytest.raises(DicomError, match=r"junk.dcm: not a readable DICOM file"):
        read_ct(bad)


def test_missing_file_and_unsupported_extension(tmp_path):
    with pytest.raises(InputError, match=r"nope.nii.gz: file or folder does not exist"):
        read_ct(tmp_path / "nope.nii.gz")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(UnsupportedFormatError, match=r"notes.txt: unsupported file type '.txt'"):
        read_ct(txt)
    jpg = tmp_path / "photo.jpg"
    jpg.write_bytes(b"\xff\xd8\xff" + b"0" * 200)
    with pytest.raises(UnsupportedFormatError, match="photo.jpg"):
        read_ct(jpg)


def test_mr_is_not_ct(tmp_path, rng):
    _, files = _small_series(tmp_path, rng)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(DicomError, match=r"IM00001.dcm: not a CT image \(Modality 'MR'\)"):
        read_ct(files[0])
    with pytest.raises(DicomError, match=r"not a CT image \(Modality 'MR'\)"):
        read_ct(tmp_path / "s")


def test_folder_without_series(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        NoSeriesError, match=r"empty: no DICOM series found \(the folder is empty\)"
    ):
        read_ct(empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "README.txt").write_text("no images here")
    (texts / "junk.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(
        NoSeriesError, match=r"texts: no DICOM series found \(2 file\(s\), none readable"
    ):
        read_ct(texts)


def test_series_choice(tmp_path, rng):
    hu_a, files_a = _small_series(tmp_path, rng, "a")
    _, img_b = gradient_volume(rng, shape=(3, 16, 16))
    files_b = write_dicom_series(
        img_b, tmp_path / "b", patient_id="P", seed=5, series_description="lung"
    )
    both = tmp_path / "both"
    both.mkdir()
    for f in files_a:
        shutil.copy(f, both / f"a_{f.name}")
    for f in files_b:
        shutil.copy(f, both / f"b_{f.name}")
    uid_a = str(pydicom.dcmread(files_a[0]).SeriesInstanceUID)
    uid_b = str(pydicom.dcmread(files_b[0]).SeriesInstanceUID)
    with pytest.raises(NoSeriesError, match=r"2 CT series; choose one") as ei:
        read_ct(both)
    assert f"{uid_a} (4 files, CT)" in str(ei.value) and f"{uid_b} (3 files, CT, 'lung')" in str(
        ei.value
    )
    ct = read_ct(both, series_uid=uid_a)
    assert np.array_equal(ct.array, hu_a) and ct.meta["series_instance_uid"] == uid_a
    assert read_ct(both, series_uid=uid_b).image.GetSize() == (16, 16, 3)
    with pytest.raises(
        NoSeriesError, match=r"series 9\.9\.9 not found; the folder holds: .*4 files"
    ):
        read_ct(both, series_uid="9.9.9")
    with pytest.raises(InputError, match="only applies to a DICOM folder"):
        read_ct(files_a[0], series_uid=uid_a)
    assert len(list_dicom_series(both)) == 2


def test_mixed_slice_sizes(tmp_path, rng):
    _, files = _small_series(tmp_path, rng)
    small = write_dicom_series(
        sitk.GetImageFromArray(np.zeros((1, 8, 8), np.int16)), tmp_path / "t", patient_id="P"
    )
    ds = pydicom.dcmread(small[0])
    ref = pydicom.dcmread(files[2])
    for tag in (
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "ImagePositionPatient",
        "FrameOfReferenceUID",
    ):
        setattr(ds, tag, getattr(ref, tag))
    ds.save_as(files[2])
    with pytest.raises(
        SliceSizeError, match=r"IM00003.dcm: slice of 8x8 pixels in a series of 16x16 slices"
    ):
        read_ct(tmp_path / "s")


def test_missing_and_duplicate_slices(tmp_path, rng):
    _, files = _small_series(tmp_path, rng)
    files[1].unlink()  # a gap of 2 slices between z=0 and z=2
    with pytest.raises(
        DicomError,
        match=r"IM00003.dcm: non-uniform slice spacing: 5.000 mm from IM00001.dcm .* 2.500 mm",
    ):
        read_ct(tmp_path / "s")
    _, files = _small_series(tmp_path, rng, "d")
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.save_as(files[1])
    with pytest.raises(DicomError, match="same slice position"):
        read_ct(tmp_path / "d")


def test_nan_volume(tmp_path):
    arr = np.zeros((3, 4, 4), np.float32)
    arr[1, 2, 2] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(InputError, match=r"nan.nii.gz: 1 NaN voxel"):
        read_ct(tmp_path / "nan.nii.gz")


def test_float_volume_rounded_to_int16(tmp_path):
    arr = np.array([[[-3024.0, -1000.4, 0.6, 40000.0]]], np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "f.mha"))
    ct = read_ct(tmp_path / "f.mha")
    assert ct.array.dtype == np.int16 and ct.array.ravel().tolist() == [-1024, -1000, 1, 32767]
    assert (
        ct.meta["format"] == "mha"
        and ct.meta["padding_mapped"] == 1
        and ct.meta["clipped_high"] == 1
    )


def test_single_slice_falls_back_to_gdcm_when_pydicom_cannot_decode(tmp_path, rng, monkeypatch):
    hu, img = gradient_volume(rng, shape=(2, 12, 12))
    files = write_dicom_series(
        img, tmp_path / "s", patient_id="P", rescale_intercept=-1024, shuffle_names=False
    )

    def no_decoder(self):
        raise NotImplementedError("no decoder for this transfer syntax")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    ct = read_ct(files[1])
    assert ct.meta["rescale_applied_by"] == "gdcm"
    assert np.array_equal(ct.array, hu[1])  # rescale applied once (by GDCM), not twice
    # the series path only uses pydicom for its cross-check; it still reads correctly
    series = read_ct(tmp_path / "s")
    assert np.array_equal(series.array, hu)
