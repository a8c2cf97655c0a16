"""Offline expansion (`metalung augment`): files, datalist, records, resume, workers, heatmap."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from metalung_monai.cli import main
from metalung_monai.errors import DatalistError, InputError
from metalung_monai.io.datalist import datalist_entries, load_datalist
from metalung_monai.transforms.metalung.offline import expand_datalist
from metalung_monai.transforms.metalung.offline_case import tumor_heat

OPS = "mirror,relocate,rotate_image,rotate_tumor,noise_image,noise_tumor"


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return small_cohort / "datalist.json"


@pytest.fixture(scope="module")
def expanded(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("aug")
    return expand_datalist(cohort, out, seed=1, progress=False), out


@pytest.mark.slow
def test_expansion_writes_variants_with_records(cohort, expanded):
    path, out = expanded
    src = load_datalist(cohort)
    dl = load_datalist(path)
    originals = [e for e in dl["training"] if not e.get("augmentation")]
    variants = [e for e in dl["training"] if e.get("augmentation")]
    assert len(originals) == len(src["training"])
    assert dl["test"] == [
        dict(
            e,
            image=os.path.relpath(e["image"], out),
            mask=os.path.relpath(e["mask"], out),
            lung_mask=os.path.relpath(e["lung_mask"], out),
        )
        for e in datalist_entries(cohort, "test")
    ]
    tumour_cases = [e for e in src["training"] if e["lung_rads"] != "LR1"]
    # every tumour case gives at least 5 new cases (6 when relocation finds room)
    per_case = {}
    for v in variants:
        per_case.setdefault(v["source_case"], []).append(v["augmentation"]["op"])
    for e in tumour_cases:
        assert len(per_case[e["case_id"]]) >= 5, per_case[e["case_id"]]
    # healthy cases: only the operations that need no tumour
    for e in src["training"]:
        if e["lung_rads"] == "LR1":
            assert sorted(per_case[e["case_id"]]) == ["mirror", "noise_image", "rotate_image"]
    for v in variants:
        assert v["split"] == "train" and v["patient_id"]
        assert v["augmentation"]["params"]["applied"] is True
    entries = {e["case_id"]: e for e in datalist_entries(path, "training")}
    for v in variants[:12]:
        e = entries[v["case_id"]]
        src_e = entries[v["source_case"]]
        img, mask, orig = _arr(e["image"]), _arr(e["mask"]), _arr(src_e["image"])
        ref = sitk.ReadImage(src_e["image"])
        new = sitk.ReadImage(e["image"])
        assert new.GetSpacing() == ref.GetSpacing() and new.GetDirection() == ref.GetDirection()
        assert img.dtype == np.int16 and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        op = v["augmentation"]["op"]
        if op in ("mirror", "relocate", "rotate_tumor"):
            assert np.isin(img, orig).all(), op  # HU values kept
        if op == "rotate_image":
            assert set(np.unique(img)) <= set(np.unique(orig)) | {-1024}
        if op in ("mirror", "relocate"):
            src_mask = _arr(src_e["mask"]) > 0
            assert np.array_equal(np.sort(img[mask > 0]), np.sort(orig[src_mask]))
        if op.startswith("noise"):
            diff = img.astype(int) - orig
            assert diff.min() >= 0 and diff.max() <= 20
            if op == "noise_tumor":
                assert (diff[_arr(src_e["mask"]) == 0] == 0).all()
    assert (out / "heatmap.png").stat().st_size > 10_000
    assert not list(out.rglob("*.partial*"))


@pytest.mark.slow
def test_relocation_and_mirror_balance_the_lungs(expanded):
    _, out = expanded
    recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    r_in = sum(r["lungs"]["in"][0] for r in recs)
    l_in = sum(r["lungs"]["in"][1] for r in recs)
    r_out = sum(r["lungs"]["out"][0] for r in recs)
    l_out = sum(r["lungs"]["out"][1] for r in recs)
    share_in = r_in / (r_in + l_in)
    share_out = r_out / (r_out + l_out)
    assert abs(share_out - 0.5) <= abs(share_in - 0.5)


@pytest.mark.slow
def test_resume_after_a_kill_redoes_only_the_unfinished_case(cohort, expanded, tmp_path):
    path, out = expanded
    before = load_datalist(path)
    victim = sorted((out / "records").glob("*.json"))[0]
    cid = victim.stem
    stamps = {
        p: p.stat().st_mtime_ns
        for p in (out / "images").glob("*.nii.gz")
        if not p.name.startswith(cid + "__")
    }
    victim.unlink()  # as if killed before the case's record was written
    (out / "images" / f"{cid}__noise_image_0.nii.gz").unlink()
    (out / "images" / f".{cid}__mirror_0.partial-1-deadbeef.nii.gz").write_bytes(
        b"half"
    )  # a killed write
    again = expand_datalist(cohort, out, seed=1, progress=False)
    after = load_datalist(again)
    assert after == before  # same entries, no duplicates
    assert (out / "images" / f"{cid}__noise_image_0.nii.gz").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished cases untouched
    assert len({e["case_id"] for e in after["training"]}) == len(after["training"])


@pytest.mark.slow
def test_workers_and_seed(cohort, expanded, tmp_path):
    path, out = expanded
    path2 = expand_datalist(cohort, tmp_path / "w2", seed=1, workers=2, progress=False)
    a = {e["case_id"]: e for e in datalist_entries(path, "training")}
    b = {e["case_id"]: e for e in datalist_entries(path2, "training")}
    assert a.keys() == b.keys()
    for cid in list(a)[:8]:
        assert np.array_equal(_arr(a[cid]["image"]), _arr(b[cid]["image"]))
    with pytest.raises(DatalistError, match="other settings"):
        expand_datalist(cohort, out, seed=2, progress=False)
    with pytest.raises(InputError, match="unknown operation"):
        expand_datalist(cohort, tmp_path / "x", ops=["mirror", "blur"], progress=False)


@pytest.mark.slow
def test_cli(cohort, tmp_path, capsys):
    rc = main(
        [
            "augment",
            str(cohort),
            "--out",
            str(tmp_path / "cli"),
            "--ops",
            "mirror,noise_tumor",
            "--copies",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    line = capsys.readouterr().out
    assert "training cases ->" in line and "variants" in line
    dl = load_datalist(tmp_path / "cli" / "datalist.json")
    ops = [e["augmentation"]["op"] for e in dl["training"] if e.get("augmentation")]
    assert ops.count("mirror") == sum(1 for e in dl["training"] if not e.get("augmentation"))
    rc = main(["augment", str(tmp_path / "missing.json"), "--out", str(tmp_path / "y")])
    assert rc == 1
    assert "datalist file does not exist" in capsys.readouterr().err


def test_tumor_heat_counts_each_side():
    m = np.zeros((4, 10, 20), np.uint8)
    m[1:3, 2:4, 2:5] = 1  # patient right (small x)
    m[2, 5, 15] = 1  # patient left
    heat, right, left = tumor_heat(m, grid=10)
    assert (right, left) == (12, 1) and heat.sum() == 13
