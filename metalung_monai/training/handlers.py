"""Ignite handlers used by the bundles: training history, the share of time spent on data, and
the progress of a training run."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ignite.engine import Events
from tqdm import tqdm

from ..utils.atomic import write_json_atomic

__all__ = ["TrainingHistory", "TrainingProgress"]


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


class TrainingProgress:
    """A progress bar of one training run on stderr: iterations done, of all, the loss, an ETA.

    One bar for the whole run (``max_epochs x epoch_length`` iterations, so its ETA is the run's),
    updated after every iteration; the epoch and the last loss are shown beside it. It reads the
    engine's state only: the run's results do not depend on it. (No ``EXCEPTION_RAISED`` handler: one
    would take the re-raising of errors over from ignite; a failed run leaves its bar as it was.) ``enabled=False`` (the bundles'
    ``progress`` key: ``--progress false``) attaches nothing.

    Args:
        enabled: show the bar (from a command line, the strings ``"false"``, ``"0"``, ``"no"`` and
            ``"off"`` also turn it off).
        desc: the bar's label (e.g. the run's arm and seed).
        mininterval: seconds between redraws at least (tqdm's).
    """

    def __init__(self, enabled: bool = True, desc: str = "training", mininterval: float = 1.0):
        if isinstance(enabled, str):
            enabled = enabled.strip().lower() not in ("false", "0", "no", "off", "")
        self.enabled = bool(enabled)
        self.desc = str(desc)
        self.mininterval = float(mininterval)
        self.bar: tqdm | None = None

    def attach(self, engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _started(self, engine) -> None:
        s = engine.state
        total = int(s.max_epochs) * int(s.epoch_length) if s.epoch_length else None
        self.bar = tqdm(
            total=total,
            initial=int(s.iteration),
            desc=self.desc,
            unit="it",
            file=sys.stderr,
            mininterval=self.mininterval,
            dynamic_ncols=True,
        )

    def _iteration(self, engine) -> None:
        if self.bar is None:
            return
        out = engine.state.output
        loss = (
            out[0].get("loss")
            if isinstance(out, list) and out and isinstance(out[0], dict)
            else out.get("loss")
            if isinstance(out, dict)
            else None
        )
        post = {"epoch": f"{engine.state.epoch}/{engine.state.max_epochs}"}
        if loss is not None:
            post["loss"] = f"{float(loss):.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def _close(self, engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _finite(value) -> float | None:
    """``float(value)``, or None when it is NaN or infinite (JSON has no NaN)."""
    x = float(value)
    return x if math.isfinite(x) else None
