"""Paired statistics of arm-vs-arm comparisons (metalung_monai.evaluation.paired) and their use in
the experiment's results.md (metalung_monai.training.results)."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metalung_monai.errors import InputError
from metalung_monai.evaluation import PairedComparison, paired_arm_table, paired_comparison
from metalung_monai.evaluation.paired import BETTER, WORSE
from metalung_monai.training import results as results_mod
from metalung_monai.training.experiment_folder import run_rel


def _cohort(n_patients=8, slices=4, seed=0):
    """Per-slice DICE of arm A for ``n_patients`` x ``slices`` and the patient id of each slice."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.1, 0.7, n_patients * slices)
    groups = np.repeat([f"P{i:02d}" for i in range(n_patients)], slices)
    return a, groups


def test_identical_arms_show_no_difference():
    a, g = _cohort()
    r = paired_comparison(a, a.copy(), groups=g)
    assert isinstance(r, PairedComparison)
    assert r.ci_low <= 0.0 <= r.ci_high and r.mean_diff == 0.0
    assert r.verdict == "no difference shown"
    assert math.isnan(r.p_value) and "every patient difference is 0" in r.note
    assert (r.n_patients, r.n_cases, r.n_dropped) == (8, 32, 0)


def test_noise_without_gain_shows_no_difference():
    a, g = _cohort(n_patients=30)
    b = a + np.random.default_rng(5).normal(0.0, 0.05, a.size)
    b -= (b - a).mean()  # zero mean difference exactly
    r = paired_comparison(a, b, groups=g)
    assert r.ci_low < 0.0 < r.ci_high and r.verdict == "no difference shown"
    assert 0.0 < r.p_value <= 1.0 and r.note == ""


def test_constant_gain_is_better_and_loss_is_worse():
    a, g = _cohort()
    up = paired_comparison(a, a + 0.05, groups=g)
    assert up.ci_low > 0.0 and up.verdict == "B better"
    assert up.mean_diff == pytest.approx(0.05) and up.mean_case_diff == pytest.approx(0.05)
    assert up.p_value < 0.01  # 8 patients all positive: exact two-sided p = 2 / 2**8
    down = paired_comparison(a, a - 0.05, groups=g)
    assert down.ci_high < 0.0 and down.verdict == "B worse"
    assert down.p_value == pytest.approx(up.p_value)


def test_noisy_gain_interval_brackets_the_mean_and_is_reproducible():
    a, g = _cohort(n_patients=20)
    b = a + 0.04 + np.random.default_rng(1).normal(0.0, 0.05, a.size)
    r1 = paired_comparison(a, b, groups=g, n_boot=2000, seed=7)
    r2 = paired_comparison(a, b, groups=g, n_boot=2000, seed=7)
    r3 = paired_comparison(a, b, groups=g, n_boot=2000, seed=8)
    assert r1 == r2  # the same seed: the same interval, to the bit
    assert (r3.ci_low, r3.ci_high) != (r1.ci_low, r1.ci_high)
    assert r1.ci_low < r1.mean_diff < r1.ci_high
    assert r1.verdict == "B better"
    wide = paired_comparison(a, b, groups=g, n_boot=2000, seed=7, alpha=0.01)
    assert wide.ci_low < r1.ci_low and wide.ci_high > r1.ci_high


def test_one_patient_or_none_gives_nan_without_crash():
    r = paired_comparison([0.2, 0.3, 0.4], [0.5, 0.6, 0.7], groups=["P1"] * 3)
    assert r.n_patients == 1 and r.n_cases == 3
    assert math.isnan(r.p_value) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert r.verdict == "no difference shown" and "1 patient" in r.note
    assert r.mean_diff == pytest.approx(0.3)
    empty = paired_comparison([], [])
    assert empty.n_patients == 0 and math.isnan(empty.mean_diff) and math.isnan(empty.p_value)
    assert empty.verdict == "no difference shown"


def test_nan_pairs_are_left_out_and_counted():
    a = [0.5, np.nan, 0.2, 0.4]
    b = [0.6, 0.9, np.nan, 0.5]
    r = paired_comparison(a, b)
    assert (r.n_cases, r.n_dropped, r.n_patients) == (2, 2, 2)
    assert r.mean_a == pytest.approx(0.45) and r.mean_b == pytest.approx(0.55)


def test_grouping_by_patient_aggregates_before_the_bootstrap():
    # patient P0: 9 slices, each gains 0.1; patients P1..P3: one slice each, each loses 0.1.
    # Per slice the mean difference is +0.05 (9 gains, 3 losses); per patient it is -0.05.
    a = np.full(12, 0.5)
    b = np.concatenate([np.full(9, 0.6), np.full(3, 0.4)])
    groups = ["P0"] * 9 + ["P1", "P2", "P3"]
    by_slice = paired_comparison(a, b, n_boot=2000)
    by_patient = paired_comparison(a, b, groups=groups, n_boot=2000)
    assert by_slice.n_patients == 12 and by_patient.n_patients == 4
    assert by_slice.mean_diff == pytest.approx(0.05)
    assert by_patient.mean_diff == pytest.approx(-0.05)
    assert by_patient.mean_case_diff == pytest.approx(0.05)  # the per-slice figure is kept
    assert by_slice.ci_low > by_patient.ci_low
    # the interval over 4 patients: resample means of {+0.1, -0.1 x 3} span both signs
    assert by_patient.ci_low < 0.0 < by_patient.ci_high
    # groups are ids: any hashable, order of first appearance irrelevant to the result
    perm = np.random.default_rng(0).permutation(12)
    shuffled = paired_comparison(a[perm], b[perm], groups=np.array(groups)[perm], n_boot=2000)
    assert shuffled.mean_diff == pytest.approx(by_patient.mean_diff)


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="1D arrays of one length"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(InputError, match="one patient id per case"):
        paired_comparison([0.1, 0.2], [0.1, 0.3], groups=["P1"])
    with pytest.raises(InputError, match="n_boot"):
        paired_comparison([0.1, 0.2], [0.1, 0.3], n_boot=0)
    with pytest.raises(InputError, match="alpha"):
        paired_comparison([0.1, 0.2], [0.1, 0.3], alpha=1.5)
    with pytest.raises(InputError, match="without a patient id"):
        paired_comparison([0.1, 0.2], [0.1, 0.3], groups=["P1", None])


def _long_frame(seeds=(0, 1), n_patients=6, gain=0.1):
    """All-slices frame: arms none / metalung / monai; metalung gains ``gain`` on every slice."""
    rows = []
    rng = np.random.default_rng(3)
    for s in seeds:
        for p in range(n_patients):
            for z in (10, 11, 12):
                base = float(rng.uniform(0.2, 0.6))
                for arm, v in (("none", base), ("metalung", base + gain), ("monai", base)):
                    rows.append(
                        {
                            "arm": arm,
                            "seed": s,
                            "patient_id": f"P{p}",
                            "case_id": f"P{p}",
                            "slice_index": z,
                            "dice": v,
                            "precision": v,
                            "recall": v,
                        }
                    )
    return pd.DataFrame(rows)


def test_paired_arm_table_pairs_on_seed_and_case():
    df = _long_frame()
    t = paired_arm_table(df, "none", n_boot=500)
    assert list(t["arm"]) == ["metalung"] * 3 + ["monai"] * 3
    assert list(t["metric"]) == ["dice", "precision", "recall"] * 2
    ml = t[t["arm"] == "metalung"].iloc[0]
    assert ml["n_patients"] == 6 and ml["n_cases"] == 36 and ml["n_unpaired"] == 0
    assert ml["mean_diff"] == pytest.approx(0.1) and ml["verdict"] == "B better"
    assert (t[t["arm"] == "monai"]["verdict"] == "no difference shown").all()
    # a slice missing from one arm is left unpaired, not mismatched
    t2 = paired_arm_table(df.iloc[1:], "none", arms=["metalung"], n_boot=500)
    assert t2.iloc[0]["n_unpaired"] == 1 and t2.iloc[0]["n_cases"] == 35
    with pytest.raises(InputError, match="reference arm"):
        paired_arm_table(df, "nope")
    with pytest.raises(InputError, match="cannot pair"):
        paired_arm_table(pd.concat([df, df.iloc[:3]]), "none")
    with pytest.raises(InputError, match="patient_id"):
        paired_arm_table(df.drop(columns="patient_id"), "none")


def test_comparisons_cover_baseline_and_metalung():
    assert results_mod.comparisons(["none"]) == []
    assert results_mod.comparisons(["none", "metalung", "monai", "metalung+monai"]) == [
        ("none", "metalung"),
        ("none", "monai"),
        ("none", "metalung+monai"),
        ("monai", "metalung"),
        ("monai", "metalung+monai"),
        ("metalung+monai", "metalung"),
    ]
    assert results_mod.comparisons(["metalung", "monai"]) == [("metalung", "monai")]
    # the peers monai and copypaste judge every other arm; each unordered pair once
    pairs = results_mod.comparisons(["none", "metalung", "monai", "copypaste", "vqvae"])
    assert pairs == [
        ("none", "metalung"),
        ("none", "monai"),
        ("none", "copypaste"),
        ("none", "vqvae"),
        ("monai", "metalung"),
        ("monai", "copypaste"),
        ("monai", "vqvae"),
        ("copypaste", "metalung"),
        ("copypaste", "vqvae"),
        ("vqvae", "metalung"),
    ]
    assert len({frozenset(p) for p in pairs}) == len(pairs)


def _fake_experiment(out, arms, seeds, gain=0.1, n_patients=6):
    """Runs' eval folders as an experiment leaves them (slices.csv, volumes.csv, history.json)."""
    df = _long_frame(seeds, n_patients, gain)
    for arm in arms:
        for s in seeds:
            ev = out / run_rel("unet", arm, s) / "eval"
            ev.mkdir(parents=True)
            sl = df[(df["arm"] == arm) & (df["seed"] == s)].drop(columns=["arm", "seed"])
            sl = sl.assign(
                iou=sl["dice"], lung_rads="LR4B", tp=1, fp=1, fn=1, fp_components=1
            ).assign(calcified_fp_components=0)
            sl.to_csv(ev / "slices.csv", index=False)
            vol = sl.groupby("patient_id", as_index=False).first().assign(slice_index=np.nan)
            vol.to_csv(ev / "volumes.csv", index=False)
            (ev / "history.json").write_text(json.dumps({"loss": [1.0], "iterations": 1}))
    records = [
        {
            "model": "unet",
            "arm": a,
            "seed": s,
            "train_samples": 10,
            "wall_s": 1.0,
            "data_share": 0.1,
        }
        for a in arms
        for s in seeds
    ]
    return records


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_results_md_verdicts_are_paired(tmp_path, monkeypatch, seeds):
    monkeypatch.setattr(results_mod, "experiment_figures", lambda *a, **k: None)
    arms = ["none", "metalung", "monai"]
    records = _fake_experiment(tmp_path, arms, seeds)
    md = results_mod.write_results(
        tmp_path, tmp_path / "datalist.json", ["unet"], arms, list(seeds), records, "quick"
    )
    text = md.read_text()
    assert "± nan" not in text and "nan ±" not in text
    assert "## unet: paired comparisons" in text and "## Verdicts: paired comparisons" in text
    assert "- unet: `metalung` better than `none` on dice (B - A per patient +0.100" in text
    assert "- unet: no difference shown between `monai` and `none` on recall" in text
    assert "- unet: `metalung` better than `monai` on precision" in text
    paired = pd.read_csv(tmp_path / "paired_unet.csv")
    assert len(paired) == 9 and set(paired["metric"]) == {"dice", "precision", "recall"}
    # the grid of DICE verdicts: each arm against none and the peer monai
    beats = pd.read_csv(tmp_path / "beats_unet.csv").set_index("arm")
    assert list(beats.columns) == ["vs none", "vs monai"] and list(beats.index) == arms[1:]
    assert beats.loc["metalung", "vs none"].startswith("better +0.100 [+0.100, +0.100]")
    assert beats.loc["metalung", "vs monai"].startswith("better +0.100")
    assert beats.loc["monai", "vs none"].startswith("no difference +0.000")
    assert beats.loc["monai", "vs monai"] == "-"
    assert "## unet: which arm beats which" in text
    assert "](forest_unet.png)" in text and (tmp_path / "forest_unet.png").stat().st_size > 0
    t5 = pd.read_csv(tmp_path / "table5_unet.csv").set_index("method")
    assert t5.loc["metalung", "DICE - none per patient [95 %], p"].startswith("+0.100 [+0.100")
    assert "## unet: Table 5" in text and "## Table 6" not in text  # no generated bank
    assert (paired["n_cases"] == 18 * len(seeds)).all() and (paired["n_patients"] == 6).all()
    tables = text[text.index("## unet: Table 7") :]
    if len(seeds) == 1:  # one seed: the tables show the mean alone
        assert "| unet | metalung | 1 |" in tables and " ± " not in tables
    else:
        assert "| unet | metalung | 2 |" in tables and " ± " in tables


def test_docs_example_prints_what_its_comments_say():
    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text("utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "paired_" in b]
    ns: dict = {}
    exec(compile(block, "docs/evaluation.md", "exec"), ns)
    res, same = ns["res"], ns["same"]
    assert f"{res.mean_diff:.3f} [{res.ci_low:.3f}, {res.ci_high:.3f}]" == "0.048 [0.018, 0.077]"
    assert f"{res.p_value:.3f}" == "0.062" and res.verdict == "B better"
    assert (same.ci_low, same.ci_high, same.verdict) == (0.0, 0.0, "no difference shown")


def test_cross_validation_results_give_paired_verdicts(tmp_path):
    from metalung_monai.training.folds import _write_cv_results

    pooled = _long_frame(seeds=(0, 1)).assign(model="unet", level="slice")
    pooled["iou"] = pooled["dice"]
    pooled["fold"] = pooled["patient_id"].str[1:].astype(int) % 3  # each patient in one fold
    split = {"datalist": "dl.json", "fold_seed": 0, "folds": [["P0", "P3"], ["P1", "P4"], ["P2"]]}
    text = _write_cv_results(
        tmp_path, pooled, ["unet"], ["none", "metalung", "monai"], [0, 1], 3, split
    ).read_text()
    assert "## unet: paired comparisons" in text and results_mod.PAIRED_METHOD in text
    assert "- unet: `metalung` better than `none` on dice (B - A per patient +0.100" in text
    assert "± nan" not in text
    paired = pd.read_csv(tmp_path / "paired_unet.csv")
    assert (paired["n_patients"] == 6).all() and (paired["n_cases"] == 36).all()


def _three_pairs() -> pd.DataFrame:
    row = dict(model="unet", metric="dice", p_value=0.01, note="", n_patients=6)
    return pd.DataFrame(
        [
            {**row, "reference": "none", "arm": "monai", "mean_diff": 0.0, "ci_low": -0.1,
             "ci_high": 0.1, "verdict": "no difference shown"},
            {**row, "reference": "none", "arm": "copypaste", "mean_diff": 0.2, "ci_low": 0.1,
             "ci_high": 0.3, "verdict": BETTER},
            {**row, "reference": "monai", "arm": "copypaste", "mean_diff": 0.2, "ci_low": 0.05,
             "ci_high": 0.25, "verdict": BETTER},
        ]
    )  # fmt: skip


def test_beats_table_reads_a_pair_judged_the_other_way_with_the_sign_turned():
    paired = _three_pairs()
    beats = results_mod.beats_table(paired).set_index("arm")
    assert list(beats.columns) == ["vs none", "vs monai", "vs copypaste"]
    assert beats.loc["copypaste", "vs monai"] == "better +0.200 [+0.050, +0.250]"
    assert beats.loc["monai", "vs copypaste"] == "worse -0.200 [-0.250, -0.050]"
    assert beats.loc["monai", "vs none"] == "no difference +0.000 [-0.100, +0.100]"
    assert beats.loc["copypaste", "vs copypaste"] == "-"
    assert results_mod.beats_table(pd.DataFrame()).empty


def test_oriented_pairs_give_each_comparison_both_ways():
    from metalung_monai.evaluation import oriented_pairs

    both = oriented_pairs(_three_pairs()).set_index(["arm", "reference"])
    assert len(both) == 6
    back = both.loc[("monai", "copypaste")]
    assert (back["mean_diff"], back["ci_low"], back["ci_high"]) == (-0.2, -0.25, -0.05)
    assert back["verdict"] == WORSE and both.loc[("copypaste", "monai"), "verdict"] == BETTER
    assert both.loc[("none", "monai"), "verdict"] == "no difference shown"
    assert oriented_pairs(_three_pairs(), "recall").empty
    with pytest.raises(InputError, match="ci_low"):
        oriented_pairs(_three_pairs().drop(columns=["ci_low"]))


def test_forest_plot_colours_each_verdict(tmp_path):
    from matplotlib.image import imread

    from metalung_monai.evaluation import paired_forest

    def share(path, rgb):  # fraction of pixels of one colour
        img = imread(path)[..., :3]
        return float((np.abs(img - np.asarray(rgb) / 255.0).max(-1) < 0.02).mean())

    green, red, grey = (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28), (0x7F, 0x7F, 0x7F)
    arms = ["none", "monai", "copypaste"]
    refs = ["none", "monai", "copypaste"]
    f = paired_forest(_three_pairs(), tmp_path / "all.png", references=refs, arms=arms)
    assert share(f, green) > 0 and share(f, red) > 0 and share(f, grey) > 0
    # against none alone: copypaste better (green), monai no difference (grey), nothing worse
    g = paired_forest(_three_pairs(), tmp_path / "none.png", references=["none"], arms=arms)
    assert share(g, green) > 0 and share(g, grey) > 0 and share(g, red) == 0
    with pytest.raises(InputError, match="never compared on 'dice': blur"):
        paired_forest(_three_pairs(), tmp_path / "x.png", references=["blur"])
    with pytest.raises(InputError, match="no paired comparison of 'iou'"):
        paired_forest(_three_pairs(), tmp_path / "y.png", metric="iou")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()
    # one patient: no interval (NaN), the dot alone, drawn without a warning
    lone = _three_pairs().assign(ci_low=math.nan, ci_high=math.nan, verdict="no difference shown")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = paired_forest(lone, tmp_path / "lone.png", references=["none"], arms=arms)
    assert share(h, grey) > 0 and share(h, green) == 0


def test_table5_gives_samples_banks_metrics_and_the_paired_difference(tmp_path):
    from lesion_factory import make_bank, save_bank

    real = save_bank(make_bank(n=12, size=32, seed=0), tmp_path / "bank")
    gen = save_bank(
        make_bank(n=7, size=32, seed=1, source="generated"), tmp_path / "g" / "generated"
    )
    paired = pd.DataFrame(
        [
            {"reference": "none", "arm": a, "metric": "dice", "mean_diff": d, "ci_low": lo,
             "ci_high": hi, "p_value": p, "verdict": v}
            for a, d, lo, hi, p, v in (
                ("metalung", 0.01, -0.02, 0.04, 0.5, "no difference shown"),
                ("copypaste", 0.1, 0.02, 0.2, 0.01, BETTER),
            )
        ]
    )  # fmt: skip
    cells = {a: {"dice": f"0.{i}", "iou": "x", "precision": "y", "recall": "z"} for i, a in
             enumerate(("none", "metalung", "copypaste", "mixed"))}  # fmt: skip
    t5 = results_mod.table5_frame(
        "unet",
        ["none", "metalung", "copypaste", "mixed"],
        cells,
        paired,
        samples={"none": 56, "metalung": 389, "copypaste": 56, "mixed": 389},
        lesion_banks={"real": real, "vqvae": [gen, gen]},
    ).set_index("method")
    assert t5.loc["metalung", "generated / added samples"] == "+333 offline"
    assert t5.loc["copypaste", "generated / added samples"] == "online from real (12 lesions)"
    assert t5.loc["mixed", "generated / added samples"] == (
        "+333 offline; online from vqvae (7/7 lesions)"
    )
    assert t5.loc["none", "generated / added samples"] == "-"
    assert t5.loc["copypaste", "DICE - none per patient [95 %], p"] == (
        "+0.100 [+0.020, +0.200], p 0.010: better"
    )
    assert (
        t5.loc["metalung", "DICE"] == "0.1"
        and t5.loc["none", "DICE - none per patient [95 %], p"] == ""
    )
    assert t5.loc["mixed", "DICE - none per patient [95 %], p"] == "n/a"  # not judged
    # Table 6: a generated bank whose run folder holds no trained generator says so
    lines = results_mod.table6_lines({"real": real, "vqvae": gen})
    assert lines[0].startswith("## Table 6") and any("no final checkpoint" in x for x in lines)
    assert results_mod.table6_lines({"real": real}) == []


def test_table5_of_a_cross_validation_gives_samples_per_fold():
    t5 = results_mod.table5_frame(
        "unet",
        ["none", "metalung"],
        {},
        pd.DataFrame(),
        samples={"none": [80, 90, 90], "metalung": [560, 630, 630]},
    ).set_index("method")
    assert t5.loc["none", "training samples"] == "80/90/90"
    assert t5.loc["metalung", "generated / added samples"] == "+480/+540/+540 offline"
    assert t5.loc["metalung", "DICE"] == "n/a"  # no metrics given
