"""``bundles/vqvae_lesion_synth``: the gated PixelCNN's causality, the priors' seeded sampling,
typed errors on bad checkpoints and inputs, Model Zoo layout and metadata, and the chained
one-epoch runs (VQ-VAE, then the PixelCNN and transformer priors stacked on it, then
``sample.json``) on a tiny constructed bank."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, GENERATOR_TINY, bundle_cmd, run, stack, verify_metadata
from lesion_factory import model_bank
from monai.bundle import ConfigParser
from monai.networks.nets import VQVAE, DecoderOnlyTransformer

from metalung_monai.errors import InputError
from metalung_monai.synthesis import vqvae
from metalung_monai.synthesis.bank import read_bank
from metalung_monai.synthesis.pixelcnn import GatedPixelCNN

ROOT = BUNDLES / "vqvae_lesion_synth"
FILES = (
    "configs/metadata.json",
    "configs/train_autoencoder.json",
    "configs/train_prior.json",
    "configs/train_transformer.json",
    "configs/sample.json",
    "configs/quick.json",
    "configs/full.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)
TINY_PRIOR = ["--prior_epochs", "1", "--prior_epoch_length", "2"]


def _tiny_vqvae(num_embeddings=8):
    return VQVAE(
        spatial_dims=2,
        in_channels=2,
        out_channels=2,
        channels=(8, 8),
        num_res_layers=1,
        num_res_channels=(8, 8),
        downsample_parameters=((2, 4, 1, 1),) * 2,
        upsample_parameters=((2, 4, 1, 1, 0),) * 2,
        num_embeddings=num_embeddings,
        embedding_dim=4,
    )


# --------------------------------------------------------------------------- PixelCNN
def test_pixelcnn_is_causal_in_raster_order():
    """Changing the code at raster position p changes no logit at positions <= p and some
    logit after p (every p of a 6 x 7 grid, a trained-size network in eval mode)."""
    torch.manual_seed(0)
    k, (h, w) = 16, (6, 7)
    net = GatedPixelCNN(k, channels=16, num_layers=5, hidden_channels=32).eval()
    codes = torch.randint(0, k, (2, h, w), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = net(codes)
        assert base.shape == (2, k, h, w)
        for p in range(h * w):
            changed = codes.clone()
            i, j = divmod(p, w)
            changed[:, i, j] = (changed[:, i, j] + 1 + p % (k - 1)) % k
            diff = (net(changed) - base).abs().amax(dim=(0, 1)).flatten()
            assert diff[: p + 1].max() == 0, f"position {p} leaks into positions <= {p}"
            if p < h * w - 1:
                assert diff[p + 1 :].max() > 1e-6, f"position {p} reaches no later position"
        # the first position has no context: its logits are the same for any grid
        other = torch.randint(0, k, (2, h, w), generator=torch.Generator().manual_seed(2))
        assert torch.equal(net(other)[:, :, 0, 0], base[:, :, 0, 0])
        # rows below i do not reach row i (what the sampler's row cropping relies on)
        for i in range(h):
            assert torch.allclose(net(codes[:, : i + 1])[:, :, i], base[:, :, i], atol=1e-6)


def test_quick_pixelcnn_sees_every_earlier_position():
    """No blind spot: with quick's layers, the features the head reads at every position of the
    8 x 8 code grid depend on every earlier position (and on none after it)."""
    quick = json.loads((ROOT / "configs" / "quick.json").read_text())
    torch.manual_seed(0)
    net = GatedPixelCNN(8, channels=8, num_layers=quick["pixelcnn_layers"], hidden_channels=8)
    net = net.double().eval()
    feats = {}
    net.head.register_forward_hook(lambda m, i, o: feats.__setitem__("h", i[0]))
    n = 8
    codes = torch.randint(0, 8, (1, n, n), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net(codes)
        base = feats["h"].clone()
        for p in range(n * n):
            changed = codes.clone()
            changed[0, p // n, p % n] = (changed[0, p // n, p % n] + 1) % 8
            net(changed)
            diff = (feats["h"] - base).abs().amax(dim=(0, 1)).flatten()
            assert diff[: p + 1].max() == 0 and (diff[p + 1 :] > 0).all(), f"position {p}"


def test_pixelcnn_rejects_wrong_inputs_and_options():
    net = GatedPixelCNN(8, channels=8, num_layers=2, hidden_channels=8)
    with pytest.raises(InputError, match="codes: expected an integer"):
        net(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(InputError, match="codes: expected an integer"):
        net(torch.zeros(1, 4, 4))
    with pytest.raises(InputError, match=r"codes must lie in \[0, 8\), got \[8, 8\]"):
        net(torch.full((1, 4, 4), 8))
    with pytest.raises(InputError, match="kernel_size"):
        GatedPixelCNN(8, kernel_size=4)
    with pytest.raises(InputError, match="num_layers"):
        GatedPixelCNN(8, num_layers=0)


# --------------------------------------------------------------------------- losses, inferers
def test_vqvae_loss_and_prior_inferers_train_only_the_prior():
    torch.manual_seed(0)
    ae = _tiny_vqvae()
    x = torch.rand(3, 2, 16, 16) * 2 - 1
    x1, x2 = vqvae.AutoencoderPrepareBatch("image")({"image": x}, "cpu")
    assert x1 is x2 and torch.equal(x1, x)
    recon, q = ae(x)
    loss = vqvae.VQVAELoss("l1", quantization_weight=2.0)((recon, q), x)
    assert torch.isclose(loss, (recon - x).abs().mean() + 2.0 * q)
    with pytest.raises(InputError, match="reconstruction"):
        vqvae.VQVAELoss("l3")

    shape = vqvae.latent_shape(ae, 16)
    assert shape == (4, 4)
    pix = GatedPixelCNN(8, channels=8, num_layers=2, hidden_channels=8)
    logits, codes = vqvae.PixelCNNPriorInferer(ae)(x, pix)
    assert logits.shape == (3, 8, 4, 4) and codes.shape == (3, 4, 4)
    assert torch.equal(codes, ae.index_quantize(x))
    vqvae.PriorLoss()((logits, codes), None).backward()
    assert all(p.grad is None and not p.requires_grad for p in ae.parameters())
    assert all(p.grad is not None for p in pix.parameters())
    assert not ae.training

    tr = DecoderOnlyTransformer(
        num_tokens=9, max_seq_len=16, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=1
    )
    logits, target = vqvae.TransformerPriorInferer(ae, vqvae.raster_ordering(shape))(x, tr)
    assert logits.shape == (3, 9, 16) and torch.equal(target, codes.reshape(3, -1))
    assert torch.isfinite(vqvae.PriorLoss()((logits, target)))


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_sample_codes_is_seeded_and_never_draws_the_start_token(kind):
    torch.manual_seed(0)
    if kind == "pixelcnn":
        prior = GatedPixelCNN(8, channels=8, num_layers=2, hidden_channels=8)
    else:
        prior = DecoderOnlyTransformer(
            num_tokens=9,
            max_seq_len=12,
            attn_layers_dim=8,
            attn_layers_depth=1,
            attn_layers_heads=1,
        )
    a = vqvae.sample_codes(prior, 10, (3, 4), seed=5, batch_size=4)
    assert a.shape == (10, 3, 4) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < 8
    assert torch.equal(a, vqvae.sample_codes(prior, 10, (3, 4), seed=5, batch_size=4))
    assert not torch.equal(a, vqvae.sample_codes(prior, 10, (3, 4), seed=6, batch_size=4))
    # a sharp prior (temperature -> 0) draws its most likely code at every step
    b = vqvae.sample_codes(prior, 3, (3, 4), seed=1, temperature=1e-4)
    assert torch.equal(b, vqvae.sample_codes(prior, 3, (3, 4), seed=2, temperature=1e-4))
    with pytest.raises(InputError, match="temperature"):
        vqvae.sample_codes(prior, 2, (3, 4), temperature=0)
    if kind == "transformer":
        with pytest.raises(InputError, match="max_seq_len 12 is shorter than the 16 codes"):
            vqvae.sample_codes(prior, 2, (4, 4))


def test_bad_checkpoints_and_mismatched_priors_raise_input_errors(tmp_path):
    ae = _tiny_vqvae(8)
    pix = GatedPixelCNN(8, channels=8, num_layers=2, hidden_channels=8)
    good = tmp_path / "autoencoder_final.pt"
    torch.save({"autoencoder": ae.state_dict(), "epoch": 1}, good)
    assert vqvae.load_checkpoint(_tiny_vqvae(8), good, "autoencoder") is not None
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match=re.escape(f"{missing}: no such checkpoint")):
        vqvae.load_checkpoint(ae, missing, "autoencoder")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"truncated")
    with pytest.raises(InputError, match=re.escape(f"{garbage}: not a readable checkpoint")):
        vqvae.load_checkpoint(ae, garbage, "autoencoder")
    with pytest.raises(InputError, match=re.escape(f"{good}: holds no 'pixelcnn' entry")):
        vqvae.load_checkpoint(pix, good, "pixelcnn")
    # weights of another preset (16 codes) into an 8-code network: shapes do not fit
    with pytest.raises(
        InputError, match=re.escape(f"{good}: its 'autoencoder' weights do not fit")
    ):
        vqvae.load_checkpoint(_tiny_vqvae(16), good, "autoencoder")
    with pytest.raises(InputError, match="prior: 'transformer' needs a DecoderOnlyTransformer"):
        vqvae.sample_lesions(ae, pix, tmp_path, tmp_path / "out", prior="transformer")
    with pytest.raises(InputError, match="prior: must be one of"):
        vqvae.sample_lesions(ae, pix, tmp_path, tmp_path / "out", prior="gan")
    with pytest.raises(InputError, match="the prior has 16 codes, the VQ-VAE 8"):
        vqvae.sample_lesions(
            ae, GatedPixelCNN(16, channels=8, num_layers=1), tmp_path, tmp_path / "out", size=16
        )


# --------------------------------------------------------------------------- the bundle
@pytest.mark.slow
def test_zoo_layout_and_metadata():
    for rel in FILES:
        assert (ROOT / rel).is_file(), f"{rel} missing"
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 2
    assert fmt["outputs"]["pred"]["num_channels"] == 2
    verify_metadata(ROOT)


def _networks(*configs: str, **overrides):
    """The networks the bundle's stacked configs declare (parsed in-process, CPU)."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f"{c}.json") for c in configs])
    parser.update({"device": "$torch.device('cpu')", **overrides})
    return parser.get_parsed_content("autoencoder"), parser.get_parsed_content("prior_net")


@pytest.mark.slow
def test_one_epoch_stages_then_sample(tmp_path):
    bank = model_bank(tmp_path / "bank")
    models, out = tmp_path / "models", tmp_path / "out"
    common = ["--bank_dir", bank, "--ckpt_dir", str(models), "--output_dir", str(out)]
    # stage 1 (quick generates 32 x 32: the tiny bank's model size)
    run(
        bundle_cmd(
            "run", "--config_file", stack("train_autoencoder", "quick"), *common, *GENERATOR_TINY
        ),
        ROOT,
    )
    ae_ckpt = torch.load(models / "autoencoder_final.pt", weights_only=True)
    assert {"autoencoder", "optimizer"} <= set(ae_ckpt)
    assert ae_ckpt["epoch"] == 1 and ae_ckpt["iteration"] == 2
    # stage 2: the PixelCNN, then the transformer, each stacked on stage 1
    for extra, name in (((), "pixelcnn"), (("train_transformer",), "transformer")):
        cfg = stack("train_autoencoder", "train_prior", *extra, "quick")
        run(bundle_cmd("run", "--config_file", cfg, *common, *GENERATOR_TINY, *TINY_PRIOR), ROOT)
        ckpt = torch.load(models / f"{name}_final.pt", weights_only=True)
        assert {name, "optimizer"} <= set(ckpt) and ckpt["iteration"] == 2
        assert ckpt["parameters"][name] > 0
    assert not [p for p in models.iterdir() if "partial" in p.name]
    # stage 2 leaves the VQ-VAE alone: its checkpoint is stage 1's
    assert torch.load(models / "autoencoder_final.pt", weights_only=True)["iteration"] == 2

    cfg = stack("train_autoencoder", "train_prior", "quick", "sample")
    # a 2-step VQ-VAE's lesions all fail the realism gate (area, diameter): keep them here
    no_gate = ["--quality_gate", "False"]
    run(bundle_cmd("run", "--config_file", cfg, *common, "--num_samples", "24", *no_gate), ROOT)
    gen_dir = out / "generated"
    gen = read_bank(gen_dir)
    meta = json.loads((gen_dir / "bank.json").read_text())["sampling"]
    assert (
        meta["prior"] == "pixelcnn" and meta["latent_shape"] == [8, 8] and not meta["quality_gate"]
    )
    assert meta["written"] + meta["dropped_empty"] == 24 and meta["rejected_gate"] == 0
    assert meta["written"] == len(gen) > 0
    img, mask = gen.arrays["image2d"], gen.arrays["mask2d"]
    assert img.dtype == np.int16 and img.shape == (len(gen), 32, 32)
    assert set(np.unique(mask)) <= {0, 1} and mask.reshape(len(gen), -1).sum(1).min() > 0
    assert gen.arrays["raw2d"].dtype == np.float32
    assert (gen.table["generator"] == "vqvae").all()
    assert (gen.table["source"] == "generated").all()

    # the same seed draws the same lesions; the transformer prior writes its own generator name
    for extra, prior in (((), "pixelcnn"), (("train_transformer",), "transformer")):
        ae, net = _networks("train_autoencoder", "train_prior", *extra, "quick")
        kw = dict(
            num_samples=24,
            seed=0,
            size=32,
            prior=prior,
            autoencoder_ckpt=models / "autoencoder_final.pt",
            prior_ckpt=models / f"{prior}_final.pt",
            quality_gate=False,
        )
        a = vqvae.sample_lesions(ae, net, bank, tmp_path / f"{prior}_a", **kw)
        b = vqvae.sample_lesions(ae, net, bank, tmp_path / f"{prior}_b", **kw)
        ga, gb = read_bank(tmp_path / f"{prior}_a"), read_bank(tmp_path / f"{prior}_b")
        assert a["written"] == b["written"] == len(ga) > 0
        assert np.array_equal(ga.arrays["image2d"], gb.arrays["image2d"])
        assert np.array_equal(ga.arrays["mask2d"], gb.arrays["mask2d"])
        assert ga.arrays["image2d"].dtype == np.int16
        assert (ga.table["generator"] == vqvae.GENERATOR_NAMES[prior]).all()
        if prior == "pixelcnn":  # the bundle run and the function draw the same lesions
            assert np.array_equal(ga.arrays["image2d"], img)
