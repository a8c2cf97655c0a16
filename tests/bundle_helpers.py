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
