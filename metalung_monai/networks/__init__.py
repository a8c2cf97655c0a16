"""Segmentation networks beyond MONAI's U-Net, for the tumour-segmentation bundles.

* :class:`DeepLabV3`: atrous ResNet encoder + ASPP built from MONAI blocks, 2D or 3D, logits at
  the input size; TorchScript-scriptable.
* :class:`MaskRCNNSegmenter`: torchvision Mask R-CNN (ResNet-FPN) for one-channel slices whose
  eval output is a semantic ``(B, 2, H, W)`` probability map; :func:`targets_from_mask` and
  :func:`train_iteration` train it with ``monai.engines.SupervisedTrainer``.

No network downloads weights; see docs/networks.md for architectures, parameter counts and
export status.
"""

from metalung_monai.networks.deeplabv3 import ASPP, AtrousResNetEncoder, DeepLabV3, ResidualBlock
from metalung_monai.networks.maskrcnn import (
    DEFAULT_ANCHOR_SIZES,
    SUPPORTED_BACKBONES,
    MaskRCNNSegmenter,
    load_backbone_weights,
    targets_from_mask,
    train_iteration,
)

__all__ = [
    "DeepLabV3",
    "ASPP",
    "AtrousResNetEncoder",
    "ResidualBlock",
    "MaskRCNNSegmenter",
    "targets_from_mask",
    "train_iteration",
    "load_backbone_weights",
    "SUPPORTED_BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
]
