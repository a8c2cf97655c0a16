"""``scripts/compare_runs.py``: paired comparison of runs from different folders on the same slices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
compare_runs = pytest.importorskip("compare_runs")

from metalung_monai.errors import InputError  # noqa: E402


def _slices(tmp_path: Path, name: str, dice: np.ndarray, arm: str = "none") -> Path:
    n = len(dice)
    df = pd.DataFrame(
        {
            "model": "unet",
            "arm": arm,
            "seed": 0,
            "patient_id": [f"P{i % 8}" for i in range(n)],
            "case_id": [f"C{i}" for i in range(n)],
            "slice_index": 0,
            "dice": dice,
            "iou": dice / (2 - dice),
            "precision": dice,
            "recall": dice,
            "level": "slice",
        }
    )
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    return path


def test_a_constant_gain_wins_and_identical_runs_do_not(tmp_path):
    base = np.random.default_rng(0).uniform(0.1, 0.6, 40)
    a = _slices(tmp_path, "a", base)
    b = _slices(tmp_path, "b", base + 0.1, arm="monai")
    c = _slices(tmp_path, "c", base)
    path = compare_runs.compare(
        [f"scratch={a}#none#unet", f"tuned={b}#monai", f"same={c}"], tmp_path / "out", "t"
    )
    text = path.read_text()
    assert "`tuned` better than `scratch` on dice (B - A per patient +0.100" in text
    assert "no difference shown between `same` and `scratch` on dice" in text
    table = pd.read_csv(tmp_path / "out" / "paired_compare.csv")
    assert set(table["arm"]) == {"tuned", "same"} and set(table["reference"]) == {"scratch"}


def test_bad_runs_are_named(tmp_path):
    a = _slices(tmp_path, "a", np.full(10, 0.5))
    with pytest.raises(InputError, match="does not exist"):
        compare_runs.compare([f"x={tmp_path / 'no.csv'}", f"y={a}"], tmp_path / "o", "t")
    with pytest.raises(InputError, match="has no arm 'monai'"):
        compare_runs.compare([f"x={a}#monai", f"y={a}"], tmp_path / "o", "t")
    with pytest.raises(InputError, match="distinct labels"):
        compare_runs.compare([f"x={a}", f"x={a}"], tmp_path / "o", "t")
    with pytest.raises(InputError, match="LABEL=CSV"):
        compare_runs.compare([str(a), f"y={a}"], tmp_path / "o", "t")
    assert compare_runs.main(["--out", str(tmp_path / "o"), f"x={a}#monai", f"y={a}"]) == 2
    assert not (tmp_path / "o" / "compare.md").exists()
