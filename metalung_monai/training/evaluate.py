"""``metalung evaluate``: score a trained bundle model on any datalist, the thesis' way.

Runs the bundle's ``evaluate.json`` (on top of its ``train.json``) with a given checkpoint on a
datalist section, and prints the summary: DICE, IoU, Precision, Recall per test tumour slice (mean
over slices), DICE per Lung-RADS class, per-patient 3D DICE and false positives on calcified
nodules. Tables go to ``--out`` (``slices``, ``volumes``, ``per_class`` as CSV and Markdown,
``summary.json``). Use it to see how a model trained on the phantom carries over to real CT
converted with ``metalung convert`` (``--pixel-mm`` resamples such scans to the training pixel
size first).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import InputError
from .experiment import MODELS, default_bundles_dir, run_bundle

__all__ = ["evaluate_checkpoint", "add_parser", "run"]


def evaluate_checkpoint(bundle: str, checkpoint: str, datalist: str, out_dir: str, section: str = "test",
                        preset: str = "quick", preset_overrides: dict | None = None, verbose: bool = False) -> dict:
    """Evaluate ``checkpoint`` with ``bundle`` (a model name or a bundle folder); return the summary."""
    b = Path(bundle) if Path(bundle).is_dir() else default_bundles_dir() / MODELS.get(bundle, bundle)
    if not (b / "configs" / "evaluate.json").is_file():
        raise InputError(bundle, f"not a bundle with configs/evaluate.json (models: {', '.join(MODELS)})")
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint file does not exist")
    dl = Path(datalist)
    if not dl.is_file():
        raise InputError(dl, "datalist file does not exist")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_bundle(b, ["train.json", "evaluate.json"], "infer", verbose=verbose, dataset_dir=str(dl.resolve().parent),
               datalist=str(dl.resolve()), eval_datalist=str(dl.resolve()), eval_section=section, preset=preset,
               preset_overrides=dict(preset_overrides or {}), ckpt_dir=str(ckpt.resolve().parent),
               output_dir=str(out.resolve()), **{"validate#handlers#0#load_path": str(ckpt.resolve())})
    return json.loads((out / "summary.json").read_text())


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained model on a datalist (per slice, per Lung-RADS class, per patient)",
        description="Run a bundle's evaluate.json with CHECKPOINT on a datalist section and print DICE, IoU, "
                    "Precision, Recall per tumour slice, DICE per Lung-RADS class, per-patient 3D DICE and false "
                    "positives on calcified nodules; tables go to --out.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model weights (e.g. .../models/model.pt)")
    p.add_argument("--model", default="unet", help=f"bundle: one of {', '.join(MODELS)} or a bundle folder (default unet)")
    p.add_argument("--datalist", required=True, metavar="JSON", help="datalist to score (e.g. from metalung convert)")
    p.add_argument("--section", default="test", choices=("training", "validation", "test"), help="datalist section")
    p.add_argument("--preset", default="quick", choices=("quick", "full"), help="the preset the model was trained with")
    p.add_argument("--pixel-mm", type=float, default=None,
                   help="resample scans in-plane to this pixel size first (the training data's, e.g. 1.4 for the "
                        "256 x 256 phantom)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder for the tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation import markdown_table
    import pandas as pd

    t0 = time.perf_counter()
    overrides = {"pixel_mm": args.pixel_mm} if args.pixel_mm else {}
    summary = evaluate_checkpoint(args.model, args.checkpoint, args.datalist, args.out, section=args.section,
                                  preset=args.preset, preset_overrides=overrides,
                                  verbose=bool(getattr(args, "verbose", False)))
    cols = ("n_images", "dice", "iou", "precision", "recall", "n_missed", "calcified_fp_components")
    rows = [{"level": level, **{k: (summary.get(part) or {}).get(k) for k in cols}}
            for level, part in (("tumour slices", "slices"), ("volumes (3D)", "volumes"))]
    print(markdown_table(pd.DataFrame.from_records(rows)))
    if summary.get("per_class_dice"):
        print("DICE per Lung-RADS class: " + ", ".join(f"{k} {'n/a' if val is None else f'{val:.3f}'}"
                                                       for k, val in summary["per_class_dice"].items()))
    print(f"metalung evaluate: tables in {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0
