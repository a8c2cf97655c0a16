"""VQ-VAE lesion synthesis with an autoregressive prior (``bundles/vqvae_lesion_synth``).

Two training stages, as the MetaLung thesis and Model Zoo's generative bundles do:

1. MONAI :class:`~monai.networks.nets.VQVAE` on the bank's two-channel lesions (image and mask
   together, :mod:`~metalung_monai.synthesis.generative`), trained with
   :class:`monai.engines.SupervisedTrainer`: :class:`AutoencoderPrepareBatch` makes the input its
   own target and :class:`VQVAELoss` adds the quantisation (commitment) loss to the L1
   reconstruction loss of VQVAE's ``(reconstruction, quantization_loss)`` output.
2. A prior over the frozen VQ-VAE's code grid (``index_quantize``: int64 ``(B, h, w)``), trained
   with the same trainer and cross-entropy (:class:`PriorLoss`):

   * ``"pixelcnn"``: the thesis' gated PixelCNN
     (:class:`~metalung_monai.synthesis.pixelcnn.GatedPixelCNN`), :class:`PixelCNNPriorInferer`;
   * ``"transformer"``: MONAI :class:`~monai.networks.nets.DecoderOnlyTransformer` through
     :class:`~monai.inferers.VQVAETransformerInferer` (raster-scan
     :class:`~monai.utils.Ordering`, a start token numbered ``num_embeddings``, hence
     ``num_tokens = num_embeddings + 1``), :class:`TransformerPriorInferer`.

Sampling (:func:`sample_lesions`) draws ``N`` code grids from the prior position by position in
raster order (all ``N`` grids at once per position), seeded by
``torch.Generator().manual_seed(seed)`` on the CPU (the same codes on any device for the same
probabilities), decodes them with the VQ-VAE, clips to ``[-1, 1]`` and writes a bank-like folder
of integer-HU lesions with :func:`~metalung_monai.synthesis.generative.write_generated`
(generator ``"vqvae"`` for the PixelCNN prior, ``"vqvae_transformer"`` for the transformer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer, VQVAETransformerInferer
from monai.networks.nets import VQVAE, DecoderOnlyTransformer
from monai.utils import Ordering
from torch import nn

from metalung_monai.errors import InputError
from metalung_monai.synthesis.generative import DEFAULT_WINDOW, write_generated
from metalung_monai.synthesis.pixelcnn import GatedPixelCNN

__all__ = [
    "GENERATOR_NAMES",
    "AutoencoderPrepareBatch",
    "PixelCNNPriorInferer",
    "PriorLoss",
    "TransformerPriorInferer",
    "VQVAELoss",
    "freeze",
    "latent_shape",
    "load_checkpoint",
    "raster_ordering",
    "sample_codes",
    "sample_lesions",
]

#: ``generator`` column (and lesion-id prefix) of the lesions sampled with each prior
GENERATOR_NAMES = {"pixelcnn": "vqvae", "transformer": "vqvae_transformer"}


# --------------------------------------------------------------------------- stage 1
class AutoencoderPrepareBatch(PrepareBatch):
    """``SupervisedTrainer`` batch for an autoencoder: ``(batch[key], batch[key])`` on ``device``
    (the input is its own target)."""

    def __init__(self, key: str = "image") -> None:
        self.key = key

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        x = batchdata[self.key].to(device=device, non_blocking=non_blocking, **kwargs)
        return x, x


class VQVAELoss(nn.Module):
    """VQ-VAE training loss on ``VQVAE.forward``'s output: reconstruction + quantisation.

    ``forward(pred, target)``: ``pred`` the ``(reconstruction (B, C, H, W), quantization_loss)``
    pair, ``target`` ``(B, C, H, W)``; returns ``reconstruction_loss(reconstruction, target) +
    quantization_weight * quantization_loss`` (a scalar). MONAI's VQ-VAE updates its codebook by
    exponential moving averages, so ``quantization_loss`` is the commitment term
    (``commitment_cost * ||z_e - sg(e)||^2``).

    Args:
        reconstruction: ``"l1"`` or ``"mse"``.
        quantization_weight: weight of the quantisation loss.
    """

    def __init__(self, reconstruction: str = "l1", quantization_weight: float = 1.0) -> None:
        super().__init__()
        losses = {"l1": nn.L1Loss(), "mse": nn.MSELoss()}
        if reconstruction not in losses:
            raise InputError("reconstruction", f"must be one of {sorted(losses)}")
        self.reconstruction = losses[reconstruction]
        self.quantization_weight = float(quantization_weight)

    def forward(self, pred, target: torch.Tensor) -> torch.Tensor:
        recon, quantization_loss = pred
        return self.reconstruction(recon, target) + self.quantization_weight * quantization_loss


# --------------------------------------------------------------------------- checkpoints
def load_checkpoint(net: nn.Module, path: str | os.PathLike, key: str) -> nn.Module:
    """Load entry ``key`` of a bundle checkpoint (:class:`~metalung_monai.synthesis.generative.AtomicCheckpoint`)
    into ``net`` (a bare state dict is accepted too); returns ``net``.

    Raises:
        InputError (naming ``path``): missing or unreadable file, no ``key`` entry, or weights
        whose names or shapes do not fit ``net`` (e.g. another preset's network).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, f"no such checkpoint (train the stage that writes {key!r} first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        raise InputError(path, f"not a readable checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise InputError(path, f"not a checkpoint dictionary ({type(state).__name__})")
    if key in state:
        state = state[key]
    elif not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"holds no {key!r} entry (entries: {sorted(state)})")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(
            path, f"its {key!r} weights do not fit the configured network: {' '.join(first[:3])}"
        ) from e
    return net


def freeze(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with ``requires_grad=False`` on every parameter (a frozen stage)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# --------------------------------------------------------------------------- stage 2
def latent_shape(autoencoder: VQVAE, size: int, in_channels: int | None = None) -> tuple[int, int]:
    """Shape ``(h, w)`` of the code grid of a ``size x size`` input (run on zeros)."""
    p = next(autoencoder.parameters())
    x = torch.zeros(
        1, in_channels or autoencoder.in_channels, int(size), int(size), device=p.device
    )
    with torch.no_grad():
        return tuple(int(s) for s in autoencoder.index_quantize(x).shape[1:])


def raster_ordering(shape: Sequence[int]) -> Ordering:
    """MONAI raster-scan :class:`~monai.utils.Ordering` of an ``(h, w)`` code grid."""
    return Ordering("raster_scan", spatial_dims=2, dimensions=(1, *(int(s) for s in shape)))


class PixelCNNPriorInferer(Inferer):
    """``SupervisedTrainer`` inferer of a PixelCNN prior over a frozen VQ-VAE's codes.

    ``__call__(inputs, network)``: ``inputs`` ``(B, C, H, W)`` images; returns ``(logits
    (B, K, h, w), codes (B, h, w))`` with ``codes = autoencoder.index_quantize(inputs)`` (no
    gradient) and ``logits = network(codes)``; :class:`PriorLoss` takes the pair.
    The autoencoder is frozen here (:func:`freeze`).
    """

    def __init__(self, autoencoder: VQVAE) -> None:
        super().__init__()
        self.autoencoder = freeze(autoencoder)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any):
        with torch.no_grad():
            codes = self.autoencoder.index_quantize(inputs)
        return network(codes, *args, **kwargs), codes


class TransformerPriorInferer(Inferer):
    """``SupervisedTrainer`` inferer of a ``DecoderOnlyTransformer`` prior (MONAI
    :class:`~monai.inferers.VQVAETransformerInferer` with ``return_latent=True``).

    ``__call__(inputs, network)``: returns ``(logits (B, K + 1, L), target (B, L))``, ``L = h * w``
    codes in ``ordering``'s order, the logits of position ``t`` predicting code ``t`` from the
    start token and codes ``< t``. The autoencoder is frozen here (:func:`freeze`).
    """

    def __init__(self, autoencoder: VQVAE, ordering: Ordering) -> None:
        super().__init__()
        self.autoencoder = freeze(autoencoder)
        self.ordering = ordering
        self._inferer = VQVAETransformerInferer()

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any):
        logits, target, _ = self._inferer(
            inputs,
            vqvae_model=self.autoencoder,
            transformer_model=network,
            ordering=self.ordering,
            return_latent=True,
        )
        return logits.transpose(1, 2), target


class PriorLoss(nn.Module):
    """Cross-entropy of a prior's ``(logits (B, K, ...), codes (B, ...))`` prediction (the
    trainer's own target, ``None`` here, is ignored: the codes come from the frozen VQ-VAE)."""

    def forward(self, pred, target: Any = None) -> torch.Tensor:
        logits, codes = pred
        return F.cross_entropy(logits, codes.long())


# --------------------------------------------------------------------------- sampling
def _next_logits(prior: nn.Module, seq: torch.Tensor, t: int, shape, kind: str) -> torch.Tensor:
    """Logits ``(B, K)`` of the code at raster position ``t`` given the codes before it."""
    if kind == "pixelcnn":
        # rows below i do not reach row i (causal padding): run on rows 0 .. i only
        i, j = divmod(t, shape[1])
        return prior(seq.reshape(-1, *shape)[:, : i + 1])[:, :, i, j]
    # transformer: seq holds the start token and t codes; its last output predicts code t
    return prior(seq[:, : t + 1])[:, -1, : prior.num_tokens - 1]


@torch.no_grad()
def sample_codes(
    prior: nn.Module,
    num: int,
    shape: Sequence[int],
    seed: int = 0,
    batch_size: int = 512,
    temperature: float = 1.0,
    ordering: Ordering | None = None,
) -> torch.Tensor:
    """Draw ``num`` code grids from an autoregressive prior, int64 ``(num, h, w)`` on the CPU.

    ``prior``: a :class:`~metalung_monai.synthesis.pixelcnn.GatedPixelCNN` or a MONAI
    ``DecoderOnlyTransformer`` (start token ``num_tokens - 1``, never drawn; ``ordering`` maps its
    sequence to the grid, raster scan by default). Position by position in the prior's order,
    the ``batch_size`` grids of a batch at once: ``softmax(logits / temperature)``, then
    ``torch.multinomial`` with ``torch.Generator().manual_seed(seed)`` on the CPU (one generator
    for all batches: the result depends on ``seed`` and ``num``, not on the device).
    """
    if isinstance(prior, GatedPixelCNN):
        kind, k = "pixelcnn", prior.num_embeddings
    elif isinstance(prior, DecoderOnlyTransformer):
        kind, k = "transformer", prior.num_tokens - 1
    else:
        raise InputError("prior", f"a GatedPixelCNN or DecoderOnlyTransformer, not {type(prior)}")
    if float(temperature) <= 0:
        raise InputError("temperature", f"must be > 0, got {temperature}")
    shape = tuple(int(s) for s in shape)
    length = shape[0] * shape[1]
    if kind == "transformer" and prior.max_seq_len < length:
        raise InputError(
            "prior", f"max_seq_len {prior.max_seq_len} is shorter than the {length} codes"
        )
    if ordering is None:
        ordering = raster_ordering(shape)
    device = next(prior.parameters()).device
    prior.eval()
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for start in range(0, int(num), int(batch_size)):
        b = min(int(batch_size), int(num) - start)
        if kind == "pixelcnn":
            seq = torch.zeros(b, length, dtype=torch.long, device=device)
        else:
            seq = torch.full((b, length + 1), k, dtype=torch.long, device=device)
        off = 0 if kind == "pixelcnn" else 1
        for t in range(length):
            logits = _next_logits(prior, seq, t, shape, kind).float().cpu()
            probs = torch.softmax(logits / float(temperature), dim=-1)
            seq[:, t + off] = torch.multinomial(probs, 1, generator=gen)[:, 0].to(device)
        seq = seq[:, off:].cpu()
        if kind == "transformer":
            seq = seq[:, torch.as_tensor(ordering.get_revert_sequence_ordering())]
        out.append(seq.reshape(b, *shape))
    return torch.cat(out) if out else torch.zeros(0, *shape, dtype=torch.long)


def sample_lesions(
    autoencoder: VQVAE,
    prior_net: nn.Module,
    bank_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_samples: int = 500,
    seed: int = 0,
    size: int = 64,
    prior: str = "pixelcnn",
    window: Sequence[float] = DEFAULT_WINDOW,
    hu_by: str | None = "lung_rads",
    batch_size: int = 512,
    temperature: float = 1.0,
    autoencoder_ckpt: str | os.PathLike | None = None,
    prior_ckpt: str | os.PathLike | None = None,
    quality_gate: bool = True,
) -> dict[str, Any]:
    """Sample ``num_samples`` lesions from the prior, decode, write a bank-like folder.

    Args:
        autoencoder: the stage-1 VQ-VAE (its ``"autoencoder"`` weights from ``autoencoder_ckpt``).
        prior_net: the stage-2 prior, a ``GatedPixelCNN`` (``prior="pixelcnn"``, checkpoint
            entry ``"pixelcnn"``) or a ``DecoderOnlyTransformer`` (``"transformer"``).
        bank_path: the real bank the VQ-VAE was trained on (HU map, pixel size).
        out_dir: the generated folder (:func:`~metalung_monai.synthesis.generative.write_generated`).
        size: the VQ-VAE's input size (the code grid is that of a ``size x size`` patch).
        batch_size: code grids drawn and decoded at once.
        temperature: softmax temperature of the prior (1: the model's distribution).
        quality_gate: drop the lesions that fail the realism gate against the real train
            lesions (``write_generated``'s ``quality_gate``; counted in ``rejected_gate``).

    Returns the sampling summary (``bank.json["sampling"]``), with the prior, seed, temperature,
    code grid, codebook size, the number of distinct codes drawn and the checkpoints.

    Raises:
        InputError: unknown ``prior``, a prior network of the other kind, a codebook mismatch
            between prior and VQ-VAE, or a bad checkpoint (naming the file).
    """
    if prior not in GENERATOR_NAMES:
        raise InputError("prior", f"must be one of {sorted(GENERATOR_NAMES)}, got {prior!r}")
    want = GatedPixelCNN if prior == "pixelcnn" else DecoderOnlyTransformer
    if not isinstance(prior_net, want):
        raise InputError("prior", f"{prior!r} needs a {want.__name__}, got {type(prior_net)}")
    t0 = time.perf_counter()
    if autoencoder_ckpt is not None:
        load_checkpoint(autoencoder, autoencoder_ckpt, "autoencoder")
    if prior_ckpt is not None:
        load_checkpoint(prior_net, prior_ckpt, prior)
    k = prior_net.num_embeddings if prior == "pixelcnn" else prior_net.num_tokens - 1
    if k != autoencoder.num_embeddings:
        raise InputError(
            "prior",
            f"the prior has {k} codes, the VQ-VAE {autoencoder.num_embeddings}"
            + (" (num_tokens must be num_embeddings + 1)" if prior == "transformer" else ""),
        )
    freeze(autoencoder)
    freeze(prior_net)
    shape = latent_shape(autoencoder, size)
    codes = sample_codes(
        prior_net, int(num_samples), shape, seed, batch_size, temperature, raster_ordering(shape)
    )
    device = next(autoencoder.parameters()).device
    raw = []
    with torch.no_grad():
        for start in range(0, codes.shape[0], int(batch_size)):
            batch = codes[start : start + int(batch_size)].to(device)
            raw.append(autoencoder.decode_samples(batch).float().clamp(-1.0, 1.0).cpu())
    raw_np = torch.cat(raw).numpy() if raw else np.zeros((0, 2, size, size), np.float32)
    t_gen = time.perf_counter() - t0
    return write_generated(
        raw_np,
        bank_path,
        out_dir,
        GENERATOR_NAMES[prior],
        window=window,
        hu_by=hu_by,
        seconds_generate=t_gen,
        quality_gate=bool(quality_gate),
        sampling={
            "prior": prior,
            "seed": int(seed),
            "temperature": float(temperature),
            "latent_shape": list(shape),
            "num_embeddings": int(autoencoder.num_embeddings),
            "codes_used": int(torch.unique(codes).numel()),
            "autoencoder_checkpoint": None
            if autoencoder_ckpt is None
            else os.fspath(autoencoder_ckpt),
            "prior_checkpoint": None if prior_ckpt is None else os.fspath(prior_ckpt),
        },
    )
