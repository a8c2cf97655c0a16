"""DeepLabV3 (atrous ResNet encoder + ASPP) for 2D or 3D segmentation, built from MONAI blocks.

MONAI ships no DeepLab and its ResNet has no dilation, so this module assembles the DeepLabV3
recipe (Chen et al., 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation") from
``monai.networks.blocks.Convolution``:

* **Stem**: ``7``-wide convolution with stride 2, norm, ReLU, then a ``3``-wide max-pool with
  stride 2 (output stride 4), as in ResNet.
* **Encoder**: ``len(channels)`` residual stages of ``blocks[i]`` basic blocks (two ``3``-wide
  convolutions + identity or ``1``-wide projection shortcut, ReLU after the sum). Stage 0 keeps
  the stride, every later stage halves the resolution *until the output stride is reached*; from
  then on a stage keeps the resolution and doubles the dilation instead (the DeepLab recipe). The
  first convolution of such a stage (the one that would have been strided) keeps the previous
  dilation, the others use the new one (torchvision's ``replace_stride_with_dilation``). With the
  default four stages, ``output_stride=8`` gives stage dilations ``(1, 1, 2, 4)`` and
  ``output_stride=16`` gives ``(1, 1, 1, 2)``.
* **ASPP**: a ``1``-wide branch, one ``3``-wide atrous branch per rate in ``aspp_rates`` and the
  image-level pooling branch (global average pool -> ``1``-wide conv -> ReLU -> upsampled to the
  feature size), concatenated -> ``1``-wide projection + norm + ReLU + dropout.
* **Head**: ``3``-wide conv + norm + ReLU, ``1``-wide classifier to ``out_channels`` logits,
  bilinear (2D) / trilinear (3D) upsampling to the input size (any size, odd sizes included).

Choosing ``aspp_rates``: the rates are in *feature-map* pixels. The DeepLabV3 paper uses
``(6, 12, 18)`` at output stride 16 on 513-pixel crops (about 33-pixel feature maps). On a
256-pixel slice at output stride 8 the feature map is 32 pixels wide, and on the 64- to 96-pixel
tumour crops used in the project's bundles it is 8 to 12 pixels: a rate-18 branch then only sees
zero padding except at its centre tap and degenerates to a ``1``-wide convolution. Use rates of
at most a third of the feature size there, e.g. ``(2, 4, 6)``.

Differences from the original: basic (ResNet-18/34 style) blocks instead of bottlenecks, no
ImageNet weights (trained from scratch; load a local ``state_dict`` with ``load_state_dict`` if
you have one), ``in_channels`` input channels (one CT channel by default) and a pooling branch
without normalisation (a batch norm over a ``1``-pixel map fails when training with batch size 1).

The network is TorchScript-scriptable (``torch.jit.script``), so MONAI's ``ckpt_export`` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = ["DeepLabV3", "ASPP", "AtrousResNetEncoder", "ResidualBlock"]

_INTERP_MODES = {2: "bilinear", 3: "trilinear"}


def _conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    strides: int = 1,
    dilation: int = 1,
    norm: tuple | str | None = "batch",
    act: tuple | str | None = "relu",
    dropout: float | None = None,
    bias: bool = False,
) -> Convolution:
    """Convolution -> norm -> activation -> dropout with "same" padding for the dilation."""
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=strides,
        kernel_size=kernel_size,
        dilation=dilation,
        adn_ordering="NAD",
        act=act,
        norm=norm,
        dropout=dropout,
        bias=bias,
    )


class ResidualBlock(nn.Module):
    """ResNet basic block with optional stride and dilation.

    ``act(conv_b(conv_a(x)) + shortcut(x))`` where ``conv_a`` is a ``3``-wide convolution with
    ``strides`` and dilation ``first_dilation``, ``conv_b`` a ``3``-wide convolution with
    ``dilation`` (both followed by the norm; ``conv_a`` also by the activation), and the shortcut
    the identity or a ``1``-wide strided convolution + norm when the shape changes.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        strides: stride of the first convolution (1 or 2).
        dilation: dilation of the second convolution.
        first_dilation: dilation of the first convolution (defaults to ``dilation``).
        norm: MONAI norm spec (``"batch"``, ``("group", {"num_groups": 8})``, ...).
        act: MONAI activation spec.

    Shapes:
        ``(B, in_channels, *S) -> (B, out_channels, *ceil(S / strides))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.conv_a = _conv(
            spatial_dims, in_channels, out_channels, 3, strides, first_dilation, norm, act
        )
        self.conv_b = _conv(spatial_dims, out_channels, out_channels, 3, 1, dilation, norm, None)
        self.shortcut: nn.Module
        if strides != 1 or in_channels != out_channels:
            self.shortcut = _conv(
                spatial_dims, in_channels, out_channels, 1, strides, 1, norm, None
            )
        else:
            self.shortcut = nn.Identity()
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_b(self.conv_a(x)) + self.shortcut(x))


class AtrousResNetEncoder(nn.Module):
    """Residual encoder whose last stages trade stride for dilation (output stride 4 * 2**k).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: output channels of each stage (the stem has ``channels[0]``).
        blocks: residual blocks per stage (same length as ``channels``).
        output_stride: ratio input size / feature size; one of ``4 * 2**k`` for
            ``k = 0 .. len(channels) - 1`` (8 or 16 for DeepLabV3).
        norm: MONAI norm spec.
        act: MONAI activation spec.

    Attributes:
        stage_strides: stride of each stage (1 or 2).
        stage_dilations: dilation used by each stage's blocks.

    Shapes:
        ``(B, in_channels, *S) -> (B, channels[-1], *ceil(S / output_stride))`` (each strided
        step rounds up).

    Raises:
        ValueError: mismatched ``channels`` / ``blocks`` or an unreachable ``output_stride``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        blocks: Sequence[int],
        output_stride: int = 8,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
    ) -> None:
        super().__init__()
        channels, blocks = tuple(int(c) for c in channels), tuple(int(b) for b in blocks)
        if len(channels) != len(blocks) or len(channels) < 1:
            raise ValueError(
                f"AtrousResNetEncoder: channels {channels} and blocks {blocks} must have the same length >= 1"
            )
        if any(c < 1 for c in channels) or any(b < 1 for b in blocks):
            raise ValueError(
                f"AtrousResNetEncoder: channels {channels} and blocks {blocks} must be positive"
            )
        allowed = [4 * 2**k for k in range(len(channels))]
        if output_stride not in allowed:
            raise ValueError(
                f"AtrousResNetEncoder: output_stride {output_stride} is not reachable with {len(channels)} stages; "
                f"choose one of {allowed}"
            )
        self.output_stride = int(output_stride)
        self.stem = nn.Sequential(
            _conv(spatial_dims, in_channels, channels[0], 7, 2, 1, norm, act),
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1),
        )
        stride_so_far, dilation = 4, 1
        strides, dilations, stages = [], [], []
        prev = channels[0]
        for i, (ch, n) in enumerate(zip(channels, blocks)):
            first_dilation = dilation
            if i == 0:
                s = 1
            elif stride_so_far < output_stride:
                s, stride_so_far = 2, stride_so_far * 2
            else:
                s, dilation = 1, dilation * 2
            layers = [ResidualBlock(spatial_dims, prev, ch, s, dilation, first_dilation, norm, act)]
            layers += [
                ResidualBlock(spatial_dims, ch, ch, 1, dilation, dilation, norm, act)
                for _ in range(n - 1)
            ]
            stages.append(nn.Sequential(*layers))
            strides.append(s)
            dilations.append(dilation)
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.stage_strides: tuple[int, ...] = tuple(strides)
        self.stage_dilations: tuple[int, ...] = tuple(dilations)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3).

    Branches: ``1``-wide conv; one ``3``-wide conv per rate in ``rates`` (dilation = rate);
    image pooling (global average -> ``1``-wide conv with bias -> activation -> upsampled to the
    feature size). Each convolutional branch has ``out_channels`` channels + norm + activation.
    The concatenation (``(2 + len(rates)) * out_channels``) is projected by a ``1``-wide conv +
    norm + activation + dropout.

    Args:
        spatial_dims: 2 or 3.
        in_channels: encoder feature channels.
        out_channels: channels of every branch and of the output.
        rates: dilation rates of the atrous branches (feature-map pixels).
        dropout: dropout probability after the projection (0 or ``None``: none).
        norm: MONAI norm spec.
        act: MONAI activation spec.

    Shapes:
        ``(B, in_channels, *F) -> (B, out_channels, *F)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float | None = 0.1,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
    ) -> None:
        super().__init__()
        rates = tuple(int(r) for r in rates)
        if any(r < 1 for r in rates):
            raise ValueError(f"ASPP: rates must be >= 1, got {rates}")
        branches = [_conv(spatial_dims, in_channels, out_channels, 1, 1, 1, norm, act)]
        branches += [
            _conv(spatial_dims, in_channels, out_channels, 3, 1, r, norm, act) for r in rates
        ]
        self.branches = nn.ModuleList(branches)
        self.pooling = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            _conv(spatial_dims, in_channels, out_channels, 1, 1, 1, None, act, bias=True),
        )
        self.project = _conv(
            spatial_dims,
            (len(branches) + 1) * out_channels,
            out_channels,
            1,
            1,
            1,
            norm,
            act,
            dropout or None,
        )
        self.rates: tuple[int, ...] = rates
        self.mode: str = _INTERP_MODES[spatial_dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        pooled = self.pooling(x)
        outs.append(F.interpolate(pooled, size=x.shape[2:], mode=self.mode, align_corners=False))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3(nn.Module):
    """DeepLabV3 segmentation network (atrous ResNet + ASPP), 2D or 3D, logits at input size.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: input channels (1: a CT window mapped to [0, 1]).
        out_channels: classes (2: background / tumour); the output is logits (no softmax).
        channels: channels of the encoder stages (the stem has ``channels[0]``).
        blocks: residual blocks per stage.
        output_stride: input / feature size ratio, 8 (finer, slower) or 16 (``4 * 2**k`` in
            general, ``k < len(channels)``).
        aspp_channels: channels of every ASPP branch and of the decoder.
        aspp_rates: ASPP dilation rates in feature pixels. ``(6, 12, 18)`` is the paper's choice
            for about 33-pixel feature maps; at output stride 8 a 256-pixel input gives a 32-pixel
            map, and small crops (64-96 px -> 8-12 px maps) need smaller rates such as
            ``(2, 4, 6)``.
        dropout: dropout after the ASPP projection.
        norm: MONAI norm spec (``"batch"``, ``"instance"``, ``("group", {"num_groups": 8})``).
        act: MONAI activation spec.

    Shapes:
        ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any spatial size ``S`` (2D:
        ``(H, W)``, 3D: ``(H, W, D)``), float logits.

    Raises:
        ValueError: unsupported ``spatial_dims``, mismatched ``channels`` / ``blocks``,
            unreachable ``output_stride`` or non-positive rates.

    Example::

        net = DeepLabV3(spatial_dims=2, in_channels=1, out_channels=2, aspp_rates=(2, 4, 6))
        logits = net(torch.rand(4, 1, 96, 96))   # (4, 2, 96, 96)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (2, 2, 2, 2),
        output_stride: int = 8,
        aspp_channels: int = 128,
        aspp_rates: Sequence[int] = (6, 12, 18),
        dropout: float | None = 0.1,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
    ) -> None:
        super().__init__()
        if spatial_dims not in _INTERP_MODES:
            raise ValueError(f"DeepLabV3: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = int(spatial_dims)
        self.encoder = AtrousResNetEncoder(
            spatial_dims, in_channels, channels, blocks, output_stride, norm, act
        )
        self.aspp = ASPP(
            spatial_dims, self.encoder.out_channels, aspp_channels, aspp_rates, dropout, norm, act
        )
        self.head = nn.Sequential(
            _conv(spatial_dims, aspp_channels, aspp_channels, 3, 1, 1, norm, act),
            Convolution(
                spatial_dims, aspp_channels, out_channels, kernel_size=1, conv_only=True, bias=True
            ),
        )
        self.mode: str = _INTERP_MODES[spatial_dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.aspp(self.encoder(x)))
        return F.interpolate(logits, size=x.shape[2:], mode=self.mode, align_corners=False)
