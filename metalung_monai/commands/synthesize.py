"""``metalung synthesize``: offline lesion insertion into the healthy slices of a datalist.

Example::

    metalung synthesize --healthy outputs/cohort/datalist.json \\
        --lesions outputs/synth/cohort/bank --out outputs/synth/cohort/inserted --per-case 1

runs :func:`metalung_monai.synthesis.offline.synthesize_datalist` (resumable; which slices are
healthy, what it writes and refuses: its module docstring and ``docs/synthesis.md``) and prints
one line: healthy slices, insertions inserted and skipped (why), the time and the paths of the
new datalist, ``insertions.csv`` and ``synthesize.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import positive_int

__all__ = ["add_parser", "run", "HEALTHY_MODES", "MAX_PER_CASE"]

#: ``--slices`` choices and most ``--per-case``: the library's ``HEALTHY_MODES`` and
#: ``MAX_PER_CASE`` (spelled out here because importing the library imports torch and
#: ``metalung --help`` must not; a test holds them equal)
HEALTHY_MODES = ("slices", "patients")
MAX_PER_CASE = 100


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``metalung synthesize`` on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "synthesize",
        help="insert bank or generated lesions into the healthy slices of a datalist",
        description="Insert lesions of a bank (real: copy-paste) or of a generator's folder into "
        "the free lung of every healthy axial slice of DATALIST's training cases (--per-case "
        "new 2D cases per slice; no room -> a recorded skip) and write the new cases, a "
        "datalist, insertions.csv and synthesize.png in --out; resumable.",
    )
    p.add_argument(
        "--healthy",
        required=True,
        metavar="DATALIST",
        help="datalist.json of the healthy data (e.g. from 'metalung phantom' or 'convert')",
    )
    p.add_argument(
        "--lesions",
        required=True,
        metavar="BANK_OR_SAMPLES",
        help="a 'metalung lesion-bank' folder, or a generator's generated/ folder (or the "
        "bundle output folder holding it)",
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--per-case",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"insertions (new cases) per healthy slice (default 1, at most {MAX_PER_CASE})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(1.0, 1.0),
        metavar=("LOW", "HIGH"),
        help="lesion size factor drawn uniformly (default 1 1: the real size in mm; the thesis "
        "drew 1 4)",
    )
    p.add_argument(
        "--slices",
        choices=HEALTHY_MODES,
        default="slices",
        help="healthy slices: 'slices' (default) every tumour-free lung slice at least "
        "--gap-mm from a tumour; 'patients' only the slices of tumour-free cases",
    )
    p.add_argument(
        "--gap-mm",
        type=float,
        default=10.0,
        metavar="MM",
        help="distance a healthy slice keeps from the tumour slices of its case (default 10)",
    )
    p.add_argument(
        "--min-lung-mm2",
        type=float,
        default=1000.0,
        metavar="MM2",
        help="lung area a slice needs to count (default 1000 mm^2)",
    )
    p.add_argument(
        "--slices-per-case",
        type=positive_int,
        default=None,
        metavar="K",
        help="at most K healthy slices per case, evenly spaced (default: all)",
    )
    p.add_argument(
        "--val-fold",
        type=int,
        default=0,
        metavar="N",
        help="validation fold whose patients are left out (default 0, as the training presets); "
        "-1 uses every training case (e.g. a healthy datalist of one patient)",
    )
    p.add_argument(
        "--no-originals",
        action="store_true",
        help="list only the new cases in the datalist (default: the source's training cases too)",
    )
    p.add_argument(
        "--balance",
        metavar="WHAT",
        default=None,
        help="draw the insertions so that the training cases approach equal left / right lung "
        "shares ('lung') or the same share for every Lung-RADS class the bank holds "
        "('lung-rads'); writes balance.csv (before / after)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run made with other settings (deletes only the files it wrote)",
    )
    p.add_argument("--no-figure", action="store_true", help="do not draw synthesize.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Insert the lesions described by ``args`` and print the summary line; returns 0."""
    from ..synthesis.offline import synthesize_datalist

    t0 = time.time()
    choose = None
    if args.balance is not None:
        from ..anatomy.balance import check_mode
        from ..synthesis.bank import read_bank
        from ..synthesis.offline import BalancedChoice, resolve_lesions
        from ..transforms.insert_lesion import lesion_choices

        check_mode(args.balance)
        rows = lesion_choices(read_bank(resolve_lesions(args.lesions)), kind="2d")
        choose = BalancedChoice(args.balance, rows.table["lung_rads"], tuple(args.scale))
    s = synthesize_datalist(
        args.healthy,
        args.lesions,
        args.out,
        per_case=args.per_case,
        seed=args.seed,
        scale_range=tuple(args.scale),
        healthy=args.slices,
        gap_mm=args.gap_mm,
        min_lung_mm2=args.min_lung_mm2,
        slices_per_case=args.slices_per_case,
        val_fold=None if args.val_fold == -1 else args.val_fold,
        include_original=not args.no_originals,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        figure=not args.no_figure,
        choose=choose,
    )
    why = ", ".join(f"{v} {k}" for k, v in s["skipped"].items()) or "none"
    classes = ", ".join(f"{k} {v}" for k, v in s["lung_rads"].items()) or "none"
    fig = f"; picture {s['figure']}" if s["figure"] else ""
    print(
        f"metalung synthesize: {s['slices']} healthy slices of {s['cases']} cases -> "
        f"{s['inserted']} of {s['requested']} insertions (skipped: {why}; inserted {classes}) "
        f"in {time.time() - t0:.1f} s; datalist {s['datalist']}; table {s['csv']}{fig}"
    )
    if args.balance is not None:
        from ..synthesis.offline import balance_report
        from ..utils.atomic import atomic_path

        val_fold = None if args.val_fold == -1 else args.val_fold
        table = balance_report(args.healthy, s["csv"], args.balance, val_fold)
        path = Path(args.out) / "balance.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        print(f"--balance {args.balance}: tumour cases per category (before: the source's)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"table {path}")
    return 0
