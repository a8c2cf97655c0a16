"""``metalung phantom`` hardening (issue 9, findings #1, #3, #12, #13a and a real SIGKILL).

* #12: absurd ``--patients`` and requests that would not fit on the disk are refused up front,
  in seconds, naming ``--patients``; nothing is written.
* #13a: every option that could fail after some patients (``--size`` below the smallest size
  at which every Lung-RADS class can be drawn, thickness ranges, ``--workers``,
  ``--test-per-class``, ``--seed``) is checked before anything is written, naming the option.
* #1: paths built from patient ids go through ``safe_name`` / ``child_path``.
* #3: ``--overwrite`` deletes only what phantom wrote (its manifest lists it); files it did not
  write survive, and a tampered manifest cannot delete anything outside ``--out``.
* a real ``SIGKILL`` of a real ``metalung phantom`` process, then a rerun: the result equals an
  uninterrupted run and no ``.partial`` file remains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from killing import sigkill_when

from metalung_monai.errors import InputError
from metalung_monai.phantom import PatientParams, PatientVolume, write_patient
from metalung_monai.phantom.cohort import MANIFEST_NAME, generate_cohort
from metalung_monai.phantom.params import min_size_for_fov

REPO = Path(__file__).resolve().parents[1]
FAST = {
    "size": 128,
    "slice_thickness": 5.0,
    "progress": False,
    "figure": False,
    "lung_masks": False,
}


def _phantom(argv, capsys):
    """Run ``metalung phantom`` in this process: (exit status, stderr lines, seconds after imports)."""
    from metalung_monai.cli import build_parser, main

    build_parser()  # import every sub-command first: the time measured is the command's own
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = main(["phantom", *argv, "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.err.strip().splitlines(), time.perf_counter() - t0


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ----------------------------------------------------------------------------- #12 absurd requests
@pytest.mark.slow
def test_huge_patient_count_is_refused_in_seconds(tmp_path, capsys):
    out = tmp_path / "cohort"
    for n in ("100000000", "10001"):
        rc, err, elapsed = _phantom(["--out", str(out), "--patients", n], capsys)
        assert rc == 1 and len(err) == 1, err
        assert err[0].startswith("metalung phantom: error: --patients: at most 10000 patients"), err
        assert elapsed < 5, elapsed
    assert not out.exists()
    # below the cap, the disk decides: 10000 patients of 1024 x 1024 x 1 mm with DICOM need about 9.6 TB
    rc, err, elapsed = _phantom(
        [
            "--out",
            str(out),
            "--patients",
            "10000",
            "--size",
            "1024",
            "--slice-thickness",
            "1",
            "1",
            "--dicom",
        ],
        capsys,
    )
    assert (
        rc == 1
        and len(err) == 1
        and err[0].startswith("metalung phantom: error: --patients: ")
        and "free" in err[0]
    )
    assert elapsed < 10, elapsed  # planning 10000 patients without holding their parameters
    assert not out.exists()


def test_request_larger_than_the_free_disk_space_is_refused(tmp_path, monkeypatch, capsys):
    import metalung_monai.utils.paths as paths

    real = paths.shutil.disk_usage

    def small_disk(p):
        u = real(p)
        return type(u)(
            total=u.total, used=u.total - 50_000_000, free=50_000_000 + int(0.05 * u.total)
        )

    monkeypatch.setattr(paths.shutil, "disk_usage", small_disk)
    out = tmp_path / "cohort"
    rc, err, elapsed = _phantom(["--out", str(out), "--patients", "40", "--size", "256"], capsys)
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("metalung phantom: error: --patients: ") and "free" in err[0], err
    assert elapsed < 10 and not out.exists()
    with pytest.raises(InputError, match="free") as e:
        generate_cohort(out, n_patients=40, size=256, progress=False)
    assert e.value.source == "n_patients" and not out.exists()
    # a small request fits (about 1.2 bytes per voxel: 128 x 128 x 57 slices -> 1.2 MB per patient)
    generate_cohort(out, n_patients=1, **FAST)
    assert (out / "datalist.json").is_file()


# ----------------------------------------------------------------------------- #13a late failures
def test_smallest_size_that_draws_every_class():
    # LR2 nodules (4-6 mm) are measured on the pixel grid: below 3.0 mm pixels two pixels give
    # 4-6 mm; at 3.0 mm and above no outline fits the class (size 126 at a 380 mm field of view
    # failed for 6 of 6 LR2 patients, 127 for none). The field of view reaches 380 mm.
    assert min_size_for_fov(380.0) == 127
    assert min_size_for_fov(330.0) == 111
    assert 380.0 / min_size_for_fov(380.0) < 3.0 <= 380.0 / (min_size_for_fov(380.0) - 1)


BAD_OPTIONS = [
    (["--size", "64"], "--size", "127"),
    (["--size", "126"], "--size", "127"),
    (["--size", "200000"], "--size", "1024"),
    (["--size", "0"], "--size", "127"),
    (["--slice-thickness", "0.5", "5"], "--slice-thickness", "1.0..5.0"),
    (["--slice-thickness", "5", "2.5"], "--slice-thickness", "larger"),
    (["--slice-thickness", "nan", "5"], "--slice-thickness", "nan"),
    (["--slice-thickness", "2", "inf"], "--slice-thickness", "inf"),
    (["--workers", "0"], "--workers", ">= 1"),
    (["--workers", "-3"], "--workers", ">= 1"),
    (["--test-per-class", "-1"], "--test-per-class", ">= 0"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--patients", "0"], "--patients", ">= 1"),
    (["--patients", "-4"], "--patients", ">= 1"),
]


@pytest.mark.parametrize(
    "extra,option,text", BAD_OPTIONS, ids=[" ".join(b[0]) for b in BAD_OPTIONS]
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, extra, option, text):
    out = tmp_path / "cohort"
    argv = ["--out", str(out), "--patients", "10", "--size", "128", "--slice-thickness", "5", "5"]
    rc, err, elapsed = _phantom(argv + extra, capsys)  # later options win
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith(f"metalung phantom: error: {option}: ") and text in err[0], err
    assert elapsed < 10, elapsed
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "ct.nii.gz"
    f.write_bytes(b"precious")
    rc, err, _ = _phantom(["--out", str(f), "--patients", "2", "--size", "128"], capsys)
    assert rc == 1 and len(err) == 1 and str(f) in err[0], err
    assert f.read_bytes() == b"precious"


def test_library_names_its_arguments(tmp_path):
    out = tmp_path / "c"
    for kwargs, name in (
        ({"size": 100}, "size"),
        ({"n_test_per_class": -2}, "n_test_per_class"),
        ({"n_folds": 0}, "n_folds"),
        ({"seed": -5}, "seed"),
        ({"n_patients": 10**9}, "n_patients"),
        ({"fov_range": (330.0, 600.0)}, "fov_range"),
    ):
        args = {**FAST, **kwargs}
        with pytest.raises(InputError) as e:
            generate_cohort(out, **{"n_patients": 3, **args})
        assert e.value.source == name, (kwargs, e.value)
    assert not out.exists()


# ----------------------------------------------------------------------------- #1 names from data
def _tiny_volume(pid: str) -> PatientVolume:
    shape = (6, 24, 24)
    hu = np.full(shape, -1000, np.int16)
    truth = np.zeros(shape, np.uint8)
    prm = PatientParams(
        patient_id=pid,
        seed=0,
        index=0,
        lung_rads="LR1",
        size=24,
        slice_thickness=5.0,
        fov_mm=330.0,
        lung_height_mm=200.0,
        body_offset_mm=(0.0, 0.0),
        contrast=False,
        scanner={
            "manufacturer": "SIEMENS",
            "kernel": "B30f",
            "rescale_intercept": -1024,
            "padding_value": -2000,
        },
        tumours=[],
        calcification_diameters_mm=[],
    )
    return PatientVolume(
        patient_id=pid,
        hu=hu,
        mask=np.zeros(shape, np.uint8),
        truth=truth,
        spacing=(5.0, 13.75, 13.75),
        origin=(0.0, 0.0, 0.0),
        fov=np.ones(shape[1:], bool),
        scanner=prm.scanner,
        lung_rads="LR1",
        tumours=[],
        calcifications=[],
        params=prm,
    )


@pytest.mark.parametrize("pid", ["../../evil", "/abs/evil", "a/b", "..", "x" * 300, "P 001\n"])
def test_hostile_patient_ids_stay_inside_out(tmp_path, pid):
    out = tmp_path / "out"
    summary = write_patient(_tiny_volume(pid), out, lung_masks=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) == 4  # image, mask, truth, overview slice
    for p in written:
        assert out.resolve() in p.resolve().parents
        assert "/" not in p.name and not p.name.startswith(".")
    for rel in summary["files"].values():
        assert (out / rel).is_file() and out.resolve() in (out / rel).resolve().parents
    assert summary["patient_id"] == pid  # the id itself is data and is kept as is


# ----------------------------------------------------------------------------- #3 --overwrite
@pytest.mark.slow
def test_overwrite_deletes_only_what_phantom_wrote(tmp_path):
    out = tmp_path / "cohort"
    generate_cohort(out, n_patients=1, seed=1, **FAST)
    foreign = {
        "notes.txt": b"mine",
        "images/mine.nii.gz": b"my image",
        "dicom/other/x.dcm": b"my dicom",
        ".phantom-cache/keep.txt": b"cache of mine",
        "truth/readme.md": b"keep",
    }
    for rel, data in foreign.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    # a tampered manifest must not delete anything outside --out
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"outside")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    (victim_dir / "a.dcm").write_bytes(b"outside too")
    man = json.loads((out / MANIFEST_NAME).read_text())
    man["patients"]["P0099"] = {
        "hash": "x",
        "summary": {
            "patient_id": "P0099",
            "files": {"image": "../victim.txt", "mask": str(victim), "dicom": "../victim_dir"},
        },
    }
    (out / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(InputError, match="overwrite"):
        generate_cohort(out, n_patients=1, seed=2, **FAST)
    generate_cohort(out, n_patients=1, seed=2, overwrite=True, **FAST)
    for rel, data in foreign.items():
        assert (out / rel).read_bytes() == data, rel
    assert (
        victim.read_bytes() == b"outside" and (victim_dir / "a.dcm").read_bytes() == b"outside too"
    )
    assert json.loads((out / MANIFEST_NAME).read_text())["params"]["seed"] == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P0001.nii.gz", "mine.nii.gz"]


def test_overwrite_without_a_manifest_deletes_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.nii.gz").write_bytes(b"not ours")
    (tmp_path / "datalist.json").write_text("{}")
    with pytest.raises(InputError, match="no phantom manifest"):
        generate_cohort(tmp_path, n_patients=1, overwrite=True, **FAST)
    assert (tmp_path / "images" / "x.nii.gz").read_bytes() == b"not ours"
    assert (tmp_path / "datalist.json").read_text() == "{}"


@pytest.mark.slow
def test_overwrite_of_a_dicom_cohort_keeps_foreign_files_in_its_folders(tmp_path):
    pytest.importorskip("metalung_monai.io.dicom_write")
    out = tmp_path / "c"
    generate_cohort(out, n_patients=1, seed=1, dicom=True, **FAST)
    n_slices = len(list((out / "dicom" / "P0001").glob("*.dcm")))
    (out / "dicom" / "P0001" / "my_notes.txt").write_text("mine")
    with pytest.raises(
        InputError, match="my_notes.txt"
    ):  # would be replaced with the folder: refused
        generate_cohort(out, n_patients=1, seed=2, dicom=True, overwrite=True, **FAST)
    (out / "dicom" / "P0001" / "my_notes.txt").unlink()
    (out / "dicom" / "mine").mkdir()
    (out / "dicom" / "mine" / "x.dcm").write_bytes(b"mine")
    generate_cohort(out, n_patients=1, seed=2, dicom=True, overwrite=True, **FAST)
    assert (out / "dicom" / "mine" / "x.dcm").read_bytes() == b"mine"
    assert len(list((out / "dicom" / "P0001").glob("*.dcm"))) > 0 and n_slices > 0


# ----------------------------------------------------------------------------- a real SIGKILL
@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, capsys):
    from metalung_monai.cli import main

    argv = [
        "--patients",
        "3",
        "--size",
        "128",
        "--slice-thickness",
        "5",
        "5",
        "--seed",
        "7",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    pid = sigkill_when(
        ["phantom", "--out", killed, *argv], (killed / "images" / "P0001.nii.gz").exists, timeout=60
    )
    assert not (killed / "datalist.json").exists()  # killed before the end
    # what a kill during a write leaves (the atomic writer's temporary name, the dead process's id)
    (killed / "truth").mkdir(exist_ok=True)
    (killed / "truth" / f".P0002_anatomy.partial-{pid}-0123abcd.nii.gz").write_bytes(b"half a file")
    assert main(["phantom", "--out", str(killed), *argv]) == 0
    whole = tmp_path / "whole"
    assert main(["phantom", "--out", str(whole), *argv]) == 0
    for sub in ("images", "masks", "truth", "lungs"):
        names = sorted(p.name for p in (whole / sub).iterdir())
        assert names == sorted(p.name for p in (killed / sub).iterdir()) and len(names) == 3, sub
        for n in names:
            assert np.array_equal(_arr(whole / sub / n), _arr(killed / sub / n)), (sub, n)
    assert (whole / "datalist.json").read_bytes() == (killed / "datalist.json").read_bytes()
    assert (whole / "cohort.csv").read_text().count("\n") == (
        killed / "cohort.csv"
    ).read_text().count("\n")
    assert not [p for p in killed.rglob("*") if ".partial" in p.name]
