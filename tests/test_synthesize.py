"""``metalung synthesize`` (issue 13): lesions of a bank inserted offline into the healthy slices
of a datalist. On the shared phantom cohort (a few slices per case) and a constructed bank:
integer HU, the mask exactly the inserted lesion, nothing outside its footprint changed, the
source's geometry, a datalist the training reads, the CSV of what went where, resume, seeded
reproducibility (a case's outputs independent of the others), the lung-side hook, recorded
skips, typed errors; and two real tumour-free CPTAC slices."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from lesion_factory import make_bank, save_bank
from scipy import ndimage as ndi

from metalung_monai import cli
from metalung_monai.anatomy import LEFT_LUNG
from metalung_monai.commands import synthesize as command
from metalung_monai.errors import DatalistError, InputError
from metalung_monai.synthesis import offline
from metalung_monai.synthesis.offline import (
    CSV_COLUMNS,
    InsertionChoice,
    synthesize_datalist,
)
from metalung_monai.utils.orientation import sitk_to_canonical

#: a few slices per case keep every run to seconds
FEW = {"slices_per_case": 2, "progress": False}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """12 constructed lesions, 1 mm per model pixel (8-20 mm across)."""
    return save_bank(
        make_bank(n=12, size=32, seed=0, context_mm=32.0),
        tmp_path_factory.mktemp("bank") / "bank",
    )


@pytest.fixture(scope="module")
def run(small_cohort, bank, tmp_path_factory):
    """One run: 2 insertions into each of 2 healthy slices per training case outside fold 0."""
    out = tmp_path_factory.mktemp("synth") / "out"
    summary = synthesize_datalist(small_cohort / "datalist.json", bank, out, per_case=2, **FEW)
    return out, summary


def _canon(path) -> np.ndarray:
    arr, _ = sitk_to_canonical(sitk.ReadImage(str(path)))
    return arr


def _source_entries(small_cohort) -> dict:
    dl = json.loads((small_cohort / "datalist.json").read_text())
    return {e["case_id"]: e for e in dl["training"]}


def test_outputs_are_integer_hu_on_the_source_grid_and_change_only_the_footprint(run, small_cohort):
    out, s = run
    dl = json.loads((out / "datalist.json").read_text())
    new = [e for e in dl["training"] if e.get("augmentation")]
    assert len(new) == s["inserted"] > 0
    assert (
        s["requested"] == 2 * s["slices"]
        and s["inserted"] + sum(s["skipped"].values()) == (s["requested"])
    )
    src = _source_entries(small_cohort)
    for e in new:
        img = sitk.ReadImage(str(out / e["image"]))
        msk = sitk.ReadImage(str(out / e["mask"]))
        assert img.GetPixelID() == sitk.sitkInt16 and msk.GetPixelID() == sitk.sitkUInt8
        ref = sitk.ReadImage(str(small_cohort / src[e["source_case"]]["image"]))
        z = e["slice_index"]  # the phantom is stored LPS: canonical z is the file's z
        assert img.GetSize() == (*ref.GetSize()[:2], 1)
        assert img.GetSpacing() == ref.GetSpacing() and img.GetDirection() == ref.GetDirection()
        assert np.allclose(img.GetOrigin(), ref.TransformIndexToPhysicalPoint((0, 0, z)))
        before = _canon(small_cohort / src[e["source_case"]]["image"])[z]
        lungs = _canon(small_cohort / src[e["source_case"]]["lung_mask"])[z]
        after, mask = _canon(out / e["image"])[0], _canon(out / e["mask"])[0] > 0
        p = e["augmentation"]["params"]
        # the mask is exactly the inserted lesion, inside the lungs
        assert mask.sum() == p["inserted_voxels"] > 0 and lungs[mask].all()
        # every voxel outside the footprint (mask + 2-pixel band, inside the box) is the input's
        changed = after != before
        (y0, y1), (x0, x1) = p["box"]
        band = ndi.distance_transform_edt(~mask) < 2.0
        assert changed.any() and not (changed & ~band).any()
        assert not changed[:y0].any() and not changed[y1:].any()
        assert not changed[:, :x0].any() and not changed[:, x1:].any()
        assert changed.sum() <= p["footprint_voxels"]
        assert e["lung_rads"] in ("LR2", "LR3", "LR4A", "LR4B") and e["split"] == "train"
        assert e["patient_id"] == src[e["source_case"]]["patient_id"]
        assert e["fold"] == src[e["source_case"]]["fold"] != 0  # never the validation fold
        assert _canon(out / e["lung_mask"])[0].tolist() == lungs.tolist()


def test_datalist_csv_and_picture(run, small_cohort):
    from metalung_monai.training.workflow import training_samples

    out, s = run
    dl = json.loads((out / "datalist.json").read_text())
    src = json.loads((small_cohort / "datalist.json").read_text())
    n_src = len(src["training"])
    assert dl["training"][:n_src] == [
        {k: v for k, v in e.items()}
        | {k: os.path.relpath(small_cohort / e[k], out) for k in ("image", "mask", "lung_mask")}
        for e in src["training"]
    ]
    assert len(dl["test"]) == len(src["test"])
    samples = training_samples(out / "datalist.json", val_fold=0)
    synth = [x for x in samples if "_z" in x["case_id"]]
    assert len(synth) == s["inserted"]  # every new case is a training slice with its tumour
    assert all(float(x["label"].sum()) > 0 and float(x["lung"].max()) > 0 for x in synth)
    table = pd.read_csv(out / "insertions.csv")
    assert tuple(table.columns) == CSV_COLUMNS and len(table) == s["requested"]
    ok = table[table["inserted"]]
    assert (
        len(ok) == s["inserted"] and set(ok["source"]) == {"real"} and set(ok["bank"]) == {"real"}
    )
    assert (ok["lung"].isin(["right", "left"])).all() and (
        ok["diameter_mm"].astype(float) > 0
    ).all()
    assert set(table.loc[~table["inserted"], "reason"]) <= {
        "no room",
        "lesion vanishes at the slice's pixel size",
    }
    assert (out / "synthesize.png").stat().st_size > 10_000
    assert s["excluded_patients"] and set(s["excluded_patients"].values()) >= {"test section"}


def test_resume_redoes_only_unfinished_cases(small_cohort, bank, tmp_path):
    out = tmp_path / "out"
    kw = {"slices_per_case": 1, "progress": False, "figure": False}
    first = synthesize_datalist(small_cohort / "datalist.json", bank, out, **kw)
    assert first["cases_run"] == first["cases"] > 1
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamp = {p: p.stat().st_mtime_ns for p in files}
    again = synthesize_datalist(small_cohort / "datalist.json", bank, out, **kw)
    assert again["cases_run"] == 0 and again["inserted"] == first["inserted"]
    assert all(p.stat().st_mtime_ns == stamp[p] for p in files if p.parent.name != out.name)
    # a case whose output went missing, and the leftover of a killed write, are redone / removed
    dl = json.loads((out / "datalist.json").read_text())
    victim = next(e for e in dl["training"] if e.get("augmentation"))
    kept = _canon(out / victim["image"])
    (out / victim["image"]).unlink()
    partial = out / "images" / f".{victim['case_id']}.partial-999999999-abcdef12.nii.gz"
    partial.write_bytes(b"torn")
    third = synthesize_datalist(small_cohort / "datalist.json", bank, out, **kw)
    assert third["cases_run"] == 1 and not partial.exists()
    assert np.array_equal(_canon(out / victim["image"]), kept)
    redone = {p for p in files if p.name.startswith(victim["source_case"] + "_z")}
    assert all(
        p.stat().st_mtime_ns == stamp[p]
        for p in files
        if p.parent.name in ("images", "masks") and p not in redone
    )


def test_seeded_and_independent_of_the_other_cases(run, small_cohort, bank, tmp_path):
    out, _ = run
    dl = json.loads((out / "datalist.json").read_text())
    new = [e for e in dl["training"] if e.get("augmentation")]
    one = new[-1]["source_case"]
    src = json.loads((small_cohort / "datalist.json").read_text())
    entry = next(e for e in src["training"] if e["case_id"] == one)
    alone = dict(
        src,
        training=[
            {**entry, **{k: str(small_cohort / entry[k]) for k in ("image", "mask", "lung_mask")}}
        ],
    )
    alone.pop("test")
    (tmp_path / "one.json").write_text(json.dumps(alone))
    s1 = synthesize_datalist(
        tmp_path / "one.json", bank, tmp_path / "a", per_case=2, val_fold=None, figure=False, **FEW
    )
    mine = [e for e in new if e["source_case"] == one]
    got = [
        e
        for e in json.loads((tmp_path / "a" / "datalist.json").read_text())["training"]
        if e.get("augmentation")
    ]
    assert s1["inserted"] == len(mine) == len(got) > 0
    for a, b in zip(mine, got):
        assert a["case_id"] == b["case_id"] and a["augmentation"] == b["augmentation"]
        assert np.array_equal(_canon(out / a["image"]), _canon(tmp_path / "a" / b["image"]))
    other = synthesize_datalist(
        tmp_path / "one.json",
        bank,
        tmp_path / "b",
        per_case=2,
        seed=1,
        val_fold=None,
        figure=False,
        **FEW,
    )
    rows = pd.read_csv(tmp_path / "b" / "insertions.csv", keep_default_na=False)
    rows0 = pd.read_csv(tmp_path / "a" / "insertions.csv", keep_default_na=False)
    assert other["requested"] == s1["requested"] and not rows["seed"].equals(rows0["seed"])


class LeftLungOnly:
    """A chooser as a balancing rule would be: lesion 0, scale 1, always the left lung."""

    config = {"rule": "left-only"}

    def __call__(self, sl, k, rng):
        assert sl.lung_mm2[0] >= 0 and sl.lung_mm2[1] >= 0 and len(sl.spacing) == 2
        return InsertionChoice(index=0, scale=1.0, side=LEFT_LUNG)


def test_a_chooser_restricts_the_lung_and_no_room_is_a_recorded_skip(small_cohort, bank, tmp_path):
    s = synthesize_datalist(
        small_cohort / "datalist.json",
        bank,
        tmp_path / "left",
        choose=LeftLungOnly(),
        figure=False,
        **FEW,
    )
    table = pd.read_csv(tmp_path / "left" / "insertions.csv", keep_default_na=False)
    ok = table[table["inserted"]]
    assert len(ok) == s["inserted"] > 0 and set(ok["lung"]) == {"left"}
    assert ok["lesion_id"].nunique() == 1
    # scale 8: no room anywhere, every insertion a recorded skip, no image written
    big = synthesize_datalist(
        small_cohort / "datalist.json",
        bank,
        tmp_path / "big",
        scale_range=(8.0, 8.0),
        figure=False,
        **FEW,
    )
    assert (
        big["inserted"] == 0
        and big["skipped"] == {"no room": big["requested"]}
        and big["requested"] > 0
    )
    assert not list((tmp_path / "big" / "images").iterdir())
    rec = json.loads(next((tmp_path / "big" / "records").glob("*.json")).read_text())
    assert rec["rows"] and all(r["reason"] == "no room" for r in rec["rows"])


def test_lungs_are_computed_when_the_datalist_has_none(small_cohort, bank, tmp_path):
    src = json.loads((small_cohort / "datalist.json").read_text())
    entry = next(e for e in src["training"] if e["fold"] != 0)
    e = {k: v for k, v in entry.items() if k not in ("lung_mask", "shape")}
    for key in ("image", "mask"):  # 24 slices of the middle of the chest: a quick lung mask
        img = sitk.ReadImage(str(small_cohort / entry[key]))
        mid = img.GetSize()[2] // 2
        sitk.WriteImage(img[:, :, mid - 12 : mid + 12], str(tmp_path / f"{key}.nii.gz"))
        e[key] = str(tmp_path / f"{key}.nii.gz")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [e]}))
    s = synthesize_datalist(
        tmp_path / "dl.json",
        bank,
        tmp_path / "o",
        slices_per_case=1,
        val_fold=None,
        progress=False,
        figure=False,
    )
    rec = json.loads((tmp_path / "o" / "records" / f"{entry['case_id']}.json").read_text())
    assert rec["lung_source"] == "computed" and rec["counts"]["used"] == 1 and s["requested"] == 1


def test_typed_errors_name_the_file_or_option(small_cohort, bank, tmp_path):
    dl = small_cohort / "datalist.json"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatalistError, match="bad.json"):
        synthesize_datalist(bad, bank, tmp_path / "o", progress=False)
    with pytest.raises(InputError, match="not a lesion folder"):
        synthesize_datalist(dl, tmp_path, tmp_path / "o", progress=False)
    held = make_bank(n=6, size=32, seed=0, context_mm=32.0, hold_fraction=1.0)  # all 'hold'
    with pytest.raises(InputError, match="no 2D lesions"):
        synthesize_datalist(dl, save_bank(held, tmp_path / "held"), tmp_path / "o", progress=False)
    with pytest.raises(InputError, match="--out"):  # contains the datalist
        synthesize_datalist(dl, bank, small_cohort, progress=False)
    with pytest.raises(InputError, match="--out"):
        synthesize_datalist(dl, bank, os.path.join(bank, "x"), progress=False)
    for kw, opt in (
        ({"per_case": 0}, "--per-case"),
        ({"per_case": offline.MAX_PER_CASE + 1}, "--per-case"),
        ({"scale_range": (2.0, 1.0)}, "--scale"),
        ({"healthy": "all"}, "--slices"),
        ({"val_fold": 7}, "--val-fold"),
        ({"gap_mm": float("nan")}, "--gap-mm"),
    ):
        with pytest.raises(InputError, match=opt):
            synthesize_datalist(dl, bank, tmp_path / "o", progress=False, **kw)
    assert not (tmp_path / "o").exists()  # refused before anything was written
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "datalist.json").write_text("{}")
    with pytest.raises(InputError, match="did not write"):
        synthesize_datalist(dl, bank, foreign, progress=False)
    # a folder of other settings is refused, then replaced with --overwrite
    out = tmp_path / "runs"
    kw = {"slices_per_case": 1, "progress": False, "figure": False}
    synthesize_datalist(dl, bank, out, **kw)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="other settings"):
        synthesize_datalist(dl, bank, out, seed=3, **kw)
    s = synthesize_datalist(dl, bank, out, seed=3, overwrite=True, **kw)
    assert s["cases_run"] == s["cases"] and (out / "notes.txt").read_text() == "mine"


def test_command_line(small_cohort, bank, tmp_path, capsys):
    assert command.HEALTHY_MODES == offline.HEALTHY_MODES
    assert command.MAX_PER_CASE == offline.MAX_PER_CASE
    argv = ["synthesize", "--healthy", str(small_cohort / "datalist.json"), "--lesions", bank]
    rc = cli.main(
        [
            *argv,
            "--out",
            str(tmp_path / "o"),
            "--slices-per-case",
            "1",
            "--no-progress",
            "--no-figure",
        ]
    )
    line = capsys.readouterr().out
    assert rc == 0 and line.startswith("metalung synthesize: ") and "insertions" in line
    rc = cli.main([*argv, "--out", str(small_cohort), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("metalung synthesize: error: --out") and "\n" not in err


def test_real_tumour_free_cptac_slices(real_data, bank, tmp_path):
    """Two slices of the real CPTAC chest series (512 x 512, 0.564 mm, no lung labels)."""
    from metalung_monai.io.convert import convert

    series = real_data / "cptac_chest_series"
    if not series.is_dir():
        pytest.skip(f"{series} not found")
    dl = convert([series / "000050.dcm", series / "000060.dcm"], tmp_path / "cptac")
    with pytest.raises(InputError, match="--val-fold -1"):  # one patient: fold 0
        synthesize_datalist(dl, bank, tmp_path / "o", progress=False)
    s = synthesize_datalist(
        dl, bank, tmp_path / "o", val_fold=None, healthy="patients", per_case=2, progress=False
    )
    assert s["slices"] == 2 and s["requested"] == 4 and s["inserted"] >= 3
    new = [
        e
        for e in json.loads((tmp_path / "o" / "datalist.json").read_text())["training"]
        if e.get("augmentation")
    ]
    for e in new:
        img = sitk.ReadImage(str(tmp_path / "o" / e["image"]))
        ref = sitk.ReadImage(str(tmp_path / "cptac" / "images" / f"{e['source_case']}.nii.gz"))
        assert img.GetPixelID() == sitk.sitkInt16 and img.GetSize() == ref.GetSize() == (512, 512)
        assert img.GetSpacing() == ref.GetSpacing() and img.GetOrigin() == ref.GetOrigin()
        a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref)
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / e["mask"]))) > 0
        near = ndi.binary_dilation(m, iterations=2)
        assert np.array_equal(a[~near], b[~near]) and (a[m] != b[m]).any()
    rec = json.loads(next((tmp_path / "o" / "records").glob("*.json")).read_text())
    assert rec["lung_source"] == "computed"
