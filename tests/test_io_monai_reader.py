"""DicomSeriesHUReader inside MONAI pipelines; agreement with MONAI's ITKReader / NibabelReader."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import ITKReader
from monai.transforms import LoadImage, LoadImaged

from metalung_monai.errors import NoSeriesError
from metalung_monai.io import DicomSeriesHUReader, read_ct, write_dicom_series
from metalung_monai.io.hu import map_padding_to_air


def _ct_series_name_for_itk(folder) -> str:
    """ITKReader's identifier (UID + GDCM series details) of the CT series in ``folder``."""
    import itk
    import pydicom

    gen = itk.GDCMSeriesFileNames.New()
    gen.SetUseSeriesDetails(True)
    gen.AddSeriesRestriction("0008|0021")
    gen.SetDirectory(str(folder))
    for name in gen.GetSeriesUIDs():
        if pydicom.dcmread(gen.GetFileNames(name)[0], stop_before_pixels=True).Modality == "CT":
            return name
    raise AssertionError("no CT series")


@pytest.mark.slow
@pytest.mark.real_data
def test_matches_itkreader_on_real_ge_series(real_data):
    folder = real_data / "dcmqi_ge_3slice"  # CT series + a DICOM-SEG (liver.dcm) in one folder
    ref = LoadImaged(keys="image", reader=ITKReader(series_name=_ct_series_name_for_itk(folder)))(
        {"image": str(folder)}
    )["image"]
    ours = LoadImaged(keys="image", reader=DicomSeriesHUReader(), dtype=None)(
        {"image": str(folder)}
    )["image"]
    assert ours.dtype.is_floating_point is False and str(ours.dtype) == "torch.int16"
    assert tuple(ours.shape) == tuple(ref.shape) == (512, 512, 3)
    assert np.array_equal(ours.affine.numpy(), ref.affine.numpy())
    # ITKReader keeps GE's padding (-3024 HU); after mapping padding both are identical
    ref_np = ref.numpy().astype(np.int32)
    assert int(ref_np.min()) == -3024
    mapped, n = map_padding_to_air(ref_np)
    assert np.array_equal(ours.numpy(), mapped)
    assert n == ours.meta["padding_mapped"] == 167316
    assert ours.meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    # ITKReader without a series name takes GDCM's first series, here the SEG: ours does not
    wrong = LoadImage(reader=ITKReader(), image_only=True)(str(folder))
    assert float(wrong.max()) <= 255 and not np.array_equal(wrong.numpy(), ref.numpy())


def test_matches_itkreader_on_written_series_and_channel_first(tmp_path, rng):
    hu = rng.integers(-1024, 1500, size=(6, 20, 24)).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.75, 0.8, 1.25))
    img.SetOrigin((-50.0, 12.5, 100.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    write_dicom_series(img, tmp_path / "ct", patient_id="P", padding_value=-2000)
    ref = LoadImage(reader=ITKReader(), image_only=True)(str(tmp_path / "ct"))
    ours = LoadImaged(keys="image", reader=DicomSeriesHUReader(), ensure_channel_first=True)(
        {"image": str(tmp_path / "ct")}
    )["image"]
    assert tuple(ours.shape) == (1, *ref.shape)
    assert str(ours.dtype) == "torch.float32"  # LoadImaged's default dtype
    assert np.array_equal(ours.affine.numpy(), ref.affine.numpy())
    mapped, _ = map_padding_to_air(ref.numpy().astype(np.int32))
    assert np.array_equal(ours[0].numpy(), mapped)
    # reverse_indexing gives numpy (z, y, x) order = read_ct's array
    arr, meta = DicomSeriesHUReader(reverse_indexing=True).get_data(
        DicomSeriesHUReader().read(tmp_path / "ct")
    )
    assert np.array_equal(arr, read_ct(tmp_path / "ct").array)
    assert list(meta["spatial_shape"]) == [24, 20, 6]


def test_series_uid_argument_and_verify_suffix(tmp_path, rng):
    hu1 = rng.integers(-1000, 1000, size=(3, 8, 8)).astype(np.int16)
    hu2 = hu1 + 5
    (tmp_path / "both").mkdir()
    uids = []
    for k, hu in enumerate((hu1, hu2)):
        files = write_dicom_series(
            sitk.GetImageFromArray(hu), tmp_path / f"s{k}", patient_id="P", seed=k
        )
        for f in files:
            f.rename(tmp_path / "both" / f"{k}_{f.name}")
        import pydicom

        uids.append(
            str(pydicom.dcmread(tmp_path / "both" / f"{k}_{files[0].name}").SeriesInstanceUID)
        )
    with pytest.raises(NoSeriesError, match="2 CT series"):
        LoadImage(reader=DicomSeriesHUReader(), image_only=True)(str(tmp_path / "both"))
    out = LoadImage(reader=DicomSeriesHUReader(series_uid=uids[1]), image_only=True, dtype=None)(
        str(tmp_path / "both")
    )
    assert np.array_equal(out.numpy().T, hu2)
    r = DicomSeriesHUReader()
    assert r.verify_suffix(str(tmp_path / "both")) and r.verify_suffix("a/b/IM1.dcm")
    assert not r.verify_suffix("scan.nii.gz")


def test_nifti_read_agrees_with_monai_nibabel_reader(tmp_path, rng):
    """read_ct uses SimpleITK for NIfTI; MONAI's default reader for .nii is NibabelReader."""
    data = rng.integers(-1024, 2000, size=(12, 10, 7)).astype(np.int16)  # nibabel (i, j, k) order
    affine = np.array(
        [[-0.7, 0.0, 0.0, 120.0], [0.0, 0.0, 2.5, -40.0], [0.0, -0.8, 0.0, 33.0], [0, 0, 0, 1]]
    )  # RAS, permuted and flipped axes (coronal-like storage)
    nii = nib.Nifti1Image(data, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    path = tmp_path / "vol.nii.gz"
    nib.save(nii, str(path))
    ct = read_ct(path)
    monai_img = LoadImage(image_only=True, dtype=None)(str(path))
    assert np.array_equal(monai_img.numpy(), ct.array.T)  # MONAI (i, j, k) = sitk index order
    ours_affine = DicomSeriesHUReader()._affine(ct.image)  # same affine construction as ITKReader
    assert np.allclose(monai_img.affine.numpy(), ours_affine, atol=1e-5)
    assert np.allclose(ours_affine, affine, atol=1e-5)


def test_nifti_2d_written_by_convert_layout(tmp_path, rng):
    arr = rng.integers(-1024, 500, size=(30, 40)).astype(np.int16)  # (y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.6, 0.7))
    img.SetOrigin((-10.0, 5.0))
    sitk.WriteImage(img, str(tmp_path / "s.nii.gz"))
    ct = read_ct(tmp_path / "s.nii.gz")
    assert ct.image.GetDimension() == 2 and np.array_equal(ct.array, arr)
    m = LoadImage(image_only=True, dtype=None)(str(tmp_path / "s.nii.gz"))
    assert np.array_equal(m.numpy(), arr.T)
    a = m.affine.numpy()
    assert np.allclose(np.diag(a)[:2], [-0.6, -0.7]) and np.allclose(a[:2, 3], [10.0, -5.0])


def test_errors_are_not_swallowed_by_loadimage_fallback(tmp_path):
    """MONAI's LoadImage tries its default readers when a given reader's read() raises; the typed
    error must still reach the caller (ITKReader would otherwise read something else)."""
    from metalung_monai.errors import DicomError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoSeriesError, match="folder is empty"):
        LoadImaged(keys="image", reader=DicomSeriesHUReader())({"image": str(empty)})
    with pytest.raises(NoSeriesError, match="folder is empty"):
        DicomSeriesHUReader(strict=False).read(empty)
    failure = DicomSeriesHUReader().read(empty)
    with pytest.raises(NoSeriesError):
        DicomSeriesHUReader().get_data(failure)
    garbage = tmp_path / "x.dcm"
    garbage.write_bytes(b"\x00" * 300)
    with pytest.raises(DicomError, match="x.dcm: not a readable DICOM file"):
        LoadImage(reader=DicomSeriesHUReader(), image_only=True)(str(garbage))


@pytest.mark.real_data
def test_seg_only_selection_is_refused(real_data):
    from metalung_monai.errors import DicomError

    with pytest.raises(DicomError, match="liver.dcm: not a CT image"):
        LoadImage(reader=DicomSeriesHUReader(), image_only=True)(
            str(real_data / "dcmqi_ge_3slice" / "liver.dcm")
        )
