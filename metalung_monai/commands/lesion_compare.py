"""``metalung lesion-compare``: lesion generators side by side (Table 6, realism, pictures).

Example::

    metalung lesion-compare outputs/synth/cohort/bank \\
        dcgan=outputs/synth/cohort/dcgan vqvae=outputs/synth/cohort/vqvae \\
        --out outputs/synth/cohort/comparison

Each RUN is a generator's folder (``models/*final*.pt``, ``generated/``, ``realism/``: what
``scripts/synth_benchmark.sh`` writes), as ``NAME=DIR`` or ``DIR`` (named by the folder). Writes
``comparison.md`` (Table 6: parameters per network, training time, seconds per sample; the
realism figures next to the real-vs-real baseline), ``comparison.json`` and ``grid.png`` (one row
per Lung-RADS class: real held-out lesions, then each generator) to ``--out``; see
:mod:`metalung_monai.evaluation.generator_comparison`.
"""

from __future__ import annotations

import argparse
import os
import time

from . import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``lesion-compare`` sub-command on ``subparsers`` (argparse's sub-parsers)."""
    p = subparsers.add_parser(
        "lesion-compare",
        help="compare lesion generators: Table 6, realism figures, picture grid per class",
        description="Read generator run folders (models/*final*.pt, generated/, realism/) trained "
        "on BANK and write comparison.md, comparison.json and grid.png.",
    )
    p.add_argument("bank", metavar="BANK", help="the real lesion bank the generators trained on")
    p.add_argument("runs", metavar="RUN", nargs="+", help="NAME=DIR or DIR of a generator run")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--per-class", type=positive_int, default=4, help="lesions per class and source (4)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the picked lesions (0)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the comparison; print Table 6 in short."""
    from ..errors import InputError
    from ..evaluation.generator_comparison import compare_generators

    t0 = time.perf_counter()
    runs: dict[str, str] = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(os.path.normpath(spec)), spec
        if not name or not path:
            raise InputError(spec, "expected NAME=DIR or DIR")
        if name in runs:
            raise InputError(spec, f"generator name {name!r} given twice")
        runs[name] = path
    r = compare_generators(args.bank, runs, args.out, per_class=args.per_class, seed=args.seed)
    for name, s in r["generators"].items():
        auc = s["realism"]["c2st"]["G_vs_hold"]["auc"] if s["realism"] else None
        print(
            f"{name}: {sum(s['parameters'].values()):,} parameters, {s['train_seconds']:.0f} s "
            f"training, {s['seconds_per_sample']:.4f} s/sample"
            + ("" if auc is None else f", C2ST AUC {auc:.3f}")
        )
    print(
        f"metalung lesion-compare: report in {args.out}/comparison.md "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0
