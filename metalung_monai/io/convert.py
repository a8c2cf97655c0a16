"""CT inputs of any supported kind into a MONAI-ready dataset folder (:func:`convert`).

The domain function behind ``metalung convert`` (the command itself, its options and its summary
line: :mod:`metalung_monai.commands.convert`). Error messages name the command's options
(``--split``, ``--mask`` ...) for the keyword arguments of the same name.

Output layout (``DIR`` = ``--out``)::

    DIR/images/<case>.nii.gz   int16 HU (air and padding -1024), geometry of the input
    DIR/masks/<case>.nii.gz    uint8 {0, 1} on the same grid (when a mask was given)
    DIR/datalist.json          Decathlon-style datalist (metalung_monai.io.datalist), merged

Before anything is written, everything that can be checked without reading voxels is checked, for
every input: the options (``--pixel-spacing`` finite, > 0 and at most 50 mm; ``--rescale`` finite
with a slope other than 0; ``--lung-rads``, ``--split``, ``--series`` only with DICOM folders),
each input's existence and format, the number of masks and each mask's existence and type, the
headers (:func:`~metalung_monai.io.readers.probe_ct`: volume voxel sizes, DICOM files readable, CT,
not cut short, with rescale tags or ``--rescale``; the series choice of a DICOM folder), that
``--out`` neither is, contains nor lies inside an input or a mask
(:func:`~metalung_monai.utils.paths.refuse_overlap`), and the existing datalist of ``--out``.
Then inputs are converted in the order given. A case is written only after its image, mask and
datalist entry were all validated, and its files appear together (see :mod:`.case_output`). When
an input fails while its voxels are read (a truncated payload, NaN voxels, a mask off the grid),
the cases converted before it stay (and are listed in ``datalist.json``), the failing case leaves
no file (not even a partial one), later inputs are not processed, and the error names the file and
the problem. Converting the same input again replaces its case (same ``case_id``) instead of adding
a duplicate.

Case ids: ``<patient_id>_<input name>`` (just the input name when it is the patient id), each
part made file-name safe with :func:`~metalung_monai.utils.paths.safe_name` (patient ids and file
names are data: ``../../x`` or a 5,000-character id never choose where a file goes); an id still
not safe (too long) becomes ``safe_name`` of the whole id (shortened, with a hash); a different
input with the same id gets a short hash of its path appended.
Patient id: ``--patient-id``, else DICOM ``PatientID``, else the input's name (kept unchanged in
the datalist's ``patient_id``).
``lung_rads``: ``--lung-rads``, else ``lung_rads_of_mask(mask)`` when a mask and that callable
are given (``metalung convert`` passes
:func:`metalung_monai.anatomy.lung_rads_from_mask_image`; ingestion does not depend on anatomy),
else null.
DICOM inputs without ``RescaleSlope``/``RescaleIntercept`` are refused unless ``--rescale SLOPE
INTERCEPT`` states the convention; the entry then records ``"rescale_assumed": [slope,
intercept]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from ..utils.orientation import sitk_to_canonical
from ..utils.paths import is_safe_name, refuse_overlap, safe_name
from .case_output import SECTION_OF_SPLIT, Case, DatasetFolder, unique_case_id
from .dicom_slice import check_rescale_option
from .readers import detect_format, probe_ct, probe_mask, read_ct, read_mask
from .thesis_pickle import IMAGE_COLUMNS, check_pixel_spacing, normalize_lung_rads, thesis_cases

__all__ = ["convert"]

log = logging.getLogger(__name__)


def _input_name(p: Path) -> str:
    name = p.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".ima"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike)):
        return [x]
    return list(x)


def _image_case(
    path: Path,
    mask: Path | None,
    series_uid: str | None,
    patient_id: str | None,
    lung_rads: str | None,
    split: str,
    mask_label: int | None,
    taken: dict[str, str],
    progress: bool,
    rescale: tuple[float, float] | None = None,
    lung_rads_of_mask: Callable[[object], str] | None = None,
) -> Case:
    ct = read_ct(path, series_uid=series_uid, progress=progress, rescale=rescale)
    m = read_mask(mask, ct, label=mask_label) if mask is not None else None
    pid = patient_id or ct.meta.get("patient_id") or _input_name(path)
    if lung_rads is not None:
        lr = normalize_lung_rads(lung_rads, "--lung-rads")
    elif m is not None and lung_rads_of_mask is not None:
        lr = lung_rads_of_mask(m)
    else:
        lr = None
    raw_name = _input_name(path.resolve())
    name = safe_name(raw_name, disambiguate=False)
    pid_part = safe_name(pid, disambiguate=False)
    base = name if pid_part == name else f"{pid_part}_{name}"
    if not is_safe_name(base):  # too long: shortened, with a hash of the whole id
        base = safe_name(f"{pid}_{raw_name}")
    source = str(path.resolve())
    case_id = unique_case_id(base, source, taken)
    canonical, spacing = sitk_to_canonical(ct.image)
    shape = list(canonical.shape)
    del canonical
    entry = {
        "patient_id": str(pid),
        "lung_rads": lr,
        "split": split,
        "manufacturer": ct.meta.get("manufacturer"),
        "spacing": [float(s) for s in spacing],
        "shape": [int(s) for s in shape],
        "source": source,
    }
    if ct.meta.get("series_instance_uid"):
        entry["series_instance_uid"] = ct.meta["series_instance_uid"]
    if ct.meta.get("rescale_assumed") is not None:
        entry["rescale_assumed"] = [float(v) for v in ct.meta["rescale_assumed"]]
    return Case(case_id=case_id, entry=entry, image=ct.image, mask=m, has_mask=m is not None)


def convert(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    mask: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    series_uid: str | None = None,
    patient_id: str | None = None,
    lung_rads: str | None = None,
    split: str | None = None,
    mask_label: int | None = None,
    image_column: str = "hu_array_old",
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    progress: bool = False,
    rescale: tuple[float, float] | None = None,
    lung_rads_of_mask: Callable[[object], str] | None = None,
) -> Path:
    """Convert CT inputs into ``out_dir`` (images, masks, merged ``datalist.json``).

    Args:
        inputs: DICOM series folders, DICOM files, ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``,
            ``.mha``/``.mhd`` or thesis ``.pkl`` files.
        out_dir: output folder.
        mask: one mask path per non-pickle input, in the same order (or ``None``).
        series_uid: ``SeriesInstanceUID`` for DICOM folders holding several CT series.
        patient_id: patient id for every non-pickle input (default: DICOM PatientID / input name).
        lung_rads: Lung-RADS class for every non-pickle input (``LR2``, ``4A`` ...).
        split: ``"train"``, ``"validation"`` or ``"test"``; default ``"train"`` for images and
            inferred from the file name for pickles (``*test*`` -> test).
        mask_label: read masks as label maps, this label -> 1.
        image_column: thesis pickles: ``"hu_array_old"`` (full slice) or ``"hu_array"``.
        pixel_spacing: thesis pickles: pixel size ``(x, y)`` mm (the files carry none); each a
            finite number in (0, 50].
        progress: progress bars.
        rescale: DICOM inputs without ``RescaleSlope``/``RescaleIntercept``: the ``(slope,
            intercept)`` to assume (they are refused otherwise); recorded in the entry as
            ``rescale_assumed``.
        lung_rads_of_mask: the Lung-RADS class of an input without ``lung_rads``, from its mask
            (a ``SimpleITK.Image`` of uint8 {0, 1} on the image's grid), e.g.
            :func:`metalung_monai.anatomy.lung_rads_from_mask_image` (what ``metalung convert``
            uses); ``None``: such entries get ``"lung_rads": null``.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        InputError (and its subclasses DicomError, NoSeriesError, SliceSizeError,
        GeometryMismatchError, MaskError, UnsafePickleError, UnsupportedFormatError,
        DatalistError): naming the file (or the option) and the problem.
    """
    paths = [Path(p) for p in _as_list(inputs)]
    masks = [Path(m) for m in _as_list(mask)]
    if not paths:
        raise InputError(str(out_dir), "no input given")
    # ---- everything that can be checked without reading voxels, before anything is written
    if split is not None and split not in SECTION_OF_SPLIT:
        raise InputError("--split", f"'{split}' is not one of {', '.join(SECTION_OF_SPLIT)}")
    if image_column not in IMAGE_COLUMNS:
        raise InputError(
            "--image-column", f"'{image_column}' is not one of {', '.join(IMAGE_COLUMNS)}"
        )
    pixel_spacing = check_pixel_spacing(pixel_spacing, "--pixel-spacing")
    if rescale is not None:
        rescale = check_rescale_option(rescale, "--rescale")
    if lung_rads is not None:
        normalize_lung_rads(lung_rads, "--lung-rads")
    formats = [detect_format(p) for p in paths]
    n_images = sum(f != "thesis-pickle" for f in formats)
    if masks and len(masks) != n_images:
        raise InputError(
            "--mask",
            f"{len(masks)} mask(s) for {n_images} image input(s); give one mask per image input, in order",
        )
    if series_uid is not None:
        odd = [p for p, f in zip(paths, formats) if f not in ("dicom-series", "thesis-pickle")]
        if odd or "dicom-series" not in formats:
            what = f"{odd[0]} is not a folder" if odd else "no input is a DICOM folder"
            raise InputError("--series", f"only applies to DICOM folders ({what})")
    if rescale is not None and not any(f.startswith("dicom") for f in formats):
        raise InputError(
            "--rescale", "only applies to DICOM inputs (volumes are taken to hold HU already)"
        )
    refuse_overlap(out_dir, [*paths, *masks], "--out")
    for p, fmt in zip(paths, formats):
        if fmt != "thesis-pickle":
            probe_ct(p, series_uid=series_uid, rescale=rescale)
    for m in masks:
        probe_mask(m)
    folder = DatasetFolder(out_dir)
    mask_iter = iter(masks)
    try:
        for p, fmt in zip(paths, formats):
            if fmt == "thesis-pickle":
                previews, cases = thesis_cases(
                    p, image_column, pixel_spacing, split, progress, folder.taken_ids()
                )
                folder.check(previews)
                for case in cases:
                    folder.write_case(case)
                continue
            m = next(mask_iter, None)
            case = _image_case(
                p,
                m,
                series_uid,
                patient_id,
                lung_rads,
                split or "train",
                mask_label,
                folder.taken_ids(),
                progress,
                rescale,
                lung_rads_of_mask,
            )
            folder.check([case])
            folder.write_case(case)
            log.info("%s -> %s", p, case.case_id)
    finally:
        if folder.written:
            folder.save()
    if not folder.path.exists():  # nothing written and no earlier datalist: still leave a valid one
        raise InputError(out_dir, "no case was converted")
    return folder.path
