"""Phantom cohorts: layout, datalist and split, workers, resume, parameter mismatch, CLI, DICOM."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from metalung_monai.errors import InputError
from metalung_monai.io.datalist import datalist_entries, load_datalist
from metalung_monai.phantom.cohort import MANIFEST_NAME, cohort_classes, generate_cohort

SMALL = {"size": 128, "slice_thickness": 5.0, "progress": False}


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort13")
    path = generate_cohort(out, n_patients=13, seed=1, n_test_per_class=2, **SMALL)
    return out, path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort4")
    generate_cohort(out, n_patients=4, seed=2, figure=False, **SMALL)
    return out


def test_cohort_composition():
    c40 = cohort_classes(40, seed=0)
    assert {k: c40.count(k) for k in set(c40)} == {
        "LR1": 4,
        "LR2": 9,
        "LR3": 9,
        "LR4A": 9,
        "LR4B": 9,
    }
    assert cohort_classes(40, seed=0) == c40 and cohort_classes(40, seed=1) != c40
    c20 = cohort_classes(20, seed=0)
    assert c20.count("LR1") == 2 and sorted(set(c20)) == ["LR1", "LR2", "LR3", "LR4A", "LR4B"]
    with pytest.raises(InputError):
        cohort_classes(0)


@pytest.mark.slow
def test_layout_and_datalist(cohort):
    out, path = cohort
    assert path == out / "datalist.json"
    dl = load_datalist(path)
    train, test = dl["training"], dl["test"]
    assert len(train) + len(test) == 13
    train_ids = {e["patient_id"] for e in train}
    test_ids = {e["patient_id"] for e in test}
    assert not train_ids & test_ids
    # patient-level hold-out: 2 per class LR2..LR4B (3 patients each here), healthy stay in training
    per_class = {
        c: sum(e["lung_rads"] == c for e in test) for c in ("LR1", "LR2", "LR3", "LR4A", "LR4B")
    }
    assert per_class == {"LR1": 0, "LR2": 2, "LR3": 2, "LR4A": 2, "LR4B": 2}
    assert all(0 <= e["fold"] < 5 for e in train) and all(e["fold"] is None for e in test)
    for e in datalist_entries(path, ("training", "test")):
        img, mask = _arr(e["image"]), _arr(e["mask"])
        assert img.dtype == np.int16 and mask.dtype == np.uint8
        assert list(img.shape) == e["shape"]
        sp = sitk.ReadImage(e["image"]).GetSpacing()
        assert list(sp[::-1]) == pytest.approx(e["spacing"])
        assert (mask.max() == 0) == (e["lung_rads"] == "LR1")
        assert e["manufacturer"]
        truth = out / "truth" / f"{e['patient_id']}_anatomy.nii.gz"
        assert truth.is_file()
    assert not list(out.rglob("*.partial*"))


@pytest.mark.slow
def test_threshold_lung_masks_match_truth(cohort):
    """The HU-threshold lung masks written with the cohort agree with the phantom's anatomy."""
    out, path = cohort
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for e in datalist_entries(path, ("training", "test")):
        lungs = _arr(e["lung_mask"])
        truth = _arr(out / "truth" / f"{e['patient_id']}_anatomy.nii.gz")
        assert set(np.unique(lungs)) <= {0, 1, 2} and (lungs == 1).any() and (lungs == 2).any()
        true_lung = np.isin(truth, (1, 2, 5))
        dice = 2 * (true_lung & (lungs > 0)).sum() / (true_lung.sum() + (lungs > 0).sum())
        assert dice > 0.95, e["patient_id"]
        assert not ((lungs > 0) & (truth == 12)).any(), "stomach gas labelled lung"
        assert not ((lungs > 0) & (truth == 0)).any(), "outside air labelled lung"
        # right lung (label 1) at smaller canonical x than the left lung (label 2): LPS, x to the left
        xs = np.nonzero(lungs)[2]
        assert np.median(xs[lungs[lungs > 0] == 1]) < np.median(xs[lungs[lungs > 0] == 2])
        mask = _arr(e["mask"]) > 0
        if mask.any():
            # at 2.8 mm pixels a juxtapleural tumour's outline voxels are partial volume with the
            # chest wall: its interior must be inside the lung mask, its outline mostly
            in_plane = np.zeros((3, 3, 3), bool)
            in_plane[1] = True
            interior = ndimage.binary_erosion(mask, structure=in_plane)
            assert (lungs[interior] > 0).all(), e["patient_id"]
            assert ((lungs > 0) & mask).sum() >= 0.9 * mask.sum(), e["patient_id"]
        check = manifest["patients"][e["patient_id"]]["summary"]["lung_mask_check"]
        assert check["dice"] == pytest.approx(dice, abs=1e-3)


@pytest.mark.slow
def test_cohort_csv_and_overview(cohort):
    out, _ = cohort
    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert len(rows) == 13
    dl = json.loads((out / "datalist.json").read_text())
    cls = {e["patient_id"]: e["lung_rads"] for s in ("training", "test") for e in dl[s]}
    for r in rows:
        assert r["lung_rads"] == cls[r["patient_id"]]
        n = int(r["n_tumours"])
        assert (n == 0) == (r["lung_rads"] == "LR1")
        assert len([d for d in r["diameters_mm"].split(";") if d]) == n
        assert r["manufacturer"] and float(r["noise_sigma_hu"]) >= 8
        assert int(r["n_tumour_slices"]) >= (1 if n else 0)
    png = out / "overview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    im = mpimg.imread(png)
    assert im.shape[0] > 800 and im.shape[1] > 800 and im[..., :3].std() > 0.1


@pytest.mark.slow
def test_workers_give_identical_files(small, tmp_path):
    generate_cohort(tmp_path, n_patients=4, seed=2, workers=2, figure=False, **SMALL)
    for sub in ("images", "masks", "truth"):
        names = sorted(p.name for p in (small / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / sub).iterdir()) and len(names) == 4
        for n in names:
            assert np.array_equal(_arr(small / sub / n), _arr(tmp_path / sub / n))
    assert json.loads((small / "datalist.json").read_text()) == json.loads(
        (tmp_path / "datalist.json").read_text()
    )


@pytest.mark.slow
def test_resume_regenerates_only_missing(small, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(small, out)
    before = _arr(out / "images" / "P0002.nii.gz")
    (out / "images" / "P0002.nii.gz").unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    generate_cohort(out, n_patients=4, seed=2, figure=False, **SMALL)
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert man["last_run"]["generated"] == ["P0002"]
    assert np.array_equal(_arr(out / "images" / "P0002.nii.gz"), before)
    for p, t in mtimes.items():
        assert p.stat().st_mtime_ns == t
    dl = load_datalist(out / "datalist.json")
    ids = [e["patient_id"] for s in ("training", "test") for e in dl.get(s, [])]
    assert sorted(ids) == ["P0001", "P0002", "P0003", "P0004"]
    # a complete cohort: nothing to do
    generate_cohort(out, n_patients=4, seed=2, figure=False, **SMALL)
    assert json.loads((out / MANIFEST_NAME).read_text())["last_run"]["generated"] == []


@pytest.mark.slow
def test_mismatching_parameters_refused(small, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(small, out)
    with pytest.raises(InputError, match="other parameters"):
        generate_cohort(out, n_patients=4, seed=3, figure=False, **SMALL)
    with pytest.raises(InputError, match="overwrite"):
        generate_cohort(out, n_patients=5, seed=2, figure=False, **SMALL)
    generate_cohort(out, n_patients=3, seed=3, figure=False, overwrite=True, **SMALL)
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert man["params"]["seed"] == 3 and sorted(man["patients"]) == ["P0001", "P0002", "P0003"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"P000{i}.nii.gz" for i in (1, 2, 3)
    ]


def test_foreign_folder_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.nii.gz").write_bytes(b"not ours")
    with pytest.raises(InputError, match="no phantom manifest"):
        generate_cohort(tmp_path, n_patients=2, figure=False, **SMALL)
    assert (tmp_path / "images" / "x.nii.gz").read_bytes() == b"not ours"


@pytest.mark.slow
def test_cli(tmp_path, capsys):
    from metalung_monai.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "phantom",
            "--out",
            str(out),
            "--patients",
            "4",
            "--size",
            "128",
            "--slice-thickness",
            "5",
            "5",
            "--seed",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 patients" in text and "tumour slices" in text and "LR2" in text
    assert (out / "overview.png").is_file() and (out / "cohort.csv").is_file()
    rc = main(
        [
            "phantom",
            "--out",
            str(out),
            "--patients",
            "4",
            "--size",
            "128",
            "--slice-thickness",
            "0.5",
            "5",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert (
        rc == 1
        and "error" in err
        and "--slice-thickness" in err
        and len(err.strip().splitlines()) == 1
    )


@pytest.mark.slow
def test_dicom_round_trip(tmp_path):
    read_ct = pytest.importorskip("metalung_monai.io.readers").read_ct
    pytest.importorskip("metalung_monai.io.dicom_write")
    generate_cohort(tmp_path, n_patients=2, seed=4, dicom=True, figure=False, **SMALL)
    man = json.loads((tmp_path / MANIFEST_NAME).read_text())
    for pid, entry in man["patients"].items():
        folder = tmp_path / "dicom" / pid
        assert len(list(folder.glob("*.dcm"))) == entry["summary"]["shape"][0]
        ct = read_ct(folder)
        nii = sitk.ReadImage(str(tmp_path / "images" / f"{pid}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(ct.image), sitk.GetArrayFromImage(nii))
        assert ct.image.GetSpacing() == pytest.approx(nii.GetSpacing(), abs=1e-4)
        assert ct.image.GetOrigin() == pytest.approx(nii.GetOrigin(), abs=1e-3)
        assert ct.image.GetDirection() == pytest.approx(nii.GetDirection(), abs=1e-6)
        sc = entry["summary"]["scanner"]
        assert ct.meta["manufacturer"] == sc["manufacturer"]
        assert float(ct.meta["rescale_intercept"]) == sc["rescale_intercept"]
        assert (
            ct.meta["padding_mapped"] > 0
        )  # the circular field of view was padded and mapped back
    assert os.path.isfile(tmp_path / "datalist.json")
