"""``metalung evaluate``: score a trained bundle model on any datalist, the thesis' way.

Example::

    metalung evaluate outputs/experiment/runs/unet/none/seed0/models/model.pt --model unet \\
        --datalist converted/datalist.json --pixel-mm 1.4 --out outputs/eval

runs :func:`metalung_monai.training.evaluate.evaluate_checkpoint` (every input checked before
anything runs; a failed evaluation leaves no output) and prints its summary: DICE, IoU,
Precision, Recall per test tumour slice and per patient in 3D, false positives on calcified
nodules, DICE per Lung-RADS class.
"""

from __future__ import annotations

import argparse
import time

from .experiment import MODEL_NAMES, PRESET_NAMES

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` sub-command on ``subparsers`` (argparse's sub-parsers)."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained model on a datalist (per slice, per Lung-RADS class, per patient)",
        description="Run a bundle's evaluate.json with CHECKPOINT on a datalist section and print DICE, IoU, "
        "Precision, Recall per tumour slice, DICE per Lung-RADS class, per-patient 3D DICE and false "
        "positives on calcified nodules; tables go to --out.",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="model weights (e.g. .../models/model.pt)"
    )
    p.add_argument(
        "--model",
        default="unet",
        help=f"bundle: one of {', '.join(MODEL_NAMES)} or a bundle folder (default unet)",
    )
    p.add_argument(
        "--datalist",
        required=True,
        metavar="JSON",
        help="datalist to score (e.g. from metalung convert)",
    )
    p.add_argument(
        "--section",
        default="test",
        choices=("training", "validation", "test"),
        help="datalist section",
    )
    p.add_argument(
        "--preset",
        default="quick",
        choices=PRESET_NAMES,
        help="the preset the model was trained with",
    )
    p.add_argument(
        "--pixel-mm",
        type=float,
        default=None,
        help="resample scans in-plane to this pixel size first (the training data's, e.g. 1.4 for the "
        "256 x 256 phantom)",
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder for the tables")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint the options name; print the summary tables."""
    import pandas as pd

    from ..evaluation import markdown_table
    from ..training.evaluate import evaluate_checkpoint
    from ..training.presets import SettingError, check_setting

    t0 = time.perf_counter()
    overrides = {}
    if args.pixel_mm is not None:  # 0, -1, nan are refused, not ignored
        check_setting("pixel_mm", args.pixel_mm, source="--pixel-mm")
        overrides["pixel_mm"] = args.pixel_mm
    try:
        summary = evaluate_checkpoint(
            args.model,
            args.checkpoint,
            args.datalist,
            args.out,
            section=args.section,
            preset=args.preset,
            preset_overrides=overrides,
            verbose=bool(getattr(args, "verbose", False)),
        )
    except SettingError as e:
        raise e.renamed("--pixel-mm" if e.setting == "pixel_mm" else f"setting {e.setting}") from e
    cols = ("n_images", "dice", "iou", "precision", "recall", "n_missed", "calcified_fp_components")
    rows = [
        {"level": level, **{k: (summary.get(part) or {}).get(k) for k in cols}}
        for level, part in (("tumour slices", "slices"), ("volumes (3D)", "volumes"))
    ]
    print(markdown_table(pd.DataFrame.from_records(rows)))
    if summary.get("per_class_dice"):
        print(
            "DICE per Lung-RADS class: "
            + ", ".join(
                f"{k} {'n/a' if val is None else f'{val:.3f}'}"
                for k, val in summary["per_class_dice"].items()
            )
        )
    print(f"metalung evaluate: tables in {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0
