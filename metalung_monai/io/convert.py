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
Folds: when the datalist is saved, every training entry without a ``fold`` gets one by patient
(:func:`~metalung_monai.io.datalist.fill_folds`, :data:`N_FOLDS` folds, seed 0), so that
``metalung experiment`` finds its validation patients in a converted folder.

Manifests (``metalung convert --manifest FILE.csv``, :func:`convert_manifest`): a CSV with one row
per case (``image``, ``patient``, optionally ``mask``, ``split``, ``lung_rads``; paths relative to
the CSV's folder), read and checked whole by :func:`read_manifest` (splits by patient; every error
names the manifest, the row and the column) before the headers are probed and anything is
written; then each row is converted as one input is.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..utils.orientation import sitk_to_canonical
from ..utils.paths import is_safe_name, refuse_overlap, safe_name
from ._progress import progress_iter
from .case_output import SECTION_OF_SPLIT, Case, DatasetFolder, unique_case_id
from .datalist import fill_folds, validate_entry
from .dicom_slice import check_rescale_option
from .readers import detect_format, probe_ct, probe_mask, read_ct, read_mask
from .thesis_pickle import IMAGE_COLUMNS, check_pixel_spacing, normalize_lung_rads, thesis_cases

__all__ = [
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "read_manifest",
    "convert",
    "convert_manifest",
]

log = logging.getLogger(__name__)

#: cross-validation folds given to the training patients of a converted datalist
N_FOLDS = 5
#: the columns of a manifest (``metalung convert --manifest``); ``image`` and ``patient`` required
MANIFEST_COLUMNS = ("image", "mask", "patient", "split", "lung_rads")
_REQUIRED_COLUMNS = ("image", "patient")
#: other spellings of a column name (after lower-casing; spaces and hyphens count as ``_``)
_COLUMN_ALIASES = {"patient_id": "patient", "lungrads": "lung_rads", "lung_rad": "lung_rads"}
#: the values of the ``split`` column and the split each means
_SPLIT_VALUES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}


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
    n_folds: int = N_FOLDS,
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
        n_folds: training entries without a ``fold`` get one by patient
            (:func:`~metalung_monai.io.datalist.fill_folds`, seed 0), so that ``metalung
            experiment`` finds its validation patients.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        InputError (and its subclasses DicomError, NoSeriesError, SliceSizeError,
        GeometryMismatchError, MaskError, UnsafePickleError, UnsupportedFormatError,
        DatalistError): naming the file (or the option) and the problem.
    """
    _check_n_folds(n_folds)
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
            fill_folds(folder.datalist, n_folds)
            folder.save()
    if not folder.path.exists():  # nothing written and no earlier datalist: still leave a valid one
        raise InputError(out_dir, "no case was converted")
    return folder.path


def _check_n_folds(n_folds) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1:
        raise InputError("n_folds", f"expected an integer >= 1, got {n_folds!r}")


# --------------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class ManifestRow:
    """One case of a manifest (:func:`read_manifest`).

    Attributes:
        row: the row's number as a spreadsheet shows it (the header is row 1).
        image: the CT input (a relative path taken from the manifest's folder).
        fmt: its format (:func:`~metalung_monai.io.readers.detect_format`).
        mask: its tumour mask, or ``None``.
        patient: the patient id (surrounding spaces removed).
        split: ``"train"``, ``"validation"`` or ``"test"``: the row's own, else the one its
            patient's other rows give, else ``"train"``.
        lung_rads: ``LR1``..``LR4B``, or ``None`` (an empty cell or no column).
    """

    row: int
    image: Path
    fmt: str
    mask: Path | None
    patient: str
    split: str
    lung_rads: str | None


def _where(manifest: Path, row: int, column: str | None = None) -> str:
    return f"{manifest} row {row}" + (f", column '{column}'" if column else "")


def _column_name(cell: str) -> str:
    name = re.sub(r"[\s-]+", "_", cell.strip().lower())
    return _COLUMN_ALIASES.get(name, name)


def _read_records(p: Path) -> list[list[str]]:
    """The CSV records of ``p`` (UTF-8, an optional BOM; ``,``, or ``;`` / tab when the header
    holds no comma, as some spreadsheets save)."""
    if p.is_dir():
        raise InputError(p, "is a folder; --manifest takes a CSV file with one row per case")
    if not p.is_file():
        raise InputError(p, "manifest file does not exist")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            p, f"not a UTF-8 text file (byte {e.start}); save the manifest as CSV (UTF-8)"
        ) from e
    if "\x00" in text:
        raise InputError(p, "not a CSV text file (it holds NUL bytes)")
    header = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = ","
    if "," not in header:
        delimiter = next((d for d in (";", "\t") if d in header), ",")
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    try:
        for rec in reader:
            records.append(rec)
    except csv.Error as e:
        raise InputError(p, f"not a valid CSV file (line {reader.line_num}: {e})") from e
    return records


def _manifest_path(manifest: Path, cell: str) -> Path:
    q = Path(cell).expanduser()
    return q if q.is_absolute() else manifest.parent / q


def _missing(cell: str, full: Path) -> str:
    if Path(cell).expanduser().is_absolute():
        return f"{cell}: file or folder does not exist"
    return (
        f"{cell}: file or folder does not exist (looked for {full.resolve()}; paths are relative "
        "to the manifest's folder)"
    )


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read and check a manifest: a CSV with one row per case (``metalung convert --manifest``).

    Columns (the header row names them, in any order; case-insensitive, spaces and hyphens count
    as ``_``; ``patient_id`` is read as ``patient``): ``image`` (a CT input: NIfTI, NRRD, MHA, a
    DICOM file or a DICOM series folder), ``patient`` (the patient id), and optionally ``mask``
    (its tumour mask), ``split`` (``train``/``training``, ``validation``/``val``, ``test``) and
    ``lung_rads`` (``2``, ``4A``, ``LR3``, ``Lung-RADS 4B`` ...). Paths are relative to the
    manifest's folder (absolute ones are kept). Empty cells of the optional columns mean "none";
    empty rows are skipped; any other column is refused (a misspelt one would be ignored).

    Splits are by patient: a patient whose rows give two different splits is refused (naming the
    patient and the rows); a row without a split takes its patient's, else ``train``.

    Only files are checked here (existence, type, one row per image and per mask); the headers of
    the images and masks are probed by :func:`convert_manifest`.

    Raises:
        InputError, UnsupportedFormatError: naming the manifest, the row (spreadsheet numbering:
            the header is row 1) and the column.
    """
    p = Path(path)
    records = _read_records(p)
    if not records or not any(c.strip() for c in records[0]):
        raise InputError(
            p,
            "no header row: the first row must name the columns "
            f"({', '.join(_REQUIRED_COLUMNS)}, optionally {', '.join(c for c in MANIFEST_COLUMNS if c not in _REQUIRED_COLUMNS)})",
        )
    columns: list[str] = []
    for k, cell in enumerate(records[0], start=1):
        name = _column_name(cell)
        if not name:
            raise InputError(_where(p, 1), f"column {k} has no name")
        if name not in MANIFEST_COLUMNS:
            raise InputError(
                _where(p, 1, cell.strip()),
                f"unknown column (a manifest has the columns {', '.join(MANIFEST_COLUMNS)})",
            )
        if name in columns:
            raise InputError(_where(p, 1, cell.strip()), f"column '{name}' appears twice")
        columns.append(name)
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            _where(p, 1),
            f"no column {', '.join(repr(c) for c in missing)} (columns found: "
            f"{', '.join(columns)}; required: {', '.join(_REQUIRED_COLUMNS)})",
        )
    raw: list[tuple[int, dict[str, str]]] = []
    for n, rec in enumerate(records[1:], start=2):
        if not any(c.strip() for c in rec):
            continue
        if len(rec) > len(columns):
            raise InputError(
                _where(p, n),
                f"{len(rec)} cells, but the header names {len(columns)} columns "
                "(a comma inside a path needs quotes)",
            )
        raw.append((n, {c: v.strip() for c, v in zip(columns, rec)}))
    if not raw:
        raise InputError(p, "no case: the manifest has a header but no rows")
    rows: list[dict] = []
    seen: dict[str, dict[Path, int]] = {"image": {}, "mask": {}}
    for n, cells in raw:
        image_cell = cells.get("image", "")
        if not image_cell:
            raise InputError(
                _where(p, n, "image"),
                "empty; every row needs its CT image (a file or a DICOM folder)",
            )
        image = _manifest_path(p, image_cell)
        if not image.exists():
            raise InputError(_where(p, n, "image"), _missing(image_cell, image))
        try:
            fmt = detect_format(image)
        except InputError as e:
            raise type(e)(_where(p, n, "image"), f"{image_cell}: {e.problem}") from e
        if fmt == "thesis-pickle":
            raise InputError(
                _where(p, n, "image"),
                f"{image_cell} is a thesis pickle, which holds many cases: convert it as an input "
                "(metalung convert FILE.pkl --out DIR), not as a row of a manifest",
            )
        mask = None
        if cells.get("mask"):
            mask = _manifest_path(p, cells["mask"])
            if not mask.exists():
                raise InputError(_where(p, n, "mask"), _missing(cells["mask"], mask))
            if not mask.is_file():
                raise InputError(
                    _where(p, n, "mask"), f"{cells['mask']}: a folder, not a mask file"
                )
        for col, f in (("image", image), ("mask", mask)):
            if f is None:
                continue
            key = f.resolve()
            if key in seen[col]:
                raise InputError(
                    _where(p, n, col), f"{cells[col]}: the same {col} as row {seen[col][key]}"
                )
            seen[col][key] = n
        patient = cells.get("patient", "")
        if not patient:
            raise InputError(
                _where(p, n, "patient"),
                "empty; every case needs its patient id (splits are by patient)",
            )
        split = None
        if cells.get("split"):
            split = _SPLIT_VALUES.get(cells["split"].lower())
            if split is None:
                raise InputError(
                    _where(p, n, "split"),
                    f"{cells['split']!r} is not a split (train, validation or test)",
                )
        lung_rads = None
        if cells.get("lung_rads"):
            lung_rads = normalize_lung_rads(cells["lung_rads"], _where(p, n, "lung_rads"))
        rows.append(
            dict(
                row=n,
                image=image,
                fmt=fmt,
                mask=mask,
                patient=patient,
                split=split,
                lung_rads=lung_rads,
            )
        )
    rows_of: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        if r["split"] is not None:
            rows_of.setdefault(r["patient"], {}).setdefault(r["split"], []).append(r["row"])
    for pid, by_split in rows_of.items():
        if len(by_split) > 1:
            detail = "; ".join(
                f"{sp}: row{'s' if len(ns) > 1 else ''} {', '.join(map(str, ns))}"
                for sp, ns in by_split.items()
            )
            raise InputError(
                f"{p}, column 'split'",
                f"patient '{pid}' is in more than one split ({detail}); all cases of a patient "
                "must be in one split (patient-level split)",
            )
    # a row without a split: its patient's (the one split its other rows give), else train
    split_of = {pid: next(iter(by_split)) for pid, by_split in rows_of.items()}
    return [ManifestRow(**{**r, "split": split_of.get(r["patient"], "train")}) for r in rows]


@contextmanager
def _row_context(manifest: Path, row: ManifestRow, column: str | None = None) -> Iterator[None]:
    """Re-raise an input error of a row's files naming the manifest, the row and the column."""
    try:
        yield
    except InputError as e:
        col = column
        if col is None:
            col = "mask" if row.mask is not None and str(row.mask) in e.source else "image"
        raise type(e)(_where(manifest, row.row, col), f"{e.source}: {e.problem}") from e


def _check_existing_splits(folder: DatasetFolder, rows: list[ManifestRow], manifest: Path) -> None:
    """Refuse a manifest patient that the output's datalist already holds in another split."""
    ours = {str(r.image.resolve()) for r in rows}
    split_of_section = {sec: sp for sp, sec in SECTION_OF_SPLIT.items()}
    known: dict[str, tuple[str, str]] = {}
    for sec, sp in split_of_section.items():
        for e in folder.datalist.get(sec, []):
            if str(e.get("source") or "") not in ours:
                known.setdefault(str(e["patient_id"]), (sp, str(e.get("case_id") or e["image"])))
    for r in rows:
        if r.patient in known and known[r.patient][0] != r.split:
            sp, case = known[r.patient]
            raise InputError(
                _where(manifest, r.row, "patient"),
                f"patient '{r.patient}' is in the {r.split} split here, but {folder.path} already "
                f"lists it in the {sp} split (case {case}); all cases of a patient must be in one "
                "split (patient-level split)",
            )


def convert_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    mask_label: int | None = None,
    progress: bool = False,
    rescale: tuple[float, float] | None = None,
    lung_rads_of_mask: Callable[[object], str] | None = None,
    n_folds: int = N_FOLDS,
) -> Path:
    """Convert every case of a manifest (:func:`read_manifest`) into ``out_dir``.

    What :func:`convert` does for one input, for each row: the row's ``patient`` is the datalist's
    ``patient_id``, its ``split`` chooses the section, its ``lung_rads`` the class (else computed by
    ``lung_rads_of_mask`` from the mask, else null). Before anything is written, the whole
    manifest is checked (:func:`read_manifest`: columns, files, patient-level splits), every image
    and mask header is probed, ``out_dir`` must not overlap an input, and no patient of the
    manifest may already be in another split of ``out_dir``'s datalist (a row whose image was
    converted before replaces its case). Then the rows are converted in order, each case written
    whole (see :func:`convert` for a failure while voxels are read: the cases before it stay;
    converting the same manifest again after the fix replaces them). Training patients get a
    ``fold`` (:func:`~metalung_monai.io.datalist.fill_folds`).

    Args:
        manifest: the CSV file.
        out_dir: output folder.
        mask_label: read masks as label maps, this label -> 1.
        progress: progress bars (checking the headers, converting the rows).
        rescale: as :func:`convert` (DICOM inputs without rescale tags).
        lung_rads_of_mask: as :func:`convert`.
        n_folds: as :func:`convert`.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        InputError (and its subclasses): naming the manifest, the row and the column (and the
        file), or the option.
    """
    _check_n_folds(n_folds)
    if rescale is not None:
        rescale = check_rescale_option(rescale, "--rescale")
    m = Path(manifest)
    rows = read_manifest(m)
    if rescale is not None and not any(r.fmt.startswith("dicom") for r in rows):
        raise InputError(
            "--rescale", "only applies to DICOM inputs (volumes are taken to hold HU already)"
        )
    refuse_overlap(out_dir, [f for r in rows for f in (r.image, r.mask)], "--out")
    for r in progress_iter(rows, progress, desc=f"check {m.name}", total=len(rows)):
        with _row_context(m, r, "image"):
            probe_ct(r.image, rescale=rescale)
        if r.mask is not None:
            with _row_context(m, r, "mask"):
                probe_mask(r.mask)
    folder = DatasetFolder(out_dir)
    _check_existing_splits(folder, rows, m)
    try:
        for r in progress_iter(rows, progress, desc=f"convert {m.name}", total=len(rows)):
            with _row_context(m, r):
                case = _image_case(
                    r.image,
                    r.mask,
                    None,
                    r.patient,
                    r.lung_rads,
                    r.split,
                    mask_label,
                    folder.taken_ids(),
                    False,
                    rescale,
                    lung_rads_of_mask,
                )
            # the entry alone: the patients' splits were checked above, and checking the whole
            # datalist for every case would make a manifest of n cases cost n^2
            validate_entry(folder.full_entry(case), folder.path, f"{m} row {r.row}")
            folder.write_case(case)
            log.info("%s row %d -> %s", m, r.row, case.case_id)
    finally:
        if folder.written:
            fill_folds(folder.datalist, n_folds)
            folder.save()
    return folder.path
