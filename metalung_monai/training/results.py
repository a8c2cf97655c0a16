"""The experiment's tables: every run's scores gathered into ``results.md`` and CSV / MD tables.

From the runs' ``eval/`` folders (:mod:`.experiment_folder`) and their completion records, per
model:

* ``table7_<model>``: DICE, IoU, Precision, Recall per arm (mean ± SD over seeds; each seed's value
  is the mean over the test tumour slices), the thesis' Table 7;
* ``table8_<model>``: DICE per Lung-RADS class and arm, the thesis' Table 8;
* ``runs_<model>``: per-patient 3D DICE, false-positive components and those on calcified nodules,
  training samples, wall time and data-loading share per arm;
* the verdict of MetaLung against each other arm on DICE and Precision, judged against the
  seed-to-seed spread;
* the figures (:mod:`.experiment_figures`);

and ``all_slices`` / ``all_volumes``: every test slice's and volume's scores of every run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from ..evaluation import (
    arm_table,
    class_arm_table,
    format_mean_sd,
    markdown_table,
    mean_sd,
    write_table,
)
from ..utils.atomic import atomic_path
from .experiment_figures import experiment_figures
from .experiment_folder import run_rel

__all__ = ["write_results", "run_frames"]


def run_frames(
    out: Path, models: Sequence[str], arms: Sequence[str], seeds: Sequence[int]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every run's per-slice and per-volume scores, with ``model``, ``arm``, ``seed`` columns.

    Returns:
        ``(slices, volumes, histories)``: the runs' ``slices.csv`` and ``volumes.csv`` stacked (in
        model, arm, seed order), and each run's ``history.json`` keyed by ``(model, arm, seed)``.
    """
    slices, volumes, hist = [], [], {}
    for m in models:
        for a in arms:
            for s in seeds:
                ev = out / run_rel(m, a, s) / "eval"
                for name, acc in (("slices.csv", slices), ("volumes.csv", volumes)):
                    df = pd.read_csv(ev / name)
                    df["model"], df["arm"], df["seed"] = m, a, s
                    acc.append(df)
                hist[(m, a, s)] = json.loads((ev / "history.json").read_text())
    return pd.concat(slices, ignore_index=True), pd.concat(volumes, ignore_index=True), hist


def _cost_table(
    model: str, arms: Sequence[str], seeds: Sequence[int], volumes: pd.DataFrame, records: list
) -> pd.DataFrame:
    """Per arm: training samples, patient 3D DICE, false positives, wall time, data share."""
    rows = []
    for a in arms:
        recs = [r for r in records if r["model"] == model and r["arm"] == a]
        va = volumes[volumes["arm"] == a]
        pdice = [va[va["seed"] == s]["dice"].mean() for s in seeds]
        cfp = [va[va["seed"] == s]["calcified_fp_components"].sum() for s in seeds]
        fpc = [va[va["seed"] == s]["fp_components"].sum() for s in seeds]
        rows.append(
            {
                "arm": a,
                "training samples": str(recs[0]["train_samples"]) if recs else "n/a",
                "patient 3D DICE": format_mean_sd(pdice),
                "FP components (test volumes)": format_mean_sd(fpc, ".1f"),
                "of them on calcified nodules": format_mean_sd(cfp, ".1f"),
                "wall time per run (s)": format_mean_sd([r["wall_s"] for r in recs], ".0f"),
                "data-loading share": format_mean_sd([r["data_share"] or 0.0 for r in recs], ".3f"),
            }
        )
    return pd.DataFrame.from_records(rows)


def _verdicts(
    model: str, arms: Sequence[str], seeds: Sequence[int], slices: pd.DataFrame
) -> list[str]:
    """MetaLung against each other arm on DICE and Precision (means over seeds), one line each.

    A difference smaller than the larger seed-to-seed SD is not a result; none is given without
    a ``metalung`` arm.
    """
    if "metalung" not in arms:
        return []
    per_seed = {
        a: [slices[(slices["arm"] == a) & (slices["seed"] == s)] for s in seeds] for a in arms
    }
    stats = {
        a: {k: mean_sd([df[k].mean() for df in per_seed[a]]) for k in ("dice", "precision")}
        for a in arms
    }
    lines = []
    for other in [a for a in arms if a != "metalung"]:
        for k in ("dice", "precision"):
            (mu_m, sd_m), (mu_o, sd_o) = stats["metalung"][k], stats[other][k]
            better = mu_m > mu_o
            spread = max((v for v in (sd_m, sd_o) if not math.isnan(v)), default=math.nan)
            if math.isnan(mu_m) or math.isnan(mu_o):
                note = "undefined: an arm predicted no tumour pixel on any test slice"
            elif math.isnan(spread):
                note = "one seed: no spread to judge it by"
            elif abs(mu_m - mu_o) > spread:
                note = "difference larger than the seed spread"
            else:
                note = "within the seed spread"
            lines.append(
                f"- {model}: MetaLung {'beat' if better else 'did not beat'} `{other}` on {k} "
                f"({mu_m:.3f} ± {sd_m:.3f} vs {mu_o:.3f} ± {sd_o:.3f}; {note})"
            )
    return lines


def write_results(
    out: Path,
    datalist: Path,
    models: Sequence[str],
    arms: Sequence[str],
    seeds: Sequence[int],
    records: list[dict],
    preset: str,
) -> Path:
    """Aggregate the runs into ``results.md``, CSV tables and figures; return ``results.md``.

    Args:
        out: the experiment folder (every run of ``models`` x ``arms`` x ``seeds`` finished).
        datalist: the datalist the runs were trained and tested on.
        models: model names, in table order.
        arms: augmentation arms, in table order.
        seeds: the seeds.
        records: the runs' completion records, each with its ``model``.
        preset: the preset's name (for the title).
    """
    slices, volumes, hist = run_frames(out, models, arms, seeds)
    write_table(slices, out / "all_slices")
    write_table(volumes, out / "all_volumes")
    lines = [
        f"# MetaLung experiment ({preset} preset)",
        "",
        f"Datalist `{datalist}`; models {', '.join(models)}; arms {', '.join(arms)}; seeds {seeds}. "
        "Every arm: same preset (iterations, batch size, crops, optimiser) and seeds. Test set: the datalist's "
        "test patients; metrics per test tumour slice (pixel-wise on the whole slice, mean over slices; "
        "conventions in docs/evaluation.md), mean ± SD over seeds.",
        "",
        f"{len(records)} runs; compute time, the sum of the runs' wall times (training + evaluation): "
        f"{sum(r['wall_s'] for r in records) / 60:.1f} min (per model: "
        + ", ".join(
            f"{m} {sum(r['wall_s'] for r in records if r['model'] == m) / 60:.1f} min"
            for m in models
        )
        + f"); torch threads {torch.get_num_threads()}.",
        "",
    ]
    verdicts = []
    for m in models:
        sm = slices[slices["model"] == m]
        vm = volumes[volumes["model"] == m]
        t7 = arm_table(sm)
        t7.insert(0, "model", m)
        write_table(t7, out / f"table7_{m}")
        lines += [
            f"## {m}: Table 7 (DICE, IoU, Precision, Recall per test tumour slice)",
            "",
            markdown_table(t7),
            "",
        ]
        t8 = class_arm_table(sm)
        write_table(t8, out / f"table8_{m}")
        lines += [f"## {m}: Table 8 (DICE per Lung-RADS class)", "", markdown_table(t8), ""]
        extra = _cost_table(m, arms, seeds, vm, records)
        write_table(extra, out / f"runs_{m}")
        lines += [f"## {m}: per patient (3D), false positives, cost", "", markdown_table(extra), ""]
        verdicts += _verdicts(m, arms, seeds, sm)
        experiment_figures(out, m, arms, seeds, datalist, hist)
        lines += [
            f"![predictions of each arm]({'overlays_' + m + '.png'})",
            "",
            f"![training curves]({'curves_' + m + '.png'})",
            "",
        ]
    if verdicts:
        lines += ["## MetaLung against the other arms (mean over seeds)", ""] + verdicts + [""]
    text = "\n".join(lines)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out / "results.md"
