"""``metalung convert``: outputs, merging, typed errors and no partial files."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist

from metalung_monai.commands import convert as convert_module
from metalung_monai.errors import (
    DatalistError,
    DicomError,
    GeometryMismatchError,
    InputError,
    MaskError,
    NoSeriesError,
    SliceSizeError,
    UnsafePickleError,
    UnsupportedFormatError,
)
from metalung_monai.io import load_datalist, read_ct, write_dicom_series
from metalung_monai.io.convert import convert

HAS_LUNG_RADS = importlib.util.find_spec("metalung_monai.anatomy.lung_rads") is not None


def _parser():
    ap = argparse.ArgumentParser(prog="metalung")
    convert_module.add_parser(ap.add_subparsers(dest="command"))
    return ap


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _nifti(path, arr, spacing=(0.8, 0.8, 2.0), dtype=np.int16):
    img = sitk.GetImageFromArray(np.asarray(arr, dtype=dtype))
    img.SetSpacing(spacing[: img.GetDimension()])
    sitk.WriteImage(img, str(path))
    return img


def _ct_and_mask(tmp_path, rng, name="vol", shape=(4, 24, 24)):
    hu = rng.integers(-1024, 300, size=shape)
    hu[0, 0, 0] = -2048  # padding: mapped to -1024
    _nifti(tmp_path / f"{name}.nii.gz", hu)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 8:14, 8:14] = 1
    _nifti(tmp_path / f"{name}_mask.nii.gz", mask, dtype=np.uint8)
    return tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_mask.nii.gz", hu, mask


@pytest.mark.real_data
def test_convert_real_cases_cli(tmp_path, real_data):
    out = tmp_path / "ds"
    args = _parser().parse_args(
        [
            "convert",
            str(real_data / "metalung_example" / "1-141.dcm"),
            str(real_data / "dcmqi_ge_3slice"),
            "--mask",
            str(real_data / "metalung_example" / "IM140.png"),
            "--mask",
            str(real_data / "dcmqi_ge_3slice" / "liver_seg.nrrd"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    dl = load_datalist(out / "datalist.json")
    e_slice, e_ge = dl["training"]
    assert (
        e_slice["patient_id"] == "LIDC-IDRI-0095" and e_slice["case_id"] == "LIDC-IDRI-0095_1-141"
    )
    assert e_slice["manufacturer"] == "SIEMENS" and e_slice["shape"] == [512, 512]
    assert e_ge["manufacturer"] == "GE MEDICAL SYSTEMS" and e_ge["shape"] == [3, 512, 512]
    assert e_ge["spacing"] == pytest.approx([1.0, 0.810547, 0.810547])
    if HAS_LUNG_RADS:
        assert e_slice["lung_rads"] in ("LR1", "LR2", "LR3", "LR4A", "LR4B")
    else:
        assert e_slice["lung_rads"] is None
    img = sitk.ReadImage(str(out / e_slice["image"]))
    msk = sitk.ReadImage(str(out / e_slice["mask"]))
    assert img.GetPixelID() == sitk.sitkInt16 and msk.GetPixelID() == sitk.sitkUInt8
    hu, m = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(msk)
    assert int(m.sum()) == 164 and int(hu[m > 0].min()) == -924 and int(hu[m > 0].max()) == -250
    ge = sitk.GetArrayFromImage(sitk.ReadImage(str(out / e_ge["image"])))
    assert int(ge.min()) == -1024  # GE padding -3024 HU mapped
    # MONAI's own loader reads the datalist
    entries = load_decathlon_datalist(str(out / "datalist.json"), data_list_key="training")
    assert len(entries) == 2 and all(os.path.isfile(e["image"]) for e in entries)


def test_convert_volume_mask_and_merge(tmp_path, rng):
    vol, mask, hu, m = _ct_and_mask(tmp_path, rng)
    out = tmp_path / "ds"
    path = convert([vol], out, mask=[mask], patient_id="PAT 7", lung_rads="4A")
    dl = load_datalist(path)
    (e,) = dl["training"]
    assert e["patient_id"] == "PAT 7" and e["case_id"] == "PAT_7_vol" and e["lung_rads"] == "LR4A"
    assert e["spacing"] == pytest.approx([2.0, 0.8, 0.8]) and e["shape"] == [4, 24, 24]
    got = read_ct(out / e["image"]).array
    expected = hu.copy()
    expected[expected < -1024] = -1024
    assert np.array_equal(got, expected)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / e["mask"]))), m)
    # same input again (another split): replaced, not duplicated
    convert([vol], out, mask=[mask], patient_id="PAT 7", split="validation")
    dl = load_datalist(path)
    assert "training" not in dl or dl["training"] == []
    assert len(dl["validation"]) == 1 and dl["validation"][0]["case_id"] == "PAT_7_vol"
    # another input with the same name from another folder gets its own case id
    (tmp_path / "other").mkdir()
    vol2, _, _, _ = _ct_and_mask(tmp_path / "other", rng)
    convert(vol2, out, patient_id="PAT 7")
    ids = [
        e["case_id"] for e in load_datalist(path)["training"] + load_datalist(path)["validation"]
    ]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert _files(out) == sorted(
        [
            "datalist.json",
            "masks/PAT_7_vol.nii.gz",
            "images/PAT_7_vol.nii.gz",
            f"images/{ids[0]}.nii.gz",
        ]
    )


def test_convert_dicom_series_and_series_flag(tmp_path, rng):
    hu = rng.integers(-1024, 1000, size=(5, 16, 16)).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.7, 0.7, 1.5))
    files = write_dicom_series(
        img, tmp_path / "dcm", patient_id="LUNG-01", manufacturer="TOSHIBA", padding_value=-2000
    )
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    out = tmp_path / "ds"
    args = _parser().parse_args(
        ["convert", str(tmp_path / "dcm"), "--series", uid, "-o", str(out), "--split", "test"]
    )
    assert args.func(args) == 0
    (e,) = load_datalist(out / "datalist.json")["test"]
    assert (
        e["patient_id"] == "LUNG-01"
        and e["manufacturer"] == "TOSHIBA"
        and e["series_instance_uid"] == uid
    )
    assert np.array_equal(read_ct(out / e["image"]).array, read_ct(tmp_path / "dcm").array)
    with pytest.raises(NoSeriesError, match="series 1.2.3 not found"):
        convert(tmp_path / "dcm", out, series_uid="1.2.3")
    # a patient already in "test" cannot be added to "training"
    with pytest.raises(DatalistError, match="patients in both 'training' and 'test': LUNG-01"):
        convert(_renamed_copy(tmp_path, "dcm"), out, split="train")
    assert _files(out) == ["datalist.json", f"images/{e['case_id']}.nii.gz"]


def _renamed_copy(tmp_path, name):
    import shutil

    dst = tmp_path / f"{name}_copy"
    shutil.copytree(tmp_path / name, dst)
    return dst


def _series_with_problem(tmp_path, rng, problem):
    hu = rng.integers(-1024, 1000, size=(3, 8, 8)).astype(np.int16)
    files = write_dicom_series(
        sitk.GetImageFromArray(hu), tmp_path / problem, patient_id="P", shuffle_names=False
    )
    if problem == "mr":
        for f in files:
            ds = pydicom.dcmread(f)
            ds.Modality = "MR"
            ds.save_as(f)
    elif problem == "sizes":
        small = write_dicom_series(
            sitk.GetImageFromArray(np.zeros((1, 4, 4), np.int16)), tmp_path / "tmp4", patient_id="P"
        )
        ds, ref = pydicom.dcmread(small[0]), pydicom.dcmread(files[1])
        for tag in ("SeriesInstanceUID", "StudyInstanceUID", "ImagePositionPatient"):
            setattr(ds, tag, getattr(ref, tag))
        ds.save_as(files[1])
    return tmp_path / problem


def test_every_bad_input_raises_typed_error_and_leaves_no_partial_case(tmp_path, rng):
    good, good_mask, _, _ = _ct_and_mask(tmp_path, rng, "good")
    out = tmp_path / "ds"
    convert(good, out, mask=good_mask)
    baseline = _files(out)
    assert baseline == ["datalist.json", "images/good.nii.gz", "masks/good.nii.gz"]

    garbage = tmp_path / "junk.dcm"
    garbage.write_bytes(os.urandom(1000))
    nan_img = tmp_path / "nan.nii.gz"
    arr = np.zeros((4, 24, 24), np.float32)
    arr[2, 3, 3] = np.nan
    _nifti(nan_img, arr, dtype=np.float32)
    nan_mask = tmp_path / "nanmask.nii.gz"
    _nifti(nan_mask, arr, dtype=np.float32)
    nonbin = tmp_path / "labels.nii.gz"
    _nifti(nonbin, np.full((4, 24, 24), 3), dtype=np.uint8)
    shifted = tmp_path / "shifted.nii.gz"
    sh = sitk.ReadImage(str(good_mask))
    sh.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(sh, str(shifted))
    small_mask = tmp_path / "small.nii.gz"
    _nifti(small_mask, np.zeros((4, 12, 24)), dtype=np.uint8)
    empty = tmp_path / "empty"
    empty.mkdir()
    txt_dir = tmp_path / "texts"
    txt_dir.mkdir()
    (txt_dir / "a.txt").write_text("x")
    evil = tmp_path / "evil_train.pkl"
    import pickle

    class _E:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil.write_bytes(pickle.dumps(_E()))
    cases = [
        (garbage, None, DicomError, "junk.dcm: not a readable DICOM file"),
        (
            _series_with_problem(tmp_path, rng, "mr"),
            None,
            DicomError,
            "not a CT image (Modality 'MR')",
        ),
        (empty, None, NoSeriesError, "no DICOM series found (the folder is empty)"),
        (txt_dir, None, NoSeriesError, "none readable as a DICOM image"),
        (
            _series_with_problem(tmp_path, rng, "sizes"),
            None,
            SliceSizeError,
            "slice of 4x4 pixels in a series of 8x8",
        ),
        (nan_img, None, InputError, "nan.nii.gz: 1 NaN voxel"),
        (good, nan_mask, MaskError, "nanmask.nii.gz: 1 NaN value"),
        (good, nonbin, MaskError, "labels.nii.gz: not a binary mask: values found 3"),
        (good, shifted, GeometryMismatchError, "shifted.nii.gz: grid does not match image"),
        (good, small_mask, GeometryMismatchError, "small.nii.gz: mask array shape (4, 12, 24)"),
        (
            tmp_path / "missing.nii.gz",
            None,
            InputError,
            "missing.nii.gz: file or folder does not exist",
        ),
        (
            good,
            tmp_path / "missing_mask.nii.gz",
            InputError,
            "missing_mask.nii.gz: mask file does not exist",
        ),
        (
            tmp_path / "junk.txt",
            None,
            UnsupportedFormatError,
            "junk.txt: unsupported file type '.txt'",
        ),
        (evil, None, UnsafePickleError, "'posix.system'"),
    ]
    (tmp_path / "junk.txt").write_text("not an image")
    for inp, mask, err, msg in cases:
        with pytest.raises(err) as ei:
            convert([inp], out, mask=[mask] if mask else None, patient_id="NEW")
        assert msg in str(ei.value), (inp, str(ei.value))
        assert _files(out) == baseline, inp  # nothing of the failing case, datalist unchanged
        assert not any(".partial" in p.name for p in out.rglob("*"))
    assert not (tmp_path / "PWNED").exists()
    assert len(load_datalist(out / "datalist.json")["training"]) == 1


def test_failure_after_good_inputs_keeps_them_listed(tmp_path, rng):
    a, _, _, _ = _ct_and_mask(tmp_path, rng, "a")
    b, _, _, _ = _ct_and_mask(tmp_path, rng, "b")
    # a file whose header is fine but whose voxel data is cut short: found only while reading it
    # (a garbage header, as bad.dcm here, is refused before anything is written)
    full, _, _, _ = _ct_and_mask(tmp_path, rng, "cut")
    data = full.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "ds"
    with pytest.raises(InputError, match="bad.nii.gz: truncated"):
        convert([a, bad, b], out)
    assert _files(out) == ["datalist.json", "images/a.nii.gz"]
    assert [e["case_id"] for e in load_datalist(out / "datalist.json")["training"]] == ["a"]
    junk = tmp_path / "bad.dcm"
    junk.write_bytes(b"nope" * 100)
    with pytest.raises(DicomError, match="bad.dcm"):
        convert([b, junk], out)
    assert _files(out) == ["datalist.json", "images/a.nii.gz"]


def test_mask_count_must_match_inputs(tmp_path, rng):
    a, am, _, _ = _ct_and_mask(tmp_path, rng, "a")
    b, _, _, _ = _ct_and_mask(tmp_path, rng, "b")
    with pytest.raises(InputError, match=r"--mask: 1 mask\(s\) for 2 image input\(s\)"):
        convert([a, b], tmp_path / "ds", mask=[am])
    assert not (tmp_path / "ds").exists()


def test_convert_mixes_pickles_and_images(tmp_path, rng):
    import pandas as pd

    rows = [
        {
            "patient_id": "T1",
            "hu_array": np.zeros((16, 16)),
            "hu_array_old": np.full((16, 16), -500.0),
            "mask": np.eye(16, dtype=np.uint8),
            "label1": "4B",
        }
    ]
    pd.DataFrame(rows).to_pickle(tmp_path / "lung_cancer_test.pkl")
    a, am, _, _ = _ct_and_mask(tmp_path, rng, "a")
    path = convert(
        [tmp_path / "lung_cancer_test.pkl", a], tmp_path / "ds", mask=[am], patient_id="A1"
    )
    dl = json.loads(path.read_text())
    assert [e["patient_id"] for e in dl["test"]] == ["T1"] and dl["test"][0]["lung_rads"] == "LR4B"
    assert [e["patient_id"] for e in dl["training"]] == ["A1"]


def test_metalung_cli_entry_point(tmp_path, rng, capsys):
    from metalung_monai.cli import main

    a, am, _, _ = _ct_and_mask(tmp_path, rng, "a")
    assert (
        main(["convert", str(a), "--mask", str(am), "--out", str(tmp_path / "ds"), "--no-progress"])
        == 0
    )
    assert "datalist.json" in capsys.readouterr().out
    (entry,) = load_datalist(tmp_path / "ds" / "datalist.json")["training"]
    # the command computes the class from the mask: a 6 x 6 pixel square of 0.8 mm, 6.8 mm across
    assert entry["lung_rads"] == "LR3"
    assert main(["convert", str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "ds")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("metalung convert: error: ")
        and "nothing.nii.gz: file or folder does not exist" in err
    )


@pytest.mark.slow
def test_ingestion_leaves_the_class_to_the_caller(tmp_path, rng):
    """``convert`` has a Lung-RADS class from ``lung_rads`` or the callable it is given, never
    from an import of its own: ingestion does not depend on anatomy (issue 10)."""
    vol, mask, _, _ = _ct_and_mask(tmp_path, rng)
    plain = convert([vol], tmp_path / "a", mask=[mask], progress=False)
    assert load_datalist(plain)["training"][0]["lung_rads"] is None
    seen = []

    def classify(mask_image):
        seen.append((mask_image.GetSize(), mask_image.GetPixelID()))
        return "LR3"

    given = convert([vol], tmp_path / "b", mask=[mask], lung_rads_of_mask=classify)
    assert load_datalist(given)["training"][0]["lung_rads"] == "LR3"
    assert seen == [((24, 24, 4), sitk.sitkUInt8)]
    explicit = convert(
        [vol], tmp_path / "c", mask=[mask], lung_rads="2", lung_rads_of_mask=classify
    )
    assert load_datalist(explicit)["training"][0]["lung_rads"] == "LR2" and len(seen) == 1
    # a fresh interpreter: every io module imported and a conversion with a mask run, and no
    # module of a later stage (or of the command layer) was imported on the way
    code = (
        "import importlib, pkgutil, sys\n"
        "import metalung_monai.io as io\n"
        "for m in pkgutil.iter_modules(io.__path__):\n"
        "    importlib.import_module(f'metalung_monai.io.{m.name}')\n"
        "from metalung_monai.io.convert import convert\n"
        f"convert([{str(vol)!r}], {str(tmp_path / 'd')!r}, mask=[{str(mask)!r}])\n"
        "later = ('anatomy', 'phantom', 'transforms', 'networks', 'training', 'evaluation', "
        "'commands', 'cli')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] in later "
        "and m.startswith('metalung_monai.')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
