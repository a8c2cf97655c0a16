"""``bundles/dcgan_lesion_synth``: Model Zoo layout and metadata, a one-epoch train on a tiny
constructed bank then ``sample.json`` (integer HU, binary non-empty masks, a readable bank-like
folder, the realism report on it), and the pieces of ``metalung_monai.synthesis.gan``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundle_helpers import (
    BUNDLES,
    GENERATOR_TINY,
    bundle_cmd,
    bundle_dirs,
    run,
    stack,
    verify_metadata,
)
from lesion_factory import model_bank

from metalung_monai.errors import InputError
from metalung_monai.synthesis import gan
from metalung_monai.synthesis.bank import read_bank

ROOT = BUNDLES / "dcgan_lesion_synth"
FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/sample.json",
    "configs/quick.json",
    "configs/full.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)


def test_gan_patches_two_channels_in_range_and_downsampled(tmp_path):
    bank = read_bank(model_bank(tmp_path / "bank"))
    x = gan.gan_patches(bank, "train", None)
    n_train = int((bank.table["subset"] == "train").sum())
    assert x.shape == (n_train, 2, 32, 32) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(np.unique(x[:, 1])) == {-1.0, 1.0}
    # the image channel is the window, linearly: back to HU within half a HU of rounding
    img, _, _ = bank.select(kind="2d", subset="train").patches("2d")
    back = gan.window_inverse(x[:, 0])
    inside = (img >= -1000) & (img <= 400)
    assert np.abs(back[inside] - img[inside]).max() < 1e-2
    half = gan.gan_patches(bank, "train", 16)
    assert half.shape == (n_train, 2, 16, 16) and set(np.unique(half[:, 1])) <= {-1.0, 1.0}
    with pytest.raises(InputError, match="must divide"):
        gan.gan_patches(bank, "train", 24)
    with pytest.raises(InputError, match="no real 2D lesions with subset 'nope'"):
        gan.gan_patches(bank, "nope")


def test_atomic_checkpoint_leaves_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    class Engine:
        class state:
            epoch, iteration = 3, 30

    net = torch.nn.Linear(2, 1)
    saver = gan.AtomicCheckpoint(tmp_path, {"generator": net})
    saver._save(Engine, "model.pt")
    good = torch.load(tmp_path / "model.pt", weights_only=True)
    assert good["epoch"] == 3 and torch.equal(good["generator"]["weight"], net.weight)

    def killed(obj, f):  # a run killed half-way through writing the file
        open(f, "wb").write(b"truncated")
        raise KeyboardInterrupt

    monkeypatch.setattr(gan.torch, "save", killed)
    Engine.state.epoch = 4
    with pytest.raises(KeyboardInterrupt):
        saver._save(Engine, "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] == 3
    with pytest.raises(InputError, match="interval"):
        gan.AtomicCheckpoint(tmp_path, {}, interval=0)


def test_segmentation_presets_ignore_the_generative_bundle():
    from metalung_monai.training.presets import load_presets

    assert (ROOT / "configs" / "train.json").is_file()
    presets = load_presets(BUNDLES)
    assert "gan_size" not in presets["quick"] and "epochs" in presets["quick"]


@pytest.mark.slow
def test_zoo_layout_and_metadata():
    for rel in FILES:
        assert (ROOT / rel).is_file(), f"{rel} missing"
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == 2 and out["value_range"] == [-1, 1]
    verify_metadata(ROOT)


@pytest.mark.slow
def test_one_epoch_train_then_sample_then_realism(tmp_path):
    bank = model_bank(tmp_path / "bank")
    common = bundle_dirs(tmp_path, bank)
    # quick generates 32 x 32: the tiny bank's model size
    run(bundle_cmd("run", "--config_file", stack("train", "quick"), *common, *GENERATOR_TINY), ROOT)
    ckpt = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 2
    assert not [p for p in (tmp_path / "models").iterdir() if "partial" in p.name]
    run(
        bundle_cmd(
            "run",
            "--config_file",
            stack("train", "quick", "sample"),
            *common,
            "--num_samples",
            "40",
        ),
        ROOT,
    )
    out = tmp_path / "out" / "generated"
    gen = read_bank(out)
    meta = json.loads((out / "bank.json").read_text())["sampling"]
    assert (
        meta["written"] + meta["dropped_empty"] + meta["rejected_gate"] == 40
        and meta["written"] == len(gen) > 0
    )
    assert meta["hu_map"]["mode"] == "pooled" and meta["hu_map"]["by"] == "lung_rads"
    img, mask = gen.arrays["image2d"], gen.arrays["mask2d"]
    assert img.dtype == np.int16 and img.shape == (len(gen), 32, 32)
    assert set(np.unique(mask)) <= {0, 1} and mask.reshape(len(gen), -1).sum(1).min() > 0
    raw = gen.arrays["raw2d"]
    assert raw.dtype == np.float32 and raw.shape == img.shape
    assert not np.array_equal(raw, np.rint(raw))  # the fractional values before mapping
    t = gen.table
    assert (t["source"] == "generated").all() and (t["generator"] == "dcgan").all()
    assert (t["patient_id"] == "generated").all()
    assert set(t["lung_rads"]) <= {"LR2", "LR3", "LR4A", "LR4B"}
    assert set(t["type"]) <= {"solid", "part-solid", "ground-glass"}
    # the same seed draws the same lesions
    again = gan.sample_lesions(
        torch.nn.Sequential(_generator(), torch.nn.Tanh()),
        bank,
        tmp_path / "again",
        num_samples=40,
        checkpoint=tmp_path / "models" / "model_final.pt",
    )
    assert again["written"] == len(gen)
    assert np.array_equal(read_bank(tmp_path / "again").arrays["image2d"], img)

    from metalung_monai.evaluation.realism import realism_report

    r = realism_report(
        bank,
        out,
        tmp_path / "report",
        n_boot=10,
        n_perm=10,
        c2st_folds=3,
        c2st_epochs=2,
        c2st_min_steps=10,
        c2st_repeats=1,
    )
    assert (tmp_path / "report" / "realism.md").is_file()
    assert r["gate"]["integer_rate_before_mapping"] == 0.0
    assert 0.0 <= r["gate"]["pass_rate"] <= 1.0


def _generator():
    """The quick preset's generator, as ``configs/train.json`` + ``quick.json`` declare it."""
    from monai.networks.nets import Generator

    quick = json.loads((ROOT / "configs" / "quick.json").read_text())
    return Generator(
        latent_shape=128,
        start_shape=quick["g_start_shape"],
        channels=quick["g_channels"],
        strides=quick["g_strides"],
        kernel_size=3,
        num_res_units=0,
        act="RELU",
        norm="BATCH",
    )
