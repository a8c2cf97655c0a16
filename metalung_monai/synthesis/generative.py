"""What every lesion generator shares (``bundles/*_lesion_synth``): the bank's lesions as
two-channel training patches, class labels for conditioned generators, an atomic checkpoint
handler, and the writer that turns a generator's outputs into a bank-like folder of integer-HU
lesions (:func:`write_generated`).

Two channels, image and mask together (channel 0 image, channel 1 mask), both in ``[-1, 1]``:

* image: HU of the bank's ``image2d`` (int16, ``S x S`` model-size patches) windowed linearly
  from ``window = (lo, hi)`` HU to ``[-1, 1]`` and clipped (MONAI ``ScaleIntensityRange``); a
  generator's output maps back by the linear inverse (:func:`window_inverse`), fractional HU;
* mask: the bank's ``mask2d`` ``{0, 1}`` as ``{-1, 1}``; a generated mask is channel 1 ``> 0``,
  reduced to its largest connected component.

Generation may run below the bank's model size (e.g. 32 for the ``quick`` presets when the bank
is at 64): training patches are downsampled (area averaging; the mask thresholded at 0.5) and
generated patches are upsampled (bilinear, both channels before thresholding) back to the bank's
model size, so a generated folder always has the real bank's pixel size
(``context_mm / model_size`` mm) and the realism report can compare them.

Generated values become integer HU with :class:`~metalung_monai.synthesis.hu_mapping.HUQuantileMap`
fitted on the real bank's ``train`` lesions in ``mode="pooled"``, lesion and context mapped
separately; the pre-mapping values are kept as ``raw2d`` (float32 HU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandRotate90d, ScaleIntensityRange
from monai.transforms.utils import get_largest_connected_component_mask

from metalung_monai.anatomy.lung_rads import longest_diameter_mm, lung_rads_from_diameter
from metalung_monai.errors import InputError
from metalung_monai.synthesis.bank import LesionBank, empty_arrays, read_bank, write_bank
from metalung_monai.synthesis.hu_mapping import HUQuantileMap
from metalung_monai.synthesis.lesion_bank import lesion_type
from metalung_monai.utils.atomic import atomic_path

__all__ = [
    "CONDITIONS",
    "DEFAULT_WINDOW",
    "LESION_CLASSES",
    "AtomicCheckpoint",
    "bank_lesion_data",
    "bank_pixel_mm",
    "condition_labels",
    "condition_name",
    "draw_conditions",
    "lesion_patches",
    "window_inverse",
    "write_generated",
]

logger = logging.getLogger(__name__)

#: HU window mapped to [-1, 1]: air to dense soft tissue (calcification > 400 HU saturates)
DEFAULT_WINDOW = (-1000.0, 400.0)


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


def lesion_patches(
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


def bank_lesion_data(
    bank_path: str | os.PathLike,
    subset: str = "train",
    size: int | None = None,
    window: Sequence[float] = DEFAULT_WINDOW,
    augment: bool = True,
    key: str = "reals",
    condition: str | None = None,
    label_key: str = "label",
) -> Dataset:
    """A MONAI :class:`~monai.data.Dataset` of ``{key: (2, s, s)}`` items (:func:`lesion_patches`).

    ``key``: ``"reals"`` for ``GanTrainer``, ``"image"`` for the other generators' trainers.
    ``condition``: ``None``, or a class scheme of :func:`condition_labels`; each item then also
    has ``label_key``: a long tensor of shape ``(1,)`` (the class index).
    ``augment``: random flips of both axes and 90-degree rotations (the 8 symmetries of the
    square, applied to image and mask together; a lesion has no preferred in-plane orientation).
    """
    bank = read_bank(bank_path)
    bank.meta.setdefault("path", os.fspath(bank_path))
    data = lesion_patches(bank, subset, size, window)
    labels = None
    if condition is not None:
        sel = bank.select(
            kind="2d", subset=subset, source="real" if "source" in bank.table.columns else None
        )
        labels = condition_labels(sel.table, condition)
    items = []
    for i, x in enumerate(data):
        item = {key: torch.from_numpy(x.copy())}
        if labels is not None:
            item[label_key] = torch.tensor([int(labels[i])], dtype=torch.long)
        items.append(item)
    xform = None
    if augment:
        xform = Compose(
            [
                RandFlipd(key, prob=0.5, spatial_axis=0),
                RandFlipd(key, prob=0.5, spatial_axis=1),
                RandRotate90d(key, prob=0.75, max_k=3),
            ]
        )
    return Dataset(items, transform=xform)


#: Lung-RADS classes a lesion can have (LR1 is "no nodule")
LESION_CLASSES = ("LR2", "LR3", "LR4A", "LR4B")
#: class schemes of :func:`condition_labels` and their number of classes
CONDITIONS = {"lung_rads": len(LESION_CLASSES), "lung_rads_solid": 2 * len(LESION_CLASSES)}


def condition_labels(table: pd.DataFrame, condition: str) -> np.ndarray:
    """Class index of each lesion row (int64 ``(N,)``) for a class-conditioned generator.

    * ``"lung_rads"``: index of ``lung_rads`` in :data:`LESION_CLASSES` (4 classes);
    * ``"lung_rads_solid"``: ``2 * lung_rads index + (type != "solid")``: each Lung-RADS class
      split into solid and sub-solid (part-solid or ground-glass), 8 classes.

    Raises:
        InputError: unknown scheme, or a row whose class or type is not a lesion's.
    """
    if condition not in CONDITIONS:
        raise InputError("condition", f"must be one of {sorted(CONDITIONS)}, got {condition!r}")
    cls = table["lung_rads"].astype(str).to_numpy()
    bad = sorted(set(cls) - set(LESION_CLASSES))
    if bad:
        raise InputError("lung_rads", f"not a lesion class {bad}; expected {LESION_CLASSES}")
    idx = np.array([LESION_CLASSES.index(c) for c in cls], dtype=np.int64)
    if condition == "lung_rads":
        return idx
    if "type" not in table.columns:
        raise InputError("type", "the 'lung_rads_solid' condition needs the lesions' 'type'")
    return 2 * idx + (table["type"].astype(str).to_numpy() != "solid").astype(np.int64)


def condition_name(condition: str, label: int) -> str:
    """Readable name of a class index: ``"LR4B"`` or ``"LR4B/sub-solid"``."""
    if condition == "lung_rads":
        return LESION_CLASSES[int(label)]
    return f"{LESION_CLASSES[int(label) // 2]}/{'sub-solid' if int(label) % 2 else 'solid'}"


def draw_conditions(
    bank: LesionBank, condition: str, num: int, seed: int, subset: str = "train"
) -> np.ndarray:
    """``num`` class indices drawn (seeded, with replacement) from the real ``subset`` lesions'
    classes: generated lesions follow the training class mix."""
    sel = bank.select(
        kind="2d", subset=subset, source="real" if "source" in bank.table.columns else None
    )
    labels = condition_labels(sel.table, condition)
    if labels.size == 0:
        raise InputError(str(bank.meta.get("path", "bank")), f"no {subset!r} lesions to draw from")
    return np.random.default_rng(int(seed)).choice(labels, size=int(num), replace=True)


# --------------------------------------------------------------------------- checkpoints
class AtomicCheckpoint:
    """Save ``{name: obj.state_dict()}`` atomically every ``interval`` epochs and at completion.

    MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver(atomic=False)``: a run killed
    while writing leaves a truncated ``.pt``. This handler writes to a temporary file beside the
    target and renames it (:func:`~metalung_monai.utils.atomic.atomic_path`), so ``filename``
    is always a complete checkpoint of some epoch (or absent).

    Besides the state dicts the checkpoint holds ``epoch``, ``iteration``, ``train_seconds``
    (wall time since the engine started, the figure of Table 6), ``parameters`` (trainable
    parameters of each ``torch.nn.Module`` in ``save_dict``) and ``device``.

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
        self._t0: float | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(
            Events.EPOCH_COMPLETED(every=self.interval), self._save, self.filename
        )
        if self.final_filename:
            engine.add_event_handler(Events.COMPLETED, self._save, self.final_filename)

    def _start(self, engine) -> None:
        self._t0 = time.perf_counter()

    def _save(self, engine, name: str) -> None:
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["epoch"] = int(engine.state.epoch)
        state["iteration"] = int(engine.state.iteration)
        state["train_seconds"] = (
            None if self._t0 is None else round(time.perf_counter() - self._t0, 3)
        )
        state["parameters"] = {
            k: int(sum(p.numel() for p in v.parameters() if p.requires_grad))
            for k, v in self.save_dict.items()
            if isinstance(v, torch.nn.Module)
        }
        state["device"] = _device_of(self.save_dict)
        with atomic_path(self.save_dir / name) as tmp:
            torch.save(state, tmp)


def _gate(
    real: LesionBank, image: np.ndarray, masks: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, dict[str, int]]:
    """The realism report's gate of mapped lesions against the real bank's train lesions:
    ``(passed (N,) bool, {failed check: count})``."""
    from metalung_monai.evaluation.realism import LesionSet, gate, lesion_features

    has_source = "source" in real.table.columns
    train = real.select(kind="2d", subset="train", source="real" if has_source else None)
    t_img, t_mask, _ = train.patches("2d")
    ref = LesionSet(
        "R_train",
        t_img,
        t_mask,
        train.table["patient_id"].astype(str).to_numpy(),
        train.table["lung_rads"].astype(str).to_numpy(),
    )
    gen = LesionSet(
        "G", image, masks, np.arange(len(image)).astype(str), np.asarray(classes, dtype=str)
    )
    table, _ = gate(gen, lesion_features(image, masks), ref, lesion_features(t_img, t_mask))
    cols = [c for c in table.columns if table[c].dtype == bool and c != "passed"]
    checks = {c: int((~table[c]).sum()) for c in cols if (~table[c]).any()}
    return table["passed"].to_numpy(bool), checks


def _device_of(save_dict: Mapping[str, Any]) -> str:
    for v in save_dict.values():
        if isinstance(v, torch.nn.Module):
            for p in v.parameters():
                return f"{p.device}" + (
                    f" ({torch.cuda.get_device_name(p.device)})" if p.device.type == "cuda" else ""
                )
    return "unknown"


def write_generated(
    raw: np.ndarray,
    bank_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    generator: str,
    window: Sequence[float] = DEFAULT_WINDOW,
    hu_by: str | None = "lung_rads",
    seconds_generate: float = 0.0,
    sampling: Mapping[str, Any] | None = None,
    conditions: Sequence[str] | None = None,
    quality_gate: bool = True,
) -> dict[str, Any]:
    """Write a generator's two-channel outputs as a bank-like folder of integer-HU lesions.

    Args:
        raw: float ``(N, 2, s, s)`` in ``[-1, 1]``: channel 0 the windowed image, channel 1 the
            mask (``> 0`` is lesion); ``s`` may be below the real bank's model size ``S``
            (upsampled bilinearly, both channels before thresholding).
        bank_path: the real bank the generator was trained on (its ``train`` lesions fit the
            HU map; its pixel size is the generated lesions' pixel size).
        out_dir: the folder written (atomically, :func:`~metalung_monai.synthesis.bank.write_bank`).
        generator: the ``generator`` column and the lesion-id prefix (``"dcgan"``, ``"vqvae"``).
        window: HU ``(lo, hi)`` the generator's ``[-1, 1]`` stands for.
        hu_by: ``"lung_rads"`` (HU map per class of the generated lesion's own mask) or ``None``.
        seconds_generate: time the network took, for ``bank.json["sampling"]``.
        sampling: generator-specific entries added to ``bank.json["sampling"]`` (seed, steps...).
        conditions: for a class-conditioned generator, the requested class of each of the ``N``
            outputs (a ``condition`` column; the ``lung_rads`` column is always measured).
        quality_gate: drop the lesions that fail the realism report's gate against the real
            train lesions (:func:`metalung_monai.evaluation.realism.gate`: median HU within
            their mean +- 3 SD, area and Feret diameter within their range), as MAISI's quality
            check and FreeTumor's filter do; the rejected count and the failed checks are in
            ``rejected_gate`` / ``rejected_checks`` (``False``: keep everything).

    Steps: mask = channel 1 ``> 0``, largest connected component (MONAI
    ``get_largest_connected_component_mask``); outputs with an empty mask are dropped (counted in
    ``dropped_empty``); image = linear inverse window (fractional HU, kept as ``raw2d``), then
    :class:`HUQuantileMap` fitted on the real bank's train lesions (grouped ``hu_by``; groups
    with fewer than 20 real lesions use the table of all lesions) in the pooled mode (one
    monotone map fitted on all outputs together: each lesion keeps its relative brightness),
    lesion and context mapped separately: integer HU.

    Lesion columns: ``longest_diameter_mm`` (Feret, at the bank's pixel size), ``lung_rads``
    from it (:func:`~metalung_monai.anatomy.lung_rads.lung_rads_from_diameter`), ``type`` by the
    bank's HU rule (:func:`~metalung_monai.synthesis.lesion_bank.lesion_type`) on the mapped HU,
    HU statistics, area; ``patient_id``/``case_id`` ``"generated"``, ``subset`` and ``section``
    empty (not real training or hold-out lesions), ``native_index`` -1 (no native window).
    ``lung2d`` (no lung mask is generated): mapped HU ``<= -400`` or lesion.

    Returns the sampling summary (also in ``bank.json["sampling"]``): counts, seconds per
    sample, the HU map's grouping and fall-backs.
    """
    if hu_by not in (None, "lung_rads"):
        raise InputError(
            "hu_by", f"generated lesions are grouped by 'lung_rads' or None, not {hu_by!r}"
        )
    t0 = time.perf_counter()
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 4 or raw.shape[1] != 2:
        raise InputError(generator, f"expected (N, 2, s, s) outputs, got {raw.shape}")
    if conditions is not None and len(conditions) != raw.shape[0]:
        raise InputError("conditions", f"{len(conditions)} conditions for {raw.shape[0]} outputs")
    num_samples = int(raw.shape[0])
    real = read_bank(bank_path)
    real.meta.setdefault("path", os.fspath(bank_path))
    size = int(real.arrays["image2d"].shape[-1])
    px = bank_pixel_mm(real)
    context_mm = px * size
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
    rejected, checks = 0, {}
    if quality_gate:
        ok, checks = _gate(real, image, masks_a, classes)
        rejected = int((~ok).sum())
        if not ok.any():
            raise InputError(
                os.fspath(out_dir), f"all {len(ok)} generated lesions fail the gate: {checks}"
            )
        idx = np.flatnonzero(ok)
        image, masks_a, values = image[idx], masks_a[idx], values[idx]
        diam = [diam[i] for i in idx]
        classes = [classes[i] for i in idx]
        keep = [keep[i] for i in idx]
    rows = []
    for j, (img, m) in enumerate(zip(image, masks_a)):
        hu = img[m > 0]
        typ, f = lesion_type(hu)
        n = int(m.sum())
        rows.append(
            {
                "lesion_id": f"{generator}:{j:05d}",
                "kind": "2d",
                "index": j,
                "native_index": -1,
                "source": "generated",
                "generator": generator,
                "condition": "" if conditions is None else str(conditions[keep[j]]),
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
    seconds = time.perf_counter() - t0 + float(seconds_generate)
    summary = {
        "generator": generator,
        "num_samples": num_samples,
        "written": len(keep),
        "dropped_empty": dropped,
        "quality_gate": bool(quality_gate),
        "rejected_gate": rejected,
        "rejected_checks": checks,
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
        "seconds_generate": round(float(seconds_generate), 3),
        "seconds_per_sample": round(seconds / max(num_samples, 1), 6),
        **dict(sampling or {}),
    }
    meta = {
        "command": f"python -m monai.bundle run (bundles/{generator.split('_')[0]}_lesion_synth, sample.json)",
        "generator": generator,
        "real_bank": os.fspath(bank_path),
        "model_size": size,
        "context_mm": context_mm,
        "sampling": summary,
    }
    bank = LesionBank(arrays=arrays, table=pd.DataFrame(rows), meta=meta)
    write_bank(bank, out_dir)
    logger.info(
        "%s: %d lesions written to %s (%d empty masks dropped), %.4f s per sample",
        generator,
        len(keep),
        out_dir,
        dropped,
        summary["seconds_per_sample"],
    )
    return summary
