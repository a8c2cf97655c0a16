"""Training presets: ``quick`` (2 CPU cores, minutes) and ``full`` (thesis scale, one GPU).

Every arm of an experiment uses the same preset: same number of iterations, batch size, crop
size, optimiser and seeds, so augmentations are compared at equal compute.
"""

from __future__ import annotations

import copy

__all__ = ["PRESETS", "preset"]

_COMMON = {
    "window": (-1000.0, 600.0),   # HU -> [0, 1]; keeps calcification (> 200 HU) apart from tumour
    "val_fold": 0,                 # training patients of this fold validate (best checkpoint)
    "pos_neg": (1, 1),             # crop centres: tumour vs elsewhere
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "metalung_ops": ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor"),
    "metalung_copies": 1,
    "eval_roi": 256,               # whole-slice inference window (larger slices are tiled)
    "pixel_mm": None,              # evaluation/inference: resample in-plane to this pixel size (mm)
}

PRESETS: dict[str, dict] = {
    "quick": {
        **_COMMON,
        "crop": 128,             # training patches (2D: 128 x 128; 3D: 96 x 96 x 16)
        "crop_3d": (96, 96, 16),
        "batch_size": 16,
        "epochs": 24,
        "epoch_length": 25,      # iterations per epoch: 600 iterations whatever the dataset size
        "val_interval": 2,
        "num_workers": 1,
        "amp": False,
        "unet_channels": (16, 32, 64, 128),
        "unet_strides": (2, 2, 2),
        "deeplab_channels": (16, 32, 64, 128),
        "deeplab_aspp_channels": 64,
        "deeplab_aspp_rates": (2, 4, 6),
        # Mask R-CNN from scratch: whole slices, not patches (trained on 96-px crops it scored 0.92
        # on tumour crops and 0.18 on the same slices whole: the context must match inference),
        # a slim FPN and box/mask heads (64 channels instead of 256, a 256-wide box MLP instead of
        # 1024: 12.5 M parameters instead of 30.9 M, 31-37 ms per 256-px slice instead of 88-105),
        # AdamW one-cycle and half-positive RoI sampling. 500 iterations of 2 slices, about 0.2 s
        # each on 2 cores.
        "maskrcnn_backbone": "resnet18",
        "maskrcnn_fpn_channels": 64,
        "maskrcnn_representation_size": 256,
        "maskrcnn_crop": 256,
        "maskrcnn_pos_neg": (1, 0),
        "maskrcnn_batch_size": 2,
        "maskrcnn_epochs": 20,   # 500 iterations
        "maskrcnn_lr": 1e-3,
        # after 500-600 iterations from scratch the detections' scores are low (median best score on a
        # tumour of a training slice 0.26): torchvision's customary 0.5 discarded every detection
        # (DICE 0 on every validation and test slice); 0.2 chosen on the validation fold
        "maskrcnn_score_threshold": 0.2,
        "sw_batch_size": 16,
    },
    "full": {
        **_COMMON,
        "crop": 256,
        "crop_3d": (160, 160, 32),
        "eval_roi": 512,
        "batch_size": 16,
        "epochs": 200,
        "epoch_length": 100,     # 20,000 iterations
        "val_interval": 5,
        # measured on one H100 with 16 CPU cores (U-Net, 256 crops, AMP): 4 loader workers left the
        # GPU waiting 43 % of the loop's time, 12 workers 14 %
        "num_workers": 12,
        "amp": True,
        "unet_channels": (32, 64, 128, 256, 512),
        "unet_strides": (2, 2, 2, 2),
        "deeplab_channels": (64, 128, 256, 512),
        "deeplab_aspp_channels": 256,
        "deeplab_aspp_rates": (6, 12, 18),
        "maskrcnn_backbone": "resnet50",
        "maskrcnn_fpn_channels": 256,      # torchvision's widths
        "maskrcnn_representation_size": 1024,
        "maskrcnn_crop": 512,              # whole slices
        "maskrcnn_pos_neg": (1, 0),
        "maskrcnn_batch_size": 8,
        "maskrcnn_epochs": 100,
        "maskrcnn_lr": 1e-3,
        "maskrcnn_score_threshold": 0.5,
        "sw_batch_size": 8,
    },
}


def preset(name: str, **overrides) -> dict:
    """A copy of preset ``name`` (``"quick"`` or ``"full"``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    out = copy.deepcopy(PRESETS[name])
    unknown = [k for k in overrides if k not in out]
    if unknown:
        raise ValueError(f"unknown preset setting(s) {unknown}")
    out.update(overrides)
    out["name"] = name
    return out
