"""The experiment's tables: every run's scores gathered into ``results.md`` and CSV / MD tables.

From the runs' ``eval/`` folders (:mod:`.experiment_folder`) and their completion records, per
model:

* ``table7_<model>``: DICE, IoU, Precision, Recall per arm (mean ± SD over seeds; each seed's value
  is the mean over the test tumour slices), the thesis' Table 7;
* ``table8_<model>``: DICE per Lung-RADS class and arm, the thesis' Table 8;
* ``runs_<model>``: per-patient 3D DICE, false-positive components and those on calcified nodules,
  training samples, wall time and data-loading share per arm;
* ``paired_<model>``: paired comparisons of the arms (every arm against ``none``, against the
  peers ``monai`` and ``copypaste`` when run, MetaLung against every other augmentation arm) on DICE, Precision and Recall per test tumour slice:
  differences slice by slice (same seed and slice), averaged per patient, with a bootstrap 95 %
  interval over patients and a Wilcoxon signed-rank p-value
  (:func:`~metalung_monai.evaluation.paired_arm_table`); an arm is better or worse only when the
  interval excludes 0;
* ``beats_<model>``: the DICE verdicts of those comparisons as a grid, arm by reference, and
  ``forest_<model>.png``, the same as a forest plot (:func:`~metalung_monai.evaluation.paired_forest`);
* the figures (:mod:`.experiment_figures`);

and ``all_slices`` / ``all_volumes``: every test slice's and volume's scores of every run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from ..errors import InputError
from ..evaluation import (
    arm_table,
    class_arm_table,
    format_mean_sd,
    markdown_table,
    paired_arm_table,
    write_table,
)
from ..evaluation.figures import paired_forest
from ..evaluation.paired import BETTER, WORSE, oriented_pairs
from ..utils.atomic import atomic_path
from .experiment_figures import experiment_figures
from .experiment_folder import run_rel

__all__ = [
    "write_results",
    "run_frames",
    "paired_section",
    "paired_table",
    "comparisons",
    "beats_table",
    "table5_frame",
    "table6_lines",
    "PEER_ARMS",
    "PAIRED_METRICS",
    "PAIRED_METHOD",
]


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


#: metrics judged by paired comparison (higher is better)
PAIRED_METRICS: tuple[str, ...] = ("dice", "precision", "recall")
#: bootstrap resamples and generator seed of the paired intervals (fixed: reruns print the same)
_N_BOOT, _BOOT_SEED = 10_000, 0


#: the peers every other arm is judged against when present (after the reference, ``none``):
#: the generic MONAI pipeline and copy-paste of real lesions (TumorCP)
PEER_ARMS: tuple[str, ...] = ("monai", "copypaste")


def comparisons(arms: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(A, B)`` arm pairs judged in ``results.md`` (B against A).

    Every arm against the reference, ``none`` (the first arm when there is no ``none``); every
    other arm against each peer of :data:`PEER_ARMS` that is present; then ``metalung`` against
    every other augmentation arm (the thesis' question). Each unordered pair once, the first
    order kept.
    """
    arms = list(dict.fromkeys(arms))
    if len(arms) < 2:
        return []
    ref = "none" if "none" in arms else arms[0]
    pairs = [(ref, b) for b in arms if b != ref]
    for peer in (p for p in PEER_ARMS if p in arms and p != ref):
        pairs += [(peer, b) for b in arms if b not in (ref, peer)]
    if "metalung" in arms and ref != "metalung":
        pairs += [(a, "metalung") for a in arms if a not in (ref, "metalung")]
    once: dict[frozenset, tuple[str, str]] = {}
    for p in pairs:
        once.setdefault(frozenset(p), p)
    return list(once.values())


def beats_table(paired: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Which arm beats which reference on ``metric``: one row per arm, one column per reference
    arm of ``paired`` (``none`` and the peers, :func:`comparisons`), each cell the verdict of
    that arm against that reference with the per-patient difference and its 95 % interval
    (``better +0.054 [+0.006, +0.118]``); a pair judged the other way round (the reference
    against the arm) is read with the sign turned; ``-`` where the pair was not judged."""
    if not len(paired):
        return pd.DataFrame()
    t = paired[paired["metric"] == metric]
    arms = list(dict.fromkeys([*t["arm"], *t["reference"]]))  # the experiment's order
    refs = list(dict.fromkeys([t["reference"].iloc[0], *(p for p in PEER_ARMS if p in arms)]))
    cells: dict[tuple[str, str], str] = {}
    for r in oriented_pairs(paired, metric).itertuples(index=False):
        word = {BETTER: "better", WORSE: "worse"}.get(r.verdict, "no difference")
        cells[(r.arm, r.reference)] = (
            f"{word} {_signed(r.mean_diff)} {_interval(r.ci_low, r.ci_high)}"
        )
    rows = [
        {"arm": b, **{f"vs {a}": cells.get((b, a), "-") for a in refs}}
        for b in arms
        if b != refs[0]
    ]
    return pd.DataFrame.from_records(rows)


def paired_table(model: str, arms: Sequence[str], slices: pd.DataFrame) -> pd.DataFrame:
    """Paired comparisons of one model's arms on its test tumour slices, one row per pair and metric.

    Slices are paired by seed, case and slice index; each patient's slice differences (of every
    seed) are averaged, and the interval is a bootstrap over patients
    (:func:`~metalung_monai.evaluation.paired_arm_table`, 10,000 resamples, seed 0).

    Returns:
        DataFrame: ``model`` and the columns of :func:`paired_arm_table` (``reference`` is arm A,
        ``arm`` arm B; differences are B - A); empty with fewer than two arms.
    """
    frames = [
        paired_arm_table(
            slices[slices["arm"].isin([a, b])],
            a,
            PAIRED_METRICS,
            arms=[b],
            n_boot=_N_BOOT,
            seed=_BOOT_SEED,
        )
        for a, b in comparisons(arms)
    ]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "model", model)
    return out


def _bank_lesions(path) -> str:
    """Lesion count of a bank folder (its ``lesions.csv``), ``?`` when unreadable; a list of
    folders (a generator per fold): the counts joined by ``/``."""
    if isinstance(path, (list, tuple)):
        return "/".join(_bank_lesions(p) for p in path)
    try:
        return f"{len(pd.read_csv(Path(path) / 'lesions.csv')):,}"
    except (OSError, ValueError):
        return "?"


def _inserted(arm: str, lesion_banks: Mapping | None) -> str:
    """What an insertion arm inserts, in words: ``online from <bank> (N lesions)``; ``""`` for
    an arm that inserts nothing."""
    from .arms import ARMS

    names = ARMS[arm].banks if arm in ARMS else None
    if names is None:
        return ""
    banks = dict(lesion_banks or {})
    if names == "generated":
        names = tuple(k for k in banks if k != "real")
    parts = [f"{n} ({_bank_lesions(banks[n])} lesions)" for n in names if n in banks]
    return "online from " + (", ".join(parts) if parts else "the banks of lesion_banks")


#: Table 5's metric columns: key of ``metrics`` -> heading
_T5_METRICS = {"dice": "DICE", "iou": "IoU", "precision": "Precision", "recall": "Recall"}


def table5_frame(
    model: str,
    arms: Sequence[str],
    metrics: Mapping[str, Mapping[str, str]],
    paired: pd.DataFrame,
    samples: Mapping[str, int] | None = None,
    lesion_banks: Mapping | None = None,
) -> pd.DataFrame:
    """The thesis' Table 5 for one model: per arm (method), the training samples and the samples
    it adds (offline: the expanded set minus ``none``'s; online insertion: the bank and its
    lesions), DICE, IoU, Precision, Recall and DICE's paired difference from ``none`` per
    patient with its 95 % interval and p.

    Args:
        model: the model's name (first column).
        arms: the arms, in order.
        metrics: arm -> ``{"dice", "iou", "precision", "recall"}`` as printed (mean ± SD).
        paired: :func:`paired_table`'s rows (the ``none`` pairs are read).
        samples: arm -> training samples of a run (offline expansion counted against ``none``),
            or a list of them, one per fold of a cross-validation (printed ``a/b/c``).
        lesion_banks: the setting ``lesion_banks`` (banks of the insertion arms).
    """
    base = _per_fold((samples or {}).get("none"))
    rows = []
    for a in arms:
        n = _per_fold((samples or {}).get(a))
        extra = [x - b for x, b in zip(n, base)] if n and base and len(n) == len(base) else []
        added = (
            ["/".join(f"{d:+,}" for d in extra) + " offline"]
            if extra and any(d > 0 for d in extra)
            else []
        )
        online = _inserted(a, lesion_banks)
        added += [online] if online else []
        ref = (
            paired[
                (paired["reference"] == "none")
                & (paired["arm"] == a)
                & (paired["metric"] == "dice")
            ]
            if len(paired)
            else paired
        )
        vs = "" if a == "none" else "n/a"
        if len(ref):
            r = ref.iloc[0]
            vs = (
                f"{_signed(r['mean_diff'])} {_interval(r['ci_low'], r['ci_high'])}, p {_p(r['p_value'])}"
                + {BETTER: ": better", WORSE: ": worse"}.get(r["verdict"], "")
            )
        m = metrics.get(a, {})
        rows.append(
            {
                "model": model,
                "method": a,
                "training samples": "/".join(f"{x:,}" for x in n) if n else "n/a",
                "generated / added samples": "; ".join(added) or "-",
                **{col: m.get(k, "n/a") for k, col in _T5_METRICS.items()},
                "DICE - none per patient [95 %], p": vs,
            }
        )
    return pd.DataFrame.from_records(rows)


def _metric_cells(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """arm -> Table 5's metric cells from a Table 7 frame (:func:`arm_table`'s strings)."""
    return {
        str(r["arm"]): {k: str(r[k]) for k in _T5_METRICS if k in table.columns}
        for _, r in table.iterrows()
    }


def _per_fold(v) -> list[int]:
    """A sample count or a list of them (one per fold) as a list; ``[]`` for none."""
    if v is None:
        return []
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def table6_lines(lesion_banks: Mapping | None) -> list[str]:
    """The thesis' Table 6 for the generated banks of ``lesion_banks``: each generator run's
    cost (:func:`~metalung_monai.evaluation.generator_comparison.run_summary` of the folder
    above its ``generated/`` bank: parameters, training seconds, seconds per sample, lesions
    written); empty without generated banks. A run folder it cannot read gets a line saying
    why instead of a row."""
    from ..evaluation.generator_comparison import run_summary

    rows, problems = [], []
    for name, paths in (lesion_banks or {}).items():
        if name == "real":
            continue
        listed = paths if isinstance(paths, (list, tuple)) else [paths]
        for i, path in enumerate(listed):
            label = f"{name} (fold generator {i})" if len(listed) > 1 else name
            try:
                s = run_summary(Path(path).parent)
            except InputError as e:
                problems.append(f"- {label}: {e}")
                continue
            rows.append(
                f"| {label} | {sum(s['parameters'].values()):,} | {s['train_seconds']:.0f} "
                f"| {s['seconds_per_sample']:.4f} | {s['written']} |"
            )
    if not rows and not problems:
        return []
    return [
        "## Table 6: the generators of the inserted lesions (cost)",
        "",
        "| generator | parameters | training (s) | s / sample | lesions written |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        *problems,
        *([""] if problems else []),
    ]


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.3f}"


def _interval(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"


def _p(v: float) -> str:
    return "n/a" if math.isnan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def _verdict_words(r) -> str:
    a, b = f"`{r['reference']}`", f"`{r['arm']}`"
    return {
        BETTER: f"{b} better than {a}",
        WORSE: f"{b} worse than {a}",
    }.get(r["verdict"], f"no difference shown between {b} and {a}")


def _paired_markdown(table: pd.DataFrame) -> str:
    """The paired comparisons as a readable Markdown table (the CSV keeps every column)."""
    rows = [
        {
            "B vs A": f"{r['arm']} vs {r['reference']}",
            "metric": r["metric"],
            "patients": r["n_patients"],
            "slice pairs": r["n_cases"],
            "mean A": r["mean_a"],
            "mean B": r["mean_b"],
            "B - A per slice": _signed(r["mean_case_diff"]),
            "B - A per patient": _signed(r["mean_diff"]),
            "95 % interval (patients)": _interval(r["ci_low"], r["ci_high"]),
            "Wilcoxon p": _p(r["p_value"]),
            "verdict": r["verdict"],
        }
        for _, r in table.iterrows()
    ]
    return markdown_table(pd.DataFrame.from_records(rows))


#: how the paired comparisons are made, in words (printed above the verdicts)
PAIRED_METHOD = (
    "Each slice of arm B is paired with the same slice of arm A (same seed); the differences "
    "are averaged per patient (over its slices and seeds) and a bootstrap over patients "
    f"({_N_BOOT:,} resamples, seed {_BOOT_SEED}) gives the 95 % interval of the mean difference; "
    "the Wilcoxon signed-rank test of the patient differences gives p. B is better or worse than "
    "A only when the interval excludes 0. Pairs where a value is undefined (Precision of a slice "
    "with no prediction) are left out, so the means A and B, over the complete pairs, can differ "
    "from the tables' means over seeds. Definitions in docs/evaluation.md."
)


def paired_section(
    out: Path, model: str, arms: Sequence[str], slices: pd.DataFrame
) -> tuple[list[str], list[str], pd.DataFrame]:
    """Write ``paired_<model>.csv/.md`` into ``out``; return its Markdown section, verdict lines
    and the comparisons (:func:`paired_table`).

    Args:
        out: the folder the table goes to.
        model: the model's name (headings, first column).
        arms: the arms, in order (:func:`comparisons` picks the pairs).
        slices: one row per arm, seed and test tumour slice of this model (``run_frames``'
            slices, or several folds' slices pooled: every test slice once per seed).

    Returns:
        ``(section, verdicts, paired)``: the lines of a ``## <model>: paired comparisons``
        section (the table), one verdict line per pair and metric, and the comparisons' frame;
        all empty with fewer than two arms.
    """
    paired = paired_table(model, arms, slices)
    if not len(paired):
        return [], [], paired
    write_table(paired, out / f"paired_{model}")
    beats = beats_table(paired)
    write_table(beats, out / f"beats_{model}")
    refs = [c.removeprefix("vs ") for c in beats.columns if c.startswith("vs ")]
    paired_forest(paired, out / f"forest_{model}.png", "dice", references=refs, arms=list(arms))
    section = [
        f"## {model}: which arm beats which (DICE, B - A per patient, 95 % interval)",
        "",
        markdown_table(beats),
        "",
        f"![DICE difference of each arm from each reference, per patient, 95 % interval]"
        f"(forest_{model}.png)",
        "",
        f"## {model}: paired comparisons (B - A per test tumour slice, patients as units)",
        "",
        _paired_markdown(paired),
        "",
    ]
    return section, _verdicts(paired), paired


def _verdicts(table: pd.DataFrame) -> list[str]:
    """One line per pair and metric: the verdict in words, with its interval and p-value."""
    lines = []
    for _, r in table.iterrows():
        why = f"; {r['note']}" if r["note"] else ""
        lines.append(
            f"- {r['model']}: {_verdict_words(r)} on {r['metric']} (B - A per patient "
            f"{_signed(r['mean_diff'])}, 95 % interval {_interval(r['ci_low'], r['ci_high'])}, "
            f"Wilcoxon p {_p(r['p_value'])}; {r['n_patients']} patients, {r['n_cases']} slice "
            f"pairs{why})"
        )
    return lines


def pretrained_lines(pretrained: dict | None) -> list[str]:
    """The sentence of ``results.md`` naming the weights each fine-tuned model started from."""
    if not pretrained:
        return []
    parts = [f"{m} from `{v['path']}` (sha1 {v['sha']})" for m, v in sorted(pretrained.items())]
    return [
        "Fine-tuning: every run of " + "; ".join(parts) + " starts from these weights, not from a "
        "random initialisation.",
        "",
    ]


def write_results(
    out: Path,
    datalist: Path,
    models: Sequence[str],
    arms: Sequence[str],
    seeds: Sequence[int],
    records: list[dict],
    preset: str,
    pretrained: dict | None = None,
    lesion_banks: Mapping | None = None,
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
        pretrained: model -> ``{"path", "sha"}`` of the weights its runs started from (fine-tuning).
        lesion_banks: the setting ``lesion_banks`` of the runs: Table 5 names the banks of the
            insertion arms, Table 6 gives the generators' cost.
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
        "conventions in docs/evaluation.md), mean ± SD over seeds (one seed: the mean). Arms are "
        "compared paired, slice by slice, with patients as the units (last section).",
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
    lines += pretrained_lines(pretrained)
    verdicts = []
    for m in models:
        sm = slices[slices["model"] == m]
        vm = volumes[volumes["model"] == m]
        t7 = arm_table(sm)
        t7.insert(0, "model", m)
        write_table(t7, out / f"table7_{m}")
        section, model_verdicts, paired = paired_section(out, m, arms, sm)
        samples = {
            r["arm"]: int(r["train_samples"])
            for r in records
            if r["model"] == m and r.get("train_samples") is not None
        }
        t5 = table5_frame(
            m, arms, _metric_cells(t7), paired, samples=samples, lesion_banks=lesion_banks
        )
        write_table(t5, out / f"table5_{m}")
        lines += [
            f"## {m}: Table 5 (each augmentation, per test tumour slice; paired against none)",
            "",
            markdown_table(t5),
            "",
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
        lines += section
        verdicts += model_verdicts
        experiment_figures(out, m, arms, seeds, datalist, hist)
        drawn = [
            a
            for a in arms
            if (out / run_rel(m, a, seeds[0]) / "eval" / "predictions.npz").is_file()
        ]
        if drawn:
            note = (
                ""
                if len(drawn) == len(arms)
                else f" (the arms whose seed {seeds[0]} run kept its predictions: "
                f"{', '.join(drawn)}; the others were restored from their records)"
            )
            lines += [f"![predictions of each arm{note}]({'overlays_' + m + '.png'})", ""]
        lines += [f"![training curves]({'curves_' + m + '.png'})", ""]
    lines += table6_lines(lesion_banks)
    if verdicts:
        lines += [
            "## Verdicts: paired comparisons of the arms",
            "",
            PAIRED_METHOD,
            "",
            *verdicts,
            "",
        ]
    text = "\n".join(lines)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out / "results.md"
