"""``metalung convert``: CT inputs of any supported kind into a MONAI-ready dataset folder.

Example::

    metalung convert scan/ other.nii.gz --mask scan_mask.nrrd --mask other_mask.nii.gz --out ds/

writes ``ds/images/<case>.nii.gz`` (int16 HU), ``ds/masks/<case>.nii.gz`` (uint8) and
``ds/datalist.json`` (merged with an existing one) by :func:`metalung_monai.io.convert.convert`
(what is checked before anything is written, case ids, the datalist entry: its docstring and
``docs/data-formats.md``), and prints one summary line with the number of cases per section.
The Lung-RADS class of an input with a mask and without ``--lung-rads`` is computed from the mask
by :func:`metalung_monai.anatomy.lung_rads_from_mask_image`.
"""

from __future__ import annotations

import argparse

from ..io.case_output import SECTION_OF_SPLIT
from ..io.convert import convert
from ..io.datalist import LUNG_RADS_CLASSES, load_datalist
from ..io.thesis_pickle import IMAGE_COLUMNS

__all__ = ["add_parser", "run"]

#: the datalist sections counted in the summary line, in this order
SUMMARY_SECTIONS = ("training", "validation", "test")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``metalung convert`` on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "convert",
        help="convert DICOM / NIfTI / NRRD / MHA / thesis pickles into int16 HU NIfTI + datalist.json",
        description=(
            "Convert CT inputs into DIR/images/<case>.nii.gz (int16 HU, padding -> -1024), "
            "DIR/masks/<case>.nii.gz (uint8) and DIR/datalist.json (merged with an existing one)."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="DICOM series folder, DICOM file, .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or thesis .pkl",
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--mask",
        action="append",
        metavar="MASK",
        help="tumour mask of an image input (.nii.gz, .nrrd, .mha, or .png for a 2D slice); "
        "repeat once per image input, in order",
    )
    p.add_argument(
        "--mask-label", type=int, metavar="N", help="read masks as label maps: voxels == N become 1"
    )
    p.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to read from a folder with several CT series",
    )
    p.add_argument(
        "--patient-id", metavar="ID", help="patient id (default: DICOM PatientID or the input name)"
    )
    p.add_argument(
        "--lung-rads",
        metavar="CLASS",
        choices=LUNG_RADS_CLASSES + ("1", "2", "3", "4A", "4B"),
        help="Lung-RADS class of the inputs (default: computed from the mask when possible)",
    )
    p.add_argument(
        "--split",
        choices=tuple(SECTION_OF_SPLIT),
        help="datalist split (default: train; pickles: from the file name)",
    )
    p.add_argument(
        "--image-column",
        choices=IMAGE_COLUMNS,
        default="hu_array_old",
        help="thesis pickles: image column (default: hu_array_old, the full slice)",
    )
    p.add_argument(
        "--pixel-spacing",
        type=float,
        nargs=2,
        default=(0.7, 0.7),
        metavar=("SX", "SY"),
        help="thesis pickles: pixel size in mm, each in (0, 50] (default: 0.7 0.7)",
    )
    p.add_argument(
        "--rescale",
        type=float,
        nargs=2,
        metavar=("SLOPE", "INTERCEPT"),
        help="DICOM files without RescaleSlope/RescaleIntercept (refused otherwise): HU = stored x "
        "SLOPE + INTERCEPT, e.g. '1 0' when the stored values are HU, '1 -1024' for unsigned storage; "
        "recorded in the datalist as rescale_assumed",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``metalung convert`` from parsed arguments; prints a one-line summary, returns 0."""
    # heavy: anatomy (SciPy, scikit-image) only when the command runs
    from ..anatomy.lung_rads import lung_rads_from_mask_image

    path = convert(
        args.inputs,
        args.out,
        mask=args.mask,
        series_uid=args.series,
        patient_id=args.patient_id,
        lung_rads=args.lung_rads,
        split=args.split,
        mask_label=args.mask_label,
        image_column=args.image_column,
        pixel_spacing=tuple(args.pixel_spacing),
        progress=not args.no_progress,
        rescale=tuple(args.rescale) if args.rescale is not None else None,
        lung_rads_of_mask=lung_rads_from_mask_image,
    )
    dl = load_datalist(path)
    counts = ", ".join(f"{sec}: {len(dl.get(sec, []))}" for sec in SUMMARY_SECTIONS if dl.get(sec))
    print(f"metalung convert: {path} ({counts})")
    return 0
