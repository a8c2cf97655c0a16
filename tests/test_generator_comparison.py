"""What the generators share (``metalung_monai.synthesis.generative``: class labels, the writer of
generated lesions, the checkpoint's figures) and the side-by-side comparison
(``metalung lesion-compare``: Table 6 from the checkpoints, the picture grid per class)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from lesion_factory import make_bank, model_bank, save_bank

from metalung_monai.cli import main
from metalung_monai.errors import InputError
from metalung_monai.evaluation.generator_comparison import compare_generators, run_summary
from metalung_monai.synthesis import generative as gv
from metalung_monai.synthesis.bank import read_bank


def test_condition_labels_lung_rads_and_solidity():
    t = pd.DataFrame(
        {
            "lung_rads": ["LR2", "LR4B", "LR3", "LR4A"],
            "type": ["solid", "ground-glass", "part-solid", "solid"],
        }
    )
    assert gv.condition_labels(t, "lung_rads").tolist() == [0, 3, 1, 2]
    lab = gv.condition_labels(t, "lung_rads_solid")
    assert lab.tolist() == [0, 7, 3, 4]
    assert [gv.condition_name("lung_rads_solid", v) for v in lab] == [
        "LR2/solid",
        "LR4B/sub-solid",
        "LR3/sub-solid",
        "LR4A/solid",
    ]
    assert gv.CONDITIONS == {"lung_rads": 4, "lung_rads_solid": 8}
    with pytest.raises(InputError, match="condition"):
        gv.condition_labels(t, "size")
    with pytest.raises(InputError, match="LR1"):
        gv.condition_labels(t.assign(lung_rads=["LR1", "LR2", "LR2", "LR2"]), "lung_rads")


def test_draw_conditions_follow_the_training_mix_and_are_seeded(tmp_path):
    bank = read_bank(model_bank(tmp_path / "bank"))
    train = bank.select(kind="2d", subset="train").table
    a = gv.draw_conditions(bank, "lung_rads", 2000, seed=3)
    assert np.array_equal(a, gv.draw_conditions(bank, "lung_rads", 2000, seed=3))
    want = gv.condition_labels(train, "lung_rads")
    share = np.bincount(a, minlength=4) / a.size
    assert np.abs(share - np.bincount(want, minlength=4) / want.size).max() < 0.04


def test_bank_lesion_data_with_labels_and_key(tmp_path):
    ds = gv.bank_lesion_data(
        model_bank(tmp_path / "bank"), size=16, augment=False, key="image", condition="lung_rads"
    )
    item = ds[0]
    assert item["image"].shape == (2, 16, 16) and item["label"].dtype == torch.long
    assert item["label"].shape == (1,) and 0 <= int(item["label"]) < 4


def _raw(n, size, seed=0):
    """Two-channel outputs in [-1, 1]: a disc of brighter values and its mask, some empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    raw = np.empty((n, 2, size, size), np.float32)
    for i in range(n):
        r = rng.uniform(2, size / 3) if i % 5 else -1.0  # every fifth mask empty
        disc = np.hypot(yy - size / 2, xx - size / 2) <= r
        raw[i, 0] = np.where(disc, 0.3, -0.75) + rng.normal(0, 0.05, (size, size))
        raw[i, 1] = np.where(disc, 0.9, -0.9)
    return np.clip(raw, -1, 1)


def test_write_generated_integer_hu_conditions_and_drops(tmp_path):
    bank = model_bank(tmp_path / "bank")
    raw = _raw(20, 16)
    conds = [f"LR{2 + i % 2}" for i in range(20)]
    s = gv.write_generated(
        raw,
        bank,
        tmp_path / "gen",
        "test",
        seconds_generate=1.0,
        sampling={"seed": 7},
        conditions=conds,
        quality_gate=False,
    )
    gen = read_bank(tmp_path / "gen")
    assert s["dropped_empty"] == 4 and s["written"] == 16 == len(gen) and s["seed"] == 7
    assert s["seconds_per_sample"] >= 1.0 / 20
    img = gen.arrays["image2d"]
    assert img.dtype == np.int16 and img.shape == (16, 32, 32)  # upsampled to the bank's size
    kept = [i for i in range(20) if i % 5]
    assert gen.table["condition"].tolist() == [conds[i] for i in kept]
    assert (gen.table["generator"] == "test").all()
    # each lesion is brighter than its context, as in the raw outputs
    for i in range(len(gen)):
        m = gen.arrays["mask2d"][i] > 0
        assert img[i][m].mean() > img[i][~m].mean()
    with pytest.raises(InputError, match=r"\(N, 2, s, s\)"):
        gv.write_generated(raw[:, :1], bank, tmp_path / "bad", "test")
    with pytest.raises(InputError, match="conditions"):
        gv.write_generated(raw, bank, tmp_path / "bad", "test", conditions=conds[:3])
    assert not (tmp_path / "bad").exists()


def test_quality_gate_drops_lesions_outside_the_real_range(tmp_path):
    bank = model_bank(tmp_path / "bank")
    yy, xx = np.mgrid[:32, :32]
    radii = [6, 5, 15, 7, 0.5]  # real lesions have radii 3.8-9.6 px: 15 too big, 0.5 one pixel
    raw = np.full((len(radii), 2, 32, 32), -0.9, np.float32)
    for i, r in enumerate(radii):
        disc = np.hypot(yy - 16, xx - 16) <= r
        raw[i, 0][disc], raw[i, 1][disc] = 0.2, 0.9
    s = gv.write_generated(raw, bank, tmp_path / "gen", "test", hu_by=None)
    assert s["rejected_gate"] == 2 and s["written"] == 3
    assert s["rejected_checks"]["area_in_range"] == 2
    gen = read_bank(tmp_path / "gen")
    areas = gen.arrays["mask2d"].reshape(3, -1).sum(1)
    assert sorted(areas) == sorted(int((np.hypot(yy - 16, xx - 16) <= r).sum()) for r in (6, 5, 7))
    off = gv.write_generated(raw, bank, tmp_path / "all", "test", hu_by=None, quality_gate=False)
    assert off["rejected_gate"] == 0 and off["written"] == 5 and off["quality_gate"] is False
    with pytest.raises(InputError, match="fail the gate"):
        gv.write_generated(raw[2:3], bank, tmp_path / "none", "test", hu_by=None)


class _Engine:
    class state:
        epoch, iteration = 2, 20


def _run_folder(tmp_path, bank, name, nets):
    run = tmp_path / name
    ck = gv.AtomicCheckpoint(run / "models", nets, final_filename=None)
    ck._start(_Engine)
    ck._save(_Engine, "stage_final.pt")
    gv.write_generated(_raw(12, 16, seed=1), bank, run / "generated", name, quality_gate=False)
    return run


def test_checkpoint_holds_time_parameters_device(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    frozen = torch.nn.Linear(5, 1).requires_grad_(False)
    ck = gv.AtomicCheckpoint(
        tmp_path, {"net": net, "frozen": frozen, "opt": torch.optim.SGD(net.parameters(), 0.1)}
    )
    ck._start(_Engine)
    ck._save(_Engine, "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["parameters"] == {"net": 3 * 4 + 4 + 4 + 4, "frozen": 0}
    assert state["train_seconds"] >= 0 and state["device"] == "cpu"


def test_compare_generators_table6_grid_and_errors(tmp_path):
    bank = model_bank(tmp_path / "bank")
    a = _run_folder(tmp_path, bank, "alpha", {"generator": torch.nn.Linear(10, 10)})
    b = _run_folder(
        tmp_path, bank, "beta", {"g": torch.nn.Linear(2, 3), "d": torch.nn.Linear(3, 1)}
    )
    s = run_summary(a)
    assert s["parameters"] == {"generator": 110} and s["written"] == 9 and s["realism"] is None
    assert main(["lesion-compare", bank, f"alpha={a}", str(b), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| alpha | generator 110 | 110 |" in md and "| beta | g 9, d 4 | 13 |" in md
    assert "no realism report" in md
    r = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert list(r["generators"]) == ["alpha", "beta"]
    from PIL import Image

    w, h = Image.open(tmp_path / "cmp" / "grid.png").size
    assert w > 3 * h / 2  # three blocks of 4 columns (real, alpha, beta) by 4 class rows
    (a / "models" / "stage_final.pt").unlink()
    with pytest.raises(InputError, match="no final checkpoint"):
        compare_generators(bank, {"alpha": a}, tmp_path / "cmp2")
    with pytest.raises(InputError, match="no generator run"):
        compare_generators(bank, {}, tmp_path / "cmp2")


@pytest.mark.slow
def test_synth_benchmark_script_end_to_end_and_resumes(tmp_path):
    """scripts/synth_benchmark.py on a tiny bank with the DCGAN bundle (1 epoch of 2 steps):
    train, sample, realism, compare; a second run skips every step."""
    import subprocess
    import sys

    from bundle_helpers import ENV, REPO

    bank = model_bank(tmp_path / "bank")
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "synth_benchmark.py"),
        bank,
        str(tmp_path / "out"),
        "--generators",
        "dcgan",
        "--num-samples",
        "30",
        "--bundle-args",
        "--epochs 1 --epoch_length 2 --batch_size 4 --num_workers 0",
        "--realism-args",
        "--bootstrap 10 --permutations 10 --c2st-folds 3 --c2st-epochs 2 --c2st-repeats 1",
    ]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    run = tmp_path / "out" / "dcgan"
    ck = torch.load(run / "models" / "model_final.pt", weights_only=True)
    assert ck["iteration"] == 2 and ck["train_seconds"] > 0
    assert ck["parameters"]["generator"] > 0 and ck["parameters"]["discriminator"] > 0
    assert (run / "realism" / "realism.json").is_file()
    md = (tmp_path / "out" / "comparison" / "comparison.md").read_text()
    assert "| dcgan |" in md and "no realism report" not in md
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "model_final.pt exists, skipped" in again.stdout
    assert "sampled" not in again.stdout and "realism report in" not in again.stdout
    bad = subprocess.run(
        [*cmd[:2], str(tmp_path / "nobank"), str(tmp_path / "o2")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a lesion bank" in bad.stderr
    # too few lesions written for a realism report (4 < 8): skipped and said, the comparison goes on
    few = tmp_path / "few" / "dcgan"
    (few / "models").mkdir(parents=True)
    shutil.copy(run / "models" / "model_final.pt", few / "models")  # trained: no step reruns
    gen = make_bank(n=4, size=32, seed=5, source="generated", context_mm=32.0)
    meta = json.loads((run / "generated" / "bank.json").read_text())
    gen.meta.update({k: meta[k] for k in ("generator", "sampling")})  # as the sampler writes
    save_bank(gen, few / "generated")
    res = subprocess.run(
        [*cmd[:3], str(tmp_path / "few"), *cmd[4:]], env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[dcgan] realism report skipped: 4 lesions written" in res.stdout
    assert not (few / "realism" / "realism.json").exists()
    md = (tmp_path / "few" / "comparison" / "comparison.md").read_text()
    assert "| dcgan | no realism report |" in md


def test_conditioning_agreement_counts_measured_against_asked():
    from metalung_monai.evaluation.generator_comparison import _conditioning

    t = pd.DataFrame(
        {
            "condition": ["LR2/solid", "LR2/sub-solid", "LR4B/solid", "LR4B/solid"],
            "lung_rads": ["LR2", "LR3", "LR4B", "LR4B"],
            "type": ["solid", "ground-glass", "part-solid", "solid"],
        }
    )
    c = _conditioning(t)
    assert c["lesions"] == 4 and c["lung_rads_as_asked"] == 0.75
    assert c["per_class"] == {"LR2": 0.5, "LR4B": 1.0}
    assert c["solidity_as_asked"] == 0.75
    plain = _conditioning(t.assign(condition=["LR2", "LR3", "LR2", "LR2"]))
    assert plain["lung_rads_as_asked"] == 0.5 and "solidity_as_asked" not in plain
    assert _conditioning(t.drop(columns="condition")) is None
    assert _conditioning(t.assign(condition="")) is None
