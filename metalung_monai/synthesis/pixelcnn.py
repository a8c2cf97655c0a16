"""Gated PixelCNN over a VQ-VAE's code grid (the MetaLung thesis' prior; MONAI has none).

van den Oord et al., "Conditional Image Generation with PixelCNN Decoders" (NeurIPS 2016): an
autoregressive model of a 2D grid of discrete codes in raster order,
``p(c) = prod_{i, j} p(c[i, j] | c[rows < i], c[i, cols < j])``, built from

* a **vertical stack** whose features at ``(i, j)`` see only rows above ``i`` (a ``k x k``
  window), and a **horizontal stack** whose features at ``(i, j)`` see row ``i`` left of ``j``
  plus the vertical stack at ``(i, j)``: together the receptive field is everything before
  ``(i, j)`` in raster order, with no blind spot (the plain PixelCNN's);
* **masked convolutions**: the first layer (mask "A") excludes the current position, the later
  ones (mask "B") include their own, already causal, features;
* **gated units** ``tanh(W_f * x) * sigmoid(W_g * x)`` in both stacks, a ``1 x 1`` link from the
  vertical to the horizontal stack, and residual connections on the horizontal stack (from the
  second layer on: the first layer's input holds the current code).

A masked ``k x k`` convolution is implemented as the convolution with only the kernel's allowed
part (vertical: ``(k // 2 + 1) x k`` rows above and the centre row, ``k // 2 x k`` for mask A;
horizontal: ``1 x (k // 2 + 1)``, ``1 x k // 2`` for mask A) over a causally padded input. This is
the same function as multiplying a full kernel by a {0, 1} mask, without the masked-out weights:
the parameter count is that of the weights that exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalung_monai.errors import InputError

__all__ = ["GatedMaskedConv2d", "GatedPixelCNN"]


class _CausalConv2d(nn.Module):
    """``nn.Conv2d`` over ``F.pad(x, pad)`` with the output cropped to the input's size.

    ``pad`` is ``(left, right, top, bottom)``; with a kernel ``(kh, kw)`` and zero bottom /
    right padding, output ``(i, j)`` sees input rows ``i - top .. i - top + kh - 1`` and columns
    ``j - left .. j - left + kw - 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], pad) -> None:
        super().__init__()
        self.pad = tuple(int(p) for p in pad)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.conv(F.pad(x, self.pad))[..., :h, :w]


class GatedMaskedConv2d(nn.Module):
    """One gated PixelCNN layer: vertical and horizontal stacks, ``channels`` features each.

    Args:
        channels: features ``C`` of both stacks (input and output).
        kernel_size: odd ``k`` of the masked ``k x k`` window.
        mask_type: ``"A"`` (first layer: the current position excluded, no residual) or ``"B"``.

    ``forward(v, h)``: two ``(B, C, H, W)`` float tensors, returns the next ``(v, h)`` of the
    same shape. Vertical features at ``(i, j)`` depend only on the input's rows ``< i``;
    horizontal ones on rows ``< i`` and on row ``i`` at columns ``< j`` (mask A) -- the layers
    after the first keep this, so the stack is causal in raster order.
    """

    def __init__(self, channels: int, kernel_size: int = 3, mask_type: str = "B") -> None:
        super().__init__()
        if mask_type not in ("A", "B"):
            raise InputError("mask_type", f"must be 'A' or 'B', got {mask_type!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError("kernel_size", f"must be odd and positive, got {kernel_size}")
        if kernel_size == 1 and mask_type == "A":
            raise InputError("kernel_size", "a mask-A layer needs a kernel of at least 3")
        c, k = int(channels), int(kernel_size) // 2
        self.mask_type = mask_type
        if mask_type == "A":
            # rows i-k .. i-1 (kernel k x (2k+1)), columns j-k .. j-1 (kernel 1 x k)
            self.v_conv = _CausalConv2d(c, 2 * c, (k, 2 * k + 1), (k, k, k, 0))
            self.h_conv = _CausalConv2d(c, 2 * c, (1, k), (k, 0, 0, 0))
        else:
            # rows i-k .. i (kernel (k+1) x (2k+1)), columns j-k .. j (kernel 1 x (k+1))
            self.v_conv = _CausalConv2d(c, 2 * c, (k + 1, 2 * k + 1), (k, k, k, 0))
            self.h_conv = _CausalConv2d(c, 2 * c, (1, k + 1), (k, 0, 0, 0))
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        f, g = x.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # mask A: v_pre at row i sees input rows < i; mask B: rows <= i of the previous
        # vertical features, themselves built from rows < i, so the link to h stays causal
        v_pre = self.v_conv(v)
        h_out = self.h_out(self._gate(self.h_conv(h) + self.v_to_h(v_pre)))
        if self.mask_type == "B":
            h_out = h_out + h
        return self._gate(v_pre), h_out


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN prior: logits of each code given the codes before it in raster order.

    Args:
        num_embeddings: ``K``, the VQ-VAE's codebook size (codes ``0 .. K - 1``).
        channels: features ``C`` of both stacks.
        num_layers: gated layers (the first with mask A, the others mask B); ``>= 1``.
        kernel_size: masked window of the gated layers after the first (odd).
        first_kernel_size: masked window of the first (mask-A) layer (odd, ``>= 3``).
        hidden_channels: features of the ``1 x 1`` output head (ReLU, conv, ReLU, conv).

    ``forward(codes)``: ``codes`` int64 ``(B, H, W)`` in ``[0, K)``; returns float logits
    ``(B, K, H, W)`` where ``logits[:, :, i, j]`` depends only on the codes at raster positions
    before ``(i, j)`` (train with ``F.cross_entropy(logits, codes)``; sample position by position).

    Raises:
        InputError: ``codes`` not an integer ``(B, H, W)`` tensor of codes in ``[0, K)``.
    """

    def __init__(
        self,
        num_embeddings: int,
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        hidden_channels: int = 128,
    ) -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise InputError("num_layers", f"must be >= 1, got {num_layers}")
        self.num_embeddings = int(num_embeddings)
        self.embedding = nn.Embedding(self.num_embeddings, int(channels))
        self.layers = nn.ModuleList(
            [GatedMaskedConv2d(channels, first_kernel_size, "A")]
            + [GatedMaskedConv2d(channels, kernel_size, "B") for _ in range(int(num_layers) - 1)]
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden_channels, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, self.num_embeddings, 1),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 3 or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise InputError(
                "codes",
                f"expected an integer (B, H, W) code grid, got {tuple(codes.shape)} {codes.dtype}",
            )
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= self.num_embeddings:
            raise InputError(
                "codes", f"codes must lie in [0, {self.num_embeddings}), got [{lo}, {hi}]"
            )
        x = self.embedding(codes.long()).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)
