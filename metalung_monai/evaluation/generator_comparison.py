"""Side-by-side comparison of lesion generators: the thesis' Table 6 measured, the realism
figures of each generator next to the real baseline, and one picture grid per Lung-RADS class.

A *run* is the folder of one generator trained on one real bank (what
``scripts/synth_benchmark.sh`` writes)::

    RUN/
      models/*final*.pt   the bundle's final checkpoints (one per training stage), written by
                          :class:`~metalung_monai.synthesis.generative.AtomicCheckpoint`: they
                          hold ``train_seconds``, ``parameters`` (per network) and ``device``
      generated/          the sampled lesions, a bank-like folder (``bank.json["sampling"]``
                          holds the sampling time)
      realism/            ``metalung lesion-realism BANK RUN/generated --out RUN/realism``

:func:`compare_generators` reads the runs and writes ``comparison.md`` (Table 6 and the realism
table), ``comparison.json`` and ``grid.png`` (rows: Lung-RADS classes; column blocks: real
held-out lesions, then each generator) to ``out``, each atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalung_monai.errors import InputError
from metalung_monai.evaluation.realism import _window01
from metalung_monai.synthesis.bank import LUNG_RADS_CLASSES, LesionBank, read_bank
from metalung_monai.utils.atomic import atomic_path, save_figure_atomic, write_json_atomic

__all__ = ["compare_generators", "run_summary", "plot_generator_grid"]

logger = logging.getLogger(__name__)


def _checkpoints(run: Path) -> list[Path]:
    models = run / "models"
    found = sorted(models.glob("*final*.pt")) if models.is_dir() else []
    if not found:
        raise InputError(os.fspath(models), "no final checkpoint (*final*.pt) of a trained bundle")
    return found


def run_summary(run: str | os.PathLike, generated: LesionBank | None = None) -> dict[str, Any]:
    """Table 6 and realism figures of one generator run folder (see the module docstring);
    ``generated``: its ``generated/`` bank when the caller has read it already.

    Returns ``{"stages": [{"checkpoint", "train_seconds", "epochs", "iterations",
    "device"}], "parameters": {network: count}, "train_seconds", "seconds_per_sample",
    "written", "dropped_empty", "realism": realism.json or None}``.

    Raises:
        InputError: no final checkpoint, no ``generated/bank.json`` or a checkpoint without the
            figures (made by another saver).
    """
    run = Path(run)
    stages, params = [], {}
    for ck in _checkpoints(run):
        state = torch.load(ck, map_location="cpu", weights_only=True)
        if "train_seconds" not in state or "parameters" not in state:
            raise InputError(
                os.fspath(ck), "has no 'train_seconds' / 'parameters' (not an AtomicCheckpoint)"
            )
        stages.append(
            {
                "checkpoint": ck.name,
                "train_seconds": state["train_seconds"],
                "epochs": int(state.get("epoch", 0)),
                "iterations": int(state.get("iteration", 0)),
                "device": state.get("device", "unknown"),
            }
        )
        for net, n in state["parameters"].items():
            if int(n) > 0:  # a frozen network loaded for a later stage counts where it trained
                params[net] = max(int(n), params.get(net, 0))
    bank_json = run / "generated" / "bank.json"
    if not bank_json.is_file():
        raise InputError(os.fspath(bank_json), "missing: sample the generator first")
    sampling = json.loads(bank_json.read_text())["sampling"]
    if generated is None:
        generated = read_bank(run / "generated")
    conditioning = _conditioning(generated.table)
    realism_json = run / "realism" / "realism.json"
    realism = json.loads(realism_json.read_text()) if realism_json.is_file() else None
    return {
        "run": os.fspath(run),
        "stages": stages,
        "parameters": params,
        "train_seconds": round(sum(float(s["train_seconds"] or 0.0) for s in stages), 1),
        "seconds_per_sample": float(sampling["seconds_per_sample"]),
        "seconds_generate": float(sampling.get("seconds_generate", 0.0)),
        "num_samples": int(sampling["num_samples"]),
        "written": int(sampling["written"]),
        "dropped_empty": int(sampling["dropped_empty"]),
        "rejected_gate": int(sampling.get("rejected_gate", 0)),
        "rejected_checks": dict(sampling.get("rejected_checks", {})),
        "conditioning": conditioning,
        "realism": realism,
    }


def _conditioning(table) -> dict[str, Any] | None:
    """How often a class-conditioned generator's lesion has the class it was asked for: the
    measured Lung-RADS class (from its own mask) against the ``condition`` column
    (``"LR3"`` or ``"LR3/sub-solid"``); ``None`` for an unconditioned generator."""
    if "condition" not in table.columns:
        return None
    cond = table["condition"].fillna("").astype(str)
    asked = cond != ""
    if not asked.any():
        return None
    cond = cond[asked]
    t = table[asked]
    cls = cond.str.split("/").str[0]
    out: dict[str, Any] = {
        "lesions": int(asked.sum()),
        "lung_rads_as_asked": float((cls == t["lung_rads"].astype(str)).mean()),
        "per_class": {
            c: float((t.loc[cls == c, "lung_rads"].astype(str) == c).mean())
            for c in sorted(cls.unique())
        },
    }
    solid = cond.str.split("/").str[1]
    if solid.notna().all():
        is_solid = t["type"].astype(str) == "solid"
        out["solidity_as_asked"] = float(((solid == "solid") == is_solid).mean())
    return out


def plot_generator_grid(
    out: str | os.PathLike,
    real: LesionBank,
    generated: Mapping[str, LesionBank],
    per_class: int = 4,
    seed: int = 0,
) -> Path:
    """Picture grid: one row per Lung-RADS class, a block of ``per_class`` lesions per source
    (real held-out lesions first, then each generator), lung window, mask outline in red.

    Lesions are drawn at random (seeded) among those of the class; an empty cell means the
    source has fewer lesions of that class (its count is in the block title of the row).
    """
    rng = np.random.default_rng(seed)
    hold = real.select(kind="2d", subset="hold")
    sources = {"real (held out)": hold, **{k: v.select(kind="2d") for k, v in generated.items()}}
    from matplotlib.figure import Figure

    ncol = per_class * len(sources)
    fig = Figure(figsize=(0.95 * ncol + 0.6, 1.15 * len(LUNG_RADS_CLASSES) + 0.5), dpi=110)
    axes = fig.subplots(len(LUNG_RADS_CLASSES), ncol, squeeze=False)
    for r, cls in enumerate(LUNG_RADS_CLASSES):
        for b, (name, s) in enumerate(sources.items()):
            cls_of = s.table["lung_rads"].astype(str).to_numpy()
            idx = np.flatnonzero(cls_of == cls)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
            image, mask, _ = s.patches("2d") if len(s) else (None, None, None)
            for j in range(per_class):
                ax = axes[r, b * per_class + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(pick):
                    i = int(pick[j])
                    ax.imshow(_window01(image[i]), cmap="gray", vmin=0, vmax=1)
                    ax.contour(mask[i], levels=[0.5], colors="#ff2a2a", linewidths=0.6)
                else:
                    ax.set_frame_on(False)
                if j == 0:
                    ax.set_title(f"{name} ({len(idx)})", loc="left", fontsize=7)
                if b == 0 and j == 0:
                    ax.set_ylabel(cls)
    fig.suptitle("lesions per Lung-RADS class: real held-out vs generated (count per class)")
    fig.tight_layout()
    return save_figure_atomic(fig, Path(out))


def _fmt(v: Any, f: str = ".3f") -> str:
    return "n/a" if v is None else f"{v:{f}}"


def _markdown(bank: str, summaries: Mapping[str, dict[str, Any]], grid: str) -> str:
    lines = [
        "# Lesion generators compared",
        "",
        f"Real bank: `{bank}`. Each generator trained on its `train` lesions; realism against "
        "its held-out (`hold`) lesions, with the real-vs-real baseline (R_train vs R_hold).",
        "",
        "## Table 6: cost",
        "",
        "| generator | parameters per network | total parameters | training (s) | device "
        "| s / sample | sampled | empty masks dropped | rejected by the gate | written |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summaries.items():
        parts = ", ".join(f"{k} {v:,}" for k, v in s["parameters"].items())
        devices = sorted({st["device"] for st in s["stages"]})
        lines.append(
            f"| {name} | {parts} | {sum(s['parameters'].values()):,} | {s['train_seconds']:.0f} "
            f"| {', '.join(devices)} | {s['seconds_per_sample']:.4f} | {s['num_samples']} "
            f"| {s['dropped_empty']} | {s['rejected_gate']} | {s['written']} |"
        )
    lines += [
        "",
        "Training time is the sum over the bundle's stages (`train_seconds` of each final "
        "checkpoint); s / sample includes the HU mapping, the quality gate and writing. The "
        "sampler drops empty masks and lesions that fail the gate (median HU, area or diameter "
        "outside the real training lesions' range); the realism figures are of the written ones.",
        "",
        "## Realism (generated vs real held-out; real-vs-real baseline in brackets)",
        "",
        "| generator | gate pass | W1 lesion HU | KS lesion HU | C2ST AUC [95 % CI] | precision "
        "(features) | recall (features) | closer to a train lesion than every held-out one "
        "(features / pixels) | memorisation flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in summaries.items():
        r = s["realism"]
        if r is None:
            lines.append(f"| {name} | no realism report | | | | | | | |")
            continue
        wg, wb = r["hu"]["lesion"]["G_vs_hold"], r["hu"]["lesion"]["train_vs_hold"]
        cg, cb = r["c2st"]["G_vs_hold"], r["c2st"]["train_vs_hold"]
        pr = r["precision_recall"].get("features", {})
        mem = r["memorisation"]
        closer = " / ".join(str(m.get("n_closer_than_all_hold", "n/a")) for m in mem.values())
        flagged = ", ".join(f"{k} {'yes' if m['flagged'] else 'no'}" for k, m in mem.items())
        lines.append(
            f"| {name} | {r['gate']['pass_rate']:.1%} ({r['gate']['pass_rate_R_hold']:.1%}) "
            f"| {wg['w1']:.1f} ({wb['w1']:.1f}) | {wg['ks']:.3f} ({wb['ks']:.3f}) "
            f"| {cg['auc']:.3f} [{cg['auc_low']:.3f}, {cg['auc_high']:.3f}] ({cb['auc']:.3f}) "
            f"| {_fmt(pr.get('G_vs_hold', {}).get('precision'))} "
            f"({_fmt(pr.get('train_vs_hold', {}).get('precision'))}) "
            f"| {_fmt(pr.get('G_vs_hold', {}).get('recall'))} "
            f"({_fmt(pr.get('train_vs_hold', {}).get('recall'))}) | {closer} | {flagged} |"
        )
    conditioned = {k: s["conditioning"] for k, s in summaries.items() if s["conditioning"]}
    if conditioned:
        lines += [
            "",
            "## Class conditioning (measured class of each lesion against the class asked for)",
            "",
            "| generator | lesions | Lung-RADS class as asked | per class | solid / sub-solid as asked |",
            "|---|---:|---:|---|---:|",
        ]
        for name, c in conditioned.items():
            per = ", ".join(f"{k} {v:.0%}" for k, v in c["per_class"].items())
            lines.append(
                f"| {name} | {c['lesions']} | {c['lung_rads_as_asked']:.1%} | {per} "
                f"| {_fmt(c.get('solidity_as_asked'), '.1%')} |"
            )
    lines += ["", f"![lesions per Lung-RADS class]({grid})", ""]
    return "\n".join(lines)


def compare_generators(
    bank: str | os.PathLike,
    runs: Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    per_class: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare generator runs trained on ``bank``; write ``comparison.md``, ``comparison.json``
    and ``grid.png`` to ``out``. ``runs``: ``{name: run folder}`` in table order.

    Raises:
        InputError: no run, or a run folder without its checkpoints or samples.
    """
    if not runs:
        raise InputError("runs", "no generator run to compare")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real = read_bank(bank)
    generated = {name: read_bank(Path(path) / "generated") for name, path in runs.items()}
    summaries = {name: run_summary(path, generated[name]) for name, path in runs.items()}
    grid = plot_generator_grid(out / "grid.png", real, generated, per_class, seed)
    result = {"bank": os.fspath(bank), "generators": summaries, "grid": grid.name}
    write_json_atomic(result, out / "comparison.json")
    with atomic_path(out / "comparison.md") as tmp:
        Path(tmp).write_text(_markdown(os.fspath(bank), summaries, grid.name))
    logger.info("lesion-compare: %d generators, report in %s", len(runs), out / "comparison.md")
    return result
