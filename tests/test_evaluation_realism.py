"""The lesion realism report (issue 12) on constructed cases whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lesion_factory import lesion_patches, make_bank, save_bank

from metalung_monai import cli
from metalung_monai.errors import InputError
from metalung_monai.evaluation import realism as R

CLS = ("LR4A",)  # one class: a +100 HU shift is then a clean, known difference


def _set(name, image, mask, groups=None, raw=None):
    n = len(image)
    groups = np.array([f"{name}{i}" for i in range(n)]) if groups is None else np.asarray(groups)
    return R.LesionSet(name, image, mask, groups, np.array(["LR4A"] * n), raw)


def test_features_of_known_shapes():
    yy, xx = np.mgrid[:48, :48]
    d = np.hypot(yy - 24, xx - 24)
    disc = (d <= 10).astype(np.uint8)
    sharp = np.where(disc > 0, 40, -850).astype(np.int16)
    soft = np.rint(-850 + 890 * np.clip((13 - d) / 6, 0, 1)).astype(np.int16)
    f = R.lesion_features(np.stack([sharp, soft]), np.stack([disc, disc]))
    assert list(f.columns) == list(R.FEATURES)
    assert f.loc[0, "hu_mean"] == 40 and f.loc[0, "hu_sd"] == 0
    assert f.loc[0, "area_px"] == disc.sum() == pytest.approx(np.pi * 100, rel=0.05)
    assert f.loc[0, "diameter_px"] == pytest.approx(20, abs=1.5)
    assert f.loc[0, "solidity"] > 0.9 and f.loc[0, "eccentricity"] < 0.2
    assert f.loc[0, "glcm_contrast"] == 0 and f.loc[0, "glcm_homogeneity"] == 1
    assert f.loc[0, "boundary_gradient"] > 2 * f.loc[1, "boundary_gradient"]
    empty = R.lesion_features(sharp[None], np.zeros((1, 48, 48), np.uint8))
    assert empty.isna().all(axis=None)


def test_gate_flags_fractional_shifted_and_oversized_lesions():
    img, msk, _ = lesion_patches(40, seed=1, classes=CLS)
    train = _set("t", img, msk)
    ft = R.lesion_features(img, msk)
    gen_img = img[:4].astype(np.float32).copy()
    gen_msk = msk[:4].copy()
    gen_img[1] += 0.4  # fractional HU
    gen_img[2][gen_msk[2] > 0] += 600  # far outside mean +- 3 SD
    gen_msk[3] = 1  # the whole patch: larger than any real lesion
    gen = _set("g", gen_img, gen_msk)
    table, limits = R.gate(gen, R.lesion_features(gen_img, gen_msk), train, ft)
    assert table["passed"].tolist() == [True, False, False, False]
    assert table["integer_hu"].tolist() == [True, False, True, True]
    assert not table.loc[2, "median_in_range"] and not table.loc[3, "area_in_range"]
    assert limits["median_hu_low"] < 0 < limits["median_hu_high"]


def test_hu_distances_mmd_and_smd_on_known_differences():
    rng = np.random.default_rng(0)
    a = [rng.normal(0, 50, 100) for _ in range(40)]
    b = [rng.normal(0, 50, 100) for _ in range(40)]
    c = [rng.normal(100, 50, 100) for _ in range(40)]
    same, shifted = R.hu_distances(a, b, 50), R.hu_distances(a, c, 50)
    assert same["w1"] < 10 and shifted["w1"] == pytest.approx(100, abs=10)
    assert shifted["w1_low"] <= shifted["w1"] <= shifted["w1_high"]
    assert shifted["ks"] > 0.6 > 0.1 > same["ks"]
    x, y, z = rng.normal(0, 1, (60, 4)), rng.normal(0, 1, (60, 4)), rng.normal(1, 1, (60, 4))
    assert R.mmd_permutation_test(x, y, 100)["p_value"] > 0.05
    assert R.mmd_permutation_test(x, z, 100)["p_value"] < 0.02
    smd = R.standardised_mean_difference(pd.DataFrame(z), pd.DataFrame(x))
    assert (smd > 0.3).all() and 0.7 < smd.mean() < 1.3


def test_precision_recall_and_memorisation():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 1, (80, 3)), rng.normal(0, 1, (80, 3))
    pr = R.precision_recall(real, fake)
    assert pr["precision"] > 0.8 and pr["recall"] > 0.8
    collapsed = np.repeat(fake[:1], 80, axis=0) + rng.normal(0, 0.01, (80, 3))
    assert R.precision_recall(real, collapsed)["recall"] < 0.3
    train, hold = rng.normal(0, 1, (100, 3)), rng.normal(0, 1, (40, 3))
    patients = np.repeat(np.arange(20), 5)
    for groups in (None, patients):
        honest = R.memorisation(rng.normal(0, 1, (100, 3)), train, hold, train_groups=groups)
        copies = R.memorisation(train[:60] + 1e-6, train, hold, train_groups=groups)
        assert not honest["flagged"] and copies["flagged"]
        assert copies["n_closer_than_all_hold"] == 60 and copies["frac_below_q"] == 1.0
    assert honest["n_reference"] == 140  # R_hold + every R_train lesion, patient left out


def test_group_folds_keep_patients_whole():
    groups = np.array(["p1"] * 5 + ["p2"] * 3 + ["p3"] * 4 + ["p4"] * 2 + ["p5"])
    fold = R._group_folds(groups, 3, np.random.default_rng(0))
    for g in set(groups):
        assert len(set(fold[groups == g])) == 1
    assert set(fold) == {0, 1, 2}


@pytest.mark.slow
def test_c2st_identical_about_half_and_shift_detected():
    img, msk, _ = lesion_patches(60, seed=2, classes=CLS)
    pat = np.array([f"p{i % 12}" for i in range(60)])
    real = _set("r", img, msk, pat)
    same = _set("g", *lesion_patches(60, seed=3, classes=CLS)[:2])
    shifted = _set("g", *lesion_patches(60, seed=3, classes=CLS, hu_shift=100)[:2])
    r0 = R.c2st(real, same, folds=4, size=16, seed=0, repeats=1)
    r1 = R.c2st(real, shifted, folds=4, size=16, seed=0, repeats=1)
    assert r0["grouped"] and r0["folds"] == 4 and r0["n_per_set"] == 60
    assert 0.3 < r0["auc"] < 0.7 and r0["auc_low"] < 0.5 < r0["auc_high"]
    assert r1["auc"] > 0.8 and r1["auc_low"] > 0.6


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    real = make_bank(n=120, seed=1, n_patients=12, hold_fraction=0.5, classes=CLS)
    save_bank(real, root / "real")
    img, msk, lab = lesion_patches(60, seed=7, classes=CLS)
    save_bank(make_bank(images=img, masks=msk, labels=lab, source="generated"), root / "same")
    img, msk, lab = lesion_patches(60, seed=7, classes=CLS, hu_shift=100)
    raw = (img + 0.37).astype(np.float32)  # what the generator gave before rounding
    save_bank(
        make_bank(
            images=img, masks=msk, labels=lab, source="generated", extra_arrays={R.RAW_ARRAY: raw}
        ),
        root / "shift100",
    )
    img, msk, lab = lesion_patches(60, seed=7, classes=CLS, hu_shift=500)
    save_bank(make_bank(images=img, masks=msk, labels=lab, source="generated"), root / "shift500")
    train = real.select("2d", subset="train")
    t_img, t_msk, _ = train.patches("2d")
    save_bank(
        make_bank(
            images=t_img, masks=t_msk, labels=list(train.table["lung_rads"]), source="generated"
        ),
        root / "copies",
    )
    return root


FAST = {"n_boot": 30, "n_perm": 30, "c2st_folds": 4}


@pytest.mark.slow
def test_cli_report_identical_sets(banks, capsys):
    out = banks / "out_same"
    rc = cli.main(
        ["lesion-realism", str(banks / "real"), str(banks / "same"), "--out", str(out)]
        + ["--bootstrap", "30", "--permutations", "30", "--c2st-folds", "4"]
    )
    assert rc == 0
    assert "gate pass" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {
        "realism.md",
        "realism.json",
        "realism_summary.csv",
        "gate.csv",
        "features.csv",
    } <= names
    assert {f"{k}.png" for k in ("hu_lesion", "hu_context", "features_smd", "c2st_roc")} <= names
    assert {"nn_distances.png", "patches.png"} <= names
    assert not [n for n in names if ".partial" in n]
    r = json.loads((out / "realism.json").read_text())
    assert r["gate"]["pass_rate"] > 0.9
    c = r["c2st"]["G_vs_hold"]
    assert 0.3 < c["auc"] < 0.7 and c["grouped"]
    w = r["hu"]["lesion"]
    assert w["G_vs_hold"]["w1"] <= w["train_vs_hold"]["w1_high"] + 5
    assert r["goals"]["no_memorisation"] is not False
    md = (out / "realism.md").read_text()
    assert "R_train vs R_hold" in md and "C2ST AUC" in md


@pytest.mark.slow
def test_report_detects_shift_and_mapping(banks):
    r = R.realism_report(banks / "real", banks / "shift100", banks / "out_shift100", **FAST)
    w = r["hu"]["lesion"]
    assert w["G_vs_hold"]["w1"] > 70 and w["G_vs_hold"]["w1_low"] > w["train_vs_hold"]["w1_high"]
    c = r["c2st"]
    assert c["G_vs_hold"]["auc"] > 0.75 and c["G_vs_hold"]["auc"] > c["train_vs_hold"]["auc"] + 0.15
    assert r["features_smd"]["smd_G_vs_hold"]["hu_mean"] > 1.0
    # the raw (fractional) values are reported before mapping: never integer
    assert r["gate"]["integer_rate_before_mapping"] == 0.0
    assert "G_raw_vs_hold" in w
    cheap = {**FAST, "c2st_repeats": 1, "c2st_min_steps": 20}  # only the gate is checked here
    big = R.realism_report(banks / "real", banks / "shift500", banks / "out_shift500", **cheap)
    assert big["gate"]["pass_rate"] == 0.0 and not big["goals"]["gate_pass_100"]
    assert big["gate"]["fail_counts"]["median_in_range"] == 60


@pytest.mark.slow
def test_report_flags_copies_of_training_lesions(banks):
    r = R.realism_report(
        banks / "real",
        banks / "copies",
        banks / "out_copies",
        **{**FAST, "c2st_min_steps": 20, "c2st_repeats": 1},
    )
    for space in ("features", "pixels"):
        m = r["memorisation"][space]
        assert m["flagged"] and m["frac_below_q"] == 1.0 and m["median_d_gen"] == 0.0
    assert not r["goals"]["no_memorisation"]


def test_load_sets_errors(tmp_path):
    real = make_bank(n=20, seed=1, n_patients=5)
    save_bank(real, tmp_path / "real")
    only_train = make_bank(n=20, seed=1, n_patients=5, hold_fraction=0.0)
    save_bank(only_train, tmp_path / "nohold")
    img, msk, lab = lesion_patches(8, size=24, seed=2)
    save_bank(make_bank(images=img, masks=msk, labels=lab, source="generated"), tmp_path / "g24")
    with pytest.raises(InputError, match="subset 'hold'"):
        R.load_sets(tmp_path / "nohold", tmp_path / "g24")
    save_bank(
        make_bank(images=img[:3], masks=msk[:3], labels=lab[:3], source="generated"),
        tmp_path / "g3",
    )
    with pytest.raises(InputError, match="3 G lesions: the report needs at least 8"):
        R.load_sets(tmp_path / "real", tmp_path / "g3")
    with pytest.raises(InputError, match="model size"):
        R.load_sets(tmp_path / "real", tmp_path / "g24")
    with pytest.raises(InputError, match="no such folder"):
        R.load_sets(tmp_path / "real", tmp_path / "missing")
    assert (
        cli.main(
            [
                "lesion-realism",
                str(tmp_path / "real"),
                str(tmp_path / "g24"),
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
