"""``metalung lesion-realism``: how realistic are generated lesions, against a real baseline.

Example::

    metalung lesion-realism outputs/bank outputs/generated/dcgan --out outputs/realism/dcgan

runs :func:`metalung_monai.evaluation.realism.realism_report`: the per-lesion gate (integer HU,
median HU within the real mean +- 3 SD, size within the real range), HU Wasserstein / KS
distances, hand-made feature differences with an MMD test, a classifier two-sample test (small
CNN, patient-grouped folds, AUC), precision / recall and nearest-neighbour memorisation; every
figure of the generated lesions against the held-out real lesions next to the same figure for
the real training lesions. Writes ``realism.md``, PNG figures, CSV tables and ``realism.json``
to ``--out`` (each file atomically); see ``docs/realism.md``.
"""

from __future__ import annotations

import argparse
import time

from . import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``lesion-realism`` sub-command on ``subparsers`` (argparse's sub-parsers)."""
    p = subparsers.add_parser(
        "lesion-realism",
        help="realism report of generated lesions against a real lesion bank",
        description="Compare the generated lesions of GENERATED (a bank-like folder) with the real "
        "lesions of BANK: gate, HU distances, hand-made features, classifier two-sample test, "
        "precision / recall and memorisation, each next to its real-vs-real baseline (BANK's "
        "train lesions against its held-out ones). Writes realism.md, PNGs, CSVs and realism.json.",
    )
    p.add_argument("bank", metavar="BANK", help="real lesion bank (rows with subset train / hold)")
    p.add_argument("generated", metavar="GENERATED", help="bank-like folder of generated lesions")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap resamples (200)")
    p.add_argument("--permutations", type=positive_int, default=200, help="MMD permutations (200)")
    p.add_argument("--c2st-folds", type=positive_int, default=5, help="C2ST folds (5)")
    p.add_argument("--c2st-epochs", type=positive_int, default=15, help="C2ST epochs (15)")
    p.add_argument(
        "--c2st-repeats",
        type=positive_int,
        default=3,
        help="C2ST cross-validation repeats, probabilities averaged (3)",
    )
    p.add_argument(
        "--max-lesions",
        type=positive_int,
        default=1000,
        help="subsample each set to at most this many lesions (1000)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the realism report; print its headline figures."""
    from ..evaluation.realism import realism_report

    t0 = time.perf_counter()
    r = realism_report(
        args.bank,
        args.generated,
        args.out,
        seed=args.seed,
        n_boot=args.bootstrap,
        n_perm=args.permutations,
        c2st_folds=args.c2st_folds,
        c2st_epochs=args.c2st_epochs,
        c2st_repeats=args.c2st_repeats,
        max_lesions=args.max_lesions,
    )
    w_g, w_b = r["hu"]["lesion"]["G_vs_hold"], r["hu"]["lesion"]["train_vs_hold"]
    c_g, c_b = r["c2st"]["G_vs_hold"], r["c2st"]["train_vs_hold"]
    mem = ", ".join(
        f"{space} {'FLAGGED' if m['flagged'] else 'no'}" for space, m in r["memorisation"].items()
    )
    print(
        f"gate pass {r['gate']['pass_rate']:.1%} (R_hold {r['gate']['pass_rate_R_hold']:.1%}); "
        f"lesion W1 {w_g['w1']:.1f} HU (baseline {w_b['w1']:.1f}); C2ST AUC {c_g['auc']:.3f} "
        f"(baseline {c_b['auc']:.3f}); memorisation: {mem}"
    )
    print(
        f"metalung lesion-realism: report in {args.out}/realism.md ({time.perf_counter() - t0:.0f} s)"
    )
    return 0
