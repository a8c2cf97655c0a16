"""Shared constants and helpers of the bundle tests (``test_bundles*.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    "configs/quick.json",
    "configs/full.json",
    "configs/augment_none.json",
    "configs/augment_metalung.json",
    "configs/augment_monai.json",
    "docs/README.md",
    "LICENSE",
)
ARMS = ("none", "metalung", "monai")
TINY = (
    "{'epochs': 1, 'epoch_length': 2, 'val_interval': 1, 'batch_size': 2, 'maskrcnn_batch_size': 2, "
    "'maskrcnn_epochs': 1, 'maskrcnn_crop': 64, 'num_workers': 0, 'crop': 64, 'eval_roi': 128, 'sw_batch_size': 4}"
)
#: a one-epoch, two-iteration run of a generator bundle (the Model Zoo's CI style)
GENERATOR_TINY = ["--epochs", "1", "--epoch_length", "2", "--batch_size", "4", "--num_workers", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def stack(*names: str) -> str:
    """A ``--config_file`` value stacking ``configs/<name>.json`` files."""
    return "[" + ",".join(f"'configs/{n}.json'" for n in names) + "]"


def bundle_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


def run(cmd, cwd, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res


def verify_metadata(root: Path) -> None:
    """``configs/metadata.json`` of the bundle at ``root``: no package both required and optional,
    and MONAI's ``verify_metadata`` against ``bundles/meta_schema.json`` (offline)."""
    import json

    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert not set(meta["required_packages_version"]) & set(meta["optional_packages_version"])
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


def bundle_dirs(tmp_path: Path, bank: str) -> list[str]:
    """``--bank_dir`` / ``--ckpt_dir`` / ``--output_dir`` overrides of a generator bundle run
    under ``tmp_path`` (checkpoints in ``models/``, outputs in ``out/``)."""
    return [
        "--bank_dir",
        bank,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
