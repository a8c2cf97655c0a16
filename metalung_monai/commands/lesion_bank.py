"""``metalung lesion-bank``: the real lesions of a datalist's training cases, as a lesion bank.

Example::

    metalung lesion-bank cohort/datalist.json --out bank/ --workers 2

runs :func:`metalung_monai.synthesis.lesion_bank.build_lesion_bank` (resumable; what it writes,
which patients it leaves out and why: its module docstring and ``docs/synthesis.md``) and prints
one line: the lesions per kind, patients, Lung-RADS classes, the time and the bank folder.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``metalung lesion-bank`` on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "lesion-bank",
        help="bank of the real tumours of a datalist's training cases (2D and 3D, HU)",
        description="Extract every connected tumour of DATALIST's training cases (never the "
        "validation fold's or test patients) into a lesion bank: native-resolution context "
        "windows and model-size patches with masks, lung masks, Lung-RADS class and type; "
        "bank.npz + lesions.csv + bank.json + overview.png in --out; resumable.",
    )
    p.add_argument("datalist", metavar="DATALIST", help="datalist.json with image/mask cases")
    p.add_argument("--out", "-o", required=True, metavar="BANK", help="bank folder")
    p.add_argument(
        "--val-fold",
        type=int,
        default=0,
        metavar="N",
        help="validation fold whose patients are left out (default 0, as the training presets); "
        "-1 keeps every training case (a datalist without folds)",
    )
    p.add_argument(
        "--context-mm",
        type=float,
        default=64.0,
        metavar="MM",
        help="side of the context window around each lesion in mm (default 64: 1 mm per "
        "model pixel at --size 64)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=64,
        help="model size of the 2D patches (default 64; 32 for the quick presets)",
    )
    p.add_argument(
        "--size3d", type=int, default=None, help="model size of the 3D cubes (default --size / 2)"
    )
    p.add_argument(
        "--hold-fraction",
        type=float,
        default=0.25,
        metavar="F",
        help="share of the bank's patients held out ('hold' subset) for the realism baseline "
        "(default 0.25)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/hold split (default 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a bank made with other settings (deletes only the files it wrote)",
    )
    p.add_argument("--no-figure", action="store_true", help="do not draw overview.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the bank described by ``args`` and print the summary line; returns 0."""
    from ..synthesis.lesion_bank import build_lesion_bank

    t0 = time.time()
    bank = build_lesion_bank(
        args.datalist,
        args.out,
        val_fold=args.val_fold,
        context_mm=args.context_mm,
        size=args.size,
        size3d=args.size3d,
        hold_fraction=args.hold_fraction,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress_bar=not args.no_progress,
        figure=not args.no_figure,
    )
    t = bank.table
    n2, n3 = int((t["kind"] == "2d").sum()), int((t["kind"] == "3d").sum())
    classes = t[t["kind"] == "2d"]["lung_rads"].value_counts().sort_index()
    shown = ", ".join(f"{k} {v}" for k, v in classes.items())
    print(
        f"metalung lesion-bank: {n2} 2D and {n3} 3D lesions of {t['patient_id'].nunique()} "
        f"patients (2D: {shown}; {len(bank.meta['excluded_patients'])} patients left out) in "
        f"{time.time() - t0:.1f} s; bank {args.out}"
    )
    return 0
