"""The three MONAI bundles: Model Zoo layout, metadata, network I/O, export, training, evaluation,
inference and two-process (gloo) training, on a tiny phantom cohort."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
NAMES = ("unet_lung_tumor", "deeplabv3_lung_tumor", "maskrcnn_lung_tumor")
ZOO_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)
TINY = (
    "{'epochs': 1, 'epoch_length': 2, 'val_interval': 1, 'batch_size': 2, 'maskrcnn_batch_size': 2, "
    "'maskrcnn_epochs': 1, 'maskrcnn_crop': 64, 'num_workers': 0, 'crop': 64, 'eval_roi': 128, 'sw_batch_size': 4}"
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def bundle_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


def run(cmd, cwd, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return small_cohort


@pytest.mark.parametrize("name", NAMES)
def test_zoo_layout_and_metadata(name):
    root = BUNDLES / name
    for rel in ZOO_FILES:
        assert (root / rel).is_file(), f"{name}: {rel} missing"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    run(
        bundle_cmd(
            "verify_metadata",
            "--meta_file",
            "configs/metadata.json",
            "--filepath",
            "../meta_schema.json",
        ),
        root,
    )
    # a broken metadata file is refused
    bad = dict(meta)
    del bad["task"]
    broken = root / "configs" / "metadata_broken_test.json"
    broken.write_text(json.dumps(bad))
    try:
        res = subprocess.run(
            bundle_cmd(
                "verify_metadata", "--meta_file", str(broken), "--filepath", "../meta_schema.json"
            ),
            cwd=root,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode != 0 and "'task' is a required property" in res.stderr + res.stdout
    finally:
        broken.unlink()


@pytest.mark.parametrize("name", NAMES)
def test_network_in_out_and_torchscript_export(name, tmp_path):
    root = BUNDLES / name
    run(
        bundle_cmd(
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.json",
            "--device",
            "cpu",
            "--n",
            "4",
        ),
        root,
    )
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    run(
        bundle_cmd(
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts),
            "--ckpt_file",
            str(ckpt),
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.json",
        ),
        root,
    )
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_train_evaluate_infer_on_a_tiny_cohort(name, cohort, tmp_path):
    root = BUNDLES / name
    common = [
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--datalist",
        str(cohort / "datalist_small.json"),
        "--preset_overrides",
        TINY,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run(
        bundle_cmd("run", "--config_file", "configs/train.json", "--augment", "metalung", *common),
        root,
    )
    assert (tmp_path / "models" / "model.pt").is_file() and (
        tmp_path / "models" / "model_final.pt"
    ).is_file()
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2 and len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    assert 0.0 <= hist["data_share"] <= 1.0
    run(
        bundle_cmd(
            "run", "--config_file", "['configs/train.json','configs/evaluate.json']", *common
        ),
        root,
    )
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["slices"]["n_images"] > 0 and set(summary["patient_dice_3d"])
    for table in ("slices.csv", "volumes.csv", "per_class.md", "predictions.npz"):
        assert (tmp_path / "eval" / table).is_file()
    pred_dir = tmp_path / "pred"
    run(
        bundle_cmd(
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            str(root),
            "--dataset_dir",
            str(cohort),
            "--datalist",
            str(cohort / "datalist_small.json"),
            "--preset_overrides",
            TINY,
            "--ckpt_dir",
            str(tmp_path / "models"),
            "--output_dir",
            str(pred_dir),
        ),
        root,
    )
    test = json.loads((cohort / "datalist_small.json").read_text())["test"]
    out = sorted(pred_dir.glob("*.nii.gz"))
    assert len(out) == len(test)
    ref = sitk.ReadImage(str(cohort / test[0]["image"]))
    pred = sitk.ReadImage(str(out[0]))
    assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
    assert np.allclose(pred.GetDirection(), ref.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}


def test_pretrained_override_loads_local_weights(cohort, tmp_path):
    from monai.bundle import ConfigParser

    root = BUNDLES / "unet_lung_tumor"
    parser = ConfigParser()
    parser.read_config(root / "configs" / "train.json")
    parser.update({"bundle_root": str(root), "dataset_dir": str(cohort)})
    net = parser.get_parsed_content("network_def")
    for p in net.parameters():
        torch.nn.init.constant_(p, 0.125)
    path = tmp_path / "weights.pt"
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    parser = ConfigParser()
    parser.read_config(root / "configs" / "train.json")
    parser.update(
        {
            "bundle_root": str(root),
            "dataset_dir": str(cohort),
            "pretrained": str(path),
            "device": "cpu",
        }
    )
    loaded = parser.get_parsed_content("network")
    assert all(torch.all(p == 0.125) for p in loaded.parameters())
    parser["pretrained"] = str(tmp_path / "missing.pt")
    with pytest.raises(Exception) as exc:
        parser.get_parsed_content("network", lazy=False)
    chain, e = [], exc.value
    while e is not None:  # MONAI wraps the error raised inside a config expression
        chain.append(str(e))
        e = e.__cause__
    assert any("missing.pt: pretrained weights file does not exist" in m for m in chain), chain


def test_two_processes_train_one_epoch_and_write_one_checkpoint(cohort, tmp_path):
    root = BUNDLES / "unet_lung_tumor"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "['configs/train.json','configs/multi_gpu_train.json']",
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--preset_overrides",
        TINY,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    res = run(cmd, root)
    log = res.stdout + res.stderr
    assert "[rank1]" not in log or "Error" not in log
    ckpts = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert ckpts == ["model.pt", "model_final.pt"]  # written once, by rank 0
    state = torch.load(
        tmp_path / "models" / "model_final.pt", map_location="cpu", weights_only=True
    )
    assert not any(k.startswith("module.") for k in state)  # unwrapped from DistributedDataParallel
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2


def test_3d_patch_training_and_evaluation(cohort, tmp_path):
    """Whole volumes / 3D patches (not only the thesis' tumour slices) with one override."""
    root = BUNDLES / "unet_lung_tumor"
    tiny3d = TINY[:-1] + ", 'crop_3d': (48, 48, 16), 'unet_channels': (8, 16, 32, 64)}"
    common = [
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--datalist",
        str(cohort / "datalist_small.json"),
        "--preset_overrides",
        tiny3d,
        "--spatial_dims",
        "3",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run(
        bundle_cmd("run", "--config_file", "configs/train.json", "--augment", "metalung", *common),
        root,
    )
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2 and hist["train_samples"] >= 1
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(v.ndim == 5 for v in state.values())  # 3D convolutions
    run(
        bundle_cmd(
            "run", "--config_file", "['configs/train.json','configs/evaluate.json']", *common
        ),
        root,
    )
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["volumes"]["n_images"] == 1
