"""``bundles/diffusion_lesion_synth``: Model Zoo layout and metadata, a one-epoch train on a tiny
constructed bank then ``sample.json`` (integer HU, binary non-empty masks, the ``condition``
column, reproducible), and the pieces of ``metalung_monai.synthesis.diffusion``: the class
labels reach the network, one step learns, classifier-free label dropout, typed errors."""

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
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from metalung_monai.errors import InputError
from metalung_monai.synthesis import diffusion
from metalung_monai.synthesis.bank import read_bank
from metalung_monai.synthesis.generative import CONDITIONS, LESION_CLASSES, condition_name

ROOT = BUNDLES / "diffusion_lesion_synth"
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


def _parsed(*names: str, **overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / f"{n}.json") for n in names])
    for k, v in overrides.items():
        p[k] = v
    p.parse()
    return p


def _quick(condition="lung_rads_solid", p_uncond=0.1):
    """The quick preset's network and training inferer, as the configs declare them."""
    p = _parsed("train", "quick", condition=condition, p_uncond=p_uncond, device="cpu")
    return p.get_parsed_content("network_def"), p.get_parsed_content("inferer"), p


def test_condition_schemes_and_typed_errors():
    assert diffusion.num_condition_classes("lung_rads_solid") == 8
    assert diffusion.num_condition_classes("lung_rads") == 4
    with pytest.raises(InputError, match="^condition: must be one of"):
        diffusion.num_condition_classes("lung_rads_size")
    with pytest.raises(RuntimeError) as err:  # the bundle parser wraps it, the cause is typed
        _parsed("train", "quick", condition="nope").get_parsed_content("network_def")
    assert isinstance(err.value.__cause__, InputError) and "condition" in str(err.value.__cause__)
    state = diffusion.ConditioningState("lung_rads", 0.2, (-1000, 400), 32)
    again = diffusion.ConditioningState("lung_rads_solid")
    again.load_state_dict(state.state_dict())
    assert again.state_dict() == state.state_dict() and again.num_classes == 4
    with pytest.raises(InputError, match="p_uncond"):
        diffusion.ConditioningState("lung_rads", 1.0)


def test_label_dropout_is_classifier_free_and_only_in_training():
    inf = diffusion.ClassConditionedDiffusionInferer(DDPMScheduler(1000), 8, p_uncond=0.25)
    labels = torch.arange(8).repeat(500)
    torch.manual_seed(0)
    dropped = inf.class_labels(labels, training=True)
    null = dropped == 8
    assert 0.21 < null.float().mean() < 0.29  # about p_uncond of them become the null class
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(inf.class_labels(labels[:, None], training=False), labels)
    with pytest.raises(InputError, match="^label: class labels must be in"):
        inf.class_labels(torch.tensor([0, 8]), training=False)
    with pytest.raises(InputError, match="^label:"):
        inf(torch.zeros(1, 2, 8, 8), torch.nn.Identity(), torch.zeros(1, 2, 8, 8), torch.zeros(1))


def test_one_step_learns_and_the_class_reaches_the_network(tmp_path):
    bank = model_bank(tmp_path / "bank")
    data = diffusion.bank_lesion_data(
        bank, "train", 32, augment=False, key="image", condition=("lung_rads_solid")
    )
    x = torch.stack([torch.as_tensor(data[i]["image"]) for i in range(8)])
    y = torch.stack([data[i]["label"] for i in range(8)])
    torch.manual_seed(0)
    net, inferer, p = _quick(p_uncond=0.0)
    assert net.class_embedding.num_embeddings == 9  # 8 classes + the null class
    noise, t = torch.randn_like(x), torch.randint(0, 1000, (8,))
    mse = torch.nn.MSELoss()

    def loss() -> float:
        with torch.no_grad():
            return float(mse(inferer(x, net.eval(), noise, t, y), noise))

    opt = torch.optim.Adam(net.parameters(), lr=p["lr"])
    before = loss()
    # the same batch, the same noise: the noise-prediction loss must fall. MONAI zero-initialises
    # the output convolution and each residual block's last one: the gradient reaches the class
    # embeddings from the third step on
    for _ in range(3):
        opt.zero_grad()
        mse(inferer(x, net.train(), noise, t, y), noise).backward()
        opt.step()
    after = loss()
    assert after < before - 1e-4, (before, after)
    # the loss reaches the embeddings of the batch's classes, and only those (no label dropped)
    grad = net.class_embedding.weight.grad.abs().sum(1)
    present = torch.zeros(9, dtype=torch.bool)
    present[y.reshape(-1)] = True
    assert (grad[present] > 0).all() and (grad[~present] == 0).all()
    # for a fixed noisy input, two classes give two different noise predictions
    with torch.no_grad():
        xt, tt = torch.randn(2, 2, 32, 32), torch.tensor([500, 500])
        a = net.eval()(xt, tt, class_labels=torch.tensor([0, 0]))
        a2 = net(xt, tt, class_labels=torch.tensor([0, 0]))
        b = net(xt, tt, class_labels=torch.tensor([7, 7]))
    assert torch.equal(a, a2) and (a - b).abs().max() > 1e-6
    # DDIM: same seed -> same samples whatever the batch size; another class -> other samples
    ddim = DDIMScheduler(1000)
    kw = dict(size=32, seed=3, num_inference_steps=3)
    s1 = diffusion.generate(net, inferer, ddim, [1, 1, 6], batch_size=3, **kw)
    s2 = diffusion.generate(net, inferer, ddim, [1, 1, 6], batch_size=2, **kw)
    s3 = diffusion.generate(net, inferer, ddim, [6, 1, 6], batch_size=3, **kw)
    assert s1.shape == (3, 2, 32, 32) and s1.dtype == np.float32
    assert np.abs(s1).max() <= 1.0
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert np.abs(s1[0] - s3[0]).max() > 1e-6 and np.allclose(s1[1:], s3[1:], atol=1e-5)
    g = diffusion.generate(net, inferer, ddim, [1, 6], guidance_scale=3.0, **kw)
    assert g.shape == (2, 2, 32, 32) and not np.allclose(g, s1[[0, 2]], atol=1e-5)


def test_bad_checkpoints_are_typed_errors_naming_the_file(tmp_path):
    net, _, _ = _quick()
    with pytest.raises(InputError, match="missing.pt: checkpoint not found"):
        diffusion.load_checkpoint(net, tmp_path / "missing.pt")
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"truncated")
    with pytest.raises(InputError, match="truncated.pt: not a readable torch checkpoint"):
        diffusion.load_checkpoint(net, bad)
    four, _, _ = _quick(condition="lung_rads")
    other = tmp_path / "lung_rads.pt"
    torch.save({"network": four.state_dict()}, other)  # 5 class embeddings, not 9
    with pytest.raises(InputError, match="lung_rads.pt: weights do not fit"):
        diffusion.load_checkpoint(net, other)
    cond = diffusion.ConditioningState("lung_rads").state_dict()
    torch.save({"network": four.state_dict(), "conditioning": cond}, other)
    with pytest.raises(InputError, match="trained with condition 'lung_rads'"):
        diffusion.load_checkpoint(net, other, "lung_rads_solid")
    assert diffusion.load_checkpoint(four, other, "lung_rads")["conditioning"] == cond


@pytest.mark.slow
def test_zoo_layout_and_metadata():
    for rel in FILES:
        assert (ROOT / rel).is_file(), f"{rel} missing"
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == 2
    assert meta["network_data_format"]["inputs"]["class_labels"]["value_range"] == [
        0,
        CONDITIONS["lung_rads_solid"],
    ]
    verify_metadata(ROOT)


@pytest.mark.slow
def test_one_epoch_train_then_sample(tmp_path):
    bank = model_bank(tmp_path / "bank")
    common = bundle_dirs(tmp_path, bank)
    # quick generates 32 x 32: the tiny bank's model size
    run(bundle_cmd("run", "--config_file", stack("train", "quick"), *common, *GENERATOR_TINY), ROOT)
    ckpt = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert {"network", "optimizer", "conditioning"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 2
    assert ckpt["conditioning"]["condition"] == "lung_rads_solid"
    assert ckpt["parameters"]["network"] > 0 and ckpt["train_seconds"] > 0
    assert not [p for p in (tmp_path / "models").iterdir() if "partial" in p.name]
    steps = ["--num_samples", "24", "--num_inference_steps", "3", "--sample_batch_size", "12"]
    steps += ["--quality_gate", "False"]  # two iterations make no lesion the gate would pass
    run(
        bundle_cmd("run", "--config_file", stack("train", "quick", "sample"), *common, *steps), ROOT
    )
    out = tmp_path / "out" / "generated"
    gen = read_bank(out)
    meta = json.loads((out / "bank.json").read_text())["sampling"]
    assert meta["written"] + meta["dropped_empty"] == 24 and meta["written"] == len(gen) > 0
    assert meta["num_inference_steps"] == 3 and meta["condition"] == "lung_rads_solid"
    assert meta["quality_gate"] is False and meta["rejected_gate"] == 0
    img, mask = gen.arrays["image2d"], gen.arrays["mask2d"]
    assert img.dtype == np.int16 and img.shape == (len(gen), 32, 32)
    assert set(np.unique(mask)) <= {0, 1} and mask.reshape(len(gen), -1).sum(1).min() > 0
    t = gen.table
    assert (t["source"] == "generated").all() and (t["generator"] == "diffusion").all()
    names = {condition_name("lung_rads_solid", k) for k in range(8)}
    assert set(t["condition"]) <= names and len(set(t["condition"])) > 1
    assert set(t["lung_rads"]) <= set(LESION_CLASSES)
    # the same seed draws the same lesions (the bundle's network, loaded from the checkpoint)
    p = _parsed("train", "quick", "sample", device="cpu")
    again = diffusion.sample_lesions(
        p.get_parsed_content("network_def"),
        p.get_parsed_content("inferer"),
        p.get_parsed_content("ddim_scheduler"),
        bank,
        tmp_path / "again",
        size=32,
        num_samples=24,
        num_inference_steps=3,
        batch_size=12,  # as the bundle run: float sums in another batch shape may differ by 1 ULP
        checkpoint=tmp_path / "models" / "model_final.pt",
        quality_gate=False,
    )
    assert again["written"] == len(gen)
    back = read_bank(tmp_path / "again")
    assert np.array_equal(back.arrays["image2d"], img)
    assert list(back.table["condition"]) == list(t["condition"])
    with pytest.raises(InputError, match="model_final.pt: trained with condition"):
        diffusion.sample_lesions(
            p.get_parsed_content("network_def"),
            p.get_parsed_content("inferer"),
            p.get_parsed_content("ddim_scheduler"),
            bank,
            tmp_path / "never",
            condition="lung_rads",
            size=32,
            num_samples=2,
            num_inference_steps=1,
            checkpoint=tmp_path / "models" / "model_final.pt",
        )
