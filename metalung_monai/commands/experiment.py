"""``metalung experiment``: train and evaluate every model x arm x seed; write ``results.md``.

Example::

    metalung experiment --datalist cohort/datalist.json --models unet \\
        --augment none,metalung,monai --preset quick --seeds 3 --out outputs/experiment

runs :func:`metalung_monai.training.experiment.run_experiment` (resumable; what it writes: its
docstring and ``docs/experiments.md``) and prints where ``results.md`` is. ``--set KEY=VALUE``
changes a preset setting (:func:`parse_set`); an error about a setting names the option the user
typed (``--set epochs``).
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from ..errors import InputError

#: the presets of the bundles (training.presets.PRESET_NAMES; kept here so --help imports no torch)
PRESET_NAMES = ("quick", "full", "patches")

__all__ = ["add_parser", "run", "parse_set", "MODEL_NAMES"]

#: the models the experiment trains (the keys of :data:`metalung_monai.training.bundle_run.MODELS`,
#: spelled here so that building the parser does not import torch; a test holds them equal)
MODEL_NAMES = ("unet", "deeplabv3", "maskrcnn")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``experiment`` sub-command on ``subparsers`` (argparse's sub-parsers)."""
    p = subparsers.add_parser(
        "experiment",
        help="train and evaluate every model x augmentation arm x seed; write results.md",
        description="Run the MONAI bundles for every combination of models and augmentation arms, with the same "
        "preset and seeds, evaluate on the test patients and write DIR/results.md (the thesis' Tables 7 "
        "and 8, per-patient DICE, calcified false positives, cost), figures and CSV tables. Resumable.",
    )
    p.add_argument(
        "--datalist",
        default=None,
        metavar="JSON",
        help="datalist to use (default: outputs/cohort/datalist.json of the main job)",
    )
    p.add_argument(
        "--models",
        default="unet",
        help=f"comma-separated, from {','.join(MODEL_NAMES)} (default unet)",
    )
    p.add_argument(
        "--augment",
        default="none,metalung,monai",
        help="comma-separated arms (default none,metalung,monai)",
    )
    p.add_argument(
        "--preset",
        default="quick",
        choices=PRESET_NAMES,
        help="training preset: quick (the synthetic cohort's slices), full (GPU), patches (48-pixel real patches such as the MSD ones; default quick)",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="patient-grouped K-fold cross-validation over all the datalist's cases (for a "
        "datalist without a held-out test section): every patient tested once per seed",
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting, e.g. --set epochs=4 (repeatable)",
    )
    p.add_argument(
        "--pretrained",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="start every run of MODEL from these local weights (a model.pt of the same bundle, "
        "e.g. trained on the synthetic cohort) and fine-tune (repeatable; nothing is downloaded)",
    )
    p.add_argument(
        "--records",
        default=None,
        metavar="RDIR",
        help="keep a copy of each finished run's results (no weights or predictions; about 30 kB a "
        "run) in "
        "RDIR and restore from it the runs DIR lacks: a grid over several sessions survives on a "
        "machine that keeps only what is committed (RDIR/fold<f>/ per fold with --folds)",
    )
    p.add_argument(
        "--bundles", default=None, metavar="DIR", help="bundles folder (default: the repository's)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an experiment made with another configuration",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the bar over runs and each training run's bar of iterations)",
    )
    p.set_defaults(func=run)
    return p


def parse_set(items: list[str]) -> dict:
    """``["epochs=4", "lr=1e-3"]`` -> ``{"epochs": 4, "lr": 0.001}``: the ``--set`` options.

    Each value is read as a Python literal (numbers, booleans, tuples, quoted strings); a value
    that is not one stays a string. Type and range checks are the preset's.

    Raises:
        InputError: naming ``--set`` for an item without ``=``.
    """
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError("--set", f"expected KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return out


def parse_pretrained(items: list[str]) -> dict[str, str]:
    """``["unet=runs/model.pt"]`` -> ``{"unet": "runs/model.pt"}``: the ``--pretrained`` options.

    Raises:
        InputError: naming ``--pretrained`` for an item without ``MODEL=PATH`` or an unknown model,
            or a model given twice.
    """
    out: dict[str, str] = {}
    for item in items:
        model, sep, path = item.partition("=")
        model, path = model.strip(), path.strip()
        if not sep or not model or not path:
            raise InputError(
                "--pretrained", f"expected MODEL=PATH (e.g. unet=model.pt), got '{item}'"
            )
        if model not in MODEL_NAMES:
            raise InputError(
                "--pretrained", f"unknown model '{model}'; choose from {', '.join(MODEL_NAMES)}"
            )
        if model in out:
            raise InputError("--pretrained", f"model '{model}' given twice")
        out[model] = path
    return out


def run(args: argparse.Namespace) -> int:
    """Run the experiment the options describe; print where its results are."""
    from ..training.experiment import run_experiment
    from ..training.folds import run_cross_validation
    from ..training.presets import SettingError

    datalist = args.datalist or str(Path.cwd() / "outputs" / "cohort" / "datalist.json")
    t0 = time.perf_counter()
    try:
        common = dict(
            models=[m.strip() for m in args.models.split(",") if m.strip()],
            arms=[a.strip() for a in args.augment.split(",") if a.strip()],
            preset=args.preset,
            seeds=args.seeds,
            preset_overrides=parse_set(args.set),
            bundles_dir=args.bundles,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            verbose=bool(getattr(args, "verbose", False)),
            pretrained=parse_pretrained(getattr(args, "pretrained", [])),
            records=getattr(args, "records", None),
        )
        if args.folds is not None:
            path = run_cross_validation(datalist, args.out, args.folds, **common)
        else:
            path = run_experiment(datalist, args.out, **common)
    except SettingError as e:  # name the option the user typed
        raise e.renamed(f"--set {e.setting}") from e
    print(f"metalung experiment: results in {path} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0
