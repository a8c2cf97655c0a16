"""Issue 9 (hardening) for ingestion: truncated / corrupted payloads, non-finite voxels and voxel
sizes, dropped DICOM slices, missing rescale tags, empty pickles, names from data, output = input.

Every test here failed on the code before the fix (see the finding number in each docstring).
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from metalung_monai.errors import DicomError, InputError, MaskError
from metalung_monai.io import load_datalist, read_ct, read_mask, write_dicom_series
from metalung_monai.io.case_output import Case, DatasetFolder, sanitize_id, unique_case_id
from metalung_monai.io.convert import convert
from metalung_monai.io.thesis_pickle import convert_thesis_pickle
from metalung_monai.utils.paths import MAX_NAME_LENGTH, is_safe_name, safe_name

HOSTILE_NAMES = ["../../x", "/abs/dir/evil", "a/b", "..", "", "x" * 5000, "a\x00b", "a\nb", "CON"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _smooth_volume(shape=(20, 128, 128)) -> np.ndarray:
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    return ((x + y + z) % 300 - 900).astype(np.int16)


def _write(path: Path, arr: np.ndarray, spacing=(0.7, 0.7, 2.0), compress: bool = True) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing[: img.GetDimension()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=compress)
    return path


def _flip(data: bytes, where: float, n: int = 4) -> bytes:
    b = bytearray(data)
    k = int(len(b) * where)
    for j in range(k, k + n):
        b[j] ^= 0x55
    return bytes(b)


def _cli(argv, capsys):
    from metalung_monai.cli import main

    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err.strip()


# ------------------------------------------------------------------ #4 truncated / corrupted payloads


def _damaged(tmp_path: Path, kind: str) -> Path:
    hu = _smooth_volume()
    if kind.startswith("nii.gz"):
        good = _write(tmp_path / "good.nii.gz", hu)
    elif kind.startswith("nii"):
        good = _write(tmp_path / "good.nii", hu, compress=False)
    elif kind.startswith("nrrd"):
        good = _write(tmp_path / "good.nrrd", hu)
    else:
        good = _write(tmp_path / "good.mha", hu)
    data = good.read_bytes()
    ext = "".join(good.suffixes)
    bad = tmp_path / f"bad{ext}"
    if kind.endswith("half"):
        bad.write_bytes(data[: len(data) // 2])
    elif kind.endswith("flip50"):
        bad.write_bytes(_flip(data, 0.5))
    elif kind.endswith("flip80"):
        bad.write_bytes(_flip(data, 0.8))
    elif kind.endswith("crc"):  # gzip trailer: CRC32 then ISIZE; the voxels themselves are intact
        bad.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:])
    elif kind.endswith("short"):
        bad.write_bytes(data[:-100])
    else:
        raise AssertionError(kind)
    return bad


@pytest.mark.parametrize(
    "kind",
    [
        "nii.gz-half",
        "nii.gz-flip50",
        "nii.gz-flip80",
        "nii.gz-crc",
        "nii-half",
        "nii-short",
        "nrrd-flip80",
        "mha-flip50",
        "mha-flip80",
    ],
)
def test_truncated_or_corrupted_volume_is_refused(tmp_path, kind):
    """#4: a cut or bit-flipped payload was read with garbage/zero voxels (exit 0)."""
    bad = _damaged(tmp_path, kind)
    with pytest.raises(InputError) as ei:
        read_ct(bad)
    assert ei.value.source == str(bad) and re.search(r"truncated|corrupt", ei.value.problem), str(
        ei.value
    )


@pytest.mark.parametrize("kind", ["nii.gz-half", "nii.gz-flip50", "nii-half", "mha-flip80"])
def test_truncated_or_corrupted_mask_is_refused(tmp_path, kind):
    """#4 for masks: a cut mask lost its tumour voxels silently."""
    hu = _smooth_volume()
    ref = _write(tmp_path / "ct.nii.gz", hu)
    mask = (hu > -700).astype(np.uint8)
    ext = {"nii.gz": ".nii.gz", "nii": ".nii", "mha": ".mha"}[kind.split("-")[0]]
    good = _write(tmp_path / f"m{ext}", mask, compress=ext != ".nii")
    data = good.read_bytes()
    bad = tmp_path / f"badmask{ext}"
    bad.write_bytes(
        data[: len(data) // 2]
        if kind.endswith("half")
        else _flip(data, 0.5 if "50" in kind else 0.8)
    )
    with pytest.raises(InputError) as ei:
        read_mask(bad, read_ct(ref))
    assert ei.value.source == str(bad) and re.search(r"truncated|corrupt", ei.value.problem), str(
        ei.value
    )


def test_intact_compressed_volumes_still_read_exactly(tmp_path):
    hu = _smooth_volume()
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd"):
        p = _write(tmp_path / f"v{ext}", hu, compress=ext not in (".nii",))
        assert np.array_equal(read_ct(p).array, hu), ext


def test_trailing_zero_padding_after_gzip_is_accepted(tmp_path):
    hu = _smooth_volume((2, 16, 16))
    p = _write(tmp_path / "v.nii.gz", hu)
    p.write_bytes(p.read_bytes() + b"\0" * 512)
    assert np.array_equal(read_ct(p).array, hu)


def test_payload_check_memory_is_bounded(tmp_path):
    """#4: the gzip payload is streamed in chunks (32 MB payload, far less held at once)."""
    from metalung_monai.io.volume_file import check_volume_file

    p = _write(tmp_path / "big.nii.gz", np.zeros((64, 512, 512), np.int16))
    tracemalloc.start()
    try:
        check_volume_file(p, "nifti")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak


# ------------------------------------------------------------------ #5 non-finite voxels


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_voxels_are_refused(tmp_path, ext, value):
    """#5: +/-inf in a float NIfTI became 0 HU (water)."""
    arr = np.full((3, 8, 8), -500.0, np.float32)
    arr[1, 2, 3] = value
    arr[2, 2, 3] = value
    p = _write(tmp_path / f"inf{ext}", arr, compress=ext != ".nii")
    with pytest.raises(InputError, match=re.escape(f"{p}: ") + r".*infinite"):
        read_ct(p)


def test_infinite_mask_values_are_refused(tmp_path):
    ref = _write(tmp_path / "ct.nii.gz", np.zeros((3, 8, 8), np.int16))
    m = np.zeros((3, 8, 8), np.float32)
    m[1, 1, 1] = np.inf
    p = _write(tmp_path / "m.nii.gz", m)
    with pytest.raises(MaskError, match=re.escape(f"{p}: 1 infinite value")):
        read_mask(p, read_ct(ref))


# ------------------------------------------------------------------ #6 voxel sizes


@pytest.mark.parametrize(
    "values", [["nan", "nan"], ["inf", "0.7"], ["0", "0.7"], ["-1", "0.7"], ["51", "0.7"]]
)
def test_convert_refuses_bad_pixel_spacing_option(tmp_path, capsys, values):
    """#6: --pixel-spacing nan nan was accepted and wrote NaN into datalist.json."""
    rows = [
        {
            "patient_id": "T1",
            "hu_array": np.zeros((8, 8)),
            "hu_array_old": np.zeros((8, 8)),
            "mask": np.zeros((8, 8), np.uint8),
            "label1": "2",
        }
    ]
    pd.DataFrame(rows).to_pickle(tmp_path / "lung_cancer_train.pkl")
    out = tmp_path / "ds"
    rc, err = _cli(
        [
            "convert",
            tmp_path / "lung_cancer_train.pkl",
            "--out",
            out,
            "--pixel-spacing",
            *values,
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("metalung convert: error: --pixel-spacing: "), err
    assert not out.exists()
    with pytest.raises(InputError) as ei:
        convert_thesis_pickle(
            tmp_path / "lung_cancer_train.pkl", out, spacing=tuple(float(v) for v in values)
        )
    assert ei.value.source == "spacing" and "pixel spacing" in ei.value.problem, str(ei.value)
    assert not out.exists()


def _nifti_with_pixdim(tmp_path, value) -> Path:
    """A .nii.gz whose stored pixdim[1] is ``value`` (bytes patched: nibabel would "fix" 0 and < 0)."""
    import gzip
    import struct

    p = _write(tmp_path / "ok.nii", np.zeros((3, 8, 8), np.int16), compress=False)
    data = bytearray(p.read_bytes())
    assert struct.unpack("<i", data[:4])[0] == 348  # NIfTI-1, little endian
    data[80:84] = struct.pack("<f", value)  # pixdim[1] (pixdim starts at byte 76)
    bad = tmp_path / f"pixdim_{value}.nii.gz"
    bad.write_bytes(gzip.compress(bytes(data)))
    return bad


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -2.0])
def test_nifti_bad_voxel_size_is_refused(tmp_path, value):
    """#6: a NaN (inf, 0, negative) pixdim silently became 1 mm (abs() for negative)."""
    bad = _nifti_with_pixdim(tmp_path, value)
    with pytest.raises(InputError, match=re.escape(f"{bad}: ") + r".*voxel size"):
        read_ct(bad)
    ref = _write(tmp_path / "ct.nii.gz", np.zeros((3, 8, 8), np.int16))
    with pytest.raises(InputError, match=re.escape(f"{bad}: ") + r".*voxel size"):
        read_mask(bad, read_ct(ref))


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-2"])
def test_nrrd_and_mha_bad_voxel_size_is_refused_clearly(tmp_path, value):
    """#6: NaN/0 voxel sizes in NRRD/MHA gave ITK's 'Refusing to change spacing' or a negative one
    was silently made positive."""
    arr = np.zeros((3, 8, 8), np.int16)
    n = _write(tmp_path / "a.nrrd", arr, compress=False)
    head, _, data = n.read_bytes().partition(b"\n\n")
    head = re.sub(rb"space directions: [^\n]+", b"", head).replace(
        b"\nspace: left-posterior-superior", b""
    )
    head = (
        re.sub(rb"space origin: [^\n]+", b"", head) + b"\nspacings: " + value.encode() + b" 0.7 2"
    )
    head = re.sub(rb"\n+", b"\n", head)
    n.write_bytes(head + b"\n\n" + data)
    m = _write(tmp_path / "a.mha", arr, compress=False)
    spacing = b"ElementSpacing = " + value.encode() + b" 0.7 2"
    m.write_bytes(re.sub(rb"ElementSpacing = [^\n]+", spacing, m.read_bytes()))
    for p in (n, m):
        with pytest.raises(InputError, match=re.escape(f"{p}: ") + r".*voxel size"):
            read_ct(p)


def _series(tmp_path, name="s", hu=None, **kw):
    if hu is None:
        hu = np.random.default_rng(0).integers(-1000, 1000, size=(5, 16, 16)).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.7, 0.7, 2.0))
    files = write_dicom_series(img, tmp_path / name, patient_id="P1", shuffle_names=False, **kw)
    return hu, files


def _edit(files, **tags):
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
        ds.save_as(f)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_dicom_bad_pixel_spacing_is_refused(tmp_path, value):
    """#6: NaN PixelSpacing gave a 6.9e-310 mm (series) or NaN mm (slice) pixel; 0/-1 gave 1 mm."""
    _, files = _series(tmp_path)
    _edit(files, PixelSpacing=[value, value])
    with pytest.raises(DicomError, match=r"IM0000\d.dcm: .*PixelSpacing"):
        read_ct(tmp_path / "s")
    with pytest.raises(DicomError, match=re.escape(f"{files[0]}: ") + r".*PixelSpacing"):
        read_ct(files[0])


def test_dicom_non_finite_position_is_refused(tmp_path):
    """#6: a NaN ImagePositionPatient gave a 0.5 mm slice spacing."""
    _, files = _series(tmp_path)
    _edit(files[:1], ImagePositionPatient=["nan", "0", "0"])
    with pytest.raises(DicomError, match=re.escape(f"{files[0]}: ") + r".*ImagePositionPatient"):
        read_ct(tmp_path / "s")


def test_single_slice_series_bad_slice_spacing_is_refused(tmp_path):
    _, files = _series(tmp_path, hu=np.zeros((1, 8, 8), np.int16))
    _edit(files, SpacingBetweenSlices="nan", SliceThickness="nan")
    with pytest.raises(DicomError, match=r"IM00001.dcm: .*(SpacingBetweenSlices|SliceThickness)"):
        read_ct(tmp_path / "s")


# ------------------------------------------------------------------ #8 dropped slices, rescale


@pytest.mark.parametrize("cut", [2, 200, "header"])
def test_truncated_slice_of_a_series_is_refused(tmp_path, cut):
    """#8: a truncated last slice was dropped silently (4 of 5 slices converted, exit 0)."""
    _, files = _series(tmp_path)
    last = files[-1]
    data = last.read_bytes()
    last.write_bytes(data[:300] if cut == "header" else data[:-cut])
    with pytest.raises(DicomError) as ei:
        read_ct(tmp_path / "s")
    assert ei.value.source == str(last), str(ei.value)
    if cut != "header":
        assert "truncated" in ei.value.problem


def test_truncated_single_slice_names_the_truncation(tmp_path):
    _, files = _series(tmp_path)
    data = files[0].read_bytes()
    files[0].write_bytes(data[:-100])
    with pytest.raises(DicomError, match=re.escape(f"{files[0]}: ") + r"pixel data truncated"):
        read_ct(files[0])


def test_foreign_series_and_other_files_in_the_folder_are_still_fine(tmp_path):
    hu, files = _series(tmp_path)
    _, other = _series(tmp_path, "o", hu=np.zeros((2, 8, 8), np.int16), seed=9)
    for f in other:
        (tmp_path / "s" / f"other_{f.name}").write_bytes(f.read_bytes())
    (tmp_path / "s" / "README.txt").write_text("notes")
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert np.array_equal(read_ct(tmp_path / "s", series_uid=uid).array, hu)


def test_missing_rescale_tags_are_refused_unless_assumed(tmp_path, capsys):
    """#8: a CT without RescaleSlope/RescaleIntercept was stored as if stored values were HU."""
    hu, files = _series(tmp_path, rescale_intercept=-1024)  # stored = HU + 1024 (unsigned)
    _edit(files, RescaleSlope=None, RescaleIntercept=None)
    for target in (tmp_path / "s", files[0]):
        with pytest.raises(DicomError, match=r"no RescaleSlope/RescaleIntercept.*--rescale"):
            read_ct(target)
    ct = read_ct(tmp_path / "s", rescale=(1, -1024))
    assert np.array_equal(ct.array, hu) and ct.meta["rescale_assumed"] == [1.0, -1024.0]
    ct1 = read_ct(files[0], rescale=(1, -1024))
    assert np.array_equal(ct1.array, hu[0]) and ct1.meta["rescale_assumed"] == [1.0, -1024.0]
    raw = read_ct(tmp_path / "s", rescale=(1, 0))
    assert np.array_equal(raw.array, hu + 1024)
    # files with their own tags ignore the option and record nothing
    hu2, _ = _series(tmp_path, "tagged")
    ct2 = read_ct(tmp_path / "tagged", rescale=(1, -1024))
    assert np.array_equal(ct2.array, hu2) and ct2.meta["rescale_assumed"] is None
    # the command line: refused without --rescale, recorded in the datalist with it
    out = tmp_path / "ds"
    rc, err = _cli(["convert", tmp_path / "s", "--out", out, "--no-progress"], capsys)
    assert (
        rc == 1
        and "no RescaleSlope/RescaleIntercept" in err
        and "--rescale" in err
        and not out.exists()
    )
    rc, err = _cli(
        ["convert", tmp_path / "s", "--out", out, "--rescale", "1", "-1024", "--no-progress"],
        capsys,
    )
    assert rc == 0, err
    (e,) = load_datalist(out / "datalist.json")["training"]
    assert e["rescale_assumed"] == [1.0, -1024.0]
    rc, err = _cli(["convert", tmp_path / "tagged", "--out", out, "--rescale", "nan", "0"], capsys)
    assert rc == 1 and err.startswith("metalung convert: error: --rescale: "), err


def test_rescale_tags_in_only_some_slices_are_refused(tmp_path):
    _, files = _series(tmp_path)
    _edit(files[2:3], RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(DicomError, match=r"IM00003.dcm: no RescaleSlope/RescaleIntercept"):
        read_ct(tmp_path / "s", rescale=(1, 0))


# ------------------------------------------------------------------ #13b empty pickles


@pytest.mark.parametrize("kind", ["no rows", "no columns", "zero bytes"])
def test_empty_pickle_error_names_the_pickle(tmp_path, kind):
    """#13b: an empty pickle got 'ds: no case was converted' (blaming the output)."""
    p = tmp_path / "lung_cancer_train.pkl"
    if kind == "no rows":
        pd.DataFrame(
            columns=["patient_id", "hu_array", "hu_array_old", "mask", "label1"]
        ).to_pickle(p)
    elif kind == "no columns":
        pd.DataFrame().to_pickle(p)
    else:
        p.write_bytes(b"")
    with pytest.raises(InputError) as ei:
        convert([p], tmp_path / "ds")
    assert ei.value.source == str(p) and re.search("no rows|empty", ei.value.problem), str(ei.value)
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------ #1 names from data


def test_sanitize_id_is_safe_name():
    for name in HOSTILE_NAMES + ["PAT 7", "P0001", "LIDC-IDRI-0095"]:
        assert sanitize_id(name) == safe_name(name, disambiguate=False)
        assert is_safe_name(sanitize_id(name)), name
    assert sanitize_id("PAT 7") == "PAT_7" and sanitize_id("P0001") == "P0001"


def test_unique_case_id_stays_a_safe_name():
    base = "x" * MAX_NAME_LENGTH
    cid = unique_case_id(base, "/some/source", {base: "/other"})
    assert is_safe_name(cid) and cid != base


@pytest.mark.parametrize("pid", HOSTILE_NAMES)
def test_hostile_patient_ids_never_leave_out(tmp_path, pid):
    """#1: a 5,000-character id crashed with 'File name too long'; ids were not checked."""
    vol = _write(tmp_path / "vol.nii.gz", np.zeros((2, 8, 8), np.int16))
    out = tmp_path / "deep" / "ds"
    convert([vol], out, patient_id=pid)
    (e,) = load_datalist(out / "datalist.json")["training"]
    assert is_safe_name(e["case_id"]) and e["patient_id"] == (pid or "vol")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "vol.nii.gz"]
    assert all(out.resolve() in p.resolve().parents for p in written), written
    assert _files(out) == ["datalist.json", f"images/{e['case_id']}.nii.gz"]


@pytest.mark.parametrize("name", ["CON", "a\nb", "..x", "-x"])
def test_hostile_input_names(tmp_path, name):
    vol = _write(tmp_path / f"{name}.nii.gz", np.zeros((2, 8, 8), np.int16))
    out = tmp_path / "ds"
    convert([vol], out)
    (e,) = load_datalist(out / "datalist.json")["training"]
    assert is_safe_name(e["case_id"]), e["case_id"]
    assert (out / "images" / f"{e['case_id']}.nii.gz").is_file()


def test_hostile_dicom_patient_id(tmp_path):
    _, files = _series(tmp_path)
    _edit(files, PatientID="../../../evil/..")
    out = tmp_path / "ds"
    convert([tmp_path / "s"], out)
    (e,) = load_datalist(out / "datalist.json")["training"]
    assert e["patient_id"] == "../../../evil/.." and is_safe_name(e["case_id"])
    assert not (tmp_path / "evil").exists() and _files(out) == [
        "datalist.json",
        f"images/{e['case_id']}.nii.gz",
    ]


def test_hostile_pickle_patient_ids(tmp_path):
    """#1: pickle patient values became file names (5,000 characters: crash)."""
    rows = [
        {
            "patient_id": pid,
            "hu_array": np.zeros((8, 8)),
            "hu_array_old": np.zeros((8, 8)),
            "mask": np.zeros((8, 8), np.uint8),
            "label1": "2",
        }
        for pid in HOSTILE_NAMES
        if pid
    ]
    pd.DataFrame(rows).to_pickle(tmp_path / "lung_cancer_train.pkl")
    out = tmp_path / "deep" / "ds"
    convert([tmp_path / "lung_cancer_train.pkl"], out)
    entries = load_datalist(out / "datalist.json")["training"]
    assert [e["patient_id"] for e in entries] == [r["patient_id"] for r in rows]
    ids = [e["case_id"] for e in entries]
    assert len(set(ids)) == len(ids) and all(is_safe_name(c) for c in ids), ids
    assert all(
        c.endswith(f"_lung_cancer_train_{i:05d}")
        for i, c in enumerate(ids)
        if len(rows[i]["patient_id"]) < 50
    )
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".pkl"]
    assert len(written) == 2 * len(rows) + 1 and all(
        out.resolve() in p.resolve().parents for p in written
    )


@pytest.mark.parametrize("case_id", HOSTILE_NAMES)
def test_dataset_folder_never_writes_outside(tmp_path, case_id):
    out = tmp_path / "a" / "ds"
    folder = DatasetFolder(out)
    img = sitk.GetImageFromArray(np.zeros((4, 4), np.int16))
    case = Case(case_id=case_id, entry={"patient_id": "P", "split": "train"}, image=img)
    entry = folder.write_case(case)
    folder.save()
    assert is_safe_name(entry["case_id"]) and entry["image"] == f"images/{entry['case_id']}.nii.gz"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(str(p.relative_to(out)) for p in written) == ["datalist.json", entry["image"]]


# ------------------------------------------------------------------ #3 output = input


@pytest.mark.parametrize("where", ["same", "inside", "contains", "mask_folder"])
def test_convert_out_overlapping_an_input_is_refused(tmp_path, capsys, where):
    """#3: convert SERIES --out SERIES/x (or --out = the input's folder) wrote into the input."""
    _, files = _series(tmp_path)
    series = tmp_path / "s"
    vol = _write(tmp_path / "v" / "vol.nii.gz", np.zeros((2, 8, 8), np.int16))
    mask = _write(tmp_path / "m" / "mask.nii.gz", np.zeros((2, 8, 8), np.uint8))
    if where == "same":
        argv, out = [series], series
    elif where == "inside":
        argv, out = [series], series / "converted"
    elif where == "contains":
        argv, out = [vol], tmp_path / "v"
    else:
        argv, out = [vol, "--mask", mask], tmp_path / "m"
    before = _tree(tmp_path)
    rc, err = _cli(["convert", *argv, "--out", out, "--no-progress"], capsys)
    assert (
        rc == 1
        and len(err.splitlines()) == 1
        and err.startswith("metalung convert: error: --out: ")
    ), err
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------ up-front validation


def test_convert_validates_every_input_before_writing(tmp_path):
    good = _write(tmp_path / "good.nii.gz", np.zeros((2, 8, 8), np.int16))
    bad_spacing = _nifti_with_pixdim(tmp_path, np.nan)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"nope" * 100)
    out = tmp_path / "ds"
    for bad, msg in ((bad_spacing, "voxel size"), (junk, "not a readable DICOM file")):
        with pytest.raises(InputError, match=re.escape(f"{bad}: ") + ".*" + msg):
            convert([good, bad], out)
        assert not out.exists()
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'nomask.nii.gz'}: mask file does not exist")
    ):
        convert([good, good], out, mask=[good, tmp_path / "nomask.nii.gz"])
    with pytest.raises(InputError, match="--series"):
        convert([good], out, series_uid="1.2.3")
    assert not out.exists()


def test_convert_failure_in_the_payload_leaves_no_partial_file(tmp_path):
    good = _write(tmp_path / "good.nii.gz", np.zeros((2, 8, 8), np.int16))
    bad = _damaged(tmp_path, "nii.gz-half")
    out = tmp_path / "ds"
    with pytest.raises(InputError) as ei:
        convert([good, bad], out)
    assert ei.value.source == str(bad) and re.search("truncated|corrupt", ei.value.problem)
    assert _files(out) == ["datalist.json", "images/good.nii.gz"]
    assert json.loads((out / "datalist.json").read_text())["training"][0]["case_id"] == "good"


def test_pickles_of_the_same_name_in_two_folders_keep_both(tmp_path, rng):
    """Two ``train.pkl`` from different folders: before, the second replaced the first's rows
    (same case ids) without a word; now both are kept, and reconverting one replaces only its own."""
    from test_io_thesis_pickle import _thesis_frame

    from metalung_monai.io.convert import convert
    from metalung_monai.io.datalist import load_datalist

    a, b = tmp_path / "siteA", tmp_path / "siteB"
    a.mkdir()
    b.mkdir()
    _thesis_frame(rng, ["P1"], ["4A"]).to_pickle(a / "lung_cancer_train.pkl")
    _thesis_frame(rng, ["P1"], ["4A"]).to_pickle(b / "lung_cancer_train.pkl")
    out = tmp_path / "out"
    convert([a / "lung_cancer_train.pkl"], out, progress=False)
    convert([b / "lung_cancer_train.pkl"], out, progress=False)
    ids = [e["case_id"] for e in load_datalist(out / "datalist.json")["training"]]
    assert len(ids) == 4 and len(set(ids)) == 4
    convert([a / "lung_cancer_train.pkl"], out, progress=False)  # again: replaces its own two rows
    again = [e["case_id"] for e in load_datalist(out / "datalist.json")["training"]]
    assert sorted(again) == sorted(ids)
    assert len(list((out / "images").glob("*.nii.gz"))) == 4
