"""Tables: means over images with NaN, per Lung-RADS class, per patient, arms x seeds, files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metalung_monai.errors import InputError
from metalung_monai.evaluation import (
    arm_table,
    class_arm_table,
    format_mean_sd,
    image_scores,
    markdown_table,
    mean_sd,
    per_class,
    per_patient,
    results_frame,
    seed_summaries,
    summarize,
    write_table,
)


def square(y0, y1, x0, x1, shape=(12, 12)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


TRUTH = square(2, 5, 2, 5)  # 9 px
EMPTY = np.zeros((12, 12), bool)


@pytest.fixture
def rows():
    """Five test images of three patients with every empty-mask case.

    a: DICE 12/18 (one column off), b: perfect, c: missed, d: false alarm (2 components),
    e: both empty.
    """
    cases = [
        ("a", "P1", "LR2", square(2, 5, 3, 6), TRUTH),
        ("b", "P1", "LR2", TRUTH, TRUTH),
        ("c", "P2", "LR3", EMPTY, TRUTH),
        ("d", "P2", "LR3", square(0, 2, 0, 2) | square(8, 10, 8, 10), EMPTY),
        ("e", "P3", "LR4A", EMPTY, EMPTY),
    ]
    return [
        dict(image_scores(p, t), case_id=c, patient_id=pid, lung_rads=lr)
        for c, pid, lr, p, t in cases
    ]


def test_results_frame_columns_and_types(rows):
    df = results_frame(rows)
    assert list(df.columns[:3]) == ["patient_id", "case_id", "lung_rads"]
    assert list(df.columns[3:7]) == ["dice", "iou", "precision", "recall"]
    assert df["dice"].dtype == float and df["tp"].dtype == np.int64
    assert df["calcified_fp_components"].isna().all()  # no HU given: not measured
    with pytest.raises(InputError, match=r"rows\[0\]: missing metric key\(s\) iou"):
        results_frame([{"dice": 0.5, "precision": 1.0, "recall": 0.5}])


def test_summarize_ignores_nan(rows):
    s = summarize(results_frame(rows))
    # DICE defined on a, b, c (0), d (0); e is NaN
    assert s["n_images"] == 5 and s["n_dice"] == 4
    assert s["dice"] == pytest.approx((12 / 18 + 1 + 0 + 0) / 4)
    assert s["iou"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    # precision undefined for c (missed) and e: mean over a, b, d
    assert s["n_precision"] == 3 and s["precision"] == pytest.approx((6 / 9 + 1 + 0) / 3)
    # recall undefined for d (no truth) and e: mean over a, b, c
    assert s["n_recall"] == 3 and s["recall"] == pytest.approx((6 / 9 + 1 + 0) / 3)
    assert (s["n_missed"], s["n_false_alarm"], s["n_empty"]) == (1, 1, 1)
    assert s["fp_components"] == 2
    assert math.isnan(s["calcified_fp_components"])
    # pooled: TP 6+9, FP 3+8, FN 3+9
    assert s["dice_pooled"] == pytest.approx(2 * 15 / (2 * 15 + 11 + 12))


def test_summarize_counts_calcified_when_measured():
    hu = np.full((12, 12), -850, np.int16)
    hu[8:10, 8:10] = 500
    r = [
        image_scores(square(8, 10, 8, 10), EMPTY, hu=hu),
        image_scores(TRUTH, TRUTH, hu=hu),
        image_scores(square(0, 2, 0, 2), TRUTH, hu=hu),
    ]
    s = summarize(results_frame(r))
    assert s["fp_components"] == 2 and s["calcified_fp_components"] == 1


def test_per_class_table8(rows):
    t = per_class(results_frame(rows))
    assert list(t["lung_rads"]) == ["LR2", "LR3", "LR4A", "LR4B", "all"]
    t = t.set_index("lung_rads")
    assert t.loc["LR2", "dice"] == pytest.approx((12 / 18 + 1) / 2)
    assert t.loc["LR2", "sd"] == pytest.approx(np.std([12 / 18, 1], ddof=1))
    assert (t.loc["LR2", "n_images"], t.loc["LR2", "n"]) == (2, 2)
    assert t.loc["LR3", "dice"] == 0.0 and t.loc["LR3", "n_missed"] == 1
    assert (
        t.loc["LR4A", "n_images"] == 1
        and t.loc["LR4A", "n"] == 0
        and math.isnan(t.loc["LR4A", "dice"])
    )
    assert t.loc["LR4B", "n_images"] == 0 and math.isnan(t.loc["LR4B", "dice"])
    assert t.loc["all", "dice"] == pytest.approx(summarize(results_frame(rows))["dice"])
    # precision per class: the missed image of LR3 does not count, the false alarm does
    p = per_class(results_frame(rows), metric="precision", classes=("LR3",), total=False)
    assert list(p["lung_rads"]) == ["LR3"] and p["n"].iloc[0] == 1 and p["precision"].iloc[0] == 0.0


def test_per_class_needs_the_class_column(rows):
    df = results_frame(rows).drop(columns="lung_rads")
    with pytest.raises(InputError, match="lung_rads: column missing"):
        per_class(df)


def test_per_patient_pools_counts(rows):
    pp = per_patient(results_frame(rows)).set_index("patient_id")
    # P1: TP 6+9, FP 3, FN 3
    assert pp.loc["P1", "dice"] == pytest.approx(30 / 36)
    assert pp.loc["P1", "n_images"] == 2 and pp.loc["P1", "lung_rads"] == "LR2"
    # P2: missed slice + false-alarm slice -> TP 0: DICE 0, precision 0, recall 0
    assert (pp.loc["P2", "dice"], pp.loc["P2", "precision"], pp.loc["P2", "recall"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert math.isnan(pp.loc["P3", "dice"])
    assert pp.loc["P2", "fp_components"] == 2


def test_mean_sd_and_format():
    m, sd = mean_sd([0.40, 0.42, 0.44])
    assert m == pytest.approx(0.42) and sd == pytest.approx(0.02)
    assert format_mean_sd([0.40, 0.42, 0.44]) == "0.420 ± 0.020"
    assert format_mean_sd([0.4123]) == "0.412"
    assert format_mean_sd([0.5, float("nan"), 0.7], ".2f") == "0.60 ± 0.14"
    assert format_mean_sd([]) == "n/a" and math.isnan(mean_sd([float("nan")])[0])
    assert math.isnan(mean_sd([0.3])[1])


def arms_frame():
    """Two arms x two seeds; per-seed mean DICE baseline 0.5 / 0.3, metalung 0.6 / 0.7."""
    rows = []
    spec = {
        ("baseline", 0): (0.4, 0.6),
        ("baseline", 1): (0.2, 0.4),
        ("metalung", 0): (0.5, 0.7),
        ("metalung", 1): (0.6, 0.8),
    }
    for (arm, seed), dices in spec.items():
        for i, (d, lr) in enumerate(zip(dices, ("LR2", "LR3"))):
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "case_id": f"c{i}",
                    "lung_rads": lr,
                    "dice": d,
                    "iou": d / 2,
                    "precision": 1.0,
                    "recall": d,
                    "tp": 1,
                    "fp": 0,
                    "fn": 1,
                    "pred_voxels": 1,
                    "truth_voxels": 2,
                    "fp_components": seed,
                    "calcified_fp_components": 0,
                }
            )
    return results_frame(rows)


def test_seed_summaries_and_arm_table():
    df = arms_frame()
    ss = seed_summaries(df)
    assert len(ss) == 4 and list(ss.columns[:2]) == ["arm", "seed"]
    assert ss.set_index(["arm", "seed"]).loc[("metalung", 1), "dice"] == pytest.approx(0.7)
    t = arm_table(df).set_index("arm")
    assert t.loc["baseline", "dice"] == format_mean_sd([0.5, 0.3]) == "0.400 ± 0.141"
    assert t.loc["metalung", "dice"] == "0.650 ± 0.071"
    assert t.loc["baseline", "n_seeds"] == 2 and t.loc["baseline", "n_images"] == "2"
    assert t.loc["baseline", "fp_components"] == "1.0 ± 1.4"  # totals per seed: 0 and 2


def test_class_arm_table():
    t = class_arm_table(arms_frame()).set_index("lung_rads")
    assert list(t.columns) == ["n_images", "baseline", "metalung"]
    assert t.loc["LR2", "baseline"] == format_mean_sd([0.4, 0.2])
    assert t.loc["LR3", "metalung"] == format_mean_sd([0.7, 0.8])
    assert t.loc["LR4A", "metalung"] == "n/a" and t.loc["LR4A", "n_images"] == 0
    assert t.loc["all", "baseline"] == format_mean_sd([0.5, 0.3])


def test_markdown_table_format(rows):
    md = markdown_table(per_class(results_frame(rows)))
    lines = md.strip().split("\n")
    assert lines[0] == "| lung_rads | n_images | n | dice | sd | n_missed |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    assert (
        lines[2]
        == f"| LR2 | 2 | 2 | {(12 / 18 + 1) / 2:.3f} | {np.std([12 / 18, 1], ddof=1):.3f} | 0 |"
    )
    assert "| LR4B | 0 | 0 | n/a | n/a | 0 |" in lines
    # a named index becomes the first column; pipes in text are escaped
    df = pd.DataFrame({"v": [0.123456]}, index=pd.Index(["a|b"], name="k"))
    assert markdown_table(df, floatfmt=".2f").split("\n")[2] == "| a\\|b | 0.12 |"


def test_write_table_files(rows, tmp_path):
    t = per_class(results_frame(rows))
    csv, md = write_table(t, tmp_path / "tables" / "table8.csv")  # extension dropped
    assert csv == tmp_path / "tables" / "table8.csv" and md == tmp_path / "tables" / "table8.md"
    back = pd.read_csv(csv)
    assert list(back["lung_rads"]) == list(t["lung_rads"])
    np.testing.assert_allclose(back["dice"], t["dice"], equal_nan=True)  # full precision
    text = md.read_text(encoding="utf-8")
    assert f"{(12 / 18 + 1) / 2:.3f}" in text and text == markdown_table(t)
    assert not [p for p in (tmp_path / "tables").iterdir() if "partial" in p.name]
