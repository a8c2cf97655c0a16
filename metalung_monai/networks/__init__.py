"""Segmentation networks beyond MONAI's U-Net, for the tumour-segmentation bundles.

* :class:`DeepLabV3`: atrous ResNet encoder + ASPP built from MONAI blocks, 2D or 3D, logits at
  the input size; TorchScript-scriptable.
* :class:`MaskRCNNSegmenter`: torchvision Mask R-CNN (ResNet-FPN) for one-channel slices whose
  eval output is a semantic ``(B, 2, H, W)`` probability map; its local backbone weights are
  read by :mod:`.maskrcnn_weights`, and :mod:`metalung_monai.training.maskrcnn_glue`
  (``targets_from_mask``, ``train_iteration``) trains it with ``monai.engines.SupervisedTrainer``.

No network downloads weights; see docs/networks.md for architectures, parameter counts and
export status.
"""

from metalung_monai.networks.deeplabv3 import ASPP, AtrousResNetEncoder, DeepLabV3, ResidualBlock
from metalung_monai.networks.maskrcnn import (
    DEFAULT_ANCHOR_SIZES,
    SUPPORTED_BACKBONES,
    MaskRCNNSegmenter,
)
from metalung_monai.networks.maskrcnn_weights import load_backbone_weights

#: training glue that moved to metalung_monai.training.maskrcnn_glue; still reachable here (e.g.
#: ``$mnets.train_iteration`` in a bundle config) without networks importing training at load time
_MOVED_TO_TRAINING = ("targets_from_mask", "train_iteration")


def __getattr__(name: str):
    if name in _MOVED_TO_TRAINING:
        from metalung_monai.training import maskrcnn_glue  # noqa: PLC0415 (training imports networks)

        return getattr(maskrcnn_glue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeepLabV3",
    "ASPP",
    "AtrousResNetEncoder",
    "ResidualBlock",
    "MaskRCNNSegmenter",
    "load_backbone_weights",
    "SUPPORTED_BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
]
