"""Ignite handlers used by the bundles: training history and the share of time spent on data."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..utils.atomic import write_json_atomic

__all__ = ["TrainingHistory"]


class TrainingHistory:
    """Record the loss per iteration, the validation metric per validation, and data-loading time.

    Writes ``path`` (JSON) when training completes::

        {"iteration": [...], "loss": [...], "val_iteration": [...], "val_dice": [...],
         "best_val_dice": float, "data_s": float, "step_s": float, "data_share": float,
         "wall_s": float, "iterations": int, "train_samples": int}

    A loss or validation DICE that is not a finite number (a diverged run) is written as ``null``
    (JSON has no NaN); ``best_val_dice`` is the best finite one (``null`` when there is none).

    ``data_share`` is the fraction of the training loop's wall time spent waiting for the next
    batch (ignite's ``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``): augmentation must never be
    the bottleneck, and this says whether it is.

    Args:
        path: output JSON file.
        validator: the evaluator run by ``ValidationHandler`` (its key metric is recorded after
            each validation); optional.
        train_samples: size of the training set (reported as is).
    """

    def __init__(self, path: str, validator=None, train_samples: int | None = None) -> None:
        self.path = Path(path)
        self.validator = validator
        self.train_samples = train_samples
        self.data = {"iteration": [], "loss": [], "val_iteration": [], "val_dice": []}
        self._t_batch = 0.0
        self._data_s = 0.0
        self._t0 = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine) -> None:
        self._t0 = time.perf_counter()

    def _batch_started(self, engine) -> None:
        self._t_batch = time.perf_counter()

    def _batch_completed(self, engine) -> None:
        self._data_s += time.perf_counter() - self._t_batch

    def _iteration(self, engine) -> None:
        out = engine.state.output
        loss = (
            out[0]["loss"]
            if isinstance(out, list)
            else out.get("loss")
            if isinstance(out, dict)
            else None
        )
        if loss is not None:
            self.data["iteration"].append(int(engine.state.iteration))
            self.data["loss"].append(_finite(loss))

    def _epoch(self, engine) -> None:
        """After ``ValidationHandler`` (attach this handler after it): record a fresh validation."""
        v = self.validator
        if v is None or v.state is None or not v.state.metrics:
            return
        if v.state.epoch != engine.state.epoch or v.state.key_metric_name not in v.state.metrics:
            return  # no validation this epoch
        self.data["val_iteration"].append(int(engine.state.iteration))
        self.data["val_dice"].append(_finite(v.state.metrics[v.state.key_metric_name]))

    def _completed(self, engine) -> None:
        wall = time.perf_counter() - self._t0
        out = dict(self.data)
        out.update(
            {
                "best_val_dice": max(
                    (d for d in self.data["val_dice"] if d is not None), default=None
                ),
                "data_s": round(self._data_s, 3),
                "wall_s": round(wall, 3),
                "data_share": round(self._data_s / wall, 4) if wall > 0 else None,
                "iterations": int(engine.state.iteration),
                "train_samples": self.train_samples,
            }
        )
        write_json_atomic(out, self.path)


def _finite(value) -> float | None:
    """``float(value)``, or None when it is NaN or infinite (JSON has no NaN)."""
    x = float(value)
    return x if math.isfinite(x) else None
