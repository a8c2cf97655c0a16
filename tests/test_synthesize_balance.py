"""``metalung synthesize --balance``: the balanced chooser and the before / after table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lesion_factory import make_bank, save_bank

from metalung_monai import cli
from metalung_monai.anatomy import LEFT_LUNG, RIGHT_LUNG
from metalung_monai.errors import InputError
from metalung_monai.synthesis.offline import BalancedChoice, HealthySlice

SLICE = HealthySlice("c", 3, "p", (1.0, 1.0), (900.0, 800.0))


def _draws(choose, sl=SLICE, n=2000):
    return [choose(sl, k, np.random.default_rng(k)) for k in range(n)]


def test_lung_rads_draws_each_class_equally_whatever_the_bank_mix():
    classes = ["LR2"] * 30 + ["LR3"] * 5 + ["LR4A"] * 3 + ["LR4B"] * 2  # the cohort's skew
    c = BalancedChoice("lung-rads", classes)
    got = pd.Series([classes[d.index] for d in _draws(c)]).value_counts(normalize=True)
    assert set(got.index) == {"LR2", "LR3", "LR4A", "LR4B"}
    assert (
        abs(got - 0.25) < 0.04
    ).all()  # uniform, against 0.75 / 0.125 / 0.075 / 0.05 drawn plainly
    assert all(d.side is None and d.scale == 1.0 for d in _draws(c, n=20))
    assert c.config["target"] == {"LR2": 0.25, "LR3": 0.25, "LR4A": 0.25, "LR4B": 0.25}


def test_lung_draws_both_sides_and_only_sides_with_lung():
    c = BalancedChoice("lung", ["LR2"] * 4, scale_range=(1.0, 2.0))
    sides = pd.Series([d.side for d in _draws(c)]).value_counts(normalize=True)
    assert abs(sides[RIGHT_LUNG] - 0.5) < 0.04 and abs(sides[LEFT_LUNG] - 0.5) < 0.04
    one = HealthySlice("c", 3, "p", (1.0, 1.0), (0.0, 800.0))  # no right lung on this slice
    assert {d.side for d in _draws(c, one, 200)} == {LEFT_LUNG}
    assert all(1.0 <= d.scale <= 2.0 for d in _draws(c, n=50))
    again = [c(SLICE, 7, np.random.default_rng(7)) for _ in range(3)]  # stateless: seeded draws
    assert again[0] == again[1] == again[2]


def test_bad_modes_and_banks_raise_typed_errors():
    with pytest.raises(InputError, match="--balance"):
        BalancedChoice("lungs", ["LR2"])
    with pytest.raises(InputError, match="no insertable lesion"):
        BalancedChoice("lung", [])


def test_command_line_writes_the_before_after_table(small_cohort, tmp_path, capsys):
    classes = ("LR2", "LR2", "LR2", "LR4A")
    bank = save_bank(
        make_bank(n=16, size=32, seed=0, context_mm=32.0, classes=classes), tmp_path / "b"
    )
    out = tmp_path / "o"
    argv = ["synthesize", "--healthy", str(small_cohort / "datalist.json"), "--lesions", bank]
    rc = cli.main(
        [
            *argv,
            "--out",
            str(out),
            "--balance",
            "lung-rads",
            "--per-case",
            "2",
            "--slices-per-case",
            "3",
            "--no-progress",
            "--no-figure",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "--balance lung-rads" in text
    table = pd.read_csv(out / "balance.csv")
    ins = pd.read_csv(out / "insertions.csv")
    ins = ins[ins["inserted"].astype(bool)]
    added = (table["after"] - table["before"]).sum()
    assert added == len(ins) > 0  # every inserted case counted once, by its measured class
    rc = cli.main([*argv, "--out", str(tmp_path / "x"), "--balance", "sides", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "--balance" in err and not (tmp_path / "x").exists()
