"""Training glue of :class:`~metalung_monai.networks.MaskRCNNSegmenter` for MONAI engines.

Mask R-CNN computes its own losses from *instance* targets: :func:`targets_from_mask` turns a
binary tumour mask into them (one instance per 8-connected component), and
:func:`train_iteration` is a drop-in ``iteration_update`` for ``monai.engines.SupervisedTrainer``
that builds the targets, sums torchvision's losses and steps the optimiser. Evaluation needs
neither: in ``.eval()`` mode the network returns a semantic map that ``SupervisedEvaluator`` and
``DiceMetric`` use as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from monai.utils.type_conversion import convert_to_numpy
from scipy import ndimage
from torch import Tensor

from metalung_monai.errors import MaskError

__all__ = ["targets_from_mask", "train_iteration"]


def targets_from_mask(mask: Tensor | np.ndarray, source: str = "mask") -> dict[str, Tensor]:
    """Mask R-CNN instance targets from a binary tumour mask (one instance per 8-connected component).

    Args:
        mask: binary mask ``(H, W)`` or ``(1, H, W)`` (tensor, ``MetaTensor`` or numpy array;
            bool, integer or float holding only 0 and 1).
        source: name of the mask used in error messages (a file name or a batch key).

    Returns:
        ``{"boxes": float32 (N, 4), "labels": int64 (N,), "masks": uint8 (N, H, W)}`` on the
        mask's device (CPU for numpy input), one entry per connected component in raster order
        of the components' first pixel; labels are all 1 (tumour). Boxes are ``(x0, y0, x1,
        y1)`` in pixel-edge coordinates: a component covering columns ``c0 .. c1`` and rows
        ``r0 .. r1`` gets ``(c0, r0, c1 + 1, r1 + 1)``, so a single pixel has a 1 x 1 box (torchvision
        rejects zero-area boxes). An empty mask gives ``N = 0`` (torchvision trains on it as a
        background-only image).

    Raises:
        MaskError: wrong shape, NaN, or values other than 0 and 1.
    """
    device = mask.device if isinstance(mask, torch.Tensor) else torch.device("cpu")
    arr = convert_to_numpy(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise MaskError(
            source, f"expected a (H, W) or (1, H, W) mask, got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise MaskError(source, "mask holds NaN")
    if arr.dtype != bool:
        values = np.unique(arr)
        if not np.isin(values, (0, 1)).all():
            raise MaskError(
                source, f"mask is not binary: values {values[:6].tolist()} (expected 0 and 1)"
            )
    binary = arr.astype(bool)
    labelled, n = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    h, w = binary.shape
    boxes = np.zeros((n, 4), dtype=np.float32)
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i, sl in enumerate(ndimage.find_objects(labelled)):
        rows, cols = sl
        boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
        masks[i] = labelled == i + 1
    return {
        "boxes": torch.from_numpy(boxes).to(device),
        "labels": torch.ones(n, dtype=torch.int64, device=device),
        "masks": torch.from_numpy(masks).to(device),
    }


def train_iteration(engine: Any, batchdata: dict[str, Tensor]) -> dict:
    """One Mask R-CNN training step, usable as ``SupervisedTrainer(iteration_update=train_iteration)``.

    Mirrors ``SupervisedTrainer._iteration`` (same ``prepare_batch``, events, AMP handling) with
    the loss computed by the network itself: the batch's ``"label"`` masks ``(B, 1, H, W)`` are
    turned into instance targets (:func:`targets_from_mask`), ``engine.network(images, targets)``
    gives torchvision's losses, their sum is back-propagated and ``engine.optimizer`` steps.
    ``engine.loss_function`` and ``engine.inferer`` are not used (pass e.g. ``loss_function=None``
    ... any placeholder), and no ``"pred"`` is produced, so train-time metrics
    (``key_train_metric``) cannot be used; validate with ``SupervisedEvaluator``, which calls
    the network in eval mode and gets the semantic ``(B, 2, H, W)`` output.

    Args:
        engine: a ``monai.engines.SupervisedTrainer`` whose ``network`` is a
            :class:`MaskRCNNSegmenter` (any module with the same ``forward(images, targets)``).
        batchdata: batch dict with ``"image"`` ``(B, C, H, W)`` and ``"label"`` ``(B, 1, H, W)``
            binary masks.

    Returns:
        ``engine.state.output``: ``{"image", "label", "loss"}`` (tensors on the engine's device;
        ``"loss"`` is the summed loss, what ``StatsHandler`` logs) plus each torchvision loss
        component (``"loss_classifier"``, ``"loss_box_reg"``, ``"loss_mask"``,
        ``"loss_objectness"``, ``"loss_rpn_box_reg"``) as a Python float.

    Raises:
        ValueError: no batch, or ``accumulation_steps > 1`` (not supported).
        MaskError: a label that is not a binary mask.
    """
    if batchdata is None:
        raise ValueError("train_iteration: no batch data")
    if getattr(engine, "accumulation_steps", 1) > 1:
        raise ValueError(
            "train_iteration: gradient accumulation (accumulation_steps > 1) is not supported"
        )
    batch = engine.prepare_batch(
        batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs
    )
    images, labels = batch[0], batch[1]
    targets = [targets_from_mask(lbl, source=f"{Keys.LABEL}[{i}]") for i, lbl in enumerate(labels)]
    engine.state.output = {Keys.IMAGE: images, Keys.LABEL: labels}

    engine.network.train()
    engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
    use_amp = bool(engine.amp and engine.scaler is not None)
    if use_amp:
        with torch.autocast("cuda", **engine.amp_kwargs):
            losses = engine.network(images, targets)
    else:
        losses = engine.network(images, targets)
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    loss = sum(losses.values())
    engine.state.output[Keys.LOSS] = loss
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    if use_amp:
        engine.scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
    for name, value in losses.items():
        engine.state.output[name] = float(value.detach())
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
    return engine.state.output
