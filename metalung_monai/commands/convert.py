"""``metalung convert``: CT inputs of any supported kind into a MONAI-ready dataset folder.

Example::

    metalung convert scan/ other.nii.gz --mask scan_mask.nrrd --mask other_mask.nii.gz --out ds/
    metalung convert --manifest cases.csv --out ds/


writes ``ds/images/<case>.nii.gz`` (int16 HU), ``ds/masks/<case>.nii.gz`` (uint8) and
``ds/datalist.json`` (merged with an existing one) by :func:`metalung_monai.io.convert.convert`
(what is checked before anything is written, case ids, the datalist entry: its docstring and
``docs/data-formats.md``), and prints one summary line with the number of cases per section.
The Lung-RADS class of an input with a mask and without ``--lung-rads`` is computed from the mask
by :func:`metalung_monai.anatomy.lung_rads_from_mask_image`.

``--manifest FILE.csv`` converts a whole folder of cases in one command: one row per case with
the columns ``image``, ``patient`` and optionally ``mask``, ``split``, ``lung_rads`` (paths
relative to the CSV's folder), by :func:`metalung_monai.io.convert.convert_manifest`. The options
that a column replaces (``--mask``, ``--patient-id``, ``--split``, ``--lung-rads``), ``--series``
and the pickle options are refused with it, and so are inputs.
"""

from __future__ import annotations

import argparse

from ..io.case_output import SECTION_OF_SPLIT
from ..io.convert import convert, convert_manifest
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
            "Convert CT inputs (or the cases of a --manifest CSV) into DIR/images/<case>.nii.gz "
            "(int16 HU, padding -> -1024), "
            "DIR/masks/<case>.nii.gz (uint8) and DIR/datalist.json (merged with an existing one)."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="DICOM series folder, DICOM file, .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or thesis .pkl "
        "(or --manifest instead)",
    )
    p.add_argument(
        "--manifest",
        metavar="CSV",
        help="a CSV file with one row per case instead of INPUTs: columns image, patient and "
        "optionally mask, split (train/validation/test), lung_rads; paths relative to the CSV's "
        "folder; splits are by patient",
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
        help="thesis pickles: image column (default: hu_array_old, the full slice)",
    )
    p.add_argument(
        "--pixel-spacing",
        type=float,
        nargs=2,
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
    p.set_defaults(func=run, usage_error=p.error)
    return p


#: options refused with ``--manifest``: option -> (attribute, why)
NOT_WITH_MANIFEST = {
    "--mask": ("mask", "is per case: a column of the manifest"),
    "--patient-id": ("patient_id", "is per case: a column of the manifest"),
    "--split": ("split", "is per case: a column of the manifest"),
    "--lung-rads": ("lung_rads", "is per case: a column of the manifest"),
    "--series": ("series", "is per case; a manifest's DICOM folders must hold one CT series"),
    "--image-column": ("image_column", "applies to thesis pickles, which are not manifest rows"),
    "--pixel-spacing": ("pixel_spacing", "applies to thesis pickles, which are not manifest rows"),
}


def run(args: argparse.Namespace) -> int:
    """Run ``metalung convert`` from parsed arguments; prints a one-line summary, returns 0.

    Exits with status 2 (a usage error) for INPUTs and ``--manifest`` together or neither, and for
    an option that a manifest column replaces given with ``--manifest``.
    """
    # heavy: anatomy (SciPy, scikit-image) only when the command runs
    from ..anatomy.lung_rads import lung_rads_from_mask_image

    rescale = tuple(args.rescale) if args.rescale is not None else None
    if args.manifest is not None:
        if args.inputs:
            args.usage_error(
                f"give INPUTs or --manifest, not both (INPUT {args.inputs[0]!r} with --manifest)"
            )
        for option, (attr, why) in NOT_WITH_MANIFEST.items():
            if getattr(args, attr) is not None:
                args.usage_error(f"argument {option}: {why}; not allowed with --manifest")
        path = convert_manifest(
            args.manifest,
            args.out,
            mask_label=args.mask_label,
            progress=not args.no_progress,
            rescale=rescale,
            lung_rads_of_mask=lung_rads_from_mask_image,
        )
    else:
        if not args.inputs:
            args.usage_error("give at least one INPUT, or --manifest FILE.csv")
        path = convert(
            args.inputs,
            args.out,
            mask=args.mask,
            series_uid=args.series,
            patient_id=args.patient_id,
            lung_rads=args.lung_rads,
            split=args.split,
            mask_label=args.mask_label,
            image_column=args.image_column or "hu_array_old",
            pixel_spacing=tuple(args.pixel_spacing or (0.7, 0.7)),
            progress=not args.no_progress,
            rescale=rescale,
            lung_rads_of_mask=lung_rads_from_mask_image,
        )
    dl = load_datalist(path)
    counts = ", ".join(f"{sec}: {len(dl.get(sec, []))}" for sec in SUMMARY_SECTIONS if dl.get(sec))
    print(f"metalung convert: {path} ({counts})")
    return 0
