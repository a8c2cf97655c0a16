r"""torchvision Mask R-CNN adapted to one-channel CT slices and to MONAI's semantic-segmentation API.

:class:`MaskRCNNSegmenter` wraps ``torchvision.models.detection.MaskRCNN`` (2D only) so that the
tumour-segmentation bundles can train and evaluate it like the U-Net:

* **input** ``(B, in_channels, H, W)`` float tensor (a CT window mapped to [0, 1]; one channel),
  normalised with mean 0 / std 1 (i.e. left as is), not resized when ``H == W == image_size``
  and never resized with ``image_size=None``;
* **training** ``forward(x, targets)`` (``.train()`` mode) returns torchvision's dict of losses;
  :func:`metalung_monai.training.maskrcnn_glue.targets_from_mask` makes the instance targets from
  a binary tumour mask and :func:`metalung_monai.training.maskrcnn_glue.train_iteration` is a
  drop-in ``iteration_update`` for ``monai.engines.SupervisedTrainer``;
* **inference** ``forward(x)`` (``.eval()`` mode) returns a *semantic* tensor ``(B, num_classes,
  H, W)`` of probabilities in [0, 1] (channel 1 = per-pixel tumour probability, channel 0 = 1 -
  that), so ``AsDiscrete(argmax=True)``, ``DiceMetric`` and ``SupervisedEvaluator`` apply
  unchanged.

What differs from torchvision's ``maskrcnn_resnet50_fpn``: no ImageNet / COCO weights (never
downloaded; ``pretrained_backbone`` takes a local ``state_dict`` file, read by
:mod:`metalung_monai.networks.maskrcnn_weights`), a one-channel first
convolution (3-channel weights are summed over their input channels when loaded, the exact
equivalent of feeding a grey image replicated to RGB), trainable ``BatchNorm2d`` instead of
``FrozenBatchNorm2d`` when training from scratch (frozen statistics of a random network are the
identity, i.e. no normalisation at all), smaller anchors ``8 .. 128`` px for small tumours,
``min_size = max_size = image_size``, a small (Detectron2-style) initialisation of the mask-logit
convolution, and RoI / proposal counts sized for 256-px slices (128 sampled RoIs per image, 300
test proposals, at most ``box_detections_per_img=20`` detections).

TorchScript: ``torch.jit.script(MaskRCNNSegmenter(...))`` works (torchvision's detection models
are scriptable and the wrapper is written for it: typed ``forward``, ``torch.jit.is_scripting()``
branches for torchvision's scripted ``(losses, detections)`` return). A scripted model gives the
same ``(B, 2, H, W)`` output as the eager one in ``.eval()`` mode and the same loss dict in
``.train()`` mode, so MONAI's ``ckpt_export`` can export it. ``torch.jit.trace`` does **not**
give a usable model: the number of detections, the score filtering, the per-instance mask pasting
and the per-image loop are data-dependent Python control flow that a trace freezes to the example
input (torch emits about 200 ``TracerWarning``\s). The traced model raises ``RuntimeError``
("Expected 2 elements in a list but found 1") for another batch size and silently returns wrong
probabilities for an image with a different number of detections (up to 0.47 off for a blank
image in a check with random weights). Export with scripting, never with tracing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from metalung_monai.networks.maskrcnn_weights import load_backbone_weights

__all__ = [
    "MaskRCNNSegmenter",
    "SUPPORTED_BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
]

#: backbone names accepted by ``torchvision...resnet_fpn_backbone``
SUPPORTED_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)

#: one anchor size (pixels) per FPN level P2..P6: tumours of 8-128 px on 256-px slices
DEFAULT_ANCHOR_SIZES: tuple[tuple[int, ...], ...] = ((8,), (16,), (32,), (64,), (128,))

#: torchvision defaults changed for 256-px slices holding a few small tumours (image area about a
#: tenth of COCO's 800 x 1333): 128 sampled RoIs per image instead of 512, and 300 RPN proposals at
#: test time instead of 1000 (the Faster R-CNN paper's test setting) -- the box head runs once per
#: proposal, so this sets the CPU inference cost. Override any of them through ``maskrcnn_kwargs``.
_MASKRCNN_DEFAULTS: dict[str, Any] = {
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_test": 600,
    "rpn_post_nms_top_n_test": 300,
}

_NORM_LAYERS = {
    "batch": nn.BatchNorm2d,
    "frozen": FrozenBatchNorm2d,
    "group": lambda c: nn.GroupNorm(32, c),
}


class _NativeSizeTransform(GeneralizedRCNNTransform):
    """torchvision's normalise-and-batch transform without the resize: images keep their pixel scale.

    Anchors and tumour sizes are in pixels, so a network trained on 128-px crops and run on 256- or
    512-px slices (or sliding windows) must not rescale them; batching still pads to a multiple of
    32 and the outputs are cropped back to each image's size.
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


def _plain(t: Any) -> Any:
    """A ``MetaTensor`` as a plain ``torch.Tensor`` (torchvision ops do not need its meta data)."""
    return t.as_tensor() if isinstance(t, MetaTensor) else t


class MaskRCNNSegmenter(nn.Module):
    """torchvision Mask R-CNN (ResNet-FPN) for one-channel CT slices with a semantic output.

    Args:
        in_channels: image channels (1: a CT window mapped to [0, 1]).
        num_classes: classes including background (2: background / tumour).
        backbone: ResNet name from :data:`SUPPORTED_BACKBONES` (``"resnet18"``: 30.9 M
            parameters in all; ``"resnet50"``: 44.0 M).
        trainable_layers: trainable ResNet stages counted from the last (0-5; 5 = all, the only
            sensible choice without pretrained weights).
        image_size: side of the (square) training images in pixels; torchvision's ``min_size``
            and ``max_size``, so images of this size are not resized (others are scaled to it
            and the output is mapped back to the input size). ``None``: never resize any image
            (native pixel scale whatever the size; what a model trained on crops and run on whole
            slices or sliding windows of another size needs).
        score_threshold: detections with a lower score do not contribute to the semantic output.
        mask_threshold: per-pixel mask probability at which a pixel counts as tumour. The
            semantic foreground channel is the instance mask probability ``p`` recalibrated
            piecewise-linearly so that ``p = mask_threshold`` maps to 0.5 (identity for 0.5):
            ``argmax`` then marks exactly the pixels with ``p > mask_threshold``.
        pretrained_backbone: local ``state_dict`` file for the backbone (see
            :func:`~metalung_monai.networks.maskrcnn_weights.load_backbone_weights`); ``None``
            (default) trains from scratch. Nothing is ever downloaded.
        anchor_sizes: anchor size(s) in pixels for each of the 5 FPN levels.
        aspect_ratios: anchor aspect ratios (the same at every level).
        box_detections_per_img: maximum detections per image.
        norm: backbone normalisation, ``"batch"`` (trainable ``BatchNorm2d``), ``"frozen"``
            (``FrozenBatchNorm2d``, for pretrained weights) or ``"group"`` (``GroupNorm(32)``);
            ``None`` (default): ``"frozen"`` with ``pretrained_backbone``, else ``"batch"``.
        fpn_channels: channels of the FPN outputs and of the mask head's convolutions
            (torchvision: 256). The quick training preset uses 64: 12.5 M parameters in all with
            ``resnet18`` instead of 30.9 M.
        representation_size: width of the box head's two fully connected layers (torchvision:
            1024).
        maskrcnn_kwargs: further keyword arguments of ``torchvision...MaskRCNN`` (e.g.
            ``rpn_batch_size_per_image``); they override this class's defaults
            ``box_batch_size_per_image=128``, ``rpn_pre_nms_top_n_test=600``,
            ``rpn_post_nms_top_n_test=300`` (torchvision: 512, 1000, 1000).

    The 1x1 mask-logit convolution is re-initialised with ``N(0, 0.001)`` weights and zero bias
    (Detectron2's choice; torchvision's ``kaiming_normal_(mode="fan_out")`` gives std-1 weights
    for 2 classes, mask logits of tens and a from-scratch mask loss near 15 that diverges with
    SGD at lr 0.01); the initial mask loss is then ``ln 2``.

    Attributes:
        model: the torchvision ``MaskRCNN``.

    Shapes:
        ``forward(x)`` in eval mode: ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` float
        probabilities; for ``num_classes == 2`` the channels sum to 1. With more classes channel
        ``c`` is the maximum mask probability of class-``c`` instances and channel 0 is 1 minus
        the maximum over the foreground channels.

    Raises:
        ValueError: unknown backbone / norm, ``trainable_layers`` outside 0-5, thresholds
            outside (0, 1), wrong number of anchor levels.
        InputError, UnsupportedFormatError: unusable ``pretrained_backbone`` (see
            :func:`~metalung_monai.networks.maskrcnn_weights.load_backbone_weights`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        backbone: str = "resnet18",
        trainable_layers: int = 5,
        image_size: int | None = 256,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        pretrained_backbone: str | os.PathLike | None = None,
        anchor_sizes: Sequence[Sequence[int]] = DEFAULT_ANCHOR_SIZES,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        box_detections_per_img: int = 20,
        norm: str | None = None,
        fpn_channels: int = 256,
        representation_size: int = 1024,
        **maskrcnn_kwargs: Any,
    ) -> None:
        super().__init__()
        if backbone not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"MaskRCNNSegmenter: unknown backbone {backbone!r}; choose from {SUPPORTED_BACKBONES}"
            )
        if not 0 <= trainable_layers <= 5:
            raise ValueError(
                f"MaskRCNNSegmenter: trainable_layers must be in 0..5, got {trainable_layers}"
            )
        if num_classes < 2:
            raise ValueError(
                f"MaskRCNNSegmenter: num_classes counts the background and must be >= 2, got {num_classes}"
            )
        for name, value in (
            ("score_threshold", score_threshold),
            ("mask_threshold", mask_threshold),
        ):
            if not 0.0 < value < 1.0:
                raise ValueError(f"MaskRCNNSegmenter: {name} must be in (0, 1), got {value}")
        anchor_sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
        if len(anchor_sizes) != 5:
            raise ValueError(
                f"MaskRCNNSegmenter: need anchor sizes for 5 FPN levels, got {len(anchor_sizes)}"
            )
        if fpn_channels < 1 or representation_size < 1:
            raise ValueError(
                f"MaskRCNNSegmenter: fpn_channels and representation_size must be positive, got "
                f"{fpn_channels} and {representation_size}"
            )
        norm = norm or ("frozen" if pretrained_backbone is not None else "batch")
        if norm not in _NORM_LAYERS:
            raise ValueError(
                f"MaskRCNNSegmenter: unknown norm {norm!r}; choose from {sorted(_NORM_LAYERS)}"
            )

        fpn = resnet_fpn_backbone(
            backbone_name=backbone,
            weights=None,
            norm_layer=_NORM_LAYERS[norm],
            trainable_layers=trainable_layers,
        )
        old = fpn.body.conv1
        fpn.body.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
        fpn.body.conv1.weight.requires_grad_(
            trainable_layers == 5
        )  # resnet_fpn_backbone's freezing rule
        if (
            fpn_channels != fpn.out_channels
        ):  # torchvision fixes 256; the quick preset uses a slimmer FPN
            in_list = [blk[0].in_channels for blk in fpn.fpn.inner_blocks]
            fpn.fpn = FeaturePyramidNetwork(
                in_list, int(fpn_channels), extra_blocks=LastLevelMaxPool()
            )
            fpn.out_channels = int(fpn_channels)
        if pretrained_backbone is not None:
            load_backbone_weights(fpn, pretrained_backbone, in_channels)
        anchors = AnchorGenerator(
            sizes=anchor_sizes, aspect_ratios=(tuple(float(a) for a in aspect_ratios),) * 5
        )
        # torchvision's default heads, written out so that their width follows the FPN's: box head
        # TwoMLPHead(C * 7 * 7 -> representation_size), mask head 4 convs of C channels, mask
        # predictor C -> num_classes (C = fpn_channels; torchvision: 256 and 1024)
        c = int(fpn_channels)
        heads: dict[str, Any] = {
            "box_head": TwoMLPHead(c * 7 * 7, int(representation_size)),
            "box_predictor": FastRCNNPredictor(int(representation_size), num_classes),
            "mask_head": MaskRCNNHeads(c, (c, c, c, c), 1),
            "mask_predictor": MaskRCNNPredictor(c, c, num_classes),
        }
        heads.update({k: v for k, v in maskrcnn_kwargs.items() if k in heads})
        self.model = MaskRCNN(
            fpn,
            num_classes=None,
            min_size=int(image_size or 256),
            max_size=int(image_size or 256),
            image_mean=[0.0] * in_channels,
            image_std=[1.0] * in_channels,
            rpn_anchor_generator=anchors,
            box_detections_per_img=int(box_detections_per_img),
            **{**_MASKRCNN_DEFAULTS, **maskrcnn_kwargs, **heads},
        )
        if image_size is None:
            t = self.model.transform
            self.model.transform = _NativeSizeTransform(
                t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible, t.fixed_size
            )
        if "mask_predictor" not in maskrcnn_kwargs:
            # torchvision initialises the 1x1 mask-logit conv with kaiming(fan_out): with 2 output
            # channels that is std 1 over 256 inputs, i.e. initial logits of tens and a mask BCE of
            # ~15 from scratch (SGD lr 0.01 then diverges to NaN within 5 steps). Detectron2 uses std 0.001.
            logits = self.model.roi_heads.mask_predictor.mask_fcn_logits
            nn.init.normal_(logits.weight, std=0.001)
            nn.init.zeros_(logits.bias)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)

    def forward(
        self, x: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> Tensor | dict[str, Tensor]:
        """Losses (training, with targets) or the semantic probability map (eval, no targets).

        Args:
            x: images ``(B, in_channels, H, W)``, float.
            targets: one dict per image with ``boxes`` float ``(N, 4)`` xyxy, ``labels`` int64
                ``(N,)`` and ``masks`` uint8 ``(N, H, W)`` (see
                :func:`~metalung_monai.training.maskrcnn_glue.targets_from_mask`);
                required in ``.train()`` mode, not allowed in ``.eval()`` mode.

        Returns:
            training: ``{"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
            "loss_rpn_box_reg"}`` scalar tensors; eval: ``(B, num_classes, H, W)`` probabilities.

        Raises:
            ValueError: wrong input shape, targets in eval mode, no targets in training mode.
        """
        if not torch.jit.is_scripting():
            x = _plain(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MaskRCNNSegmenter: expected images (B, {self.in_channels}, H, W), got shape {list(x.shape)}"
            )
        images = [img for img in x]
        if self.training:
            if targets is None:
                raise ValueError(
                    "MaskRCNNSegmenter: in .train() mode forward() computes losses and needs targets "
                    "(targets_from_mask); call .eval() for the (B, C, H, W) prediction"
                )
            if len(targets) != len(images):
                raise ValueError(
                    f"MaskRCNNSegmenter: {len(images)} images but {len(targets)} targets"
                )
            if torch.jit.is_scripting():
                losses, _ = self.model(images, targets)
            else:
                losses = self.model(images, targets)
            return losses
        if targets is not None:
            raise ValueError(
                "MaskRCNNSegmenter: losses need .train() mode; in .eval() mode call forward(x) only"
            )
        if torch.jit.is_scripting():
            _, detections = self.model(images, None)
        else:
            detections = self.model(images)
        return self.semantic(detections, x.shape[-2], x.shape[-1], x.dtype, x.device)

    def semantic(
        self,
        detections: list[dict[str, Tensor]],
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        """torchvision detections -> ``(B, num_classes, H, W)`` probabilities (see the class doc).

        Args:
            detections: torchvision Mask R-CNN eval outputs (``scores``, ``labels``, ``masks``
                ``(N, 1, H, W)`` probabilities pasted into the image).
            height: ``H``.
            width: ``W``.
            dtype: output dtype.
            device: output device.
        """
        t = self.mask_threshold
        out: list[Tensor] = []
        for det in detections:
            fg = torch.zeros((self.num_classes - 1, height, width), dtype=dtype, device=device)
            keep = det["scores"] >= self.score_threshold
            masks = det["masks"][keep]
            labels = det["labels"][keep]
            for c in range(1, self.num_classes):
                sel = masks[labels == c]
                if sel.shape[0] > 0:
                    fg[c - 1] = sel[:, 0].amax(dim=0).to(dtype)
            fg = torch.where(fg <= t, 0.5 * fg / t, 0.5 + 0.5 * (fg - t) / (1.0 - t))
            bg = 1.0 - fg.amax(dim=0, keepdim=True)
            out.append(torch.cat([bg, fg], dim=0))
        return torch.stack(out)
