"""Local weights for the Mask R-CNN backbone (never downloaded).

:func:`load_backbone_weights` reads a ``state_dict`` file (a torchvision ResNet classifier, a
``BackboneWithFPN``, a torchvision Mask R-CNN or a saved
:class:`~metalung_monai.networks.maskrcnn.MaskRCNNSegmenter`) into a ResNet-FPN backbone, with the
prefixes stripped by ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present`` and a
3-channel first convolution adapted to one-channel CT (:func:`adapt_first_conv`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from metalung_monai.errors import InputError, UnsupportedFormatError

__all__ = ["adapt_first_conv", "load_backbone_weights"]


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """(O, C', k, k) pretrained first-conv weights -> (O, in_channels, k, k).

    The weights are summed over their input channels (the response to a grey image replicated to
    ``C'`` channels) and spread evenly over ``in_channels``.
    """
    if weight.shape[1] == in_channels:
        return weight
    summed = weight.sum(dim=1, keepdim=True)
    return summed.repeat(1, in_channels, 1, 1) / in_channels


def load_backbone_weights(
    backbone: nn.Module, path: str | os.PathLike, in_channels: int
) -> list[str]:
    """Load a local ``state_dict`` file into a torchvision ``BackboneWithFPN`` (never downloads).

    Accepted files (``torch.save``; read with ``torch.load(weights_only=True)``, optionally wrapped
    in ``{"state_dict": ...}``):

    * a torchvision ResNet classifier's ``state_dict`` (``conv1.weight``, ``layer1...``; ``fc.*``
      is ignored): loaded into the ResNet body, the FPN stays random;
    * a ``BackboneWithFPN`` ``state_dict`` (``body.*``, ``fpn.*``), optionally prefixed with
      ``backbone.`` (a torchvision Mask R-CNN checkpoint) or ``model.backbone.`` (a saved
      :class:`MaskRCNNSegmenter`): body and FPN are loaded; the rest is ignored.

    A first convolution with another number of input channels (3 for ImageNet) is adapted with
    :func:`adapt_first_conv`.

    Args:
        backbone: ``BackboneWithFPN`` with ``body`` and ``fpn`` children.
        path: the weights file.
        in_channels: input channels of ``backbone.body.conv1``.

    Returns:
        The parts loaded: ``["body"]`` or ``["body", "fpn"]``.

    Raises:
        InputError: the file does not exist, or its tensors do not fit this backbone (missing /
            unexpected keys, wrong shapes: e.g. resnet50 weights for a resnet18 backbone).
        UnsupportedFormatError: the file is not a ``state_dict`` readable with
            ``weights_only=True``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            p, "pretrained backbone weights file not found (weights are never downloaded)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, unsafe globals, ...
        raise UnsupportedFormatError(
            p, f"not a PyTorch state_dict readable with weights_only=True ({err})"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsupportedFormatError(p, "expected a state_dict (a dict of tensor names to tensors)")

    prefix = next(
        (
            q
            for q in ("model.backbone.", "backbone.", "")
            if any(k.startswith(q + "body.") for k in state)
        ),
        None,
    )
    if prefix is None:  # a plain ResNet classifier
        parts = {"body": {k: v for k, v in state.items() if not k.startswith("fc.")}}
    else:
        # keys of other parts (heads, RPN) keep their own prefix and are ignored below
        sub = OrderedDict(state)
        consume_prefix_in_state_dict_if_present(sub, prefix)
        parts = {}
        for part in ("body", "fpn"):
            weights = OrderedDict((k, v) for k, v in sub.items() if k.startswith(part + "."))
            consume_prefix_in_state_dict_if_present(weights, part + ".")
            if weights or part == "body":
                parts[part] = weights
    if "conv1.weight" in parts["body"]:
        parts["body"]["conv1.weight"] = adapt_first_conv(parts["body"]["conv1.weight"], in_channels)
    for name, sd in parts.items():
        module = getattr(backbone, name)
        try:
            result = module.load_state_dict(sd, strict=False)
        except RuntimeError as err:  # shape mismatches
            first = str(err).split("\n\t")[1:3]
            raise InputError(
                p, f"weights do not fit the {name} of this backbone: {'; '.join(first)}"
            ) from err
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        unexpected = list(result.unexpected_keys)
        if missing or unexpected:
            raise InputError(
                p,
                f"weights do not fit the {name} of this backbone: {len(missing)} missing keys {missing[:3]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:3]} (another backbone architecture?)",
            )
    return list(parts)
