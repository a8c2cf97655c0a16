"""``metalung convert --manifest FILE.csv``: one command for a folder of cases, splits by patient.

The MSD Task06 patches of ``../shared/data/real/msd_lung_patches`` (130 cases, 13 patients) go
through a manifest with relative paths (skipped without the shared data); the refusals use small
synthetic volumes, so they run everywhere. Every refusal names the manifest, the row (the header
is row 1, as a spreadsheet numbers it) and the column, and leaves no output behind.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from metalung_monai import cli
from metalung_monai.errors import InputError
from metalung_monai.io.convert import convert_manifest, read_manifest
from metalung_monai.io.datalist import assign_folds, fill_folds, load_datalist

NP = ["--no-progress"]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _volume(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


@pytest.fixture
def cases(tmp_path) -> Path:
    """``data/``: six 4x16x16 int16 HU volumes ``c0..c5`` with masks, and nothing else."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "msk").mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        hu = rng.integers(-1000, 200, size=(4, 16, 16)).astype(np.int16)
        m = np.zeros((4, 16, 16), np.uint8)
        m[1:3, 5 : 8 + k % 3, 6:9] = 1
        _volume(data / "img" / f"c{k}.nii.gz", hu)
        _volume(data / "msk" / f"c{k}.nii.gz", m)
    return data


def _cli(argv, capsys) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalung convert: error: "), err
    return lines[0]


def _rows(n: int = 6, patients=("A", "A", "B", "B", "C", "C"), splits=None) -> list[list[str]]:
    return [
        [f"img/c{k}.nii.gz", f"msk/c{k}.nii.gz", patients[k]] + ([splits[k]] if splits else [])
        for k in range(n)
    ]


# --------------------------------------------------------------------------- converting
def test_manifest_converts_every_row_with_patient_level_splits_and_folds(cases, tmp_path, capsys):
    header = ["image", "mask", "patient", "split", "lung_rads"]
    rows = [r + [""] for r in _rows(splits=["", "", "test", "", "", ""])]
    rows[0][4] = "4A"  # given: kept; the others computed from the mask
    rows[4][1] = ""  # no mask
    m = _write_csv(cases / "cases.csv", header, rows)
    out = tmp_path / "ds"
    rc = cli.main(["convert", "--manifest", str(m), "--out", str(out), *NP])
    assert rc == 0
    assert f"{out / 'datalist.json'} (training: 4, test: 2)" in capsys.readouterr().out
    dl = load_datalist(out / "datalist.json")
    # patient B's split is given on one of its rows: both its rows are test (patient-level)
    assert [e["patient_id"] for e in dl["test"]] == ["B", "B"]
    assert [e["patient_id"] for e in dl["training"]] == ["A", "A", "C", "C"]
    by_source = {Path(e["source"]).name: e for sec in ("training", "test") for e in dl[sec]}
    assert by_source["c0.nii.gz"]["lung_rads"] == "LR4A"
    assert by_source["c4.nii.gz"]["lung_rads"] is None  # no mask, no class given
    assert all(e["lung_rads"] == "LR2" for n, e in by_source.items() if n[1] not in "04")
    assert by_source["c4.nii.gz"]["mask"] is None and not (out / "masks" / "C_c4.nii.gz").exists()
    # a training patient's cases share a fold; test cases have none
    folds = {e["patient_id"]: e["fold"] for e in dl["training"]}
    assert all(e["fold"] == folds[e["patient_id"]] for e in dl["training"])
    assert folds == assign_folds(["A", "C"], n_folds=5, seed=0)
    assert all("fold" not in e for e in dl["test"])
    # the voxels and the mask are the inputs'
    e = by_source["c2.nii.gz"]
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(cases / "img" / "c2.nii.gz")))
    got = sitk.ReadImage(str(out / e["image"]))
    assert got.GetPixelID() == sitk.sitkInt16 and np.array_equal(sitk.GetArrayFromImage(got), src)
    msk = sitk.GetArrayFromImage(sitk.ReadImage(str(out / e["mask"])))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(cases / "msk" / "c2.nii.gz")))
    assert np.array_equal(msk, ref)
    # converting the same manifest again replaces the cases, no duplicates
    before = (out / "datalist.json").read_text()
    assert cli.main(["convert", "--manifest", str(m), "--out", str(out), *NP]) == 0
    assert (out / "datalist.json").read_text() == before


def test_manifest_without_a_split_column_puts_every_patient_in_training(cases, tmp_path):
    m = _write_csv(cases / "m.csv", ["Patient ID", "Mask", "Image"], [r[2::-1] for r in _rows()])
    rows = read_manifest(m)  # 'Patient ID' is read as the patient column, any column order
    assert [(r.row, r.patient, r.split) for r in rows] == [
        (2, "A", "train"),
        (3, "A", "train"),
        (4, "B", "train"),
        (5, "B", "train"),
        (6, "C", "train"),
        (7, "C", "train"),
    ]
    dl = load_datalist(convert_manifest(m, tmp_path / "ds"))
    assert "test" not in dl and len(dl["training"]) == 6
    folds = assign_folds(["A", "B", "C"], n_folds=5, seed=0)
    assert all(e["fold"] == folds[e["patient_id"]] for e in dl["training"])


def test_manifest_spreadsheet_variants(cases, tmp_path):
    """A UTF-8 BOM, ';' as the separator, empty rows, absolute paths, fewer cells than columns."""
    rows = [
        [str(cases / "img" / "c0.nii.gz"), "P 1", "", "msk/c0.nii.gz"],
        ["", "", "", ""],
        ["img/c1.nii.gz", "P 1", "validation"],
    ]
    m = _write_csv(cases / "m.csv", ["image", "patient", "split", "mask"], rows, delimiter=";")
    m.write_bytes(b"\xef\xbb\xbf" + m.read_bytes())
    rows = read_manifest(m)
    assert [(r.row, r.split, r.mask is not None) for r in rows] == [
        (2, "validation", True),
        (4, "validation", False),
    ]
    dl = load_datalist(convert_manifest(m, tmp_path / "ds"))
    assert [e["patient_id"] for e in dl["validation"]] == ["P 1", "P 1"]
    assert [e["case_id"] for e in dl["validation"]] == ["P_1_c0", "P_1_c1"]


def test_fill_folds_is_assign_folds_and_keeps_what_is_there():
    ids = [f"P{k:02d}" for k in range(13)]
    dl = {"training": [{"patient_id": p, "image": "x"} for p in ids for _ in range(2)]}
    assert fill_folds(dl, n_folds=5, seed=0) == assign_folds(ids, n_folds=5, seed=0)
    assert all(e["fold"] == assign_folds(ids)[e["patient_id"]] for e in dl["training"])
    # more patients later: nobody moves, the new ones fill the smallest folds
    before = {e["patient_id"]: e["fold"] for e in dl["training"]}
    dl["training"] += [{"patient_id": p, "image": "y"} for p in ("Q1", "Q2", "P00")]
    folds = fill_folds(dl, n_folds=5)
    assert {p: folds[p] for p in before} == before
    sizes = np.bincount(list(folds.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1 and len(folds) == 15
    assert dl["training"][-1]["fold"] == before["P00"]  # a known patient keeps its fold
    with pytest.raises(ValueError, match="n_folds"):
        fill_folds(dl, n_folds=0)


# --------------------------------------------------------------------------- refusals
def _refused(capsys, tmp_path, manifest, *expected, extra=()) -> str:
    out = tmp_path / "ds"
    rc, err = _cli(["convert", "--manifest", manifest, "--out", out, *extra, *NP], capsys)
    assert rc == 1
    line = _one_line(err)
    for text in expected:
        assert text in line, line
    assert not out.exists()  # checked before anything is written
    return line


def test_a_missing_image_or_mask_names_the_row_and_the_column(cases, tmp_path, capsys):
    rows = _rows()
    rows[2][0] = "img/nope.nii.gz"
    m = _write_csv(cases / "m.csv", ["image", "mask", "patient"], rows)
    line = _refused(capsys, tmp_path, m, f"{m} row 4, column 'image': img/nope.nii.gz")
    assert "does not exist" in line and str(cases / "img" / "nope.nii.gz") in line
    assert "relative to the manifest's folder" in line
    rows = _rows()
    rows[5][1] = "msk/gone.nii.gz"
    _write_csv(m, ["image", "mask", "patient"], rows)
    _refused(capsys, tmp_path, m, f"{m} row 7, column 'mask': msk/gone.nii.gz", "does not exist")


def test_missing_unknown_or_doubled_columns_are_refused(cases, tmp_path, capsys):
    m = _write_csv(cases / "m.csv", ["image", "mask"], [r[:2] for r in _rows()])
    _refused(capsys, tmp_path, m, f"{m} row 1: no column 'patient'", "columns found: image, mask")
    _write_csv(m, ["image", "mask", "patient", "lungrad5"], [r + ["2"] for r in _rows()])
    _refused(capsys, tmp_path, m, f"{m} row 1, column 'lungrad5': unknown column")
    _write_csv(m, ["image", "patient", "Patient-ID"], [[r[0], r[2], r[2]] for r in _rows()])
    _refused(capsys, tmp_path, m, f"{m} row 1, column 'Patient-ID': column 'patient' appears twice")
    m.write_text("")
    _refused(capsys, tmp_path, m, f"{m}: no header row")
    m.write_text("image,patient\n\n")
    _refused(capsys, tmp_path, m, f"{m}: no case")
    _refused(capsys, tmp_path, cases / "none.csv", "none.csv: manifest file does not exist")


def test_a_patient_in_two_splits_is_refused_naming_the_patient_and_rows(cases, tmp_path, capsys):
    splits = ["train", "train", "train", "test", "test", "test"]  # B in train (row 4), test (row 5)
    m = _write_csv(cases / "m.csv", ["image", "mask", "patient", "split"], _rows(splits=splits))
    line = _refused(capsys, tmp_path, m, f"{m}, column 'split': patient 'B' is in more than one")
    assert "train: row 4; test: row 5" in line and "'A'" not in line and "'C'" not in line
    with pytest.raises(InputError, match="patient-level split"):
        read_manifest(m)


def test_a_patient_already_in_another_split_of_the_output_is_refused(cases, tmp_path, capsys):
    out = tmp_path / "ds"
    first = _write_csv(
        cases / "first.csv", ["image", "patient", "split"], [["img/c0.nii.gz", "A", "test"]]
    )
    assert cli.main(["convert", "--manifest", first, "--out", out, *NP]) == 0
    before = (out / "datalist.json").read_text()
    m = _write_csv(
        cases / "m.csv", ["image", "patient"], [["img/c1.nii.gz", "B"], ["img/c2.nii.gz", "A"]]
    )
    rc, err = _cli(["convert", "--manifest", m, "--out", out, *NP], capsys)
    assert rc == 1
    line = _one_line(err)
    assert f"{m} row 3, column 'patient': patient 'A' is in the train split here" in line
    assert "already lists it in the test split (case A_c0)" in line
    assert (out / "datalist.json").read_text() == before
    assert sorted(p.name for p in (out / "images").iterdir()) == ["A_c0.nii.gz"]
    # the same image again, in another split: its case moves (replaced, not a leak)
    again = _write_csv(
        cases / "again.csv", ["image", "patient", "split"], [["img/c0.nii.gz", "A", "train"]]
    )
    assert cli.main(["convert", "--manifest", again, "--out", out, *NP]) == 0
    dl = load_datalist(out / "datalist.json")
    assert "test" not in dl or not dl["test"]
    assert [e["case_id"] for e in dl["training"]] == ["A_c0"]


@pytest.mark.parametrize(
    "row, column, cell, problem",
    [
        (3, "patient", "", "empty; every case needs its patient id"),
        (2, "image", "", "empty; every row needs its CT image"),
        (4, "split", "training set", "'training set' is not a split"),
        (5, "lung_rads", "5", "unknown Lung-RADS label '5'"),
        (6, "image", "img/c0.nii.gz", "img/c0.nii.gz: the same image as row 2"),
        (7, "mask", "msk/c1.nii.gz", "msk/c1.nii.gz: the same mask as row 3"),
        (3, "image", "cases.pkl", "is a thesis pickle"),
        (4, "image", "img/notes.txt", "notes.txt"),
        (5, "mask", "msk", "a folder, not a mask file"),
    ],
)
def test_a_bad_cell_names_the_row_and_the_column(
    cases, tmp_path, capsys, row, column, cell, problem
):
    (cases / "cases.pkl").write_bytes(b"x")
    (cases / "img" / "notes.txt").write_text("x")
    header = ["image", "mask", "patient", "split", "lung_rads"]
    rows = [r + ["train", "3"] for r in _rows()]
    rows[row - 2][header.index(column)] = cell
    m = _write_csv(cases / "m.csv", header, rows)
    _refused(capsys, tmp_path, m, f"{m} row {row}, column '{column}'", problem)


def test_a_row_with_too_many_cells_and_a_bad_header_are_refused(cases, tmp_path, capsys):
    m = cases / "m.csv"
    m.write_text("image,patient\nimg/c0.nii.gz,A\nimg/a,b.nii.gz,B\n")
    _refused(capsys, tmp_path, m, f"{m} row 3: 3 cells, but the header names 2 columns")
    m.write_bytes(b"image,patient\n\xff\xfe,A\n")
    _refused(capsys, tmp_path, m, f"{m}: not a UTF-8 text file")


def test_a_header_problem_of_an_image_names_the_row(cases, tmp_path, capsys):
    """A voxel size of 0 in the NIfTI header: found by the probe before anything is written."""
    bad = cases / "img" / "c3.nii.gz"
    raw = bad.parent / "c3.nii"
    sitk.WriteImage(sitk.ReadImage(str(bad)), str(raw))
    data = bytearray(raw.read_bytes())
    data[80:84] = np.float32(0).tobytes()  # pixdim[1]
    raw.write_bytes(bytes(data))
    rows = _rows()
    rows[3][0] = "img/c3.nii"
    m = _write_csv(cases / "m.csv", ["image", "mask", "patient"], rows)
    _refused(capsys, tmp_path, m, f"{m} row 5, column 'image': {raw}")


def test_a_case_that_fails_while_read_leaves_the_cases_before_it_and_no_partial_file(
    cases, tmp_path, capsys
):
    """A truncated payload is found when the voxels are read: the rows before it stay (listed in
    the datalist, each complete), the failing case leaves nothing, later rows are not read; after
    the fix the same manifest completes the folder."""
    bad = cases / "img" / "c3.nii.gz"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    m = _write_csv(cases / "m.csv", ["image", "mask", "patient"], _rows())
    out = tmp_path / "ds"
    rc, err = _cli(["convert", "--manifest", m, "--out", out, *NP], capsys)
    assert rc == 1
    assert f"{m} row 5, column 'image': {bad}" in _one_line(err)
    dl = load_datalist(out / "datalist.json")
    assert [e["case_id"] for e in dl["training"]] == ["A_c0", "A_c1", "B_c2"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "datalist.json",
        *(f"images/{c}.nii.gz" for c in ("A_c0", "A_c1", "B_c2")),
        *(f"masks/{c}.nii.gz" for c in ("A_c0", "A_c1", "B_c2")),
    ]
    bad.write_bytes(good)
    assert cli.main(["convert", "--manifest", m, "--out", out, *NP]) == 0
    assert len(load_datalist(out / "datalist.json")["training"]) == 6


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["x.nii.gz"], "give INPUTs or --manifest, not both"),
        (["--split", "test"], "argument --split: is per case: a column of the manifest"),
        (["--mask", "m.nii.gz"], "argument --mask: is per case"),
        (["--patient-id", "P"], "argument --patient-id: is per case"),
        (["--lung-rads", "2"], "argument --lung-rads: is per case"),
        (["--series", "1.2"], "argument --series: is per case; a manifest's DICOM folders"),
        (["--pixel-spacing", "1", "1"], "argument --pixel-spacing: applies to thesis pickles"),
        (["--image-column", "hu_array"], "argument --image-column: applies to thesis pickles"),
    ],
)
def test_options_a_manifest_replaces_are_usage_errors(cases, tmp_path, capsys, extra, problem):
    m = _write_csv(cases / "m.csv", ["image", "patient"], [["img/c0.nii.gz", "A"]])
    out = tmp_path / "ds"
    with pytest.raises(SystemExit) as exc:
        cli.main(["convert", "--manifest", str(m), "--out", str(out), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metalung convert: error: ") and problem in err and "\n" not in err
    assert not out.exists()


def test_no_input_and_no_manifest_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["convert", "--out", str(tmp_path / "ds")])
    assert exc.value.code == 2
    assert "give at least one INPUT, or --manifest FILE.csv" in capsys.readouterr().err


def test_rescale_with_a_manifest_of_volumes_is_refused(cases, tmp_path, capsys):
    m = _write_csv(cases / "m.csv", ["image", "patient"], [["img/c0.nii.gz", "A"]])
    _refused(
        capsys,
        tmp_path,
        m,
        "--rescale: only applies to DICOM inputs",
        extra=["--rescale", "1", "0"],
    )


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_manifest_of_the_130_msd_patches(real_data, tmp_path):
    """130 real patches of 13 patients, one command: patient ids and patient-level splits reach
    the datalist, the voxels are the patches' exact HU."""
    src = real_data / "msd_lung_patches"
    table = list(csv.DictReader(open(src / "patches.csv", newline="")))
    patients = sorted({r["patient"] for r in table})
    test = set(patients[::4])  # 4 of the 13 patients
    work = tmp_path / "work"
    work.mkdir()
    rows = []
    for r in table:
        rel = os.path.relpath(src, work)  # relative to the manifest's folder
        first = r["case"].endswith("_p0")  # the split on a patient's first row only
        rows.append(
            [
                f"{rel}/images/{r['case']}.nii.gz",
                f"{rel}/masks/{r['case']}.nii.gz",
                r["patient"],
                "test" if first and r["patient"] in test else "",
            ]
        )
    m = _write_csv(work / "msd.csv", ["image", "mask", "patient", "split"], rows)
    dl = load_datalist(convert_manifest(m, tmp_path / "ds"))
    assert len(dl["training"]) + len(dl["test"]) == 130
    assert {e["patient_id"] for e in dl["test"]} == test
    assert {e["patient_id"] for e in dl["training"]} == set(patients) - test
    assert len(dl["test"]) == 10 * len(test)
    case_of = {r["case"]: r for r in table}
    for e in dl["training"] + dl["test"]:
        case = Path(e["source"]).name.split(".")[0]
        assert e["patient_id"] == case_of[case]["patient"]
        assert e["spacing"] == [2.0, 2.0, 2.0] and e["shape"] == [1, 48, 48]
    folds = {}
    for e in dl["training"]:
        assert folds.setdefault(e["patient_id"], e["fold"]) == e["fold"]
    assert sorted(np.bincount(list(folds.values())).tolist()) == [1, 2, 2, 2, 2]
    # tumour pixels and HU of one case are the source's
    e = dl["test"][3]
    case = Path(e["source"]).name.split(".")[0]
    msk = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / e["mask"])))
    assert int(msk.sum()) == int(case_of[case]["tumour_px"])
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / e["image"])))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "images" / f"{case}.nii.gz")))
    assert np.array_equal(hu, ref)
    assert json.loads((tmp_path / "ds" / "datalist.json").read_text()) == dl
