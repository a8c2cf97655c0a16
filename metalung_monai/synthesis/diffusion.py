"""Class-conditioned diffusion of lesion patches (``bundles/diffusion_lesion_synth``).

MONAI's ``DiffusionModelUNet`` learns the noise of DDPM (``DDPMScheduler``, 1000 steps, MSE on
the noise) on the bank's two-channel lesion patches (image and mask together, both in
``[-1, 1]``, :mod:`~metalung_monai.synthesis.generative`), conditioned on each lesion's class
through ``num_class_embeds`` (:data:`~metalung_monai.synthesis.generative.CONDITIONS`:
``"lung_rads_solid"``, 8 classes, or ``"lung_rads"``, 4); sampling runs DDIM
(``DDIMScheduler``) and writes a bank-like folder of integer-HU lesions with
:func:`~metalung_monai.synthesis.generative.write_generated`.

What MONAI lacks, and this module adds: ``DiffusionInferer`` passes a condition to the network
as ``context`` (cross-attention) or concatenated channels, never as ``class_labels``;
:class:`ClassConditionedDiffusionInferer` is the same forward pass (``scheduler.add_noise``, then
the network) with the class labels, plus classifier-free guidance: in training each label is
replaced by the null class (index ``num_classes``; the network has ``num_classes + 1`` class
embeddings) with probability ``p_uncond``, and :meth:`ClassConditionedDiffusionInferer.sample`
mixes the conditional and null predictions, ``eps_null + w * (eps_cond - eps_null)``
(``w = guidance_scale``; ``w = 1`` is plain conditional sampling, one network pass per step).

Training is MONAI's ``SupervisedTrainer`` with ``monai.engines.utils.DiffusionPrepareBatch``
(noise and timesteps drawn from torch's global generator, seeded by ``set_determinism``; the
batch's ``"label"`` goes to the inferer as ``condition``) and this inferer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import Scheduler

from metalung_monai.errors import InputError
from metalung_monai.synthesis.bank import read_bank
from metalung_monai.synthesis.generative import (
    CONDITIONS,
    DEFAULT_WINDOW,
    bank_lesion_data,
    condition_name,
    draw_conditions,
    write_generated,
)

__all__ = [
    "GENERATOR_NAME",
    "ClassConditionedDiffusionInferer",
    "ConditioningState",
    "bank_lesion_data",
    "generate",
    "load_checkpoint",
    "num_condition_classes",
    "sample_lesions",
]

#: ``generator`` column of the generated lesions
GENERATOR_NAME = "diffusion"


def num_condition_classes(condition: str) -> int:
    """Number of classes of a class scheme (:data:`~metalung_monai.synthesis.generative.CONDITIONS`).

    Raises:
        InputError: an unknown scheme (names the ``condition`` key).
    """
    if condition not in CONDITIONS:
        raise InputError("condition", f"must be one of {sorted(CONDITIONS)}, got {condition!r}")
    return int(CONDITIONS[condition])


class ConditioningState:
    """What a checkpoint needs to be sampled correctly: the class scheme, its number of classes
    (the null class of classifier-free guidance is index ``num_classes``), the label-drop
    probability, the HU window and the generated size.

    It has ``state_dict`` / ``load_state_dict``, so it goes in
    :class:`~metalung_monai.synthesis.generative.AtomicCheckpoint`'s ``save_dict`` as
    ``"conditioning"``; :func:`load_checkpoint` checks it against the sampling config.
    """

    def __init__(
        self,
        condition: str,
        p_uncond: float = 0.1,
        window: Sequence[float] = DEFAULT_WINDOW,
        size: int | None = None,
    ) -> None:
        self.condition = str(condition)
        self.num_classes = num_condition_classes(condition)
        if not 0.0 <= float(p_uncond) < 1.0:
            raise InputError("p_uncond", f"must be in [0, 1), got {p_uncond}")
        self.p_uncond = float(p_uncond)
        self.window = [float(window[0]), float(window[1])]
        self.size = None if size is None else int(size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "num_classes": self.num_classes,
            "p_uncond": self.p_uncond,
            "window": list(self.window),
            "size": self.size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__init__(state["condition"], state["p_uncond"], state["window"], state["size"])


class ClassConditionedDiffusionInferer(DiffusionInferer):
    """MONAI's ``DiffusionInferer`` with the condition given as class labels (``num_class_embeds``).

    Args:
        scheduler: the training scheduler (``DDPMScheduler``): ``add_noise`` makes the noisy input.
        num_classes: classes of the scheme; label ``num_classes`` is the null class.
        p_uncond: probability of replacing a label by the null class while the network is in
            training mode (classifier-free guidance; 0 disables it).
    """

    def __init__(self, scheduler: Scheduler, num_classes: int, p_uncond: float = 0.1) -> None:
        super().__init__(scheduler)
        if int(num_classes) < 1:
            raise InputError("num_classes", f"must be >= 1, got {num_classes}")
        if not 0.0 <= float(p_uncond) < 1.0:
            raise InputError("p_uncond", f"must be in [0, 1), got {p_uncond}")
        self.num_classes = int(num_classes)
        self.p_uncond = float(p_uncond)

    def class_labels(self, condition: torch.Tensor, training: bool) -> torch.Tensor:
        """Long ``(B,)`` labels from a ``(B,)`` or ``(B, 1)`` condition; in training, each label
        becomes the null class with probability ``p_uncond`` (torch's global generator)."""
        labels = torch.as_tensor(condition).reshape(-1).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InputError(
                "label", f"class labels must be in [0, {self.num_classes}), got {labels.tolist()}"
            )
        if training and self.p_uncond > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.p_uncond
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return labels

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise prediction for ``inputs`` ``(B, C, H, W)`` noised to ``timesteps`` ``(B,)``.

        ``condition``: the class of each input, ``(B,)`` or ``(B, 1)`` (required).
        """
        if condition is None:
            raise InputError("label", "a class-conditioned diffusion model needs class labels")
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        labels = self.class_labels(condition, diffusion_model.training).to(inputs.device)
        return diffusion_model(x=noisy, timesteps=timesteps, class_labels=labels)

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        diffusion_model: torch.nn.Module,
        class_labels: torch.Tensor,
        scheduler: Scheduler | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Denoise ``input_noise`` ``(B, C, H, W)`` along ``scheduler.timesteps`` (set them with
        ``set_timesteps`` first; ``None``: the training scheduler) for the classes
        ``class_labels`` ``(B,)``. ``guidance_scale`` ``w != 1`` runs the null class too and uses
        ``eps_null + w * (eps_cond - eps_null)``. Returns the final sample (not clamped)."""
        scheduler = scheduler or self.scheduler
        labels = self.class_labels(class_labels, training=False).to(input_noise.device)
        image = input_noise
        b = image.shape[0]
        null = torch.full_like(labels, self.num_classes)
        for t in scheduler.timesteps:
            tt = torch.full((b,), int(t), device=image.device, dtype=torch.long)
            if float(guidance_scale) == 1.0:
                eps = diffusion_model(x=image, timesteps=tt, class_labels=labels)
            else:
                both = diffusion_model(
                    x=torch.cat([image, image]),
                    timesteps=torch.cat([tt, tt]),
                    class_labels=torch.cat([null, labels]),
                )
                eps_null, eps_cond = both.chunk(2)
                eps = eps_null + float(guidance_scale) * (eps_cond - eps_null)
            image, _ = scheduler.step(eps, int(t), image)
        return image


def load_checkpoint(
    network: torch.nn.Module, checkpoint: str | os.PathLike, condition: str | None = None
) -> dict[str, Any]:
    """Load a bundle checkpoint's ``"network"`` weights (or a bare state dict) into ``network``.

    ``condition``: the scheme the sampler will use; it must be the checkpoint's
    ``conditioning["condition"]`` when the checkpoint records one. Returns the checkpoint.

    Raises:
        InputError: the file is missing or not a torch checkpoint, its weights do not fit the
            network (another preset or class scheme), or its class scheme is not ``condition``.
    """
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise InputError(path, "checkpoint not found (train with configs/train.json first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise InputError(
            path, f"not a readable torch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, Mapping):
        raise InputError(path, f"expected a dict checkpoint, got {type(state).__name__}")
    saved = state.get("conditioning")
    if condition is not None and isinstance(saved, Mapping) and saved.get("condition") != condition:
        raise InputError(
            path,
            f"trained with condition {saved.get('condition')!r}, sampling asked for "
            f"{condition!r} (set --condition {saved.get('condition')})",
        )
    weights = state["network"] if "network" in state else state
    try:
        network.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            path, f"weights do not fit the configured network (preset or condition?): {msg}"
        ) from err
    return dict(state)


def generate(
    network: torch.nn.Module,
    inferer: ClassConditionedDiffusionInferer,
    scheduler: Scheduler,
    labels: Sequence[int] | np.ndarray,
    size: int,
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    channels: int = 2,
) -> np.ndarray:
    """DDIM samples, float32 ``(N, channels, size, size)`` clamped to ``[-1, 1]``, one per label.

    The noise of all ``N`` samples is drawn at once from ``torch.Generator().manual_seed(seed)``
    (on the CPU), so a sample depends on the seed and its position, not on ``batch_size`` or the
    device; DDIM with ``eta = 0`` adds no further randomness.
    """
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    num = int(labels_t.shape[0])
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(num, int(channels), int(size), int(size), generator=gen)
    scheduler.set_timesteps(int(num_inference_steps))
    network = network.to(device).eval()
    out = []
    for start in range(0, num, int(batch_size)):
        stop = min(start + int(batch_size), num)
        x = inferer.sample(
            noise[start:stop].to(device),
            network,
            labels_t[start:stop].to(device),
            scheduler=scheduler,
            guidance_scale=guidance_scale,
        )
        out.append(x.float().clamp(-1.0, 1.0).cpu())
    if not out:
        return np.zeros((0, int(channels), int(size), int(size)), np.float32)
    return torch.cat(out).numpy()


def sample_lesions(
    network: torch.nn.Module,
    inferer: ClassConditionedDiffusionInferer,
    scheduler: Scheduler,
    bank_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    condition: str = "lung_rads_solid",
    size: int = 64,
    num_samples: int = 500,
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    window: Sequence[float] = DEFAULT_WINDOW,
    hu_by: str | None = "lung_rads",
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    quality_gate: bool = True,
) -> dict[str, Any]:
    """Generate ``num_samples`` lesions with DDIM and write them to ``out_dir`` (bank-like).

    The class of each sample is drawn from the real bank's ``train`` lesions' classes
    (:func:`~metalung_monai.synthesis.generative.draw_conditions`, seeded by ``seed``: the
    training class mix); the noise comes from ``torch.Generator().manual_seed(seed)``
    (:func:`generate`); the clamped ``(2, size, size)`` outputs go through
    :func:`~metalung_monai.synthesis.generative.write_generated` (mask, integer HU by quantile
    mapping, the lesion table with a ``condition`` column naming the requested class).
    ``checkpoint``: the bundle's ``model_final.pt`` (:func:`load_checkpoint`) or ``None``
    (the network as it is). ``quality_gate``: drop the lesions that fail the realism gate
    against the real train lesions (``write_generated``'s, counted in ``rejected_gate``).
    Returns the sampling summary (also in ``bank.json["sampling"]``).

    Raises:
        InputError: unknown ``condition``, a checkpoint that is missing, unreadable or of
            another class scheme or network, or a bank without train lesions.
    """
    num_condition_classes(condition)
    if int(num_inference_steps) < 1:
        raise InputError("num_inference_steps", f"must be >= 1, got {num_inference_steps}")
    t0 = time.perf_counter()
    if checkpoint is not None:
        load_checkpoint(network, checkpoint, condition)
    bank = read_bank(bank_path)
    bank.meta.setdefault("path", os.fspath(bank_path))
    labels = draw_conditions(bank, condition, int(num_samples), int(seed))
    raw = generate(
        network,
        inferer,
        scheduler,
        labels,
        int(size),
        seed=int(seed),
        num_inference_steps=int(num_inference_steps),
        guidance_scale=float(guidance_scale),
        batch_size=int(batch_size),
        device=device,
    )
    t_gen = time.perf_counter() - t0
    names, counts = np.unique(labels, return_counts=True)
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
            "sampler": f"DDIM, {int(num_inference_steps)} steps, eta 0",
            "num_inference_steps": int(num_inference_steps),
            "guidance_scale": float(guidance_scale),
            "condition": condition,
            "requested_classes": {
                condition_name(condition, int(k)): int(c) for k, c in zip(names, counts)
            },
            "seconds_generate_per_sample": round(t_gen / max(int(num_samples), 1), 6),
            "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
        },
        conditions=[condition_name(condition, int(k)) for k in labels],
        quality_gate=bool(quality_gate),
    )
