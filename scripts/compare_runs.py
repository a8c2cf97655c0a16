"""Paired comparison of runs from different experiments on the same test slices.

``metalung experiment`` compares the arms of one experiment. This script compares runs that live in
different folders but were scored on the same test slices: a cross-validation from scratch against
the same cross-validation fine-tuned from synthetic-cohort weights (``--pretrained``), or
``metalung evaluate`` of several checkpoints on one datalist (transfer). The first run is the
reference A; every other run B is compared with it, slice by slice (same seed when both have
seeds), with patients as the units: the same bootstrap interval and Wilcoxon test as
``results.md`` (``metalung_monai.training.results.paired_section``).

Usage::

    python scripts/compare_runs.py --out DIR --title "..." \
        "scratch none=outputs/msd/cv/cv_slices.csv#none#unet" \
        "fine-tuned none=outputs/msd_ft/cv/cv_slices.csv#none#unet"

Each run is ``LABEL=CSV[#ARM[#MODEL]]``: a per-slice table (``cv_slices.csv``, ``all_slices.csv``
of an experiment, or ``slices.csv`` of ``metalung evaluate``), optionally filtered to one arm and
one model. Writes ``DIR/compare.md`` and ``DIR/paired_compare.csv`` (atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from metalung_monai.errors import InputError
from metalung_monai.training.results import PAIRED_METHOD, paired_section
from metalung_monai.utils.atomic import atomic_path

METRICS = ("dice", "iou", "precision", "recall")


def read_run(spec: str) -> tuple[str, pd.DataFrame]:
    """``LABEL=CSV[#ARM[#MODEL]]`` -> (label, its tumour slices with ``arm`` set to the label)."""
    label, sep, rest = spec.partition("=")
    if not sep or not label.strip() or not rest:
        raise InputError(spec, "expected LABEL=CSV[#ARM[#MODEL]]")
    path, *filters = rest.split("#")
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "per-slice table does not exist")
    df = pd.read_csv(p)
    if "level" in df.columns:
        df = df[df["level"] == "slice"]
    for col, value in zip(("arm", "model"), filters):
        if value:
            if col not in df.columns:
                raise InputError(p, f"has no '{col}' column to select '{value}' from")
            if value not in set(df[col]):
                raise InputError(p, f"has no {col} '{value}' (it has {sorted(set(df[col]))})")
            df = df[df[col] == value]
    if df.empty:
        raise InputError(p, f"no tumour slices left for '{spec}'")
    df = df.copy()
    df["arm"] = label.strip()
    return label.strip(), df


def compare(specs: list[str], out: Path, title: str) -> Path:
    """Write ``out/compare.md`` (means over seeds and the paired comparisons); return its path."""
    runs = [read_run(s) for s in specs]
    labels = [lab for lab, _ in runs]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise InputError("runs", f"expected two or more runs with distinct labels, got {labels}")
    frame = pd.concat([df for _, df in runs], ignore_index=True)
    if "seed" not in frame.columns:
        frame["seed"] = 0
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", "| run | slices | seeds | " + " | ".join(METRICS) + " |"]
    lines.append("|---|---:|---:|" + "---|" * len(METRICS))
    for label, df in runs:
        seeds = df["seed"].nunique() if "seed" in df.columns else 1
        by_seed = df.groupby("seed")[list(METRICS)].mean() if "seed" in df.columns else None
        cells = []
        for m in METRICS:
            if by_seed is None or len(by_seed) == 1:
                cells.append(f"{df[m].mean():.3f}")
            else:
                cells.append(f"{by_seed[m].mean():.3f} ± {by_seed[m].std(ddof=1):.3f}")
        lines.append(f"| {label} | {len(df) // seeds} | {seeds} | " + " | ".join(cells) + " |")
    section, verdicts, _ = paired_section(out, "compare", labels, frame)
    lines += ["", *section, PAIRED_METHOD, "", *verdicts, ""]
    path = out / "compare.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=CSV[#ARM[#MODEL]]")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--title", default="Paired comparison of runs")
    args = ap.parse_args(argv)
    try:
        path = compare(args.runs, args.out, args.title)
    except InputError as e:
        print(f"compare_runs: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
