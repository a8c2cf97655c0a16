"""``metalung lung-mask``: lung labels (and optionally dense structures / free space) of a CT image.

Example::

    metalung lung-mask scan/ --out lungs.nii.gz --vessels vessels.nii.gz \\
        --free-space free.nii.gz --min-distance 5

reads any CT input that ``metalung convert`` reads (DICOM folder or file, NIfTI, NRRD, MHA),
writes ``lungs.nii.gz`` (uint8: 0 background, 1 right lung, 2 left lung) on the image's grid,
``vessels.nii.gz`` (uint8 {0,1}) and ``free.nii.gz`` (uint8 {0,1}: free parenchyma at least 5 mm
from dense structures and pleura; without ``--min-distance`` the float32 distance in mm), and
prints one summary line. Every file is written atomically.

Refused before anything is written (one error line naming the option or the image): an output
that is, contains or lies inside the input (a file or a DICOM folder) or another output, and an
image in which no plausible lungs are found (random noise, air or water only:
:func:`metalung_monai.anatomy.check_lung_mask`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, UnsupportedFormatError
from ..io.dicom_slice import check_rescale_option
from ..io.readers import read_ct
from ..utils.atomic import full_suffix, write_image_atomic
from ..utils.paths import refuse_overlap

__all__ = ["add_parser", "run", "OUTPUT_SUFFIXES"]

#: image formats the outputs may be written in (chosen by the extension)
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``metalung lung-mask`` on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "lung-mask",
        help="lung mask by HU (1 right, 2 left lung), optional vessels and free-space maps",
        description=(
            "Segment the lungs of a CT image by HU thresholds (labels: 0 background, 1 right lung, "
            "2 left lung) and write the mask on the image's grid (NIfTI). Optionally write the dense "
            "structures inside the lungs and the free parenchyma where a tumour can be placed."
        ),
    )
    p.add_argument(
        "image", metavar="IMAGE", help="CT image: DICOM folder or file, .nii/.nii.gz, .nrrd, .mha"
    )
    p.add_argument(
        "-o", "--out", required=True, metavar="MASK", help="output lung labels (.nii.gz)"
    )
    p.add_argument(
        "--vessels", metavar="PATH", help="also write the dense-structure mask (uint8 0/1)"
    )
    p.add_argument(
        "--free-space",
        metavar="PATH",
        help="also write the free-space map: float32 distance in mm, or uint8 0/1 with --min-distance",
    )
    p.add_argument(
        "--min-distance",
        type=float,
        metavar="MM",
        help="with --free-space: write the mask of free parenchyma at least MM from dense structures / pleura",
    )
    p.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to read from a folder with several CT series",
    )
    p.add_argument(
        "--rescale",
        type=float,
        nargs=2,
        metavar=("SLOPE", "INTERCEPT"),
        help="DICOM without RescaleSlope/RescaleIntercept (refused otherwise): the rescale to assume, "
        "e.g. 1 -1024 for unsigned storage with air at 0, or 1 0 when the stored values are HU",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _check_output(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if full_suffix(p).lower() not in OUTPUT_SUFFIXES:
        raise UnsupportedFormatError(
            p, f"{option}: output must end with one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    if p.is_dir():
        raise InputError(p, f"{option}: is a folder, expected a file name")
    return p


def _refuse_overlaps(image: str, outputs: list[tuple[str, Path | None]]) -> None:
    """Refuse an output that is, contains or lies inside the input, or that another output uses."""
    seen: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        refuse_overlap(path, [image], option)
        real = Path(os.path.realpath(path))
        for other_option, other in seen:
            if real == other:  # two outputs on one path: the second would replace the first
                raise InputError(
                    option,
                    f"{path} is also the {other_option} output; give each output its own path",
                )
        seen.append((option, real))


def run(args: argparse.Namespace) -> int:
    """Run ``metalung lung-mask`` with parsed ``args``; returns the exit status (0)."""
    # heavy: SimpleITK, and anatomy (SciPy, scikit-image) only when the command runs
    import SimpleITK as sitk

    from ..anatomy._images import from_canonical_image, to_canonical_image
    from ..anatomy.analysis import analyse_lungs
    from ..anatomy.plausibility import check_lung_mask

    out = _check_output(args.out, "--out")
    vessels_out = _check_output(args.vessels, "--vessels")
    free_out = _check_output(args.free_space, "--free-space")
    if args.min_distance is not None:
        if free_out is None:
            raise InputError("--min-distance", "needs --free-space PATH")
        if not np.isfinite(args.min_distance) or args.min_distance < 0:
            raise InputError(
                "--min-distance", f"must be a distance >= 0 in mm, got {args.min_distance}"
            )
    _refuse_overlaps(
        args.image, [("--out", out), ("--vessels", vessels_out), ("--free-space", free_out)]
    )
    rescale = getattr(args, "rescale", None)
    if rescale is not None:
        rescale = check_rescale_option(rescale, "--rescale")
    progress = not getattr(args, "no_progress", False)

    t0 = time.perf_counter()
    ct = read_ct(
        args.image, series_uid=getattr(args, "series", None), progress=progress, rescale=rescale
    )
    image = ct.image
    arr, spacing = to_canonical_image(image)
    anatomy = analyse_lungs(arr, spacing, progress=progress)
    check_lung_mask(arr, anatomy.lungs, spacing, source=args.image)  # noise, air, water: refused

    write_image_atomic(sitk.Cast(from_canonical_image(anatomy.lungs, image), sitk.sitkUInt8), out)
    if vessels_out is not None:
        write_image_atomic(
            from_canonical_image(anatomy.vessels.astype(np.uint8), image), vessels_out
        )
    if free_out is not None:
        if args.min_distance is None:
            free = anatomy.free_distance.astype(np.float32)
        else:
            free = anatomy.free_space(args.min_distance).astype(np.uint8)
        write_image_atomic(from_canonical_image(free, image), free_out)

    nr, nl = anatomy.right_voxels, anatomy.left_voxels
    if image.GetDimension() == 3:  # volumes from the image's own voxel size
        unit, per_voxel = "ml", float(np.prod(image.GetSpacing())) / 1000.0
    else:  # one slice: areas
        unit, per_voxel = "cm2", float(np.prod(image.GetSpacing())) / 100.0
    print(
        f"lung-mask: right lung {nr} voxels ({nr * per_voxel:.1f} {unit}), left lung {nl} voxels "
        f"({nl * per_voxel:.1f} {unit}) -> {out} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0
