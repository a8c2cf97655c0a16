"""``metalung phantom``: generate the synthetic chest-CT cohort (the project's default data).

Example::

    metalung phantom --out cohort/ --patients 40 --size 256 --workers 4

runs :func:`metalung_monai.phantom.generate_cohort` (resumable; what it writes: its docstring and
``docs/phantom.md``) and prints a summary: patients per class (test patients), the HU-threshold
lung masks' agreement with the phantom's truth, tumours and tumour slices, the datalist's path.
Errors of ``generate_cohort`` name the option the user typed (:data:`OPTION_OF_ARGUMENT`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from ..errors import InputError

__all__ = ["add_parser", "run", "OPTION_OF_ARGUMENT"]

#: generate_cohort's argument -> the option that sets it (errors name what the user typed)
OPTION_OF_ARGUMENT = {
    "out_dir": "--out",
    "n_patients": "--patients",
    "seed": "--seed",
    "size": "--size",
    "slice_thickness": "--slice-thickness",
    "n_test_per_class": "--test-per-class",
    "workers": "--workers",
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``phantom`` sub-command on ``subparsers`` (an argparse sub-parsers action)."""
    p = subparsers.add_parser(
        "phantom",
        help="generate a synthetic chest-CT cohort (HU images, tumour masks, anatomy truth, datalist)",
        description=(
            "Generate a synthetic chest-CT cohort: int16 HU NIfTI images, tumour masks, anatomy "
            "labels, datalist.json (patient-level train/test split, folds), cohort.csv and "
            "overview.png. Resumable: rerunning on the same folder only generates what is missing."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--patients",
        type=int,
        default=40,
        metavar="N",
        help="number of patients (10%% healthy LR1, the rest evenly LR2/LR3/LR4A/LR4B; at most 10000; "
        "refused when the estimated output does not fit on the disk)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="cohort seed (>= 0)")
    p.add_argument(
        "--size",
        type=int,
        default=512,
        metavar="PX",
        help="axial matrix size (PX x PX), 127..1024: smaller matrices (pixels of 3 mm or more at the "
        "380 mm field of view) cannot draw LR2 nodules",
    )
    p.add_argument(
        "--slice-thickness",
        type=float,
        nargs=2,
        default=(2.5, 5.0),
        metavar=("MIN", "MAX"),
        help="slice thickness range in mm (a standard thickness in the range per patient; 1.0..5.0)",
    )
    p.add_argument(
        "--test-per-class",
        type=int,
        default=4,
        metavar="K",
        help="held-out test patients per class LR2..LR4B",
    )
    p.add_argument("--workers", type=int, default=1, metavar="W", help="worker processes (1..256)")
    p.add_argument(
        "--dicom",
        action="store_true",
        help="also write each image as a DICOM series (dicom/<pid>/)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a cohort generated in --out with other parameters (deletes only the files its "
        "manifest lists; other files in --out are kept)",
    )
    p.add_argument(
        "--no-lung-masks",
        action="store_true",
        help="skip the HU-threshold lung masks (lungs/<pid>.nii.gz, datalist key lung_mask)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Generate the cohort described by ``args`` and print a summary; returns the exit status."""
    from ..phantom.cohort import MANIFEST_NAME, generate_cohort
    from ..utils.runner import Manifest

    t0 = time.perf_counter()
    try:  # every option is checked (and the disk space) before anything is written
        path = generate_cohort(
            args.out,
            n_patients=args.patients,
            seed=args.seed,
            size=args.size,
            slice_thickness=tuple(args.slice_thickness),
            n_test_per_class=args.test_per_class,
            workers=args.workers,
            dicom=args.dicom,
            lung_masks=not args.no_lung_masks,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except InputError as e:
        if type(e) is InputError and e.source in OPTION_OF_ARGUMENT:
            raise InputError(OPTION_OF_ARGUMENT[e.source], e.problem) from None
        raise
    elapsed = time.perf_counter() - t0
    manifest = Manifest(args.out, MANIFEST_NAME, what="phantom").read(required=("patients",))
    summaries = [e["summary"] for e in manifest["patients"].values()]
    per_class = Counter(s["lung_rads"] for s in summaries)
    test = Counter(s["lung_rads"] for s in summaries if s.get("split") == "test")
    n_tum = sum(len(s["tumours"]) for s in summaries)
    n_sl = sum(int(s["n_tumour_slices"]) for s in summaries)
    generated = manifest.get("last_run", {}).get("generated", [])
    out = sys.stdout
    print(
        f"phantom cohort in {args.out}: {len(summaries)} patients ({len(generated)} generated now, "
        f"{len(summaries) - len(generated)} kept)",
        file=out,
    )
    for cls in ("LR1", "LR2", "LR3", "LR4A", "LR4B"):
        if per_class.get(cls):
            print(f"  {cls}: {per_class[cls]} patients ({test.get(cls, 0)} test)", file=out)
    checks = [s["lung_mask_check"] for s in summaries if s.get("lung_mask_check")]
    if checks:
        dice = [c["dice"] for c in checks]
        inside = sum(c["tumour_voxels_inside"] for c in checks)
        total = sum(c["tumour_voxels"] for c in checks)
        print(
            f"  HU-threshold lung masks vs phantom truth: Dice {min(dice):.3f}-{max(dice):.3f}, "
            f"tumour voxels inside {inside}/{total}, stomach-gas voxels inside "
            f"{sum(c['gas_voxels_inside'] for c in checks)}",
            file=out,
        )
    print(f"  tumours: {n_tum}, tumour slices: {n_sl}", file=out)
    print(f"  datalist: {path}", file=out)
    print(f"  time: {elapsed:.1f} s", file=out)
    return 0
