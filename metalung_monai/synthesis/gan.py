"""DCGAN lesion synthesis (``bundles/dcgan_lesion_synth``): the DCGAN losses for
:class:`monai.engines.GanTrainer` and the sampler that writes generated lesions to a bank-like
folder.

The generator makes two channels in ``[-1, 1]`` (tanh), image and mask together, as
:mod:`~metalung_monai.synthesis.generative` describes (window, sizes, the integer-HU mapping);
``gan_patches``, ``bank_gan_data``, ``AtomicCheckpoint``, ``window_inverse`` and
``bank_pixel_mm`` are that module's, under the names the bundle's configs use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metalung_monai.synthesis.generative import (
    DEFAULT_WINDOW,
    AtomicCheckpoint,
    bank_lesion_data,
    bank_pixel_mm,
    lesion_patches,
    window_inverse,
    write_generated,
)

__all__ = [
    "DEFAULT_WINDOW",
    "GENERATOR_NAME",
    "AtomicCheckpoint",
    "bank_gan_data",
    "bank_pixel_mm",
    "discriminator_loss",
    "gan_patches",
    "generator_loss",
    "sample_lesions",
    "window_inverse",
]

#: ``generator`` column of the generated lesions
GENERATOR_NAME = "dcgan"
#: the bank's lesions as GAN targets (``{"reals": (2, s, s)}`` items for ``GanTrainer``)
gan_patches = lesion_patches
bank_gan_data = bank_lesion_data


# --------------------------------------------------------------------------- losses
def discriminator_loss(
    d_net: torch.nn.Module,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``GanTrainer``'s ``d_loss_function(fakes, reals)``: BCE of ``d_net`` (sigmoid output) on
    reals labelled 1 and detached fakes labelled 0, averaged (as Model Zoo ``mednist_gan``)."""
    bce = torch.nn.BCELoss()

    def loss(fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
        real_out = d_net(reals)
        fake_out = d_net(fakes.detach())
        return 0.5 * (
            bce(real_out, torch.ones_like(real_out)) + bce(fake_out, torch.zeros_like(fake_out))
        )

    return loss


def generator_loss(d_net: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``GanTrainer``'s ``g_loss_function(fakes)``: BCE of ``d_net`` on fakes labelled 1."""
    bce = torch.nn.BCELoss()

    def loss(fakes: torch.Tensor) -> torch.Tensor:
        out = d_net(fakes)
        return bce(out, torch.ones_like(out))

    return loss


# --------------------------------------------------------------------------- sampling
def _generate(
    g_net: torch.nn.Module, num: int, latent: int, seed: int, batch: int, device
) -> np.ndarray:
    gen = torch.Generator().manual_seed(int(seed))
    g_net = g_net.to(device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, num, batch):
            z = torch.randn(min(batch, num - start), latent, generator=gen)
            out.append(g_net(z.to(device)).float().cpu())
    return torch.cat(out).numpy()


def sample_lesions(
    g_net: torch.nn.Module,
    bank_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_samples: int = 500,
    seed: int = 0,
    latent_size: int = 128,
    window: Sequence[float] = DEFAULT_WINDOW,
    hu_by: str | None = "lung_rads",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    quality_gate: bool = True,
) -> dict[str, Any]:
    """Generate ``num_samples`` lesions and write them to ``out_dir`` as a bank-like folder.

    ``num_samples`` latents ``N(0, I)`` from ``torch.Generator().manual_seed(seed)``; the
    generator's ``(2, s, s)`` tanh outputs go through
    :func:`~metalung_monai.synthesis.generative.write_generated` (mask, integer HU by quantile
    mapping onto the real bank's train lesions, the lesion table). ``checkpoint``: a
    ``model_final.pt`` of the bundle (its ``"generator"`` entry) or a bare state dict.
    ``quality_gate``: drop the lesions that fail the realism gate against the real train lesions
    (``write_generated``'s, counted in ``rejected_gate``).

    Returns the sampling summary (also in ``bank.json["sampling"]``).
    """
    t0 = time.perf_counter()
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        g_net.load_state_dict(state["generator"] if "generator" in state else state)
    raw = _generate(g_net, int(num_samples), int(latent_size), int(seed), int(batch_size), device)
    t_gen = time.perf_counter() - t0
    return write_generated(
        raw,
        bank_path,
        out_dir,
        GENERATOR_NAME,
        window=window,
        hu_by=hu_by,
        seconds_generate=t_gen,
        sampling={
            "seed": int(seed),
            "latent_size": int(latent_size),
            "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
        },
        quality_gate=bool(quality_gate),
    )
