"""The thesis dataset "Lung cancer segmentation dataset with Lung-RADS class" (pandas pickles).

Format (``lung_cancer_train.pkl`` / ``lung_cancer_test.pkl``, written with ``DataFrame.to_pickle``),
one row per axial slice:

=================  ===========================================================================
column             content
=================  ===========================================================================
``hu_array_old``   512x512 HU array, the full slice (default image)
``hu_array``       512x512 HU array, lung only (``image_column="hu_array"``)
``mask``           512x512 binary tumour mask ({0, 1} or {0, 255})
``label1``         Lung-RADS class: "2", "3", "4A", "4B", "LR4A", "Lung-RADS 4B", 2, 3.0 ...
patient column     the first of :data:`PATIENT_COLUMNS` present (case-insensitive; spaces and
                   hyphens count as underscores): ``patient_id``, ``patient``, ``patientid``,
                   ``patient_name``, ``name``, ``id``, ``pid``, ``subject``, ``subject_id``
=================  ===========================================================================

The pickles carry no voxel size: images are written with ``spacing`` (default 0.7 x 0.7 mm, a
typical chest CT pixel; each value must be a finite number in (0, 50] mm), identity direction
(rows = anterior->posterior, columns = patient right->left, as DICOM ``pixel_array``) and origin 0.

Case ids are ``<patient>_<pickle stem>_<row>`` with the patient value and the stem made file-name
safe (:func:`metalung_monai.utils.paths.safe_name`); an id that would still be unsafe (longer than
96 characters) becomes ``safe_name`` of the whole id (shortened, with a hash of it). The raw
patient value is kept as ``patient_id``. An empty pickle (no rows, or a 0-byte file) is refused
naming the pickle.

**Loading a pickle executes code.** :func:`safe_load_pickle` never calls ``pickle.load``: it uses
an unpickler whose ``find_class`` only resolves the globals in :data:`ALLOWED_GLOBALS` (what numpy
and pandas need to rebuild a DataFrame of numpy arrays, plain builtins, ``datetime``); anything
else (``os.system``, ``posix.system``, ``subprocess.*``, ``builtins.eval``/``exec``/``getattr``/
``__import__`` ...) raises :class:`UnsafePickleError` before it is called.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import io
import logging
import lzma
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatchError, InputError, UnsafePickleError
from ..utils.paths import is_safe_name, refuse_overlap, safe_name
from ._progress import progress_iter
from .case_output import Case, DatasetFolder, unique_case_id
from .hu import finalize_hu
from .readers import binarize_mask
from .volume_file import MAX_PIXEL_SPACING_MM, check_voxel_size

__all__ = [
    "ALLOWED_GLOBALS",
    "PATIENT_COLUMNS",
    "IMAGE_COLUMNS",
    "safe_load_pickle",
    "normalize_lung_rads",
    "find_patient_column",
    "load_thesis_pickle",
    "split_of_pickle",
    "check_pixel_spacing",
    "thesis_cases",
    "convert_thesis_pickle",
]

log = logging.getLogger(__name__)

_NUMPY = [
    f"{core}.{mod}.{name}"
    for core in ("numpy.core", "numpy._core")
    for mod, name in (
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    )
] + ["numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct", "numpy.ma.core.MaskedArray"]
_NUMPY_SCALARS = [
    f"numpy.{t}"
    for t in (
        "bool_",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "longdouble",
        "complex64",
        "complex128",
        "str_",
        "bytes_",
        "datetime64",
        "timedelta64",
    )
]
_PANDAS = [
    "pandas.DataFrame",
    "pandas.core.frame.DataFrame",
    "pandas.Series",
    "pandas.core.series.Series",
    "pandas.core.internals.managers.BlockManager",
    "pandas.core.internals.managers.SingleBlockManager",
    "pandas.core.internals.BlockManager",
    "pandas.core.internals.SingleBlockManager",
    "pandas._libs.internals._unpickle_block",
    "pandas.core.internals.blocks.new_block",
    "pandas._libs.internals.BlockPlacement",
    "pandas.core.indexes.base._new_Index",
    "pandas.core.indexes.base.Index",
    "pandas.Index",
    "pandas.core.indexes.range.RangeIndex",
    "pandas.RangeIndex",
    "pandas.core.indexes.numeric.Int64Index",
    "pandas.core.indexes.numeric.UInt64Index",
    "pandas.core.indexes.numeric.Float64Index",
    "pandas.core.indexes.multi.MultiIndex",
    "pandas.MultiIndex",
    "pandas.core.indexes.datetimes._new_DatetimeIndex",
    "pandas.core.indexes.datetimes.DatetimeIndex",
    "pandas.DatetimeIndex",
    "pandas.core.indexes.category.CategoricalIndex",
    "pandas.CategoricalIndex",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    "pandas.arrays.StringArray",
    "pandas.core.arrays.string_.StringArray",
    "pandas.StringDtype",
    "pandas.core.arrays.string_.StringDtype",
    "pandas.arrays.DatetimeArray",
    "pandas.core.arrays.datetimes.DatetimeArray",
    "pandas.arrays.TimedeltaArray",
    "pandas.core.arrays.timedeltas.TimedeltaArray",
    "pandas.Categorical",
    "pandas.core.arrays.categorical.Categorical",
    "pandas.CategoricalDtype",
    "pandas.core.dtypes.dtypes.CategoricalDtype",
    "pandas.core.dtypes.dtypes.DatetimeTZDtype",
    "pandas.DatetimeTZDtype",
    "pandas.arrays.IntegerArray",
    "pandas.core.arrays.integer.IntegerArray",
    "pandas.arrays.FloatingArray",
    "pandas.core.arrays.floating.FloatingArray",
    "pandas.arrays.BooleanArray",
    "pandas.core.arrays.boolean.BooleanArray",
    "pandas.core.arrays.integer.Int64Dtype",
    "pandas.core.arrays.integer.Int32Dtype",
    "pandas.core.arrays.floating.Float64Dtype",
    "pandas.core.arrays.boolean.BooleanDtype",
    "pandas.Int64Dtype",
    "pandas.Float64Dtype",
    "pandas.BooleanDtype",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
    "pandas._libs.tslibs.nattype.__nat_unpickle",
    "pandas._libs.tslibs.nattype._nat_unpickle",
    "pandas._libs.tslibs.timestamps.Timestamp",
    "pandas.Timestamp",
    "pandas._libs.tslibs.timezones.tz_standardize",
    "pandas._libs.missing.NAType",
    "pandas._libs.missing.NA",
]
_BUILTINS = [
    f"builtins.{n}"
    for n in (
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "slice",
        "bool",
        "range",
        "object",
    )
]
_OTHERS = [
    "copyreg._reconstructor",
    "_codecs.encode",
    "collections.OrderedDict",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
]

ALLOWED_GLOBALS: frozenset[str] = frozenset(_NUMPY + _NUMPY_SCALARS + _PANDAS + _BUILTINS + _OTHERS)
"""``module.name`` of every global a thesis pickle may reference. Everything else is refused."""


def _numpy_dtype_class(fullname: str) -> bool:
    # numpy >= 1.25 pickles some dtypes through their classes, e.g. numpy.dtypes.Float64DType
    return bool(re.fullmatch(r"numpy\.dtypes\.[A-Za-z0-9]+DType", fullname))


def _base_unpickler():
    try:  # pandas' compat unpickler reads pickles of older pandas versions (moved classes)
        from pandas.compat.pickle_compat import Unpickler

        return Unpickler
    except ImportError:  # pragma: no cover - pandas always provides it (>= 1.0)
        return pickle._Unpickler


def _make_unpickler(fh, source: Path):
    base = _base_unpickler()

    class _RestrictedUnpickler(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str):
            mod, nm = module, name
            if getattr(self, "proto", 5) < 3:  # Python 2 names (__builtin__, copy_reg ...)
                if (mod, nm) in _compat_pickle.NAME_MAPPING:
                    mod, nm = _compat_pickle.NAME_MAPPING[(mod, nm)]
                elif mod in _compat_pickle.IMPORT_MAPPING:
                    mod = _compat_pickle.IMPORT_MAPPING[mod]
            full = f"{mod}.{nm}"
            if full not in ALLOWED_GLOBALS and not _numpy_dtype_class(full):
                raise UnsafePickleError(
                    source,
                    f"unsafe pickle: it references '{full}', which is not on the allow-list of "
                    "numpy/pandas/builtin data types (refused before it could be called)",
                )
            return super().find_class(module, name)

    return _RestrictedUnpickler(fh)


def _open_maybe_compressed(p: Path):
    with open(p, "rb") as fh:
        head = fh.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(p, "rb")
    if head[:3] == b"BZh":
        return bz2.open(p, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.open(p, "rb")
    return open(p, "rb")


def safe_load_pickle(path: str | os.PathLike):
    """Load a pickle (optionally gzip/bz2/xz compressed) resolving only allow-listed globals.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object (for the thesis files, a ``pandas.DataFrame``).

    Raises:
        InputError: missing or unreadable file / not a pickle.
        UnsafePickleError: the pickle references a global outside :data:`ALLOWED_GLOBALS`
            (the message names it as ``module.name``); it is refused before being called.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "pickle file does not exist")
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes): the pickle holds no rows")
    try:
        with _open_maybe_compressed(p) as fh:
            data = fh.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise InputError(p, f"cannot read the file ({e})") from e
    try:
        return _make_unpickler(io.BytesIO(data), p).load()
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        ImportError,
    ) as e:
        raise InputError(p, f"not a readable pickle ({type(e).__name__}: {e})") from e


PATIENT_COLUMNS = (
    "patient_id",
    "patient",
    "patientid",
    "patient_name",
    "name",
    "id",
    "pid",
    "subject",
    "subject_id",
)
IMAGE_COLUMNS = ("hu_array_old", "hu_array")
LABEL_COLUMN = "label1"
MASK_COLUMN = "mask"

_LR_PATTERN = re.compile(r"^(?:lung[\s_-]*rads|lr)?[\s:_-]*([1-4])\s*([ab])?$")


def normalize_lung_rads(value, where: str = "<value>") -> str:
    """Map a Lung-RADS label to ``LR1``/``LR2``/``LR3``/``LR4A``/``LR4B``.

    Accepts ``"2"``, ``"3"``, ``"4A"``, ``"4b"``, ``"LR2"``, ``"lr-4a"``, ``"Lung-RADS 4B"``,
    ``2``, ``3.0``, ``numpy.int64(2)`` ... (case-insensitive).

    Raises:
        InputError: naming ``where`` (e.g. ``"train.pkl row 12"``) for anything else (``"4"``
            without A/B, ``"5"``, ``None``, NaN ...).
    """
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise InputError(where, f"unknown Lung-RADS label {value!r}")
    if isinstance(value, (int, np.integer, float, np.floating)):
        if not np.isfinite(value) or float(value) != int(value):
            raise InputError(where, f"unknown Lung-RADS label {value!r}")
        text = str(int(value))
    else:
        text = str(value)
    m = _LR_PATTERN.match(text.strip().lower())
    if m:
        digit, sub = m.group(1), (m.group(2) or "").upper()
        if digit == "4" and sub:
            return f"LR4{sub}"
        if digit in "123" and not sub:
            return f"LR{digit}"
    raise InputError(
        where,
        f"unknown Lung-RADS label {value!r} (expected 1, 2, 3, 4A or 4B, optionally as LR2 / Lung-RADS 4A)",
    )


def _norm_col(c) -> str:
    return re.sub(r"[\s-]+", "_", str(c).strip().lower())


def find_patient_column(columns: Sequence, source: str | os.PathLike = "<dataframe>") -> str:
    """The patient-identifier column: the first of :data:`PATIENT_COLUMNS` present.

    Raises:
        InputError: none is present (the message lists the columns found).
    """
    by_norm = {}
    for c in columns:
        by_norm.setdefault(_norm_col(c), c)
    for name in PATIENT_COLUMNS:
        if name in by_norm:
            return by_norm[name]
    raise InputError(
        source,
        f"no patient identifier column (looked for {', '.join(PATIENT_COLUMNS)}); columns found: "
        + ", ".join(str(c) for c in columns),
    )


def load_thesis_pickle(path: str | os.PathLike, image_column: str = "hu_array_old"):
    """Safely load one thesis pickle and check its columns.

    Returns:
        ``(dataframe, patient_column)``.

    Raises:
        UnsafePickleError, InputError: see :func:`safe_load_pickle`; not a DataFrame; no rows;
        missing ``image_column`` / ``mask`` / ``label1`` / patient column (the columns found are
        listed).
    """
    import pandas as pd

    p = Path(path)
    df = safe_load_pickle(p)
    if not isinstance(df, pd.DataFrame):
        raise InputError(p, f"expected a pandas DataFrame, found {type(df).__name__}")
    if len(df) == 0:
        raise InputError(p, "the pickle holds no rows (an empty table): nothing to convert")
    if image_column not in IMAGE_COLUMNS:
        raise InputError(
            p, f"image_column must be one of {', '.join(IMAGE_COLUMNS)}, got '{image_column}'"
        )
    missing = [c for c in (image_column, MASK_COLUMN, LABEL_COLUMN) if c not in df.columns]
    if missing:
        raise InputError(
            p,
            f"missing column(s) {', '.join(missing)}; columns found: "
            + ", ".join(str(c) for c in df.columns),
        )
    return df, find_patient_column(list(df.columns), p)


def split_of_pickle(path: str | os.PathLike) -> str:
    """``"test"`` when the file name contains "test", ``"validation"`` for "val", else ``"train"``."""
    name = Path(path).name.lower()
    if "test" in name:
        return "test"
    if re.search(r"(^|[^a-z])val", name):
        return "validation"
    return "train"


def _row_arrays(df, i: int, image_column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(df[image_column].iloc[i])
    msk = np.asarray(df[MASK_COLUMN].iloc[i])
    if img.ndim != 2 or img.dtype.kind not in "biuf":
        raise InputError(
            where, f"{image_column} is not a 2D numeric array (shape {img.shape}, {img.dtype})"
        )
    hu, _ = finalize_hu(img, source=where)
    if msk.shape != img.shape:
        raise GeometryMismatchError(
            where, f"mask shape {msk.shape} differs from {image_column} shape {img.shape}"
        )
    return hu, binarize_mask(msk, where)


def check_pixel_spacing(spacing, source: str = "--pixel-spacing") -> tuple[float, float]:
    """The pickles' pixel size ``(x, y)`` in mm as floats.

    Raises:
        InputError: naming ``source`` unless there are two values, each a finite number > 0 and
            at most :data:`~metalung_monai.io.volume_file.MAX_PIXEL_SPACING_MM` (50 mm).
    """
    try:
        n = len(spacing)
    except TypeError:
        n = -1
    if n != 2:
        raise InputError(source, f"pixel spacing {spacing!r}: expected two numbers SX SY (mm)")
    return check_voxel_size(spacing, source, "pixel spacing", max_mm=MAX_PIXEL_SPACING_MM)


def thesis_cases(
    path: str | os.PathLike,
    image_column: str = "hu_array_old",
    spacing: tuple[float, float] = (0.7, 0.7),
    split: str | None = None,
    progress: bool = False,
    taken: dict[str, str] | None = None,
):
    """Validate every row of one pickle, then yield :class:`Case` objects one by one.

    The whole file is checked first (labels, patient ids, array shapes, NaN, binary masks), so an
    error is raised before any case exists; images are then built lazily (one row in memory).

    Args:
        taken: ``case_id -> source`` of the cases already in the output (updated with this
            pickle's): a row whose id another source uses (a pickle of the same name in another
            folder) gets a suffix from its source (:func:`.case_output.unique_case_id`) instead of
            replacing that case.

    Returns:
        ``(entries_preview, generator)``: the :class:`Case` objects without images (for datalist
        checks) and a generator yielding the same cases with ``image``/``mask`` filled in.
    """
    import SimpleITK as sitk

    p = Path(path)
    sp = check_pixel_spacing(spacing, "spacing")
    df, pcol = load_thesis_pickle(p, image_column)
    split = split or split_of_pickle(p)
    stem = safe_name(p.name.split(".")[0], disambiguate=False)
    source = str(p.resolve())
    previews: list[Case] = []
    for i in progress_iter(range(len(df)), progress, desc=f"check {p.name}", total=len(df)):
        where = f"{p}#row{i}"
        pid_raw = df[pcol].iloc[i]
        if (
            pid_raw is None
            or (isinstance(pid_raw, float) and np.isnan(pid_raw))
            or str(pid_raw).strip() == ""
        ):
            raise InputError(where, f"empty patient identifier in column '{pcol}'")
        pid = str(pid_raw).strip()
        lr = normalize_lung_rads(df[LABEL_COLUMN].iloc[i], where)
        hu, msk = _row_arrays(df, i, image_column, where)
        case_id = f"{safe_name(pid, disambiguate=False)}_{stem}_{i:05d}"
        if not is_safe_name(case_id):  # too long: shortened, with a hash of the whole id
            case_id = safe_name(f"{pid}_{stem}_{i:05d}")
        if taken is not None:
            case_id = unique_case_id(case_id, source, taken)
            taken[case_id] = source
        entry = {
            "patient_id": pid,
            "lung_rads": lr,
            "split": split,
            "manufacturer": None,
            "spacing": [sp[1], sp[0]],  # canonical (y, x) order
            "shape": [int(hu.shape[0]), int(hu.shape[1])],
            "source": source,
            "source_row": i,
        }
        previews.append(Case(case_id=case_id, entry=entry, has_mask=True))

    def build():
        for i, c in enumerate(
            progress_iter(previews, progress, desc=f"write {p.name}", total=len(previews))
        ):
            hu, msk = _row_arrays(df, i, image_column, f"{p}#row{i}")
            img = sitk.GetImageFromArray(hu)
            img.SetSpacing(sp)
            m = sitk.GetImageFromArray(msk)
            m.CopyInformation(img)
            yield Case(case_id=c.case_id, entry=c.entry, image=img, mask=m, has_mask=True)

    return previews, build()


def convert_thesis_pickle(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    spacing: tuple[float, float] = (0.7, 0.7),
    image_column: str = "hu_array_old",
    split: str | None = None,
    progress: bool = False,
) -> Path:
    """Convert thesis pickles into ``out_dir/images/*.nii.gz``, ``masks/*.nii.gz`` and
    ``datalist.json`` (merged with an existing one).

    Args:
        paths: one or more pickles (``lung_cancer_train.pkl`` -> "training", ``..._test.pkl`` ->
            "test"; see :func:`split_of_pickle`).
        out_dir: output folder.
        spacing: pixel size ``(x, y)`` in mm written into the images (the pickles have none).
        image_column: ``"hu_array_old"`` (full slice, default) or ``"hu_array"`` (lung only).
        split: force one split for all pickles instead of inferring it from the names.
        progress: progress bars.

    Returns:
        Path of ``datalist.json``.

    Raises:
        UnsafePickleError, InputError, MaskError, GeometryMismatchError: bad files or rows
            (nothing is written for a pickle with a bad row), empty pickles, a bad ``spacing``,
            an ``out_dir`` that is, contains or lies inside a pickle;
        InputError: a patient present in two pickles of different splits;
        DatalistError: the result would leak a patient between training and test.
    """
    plist = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    check_pixel_spacing(spacing, "spacing")
    refuse_overlap(out_dir, plist, "out_dir")
    folder = DatasetFolder(out_dir, name="metalung-thesis")
    taken = folder.taken_ids()
    prepared = [(p, *thesis_cases(p, image_column, spacing, split, progress, taken)) for p in plist]
    patients: dict[str, tuple[str, Path]] = {}
    for p, previews, _ in prepared:
        for c in previews:
            pid, sp = c.entry["patient_id"], c.entry["split"]
            if pid in patients and patients[pid][0] != sp:
                raise InputError(
                    p,
                    f"patient '{pid}' is in {patients[pid][1].name} ({patients[pid][0]}) and here ({sp}): "
                    "patient-level split violated",
                )
            patients.setdefault(pid, (sp, p))
    folder.check([c for _, previews, _ in prepared for c in previews])
    try:
        for _, _, cases in prepared:
            for case in cases:
                folder.write_case(case)
    finally:
        if folder.written:
            folder.save()
    return folder.path
