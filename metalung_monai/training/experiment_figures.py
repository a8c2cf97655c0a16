"""The experiment's figures, per model: ``curves_<model>.png`` and ``overlays_<model>.png``.

* training curves: each arm's training loss (moving mean over :func:`smooth`'s window) and
  validation DICE, every seed;
* overlays: one test slice per Lung-RADS class (:func:`pick_slices`), the first seed's prediction
  of each arm over the truth, lung window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluation import overlay_grid, training_curves
from ..io.datalist import datalist_entries
from .experiment_folder import run_rel
from .report import load_predictions

__all__ = ["experiment_figures", "pick_slices", "smooth"]


def experiment_figures(
    out: Path,
    model: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    datalist: Path,
    hist: dict,
) -> None:
    """Write ``curves_<model>.png`` and ``overlays_<model>.png`` into the experiment folder ``out``.

    Args:
        out: the experiment folder.
        model: the model whose runs are drawn.
        arms: its arms, in legend / column order.
        seeds: the seeds (curves: all of them; overlays: the first, of the runs that have their
            predictions: a run restored from its record has none).
        datalist: the datalist (test entries: patient, Lung-RADS class).
        hist: each run's ``history.json`` keyed by ``(model, arm, seed)``.
    """
    curves = {}
    for a in arms:
        runs = [hist[(model, a, s)] for s in seeds]
        curves[a] = {
            "loss": [smooth(r["loss"]) for r in runs],
            "val_dice": [r["val_dice"] for r in runs],
            "val_dice_x": runs[0]["val_iteration"],
        }
        curves[a]["loss_x"] = list(range(1, len(curves[a]["loss"][0]) + 1))
    training_curves(curves, out / f"curves_{model}.png", xlabel="iteration")
    files = {a: out / run_rel(model, a, seeds[0]) / "eval" / "predictions.npz" for a in arms}
    # a run restored from its record (--records) has no predictions: the others are drawn
    preds = {a: load_predictions(f) for a, f in files.items() if f.is_file()}
    if not preds:
        return
    arms = [a for a in arms if a in preds]
    # the case ids of the evaluation (volume_data): the entry's case_id or its image's name
    entries = {
        str(e.get("case_id") or Path(e["image"]).name.split(".")[0]): e
        for e in datalist_entries(datalist, "test")
    }
    rows = []
    for cid, z in pick_slices(preds[arms[0]], entries):
        first = preds[arms[0]][cid][z]
        row = {
            "image": first["hu"],
            "truth": first["truth"],
            "preds": {a: preds[a][cid][z]["pred"] for a in arms if z in preds[a].get(cid, {})},
            "title": f"{entries[cid]['patient_id']} {entries[cid].get('lung_rads')} z={z}",
        }
        if first["lungs"] is not None:
            row["lungs"] = first["lungs"]
        rows.append(row)
    if rows:
        overlay_grid(rows, out / f"overlays_{model}.png", window=(-1000.0, 400.0))


def pick_slices(pred: dict, entries: dict) -> list[tuple[str, int]]:
    """One test slice per Lung-RADS class (the middle tumour slice of its first patient).

    Args:
        pred: predictions by case id and slice index (:func:`~.report.load_predictions`).
        entries: the test entries by case id (cases without an entry are skipped).

    Returns:
        ``(case id, slice index)`` pairs in Lung-RADS class order.
    """
    chosen, seen = [], set()
    for cid in sorted(pred):
        cls = entries.get(cid, {}).get("lung_rads")
        if cls in seen or cid not in entries:
            continue
        zs = sorted(pred[cid])
        if zs:
            chosen.append((cid, zs[len(zs) // 2]))
            seen.add(cls)
    return sorted(chosen, key=lambda c: str(entries[c[0]].get("lung_rads")))


def smooth(values: Sequence[float | None], k: int = 10) -> list[float]:
    """Moving mean over ``k`` values (``None``, a diverged loss, is NaN); as is when shorter."""
    v = np.asarray(values, dtype=float)
    if len(v) < k:
        return v.tolist()
    return np.convolve(v, np.ones(k) / k, mode="valid").tolist()
