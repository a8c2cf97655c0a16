"""DCGAN lesion synthesis (``bundles/dcgan_lesion_synth``): the bank as GAN training data, the
DCGAN losses for :class:`monai.engines.GanTrainer`, an atomic checkpoint handler and the sampler
that writes generated lesions to a bank-like folder.

Two channels, image and mask together (channel 0 image, channel 1 mask), both in ``[-1, 1]``:

* image: HU of the bank's ``image2d`` (int16, ``S x S`` model-size patches) windowed linearly
  from ``window = (lo, hi)`` HU to ``[-1, 1]`` and clipped (MONAI ``ScaleIntensityRange``); the
  generator's tanh output maps back by the linear inverse (:func:`window_inverse`), fractional HU;
* mask: the bank's ``mask2d`` ``{0, 1}`` as ``{-1, 1}``; a generated mask is the tanh channel
  ``> 0`` (logit ``> 0``), reduced to its largest connected component.

Generation may run below the bank's model size (``gan_size``, e.g. 32 for the ``quick`` preset
when the bank is at 64): training patches are downsampled (area averaging; the mask thresholded
at 0.5) and generated patches are upsampled (bilinear, both channels before thresholding) back
to the bank's model size, so a generated folder always has the real bank's pixel size
(``context_mm / model_size`` mm) and the realism report can compare them.

Generated values become integer HU with :class:`~metalung_monai.synthesis.hu_mapping.HUQuantileMap`
fitted on the real bank's ``train`` lesions in ``mode="pooled"`` (one monotone map fitted on all
generated outputs together: each lesion keeps its relative brightness), lesion and context
mapped separately; the pre-mapping values are kept as ``raw2d`` (float32 HU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.data import Dataset
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotate90d,
    ScaleIntensityRange,
)
from monai.transforms.utils import get_largest_connected_component_mask

from metalung_monai.anatomy.lung_rads import longest_diameter_mm, lung_rads_from_diameter
from metalung_monai.errors import InputError
from metalung_monai.synthesis.bank import LesionBank, empty_arrays, read_bank, write_bank
from metalung_monai.synthesis.hu_mapping import HUQuantileMap
from metalung_monai.synthesis.lesion_bank import lesion_type
from metalung_monai.utils.atomic import atomic_path

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

logger = logging.getLogger(__name__)

#: HU window mapped to [-1, 1]: air to dense soft tissue (calcification > 400 HU saturates)
DEFAULT_WINDOW = (-1000.0, 400.0)
#: ``generator`` column of the generated lesions
GENERATOR_NAME = "dcgan"


def window_inverse(values: np.ndarray, window: Sequence[float] = DEFAULT_WINDOW) -> np.ndarray:
    """``[-1, 1]`` back to fractional HU (float32): the linear inverse of the training window."""
    lo, hi = float(window[0]), float(window[1])
    return ((np.asarray(values, dtype=np.float32) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def bank_pixel_mm(bank: LesionBank) -> float:
    """Model pixel size (mm) of a bank's 2D patches: ``context_mm / model_size`` (one value).

    Raises:
        InputError: no 2D rows, missing columns, or several pixel sizes in one bank.
    """
    t = bank.table[bank.table["kind"] == "2d"]
    where = str(bank.meta.get("path", "bank"))
    if len(t) == 0 or "context_mm" not in t.columns:
        raise InputError(where, "needs 2D lesions with a 'context_mm' column for the pixel size")
    px = np.unique(np.round(t["context_mm"].to_numpy(float) / t["model_size"].to_numpy(float), 6))
    if px.size != 1 or not np.isfinite(px[0]) or px[0] <= 0:
        raise InputError(
            where, f"2D lesions of several or invalid model pixel sizes: {px.tolist()}"
        )
    return float(px[0])


def gan_patches(
    bank: LesionBank,
    subset: str | None = "train",
    size: int | None = None,
    window: Sequence[float] = DEFAULT_WINDOW,
) -> np.ndarray:
    """The bank's real 2D lesions as two-channel GAN targets, float32 ``(N, 2, s, s)`` in [-1, 1].

    Args:
        bank: a real bank (rows with ``source == "real"`` and ``subset`` are used).
        subset: ``"train"`` (the generators' lesions; never ``"hold"``, the realism baseline).
        size: side ``s`` of the output (``None``: the bank's model size); a smaller size
            downsamples by area averaging (the mask thresholded at 0.5); it must divide it.
        window: HU ``(lo, hi)`` mapped to ``[-1, 1]``.
    """
    where = str(bank.meta.get("path", "bank"))
    has_source = "source" in bank.table.columns
    sel = bank.select(kind="2d", subset=subset, source="real" if has_source else None)
    if len(sel) == 0:
        raise InputError(where, f"no real 2D lesions with subset {subset!r} to train on")
    image, mask, _ = sel.patches("2d")
    lo, hi = float(window[0]), float(window[1])
    scale = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True)
    img = torch.as_tensor(np.asarray(scale(image.astype(np.float32))), dtype=torch.float32)
    msk = torch.as_tensor(mask.astype(np.float32))
    s = image.shape[-1]
    if size is not None and int(size) != s:
        if int(size) > s or s % int(size):
            raise InputError(where, f"GAN size {size} must divide the bank's model size {s}")
        img = F.interpolate(img[:, None], size=(size, size), mode="area")[:, 0]
        msk = (F.interpolate(msk[:, None], size=(size, size), mode="area")[:, 0] >= 0.5).float()
    return torch.stack([img, msk * 2.0 - 1.0], dim=1).numpy()


def bank_gan_data(
    bank_path: str | os.PathLike,
    subset: str = "train",
    size: int | None = None,
    window: Sequence[float] = DEFAULT_WINDOW,
    augment: bool = True,
) -> Dataset:
    """A MONAI :class:`~monai.data.Dataset` of ``{"reals": (2, s, s)}`` items for ``GanTrainer``.

    ``augment``: random flips of both axes and 90-degree rotations (the 8 symmetries of the
    square, applied to image and mask together; a lesion has no preferred in-plane orientation).
    """
    data = gan_patches(read_bank(bank_path), subset, size, window)
    items = [{"reals": torch.from_numpy(x.copy())} for x in data]
    xform = None
    if augment:
        xform = Compose(
            [
                RandFlipd("reals", prob=0.5, spatial_axis=0),
                RandFlipd("reals", prob=0.5, spatial_axis=1),
                RandRotate90d("reals", prob=0.75, max_k=3),
            ]
        )
    return Dataset(items, transform=xform)


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


# --------------------------------------------------------------------------- checkpoints
class AtomicCheckpoint:
    """Save ``{name: obj.state_dict()}`` atomically every ``interval`` epochs and at completion.

    MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver(atomic=False)``: a run killed
    while writing leaves a truncated ``.pt``. This handler writes to a temporary file beside the
    target and renames it (:func:`~metalung_monai.utils.atomic.atomic_path`), so ``filename``
    is always a complete checkpoint of some epoch (or absent).

    Args:
        save_dir: folder of the checkpoints.
        save_dict: ``{"generator": g_net, "discriminator": d_net, ...}`` (anything with
            ``state_dict``).
        filename: the latest epoch's checkpoint (overwritten each time).
        final_filename: written once when the run completes (``None``: not written).
        interval: epochs between saves.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "model.pt",
        final_filename: str | None = "model_final.pt",
        interval: int = 1,
    ) -> None:
        if int(interval) < 1:
            raise InputError("AtomicCheckpoint.interval", f"must be >= 1, got {interval}")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.final_filename = final_filename
        self.interval = int(interval)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(
            Events.EPOCH_COMPLETED(every=self.interval), self._save, self.filename
        )
        if self.final_filename:
            engine.add_event_handler(Events.COMPLETED, self._save, self.final_filename)

    def _save(self, engine, name: str) -> None:
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["epoch"] = int(engine.state.epoch)
        state["iteration"] = int(engine.state.iteration)
        with atomic_path(self.save_dir / name) as tmp:
            torch.save(state, tmp)


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
) -> dict[str, Any]:
    """Generate ``num_samples`` lesions and write them to ``out_dir`` as a bank-like folder.

    Steps: ``num_samples`` latents ``N(0, I)`` from ``torch.Generator().manual_seed(seed)``;
    the generator's ``(2, s, s)`` tanh outputs upsampled (bilinear) to the real bank's model
    size ``S``; mask = mask channel ``> 0``, largest connected component (MONAI
    ``get_largest_connected_component_mask``); outputs with an empty mask are dropped (counted in
    ``bank.json["sampling"]["dropped_empty"]``); image = linear inverse window (fractional HU,
    kept as ``raw2d``), then :class:`HUQuantileMap` fitted on the real bank's train lesions
    (grouped ``hu_by``: the generated lesion's Lung-RADS class from its own mask; groups with
    fewer than 20 real lesions use the table of all lesions) and the pooled mode: integer HU.

    Lesion columns: ``longest_diameter_mm`` (Feret, at the bank's pixel size), ``lung_rads``
    from it (:func:`~metalung_monai.anatomy.lung_rads.lung_rads_from_diameter`), ``type`` by the
    bank's HU rule (:func:`~metalung_monai.synthesis.lesion_bank.lesion_type`) on the mapped HU,
    HU statistics, area; ``patient_id``/``case_id`` ``"generated"``, ``subset`` and ``section`` empty (not real training or hold-out lesions),
    ``native_index`` -1 (no native window). ``lung2d`` (no lung mask is generated): mapped HU
    ``<= -400`` or lesion.

    Returns the sampling summary (also in ``bank.json["sampling"]``): counts, seconds per
    sample, the HU map's grouping and fall-backs.
    """
    if hu_by not in (None, "lung_rads"):
        raise InputError(
            "hu_by", f"generated lesions are grouped by 'lung_rads' or None, not {hu_by!r}"
        )
    t0 = time.perf_counter()
    real = read_bank(bank_path)
    real.meta.setdefault("path", os.fspath(bank_path))
    size = int(real.arrays["image2d"].shape[-1])
    px = bank_pixel_mm(real)
    context_mm = px * size
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        g_net.load_state_dict(state["generator"] if "generator" in state else state)
    raw = _generate(g_net, int(num_samples), int(latent_size), int(seed), int(batch_size), device)
    t_gen = time.perf_counter() - t0
    if raw.ndim != 4 or raw.shape[1] != 2:
        raise InputError("generator", f"expected (N, 2, s, s) outputs, got {raw.shape}")
    gen_size = int(raw.shape[-1])
    if gen_size != size:
        raw = F.interpolate(
            torch.from_numpy(raw), size=(size, size), mode="bilinear", align_corners=False
        ).numpy()
    values = window_inverse(raw[:, 0], window)
    masks, keep = [], []
    for i in range(raw.shape[0]):
        m = raw[i, 1] > 0
        if m.any():
            m = np.asarray(get_largest_connected_component_mask(m, connectivity=2), bool)
        if m.any():
            masks.append(m)
            keep.append(i)
    dropped = int(raw.shape[0] - len(keep))
    if not keep:
        raise InputError(os.fspath(out_dir), f"all {raw.shape[0]} generated masks are empty")
    masks_a = np.stack(masks).astype(np.uint8)
    values = values[keep]
    diam = [longest_diameter_mm(m, (px, px)) for m in masks_a]
    classes = [lung_rads_from_diameter(d) for d in diam]
    hu_map = HUQuantileMap.fit_from_bank(real, by=hu_by)
    groups = classes if hu_by == "lung_rads" else None
    hu_map.fit_source(values, masks_a, groups)
    image = np.stack(
        [
            hu_map.map(v, m, g, mode="pooled")
            for v, m, g in zip(values, masks_a, groups or [None] * len(values))
        ]
    )
    rows = []
    for j, (img, m) in enumerate(zip(image, masks_a)):
        hu = img[m > 0]
        typ, f = lesion_type(hu)
        n = int(m.sum())
        rows.append(
            {
                "lesion_id": f"{GENERATOR_NAME}:{j:05d}",
                "kind": "2d",
                "index": j,
                "native_index": -1,
                "source": "generated",
                "generator": GENERATOR_NAME,
                "case_id": "generated",
                "patient_id": "generated",
                "section": "",
                "subset": "",
                "slice_index": -1,
                "context_mm": context_mm,
                "longest_diameter_mm": round(float(diam[j]), 4),
                "lung_rads": classes[j],
                "type": typ,
                "hu_mean": round(float(hu.mean()), 3),
                "hu_median": float(np.median(hu)),
                "hu_p5": round(float(np.percentile(hu, 5)), 3),
                "hu_p95": round(float(np.percentile(hu, 95)), 3),
                "n_voxels": n,
                "area_mm2": round(n * px * px, 4),
                "scale": 1.0,
                "model_size": size,
                "touches_edge": bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()),
                "solid_fraction": round(f, 4),
            }
        )
    arrays = empty_arrays(size)
    arrays["image2d"] = image.astype(np.int16)
    arrays["mask2d"] = masks_a
    arrays["lung2d"] = ((image <= -400) | (masks_a > 0)).astype(np.uint8)
    arrays["raw2d"] = values.astype(np.float32)
    seconds = time.perf_counter() - t0
    sampling = {
        "num_samples": int(num_samples),
        "written": len(keep),
        "dropped_empty": dropped,
        "seed": int(seed),
        "latent_size": int(latent_size),
        "generated_size": gen_size,
        "window": [float(window[0]), float(window[1])],
        "pixel_mm": px,
        "hu_map": {
            "mode": "pooled",
            "by": hu_by,
            "fallback": list(hu_map.fallback),
            "counts": dict(hu_map.counts),
        },
        "seconds": round(seconds, 3),
        "seconds_generate": round(t_gen, 3),
        "seconds_per_sample": round(seconds / max(int(num_samples), 1), 6),
        "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
    }
    meta = {
        "command": "python -m monai.bundle run (bundles/dcgan_lesion_synth, sample.json)",
        "generator": GENERATOR_NAME,
        "real_bank": os.fspath(bank_path),
        "model_size": size,
        "context_mm": context_mm,
        "sampling": sampling,
    }
    bank = LesionBank(arrays=arrays, table=pd.DataFrame(rows), meta=meta)
    write_bank(bank, out_dir)
    logger.info(
        "dcgan: %d lesions written to %s (%d empty masks dropped), %.4f s per sample",
        len(keep),
        out_dir,
        dropped,
        sampling["seconds_per_sample"],
    )
    return sampling
