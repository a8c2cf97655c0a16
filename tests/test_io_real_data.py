"""HU and geometry after ingestion of the real reference CT cases (figures from their README)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from metalung_monai.errors import DicomError, GeometryMismatchError, MaskError
from metalung_monai.io import read_ct, read_mask
from metalung_monai.io.dicom_series import list_dicom_series

pytestmark = pytest.mark.real_data


def test_metalung_example_slice_and_png_mask(real_data):
    ct = read_ct(real_data / "metalung_example" / "1-141.dcm")
    hu = ct.array
    assert ct.image.GetDimension() == 2 and hu.shape == (512, 512) and hu.dtype == np.int16
    assert int(hu.min()) == -1024 and int(hu.max()) == 1644
    assert ct.spacing == pytest.approx((0.600, 0.600), abs=5e-4)
    assert ct.meta["format"] == "dicom-slice"
    assert ct.meta["manufacturer"] == "SIEMENS" and ct.meta["patient_id"] == "LIDC-IDRI-0095"
    assert ct.meta["rescale_intercept"] == -1024
    # origin = in-plane ImagePositionPatient
    assert ct.image.GetOrigin() == pytest.approx((-162.2001953125, -331.2001953125))

    mask = read_mask(real_data / "metalung_example" / "IM140.png", ct)
    m = sitk.GetArrayFromImage(mask)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    assert int(m.sum()) == 164
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (189, 204, 417, 430)
    inside = hu[m > 0]
    assert int(inside.min()) == -924 and int(inside.max()) == -250
    assert mask.GetSpacing() == ct.image.GetSpacing() and mask.GetOrigin() == ct.image.GetOrigin()


def test_pyradiomics_nrrd_volume_and_label(real_data):
    ct = read_ct(real_data / "pyradiomics_lung1" / "lung1_image.nrrd")
    assert ct.meta["format"] == "nrrd"
    assert ct.image.GetSize() == (512, 512, 48)
    assert ct.spacing == pytest.approx((0.570, 0.570, 5.0), abs=1e-3)
    assert ct.array.dtype == np.int16 and int(ct.array.min()) >= -1024
    label = read_mask(real_data / "pyradiomics_lung1" / "lung1_label.nrrd", ct)
    lab = sitk.GetArrayFromImage(label)
    assert int(lab.sum()) == 837
    zs = np.nonzero(lab)[0]
    assert (zs.min(), zs.max()) == (32, 34)
    assert float(ct.array[lab > 0].mean()) == pytest.approx(-64, abs=1.0)


def test_lungmask_slice_padding_mapped(real_data):
    ct = read_ct(real_data / "lungmask_slice" / "0.dcm")
    hu = ct.array
    assert hu.shape == (512, 512)
    assert ct.meta["padding_mapped"] > 50_000  # -2048 outside the field of view
    assert int(hu.min()) == -1024
    assert ct.spacing == pytest.approx((0.625, 0.625))
    # corners are outside the circular field of view: air now
    assert hu[0, 0] == hu[-1, -1] == -1024
    # the two files form a 2-slice series (no Modality tag; accepted through its CT SOP class)
    series = read_ct(real_data / "lungmask_slice")
    assert series.image.GetSize() == (512, 512, 2)
    assert np.array_equal(series.array[0], hu)


def test_dcmqi_ge_series_next_to_dicom_seg(real_data):
    folder = real_data / "dcmqi_ge_3slice"
    series = list_dicom_series(folder)
    assert sorted(s.modality for s in series) == ["CT", "SEG"]
    ct = read_ct(folder)
    assert ct.meta["format"] == "dicom-series"
    assert ct.image.GetSize() == (512, 512, 3)
    assert ct.spacing[2] == pytest.approx(1.0, abs=1e-6)
    assert ct.spacing[0] == pytest.approx(0.810547)
    assert ct.meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert ct.meta["pixel_padding_value"] == -2000
    assert ct.meta["padding_mapped"] == 3 * 55772  # stored -2000 = -3024 HU
    assert int(ct.array.min()) == -1024
    # slices ordered by position: z = 0 is the most inferior (file 03.dcm at -128.69 mm)
    assert [f.split("/")[-1] for f in ct.meta["files"]] == ["03.dcm", "02.dcm", "01.dcm"]
    assert ct.image.GetOrigin()[2] == pytest.approx(-128.69, abs=1e-3)
    # liver mask of dcmqi lies on this grid; spine mask is a label map {0, 2}
    liver = read_mask(folder / "liver_seg.nrrd", ct)
    assert int(sitk.GetArrayFromImage(liver).sum()) == 107098
    with pytest.raises(MaskError, match=r"spine_seg.nrrd: not a binary mask: values found 0, 2"):
        read_mask(folder / "spine_seg.nrrd", ct)
    spine = read_mask(folder / "spine_seg.nrrd", ct, label=2)
    assert int(sitk.GetArrayFromImage(spine).sum()) == 12439
    with pytest.raises(DicomError, match=r"liver.dcm: not a CT image \(a DICOM segmentation"):
        read_ct(folder / "liver.dcm")


def test_mask_of_another_case_is_a_geometry_mismatch(real_data):
    ct = read_ct(real_data / "dcmqi_ge_3slice")
    with pytest.raises(GeometryMismatchError, match=r"lung1_label.nrrd: .*dcmqi_ge_3slice"):
        read_mask(real_data / "pyradiomics_lung1" / "lung1_label.nrrd", ct)


def test_pydicom_ct_small():
    path = get_testdata_file("CT_small.dcm")
    ct = read_ct(path)
    hu = ct.array
    assert hu.shape == (128, 128) and hu.dtype == np.int16
    assert ct.meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    # stored 128..2191 with intercept -1024
    assert (int(hu.min()), int(hu.max())) == (128 - 1024, 2191 - 1024)
    assert ct.spacing == pytest.approx((0.661468, 0.661468))
