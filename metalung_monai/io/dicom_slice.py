"""One DICOM CT file: header checks shared by the series reader, and a 2D slice reader (pydicom).

The slice reader applies ``stored * RescaleSlope + RescaleIntercept`` itself (pydicom's
``pixel_array`` holds stored values), exactly once, then maps padding to -1024 HU and returns a 2D
``SimpleITK.Image`` (int16 HU) whose geometry comes from the header:

* spacing ``(x, y)`` = ``(PixelSpacing[1], PixelSpacing[0])`` (DICOM lists row spacing first),
* origin = the in-plane part ``(x, y)`` of ``ImagePositionPatient`` (the full 3D position is kept in
  ``meta["image_position_patient"]``),
* direction = the in-plane part of ``ImageOrientationPatient`` (row cosines = direction of the
  column index ``x``, column cosines = direction of the row index ``y``). Only axial slices (normal
  along the patient z axis) can be represented in 2D; others raise :class:`DicomError`.

Checks shared by the slice and the series reader:

* **Pixel data length** (:func:`pixel_data_problem`): a file cut short is refused naming it. The
  header is read with the pixel data deferred, so the declared length is compared with what the
  file holds and with ``Rows x Columns x BitsAllocated/8`` without reading the voxels.
* **Geometry** (:func:`check_slice_geometry`): ``PixelSpacing`` must be finite and > 0, and
  ``ImagePositionPatient`` / ``ImageOrientationPatient`` finite (GDCM turns a NaN PixelSpacing into
  a 6.9e-310 mm pixel, pydicom passes it through).
* **Rescale tags** (:func:`resolve_rescale`). ``RescaleSlope`` and ``RescaleIntercept`` are Type 1
  in the CT Image module: without them nobody can tell whether the stored values are HU (signed
  storage) or HU + 1024 (unsigned storage, air at 0), and taking them as HU would store air at
  0 HU. **Decision: such a file is refused** with a :class:`DicomError` that says what to do,
  unless the caller states the convention explicitly: ``rescale=(slope, intercept)`` of
  :func:`read_dicom_slice` / :func:`~metalung_monai.io.dicom_series.read_dicom_series` /
  :func:`~metalung_monai.io.readers.read_ct`, ``metalung convert --rescale SLOPE INTERCEPT``.
  The assumed values are then applied (once), logged as a warning, and recorded in
  ``meta["rescale_assumed"]`` (and by ``metalung convert`` in the datalist entry); files that have
  both tags always use their own and record ``None``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomError, InputError, UnsupportedFormatError
from .ct_image import CTImage, base_meta, check_geometry
from .hu import finalize_hu, padding_to_hu, to_hu

__all__ = [
    "CT_SOP_CLASSES",
    "DICOM_SUFFIXES",
    "has_dicm_preamble",
    "read_dicom_header",
    "check_ct_header",
    "header_info",
    "pixel_data_problem",
    "check_slice_geometry",
    "check_rescale_option",
    "resolve_rescale",
    "probe_dicom_slice",
    "read_dicom_slice",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DEFER_BYTES = (
    256  # header reads defer values longer than this (the pixel data), see pixel_data_problem
)

log = logging.getLogger(__name__)

CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}


def has_dicm_preamble(p: str | os.PathLike) -> bool:
    """Whether the file starts with the 128-byte preamble and ``DICM``."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom_header(path: str | os.PathLike, pixels: bool = False, defer: bool = False):
    """Read a DICOM file with pydicom; raise :class:`DicomError` naming it when unreadable.

    Args:
        path: the file.
        pixels: also read the pixel data (otherwise stop before it).
        defer: parse the whole file but leave long values (the pixel data) on disk until used;
            :func:`pixel_data_problem` can then compare their declared length with the file.

    Returns:
        ``pydicom.Dataset``.

    Raises:
        DicomError: missing file, not DICOM (garbage bytes), truncated header.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise DicomError(p, "file does not exist")
    kw = {"defer_size": _DEFER_BYTES} if defer else {"stop_before_pixels": not pixels}
    try:
        return pydicom.dcmread(p, **kw)
    except InvalidDicomError:
        pass  # maybe a valid dataset without the 128-byte preamble: try once more, forced
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomError(p, f"not a readable DICOM file ({type(e).__name__}: {e})") from e
    try:
        ds = pydicom.dcmread(p, force=True, **kw)
        ok = ("SOPClassUID" in ds) or ("Rows" in ds and "Columns" in ds)
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise DicomError(p, "not a readable DICOM file (no DICOM header found)")
    return ds


def check_ct_header(ds, path: str | os.PathLike) -> None:
    """Raise unless ``ds`` is a single-frame, single-channel CT image.

    A missing ``Modality`` is accepted when the SOP class is a CT image storage class (some
    research tools strip Modality, e.g. the lungmask test slices).

    Raises:
        DicomError: not CT (Modality 'MR', a DICOM-SEG, an RT structure set ...), no pixel matrix,
            colour data.
        UnsupportedFormatError: a multi-frame (enhanced) CT object.
    """
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality and modality != "CT":
        what = {"SEG": "a DICOM segmentation (SEG)", "RTSTRUCT": "an RT structure set"}.get(
            modality, f"Modality '{modality}'"
        )
        raise DicomError(path, f"not a CT image ({what})")
    if not modality and sop not in CT_SOP_CLASSES:
        raise DicomError(path, f"not a CT image (no Modality, SOP class '{sop or 'missing'}')")
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError(path, "no image matrix (Rows/Columns missing)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedFormatError(
            path,
            f"multi-frame CT ({int(ds.NumberOfFrames)} frames in one file) is not supported; "
            "export the series as single-frame slices",
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(path, f"{int(ds.SamplesPerPixel)} samples per pixel; a CT slice has 1")


def _floats(value, n: int | None = None) -> tuple[float, ...] | None:
    """A DICOM number or multi-value as a tuple of floats (``None`` if absent or malformed)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if n is not None and len(vals) != n:
        return None
    return vals


def header_info(ds) -> dict[str, Any]:
    """The header fields metalung-monai uses, as plain Python values (``None`` when absent)."""

    def get(name):
        v = ds.get(name, None)
        return None if v is None or v == "" else v

    slope = get("RescaleSlope")
    intercept = get("RescaleIntercept")
    thickness = _floats(get("SliceThickness"), 1)
    between = _floats(get("SpacingBetweenSlices"), 1)
    pad = get("PixelPaddingValue")
    pad_lim = get("PixelPaddingRangeLimit")
    ps = _floats(get("PixelSpacing"), 2)
    return {
        "modality": str(get("Modality")) if get("Modality") is not None else None,
        "sop_class_uid": str(get("SOPClassUID")) if get("SOPClassUID") is not None else None,
        "manufacturer": str(get("Manufacturer")).strip()
        if get("Manufacturer") is not None
        else None,
        "patient_id": str(get("PatientID")).strip() if get("PatientID") is not None else None,
        "series_instance_uid": str(get("SeriesInstanceUID"))
        if get("SeriesInstanceUID") is not None
        else None,
        "study_instance_uid": str(get("StudyInstanceUID"))
        if get("StudyInstanceUID") is not None
        else None,
        "series_description": str(get("SeriesDescription"))
        if get("SeriesDescription") is not None
        else None,
        "rows": int(ds.Rows) if "Rows" in ds else None,
        "columns": int(ds.Columns) if "Columns" in ds else None,
        "pixel_spacing": ps,
        "image_position_patient": _floats(get("ImagePositionPatient"), 3),
        "image_orientation_patient": _floats(get("ImageOrientationPatient"), 6),
        "slice_thickness": thickness[0] if thickness else None,
        "spacing_between_slices": between[0] if between else None,
        "rescale_slope": float(slope) if slope is not None else 1.0,
        "rescale_intercept": float(intercept) if intercept is not None else 0.0,
        "rescale_missing": [
            n for n, v in (("RescaleSlope", slope), ("RescaleIntercept", intercept)) if v is None
        ],
        "pixel_padding_value": int(pad)
        if pad is not None and not isinstance(pad, (bytes, list))
        else None,
        "pixel_padding_range_limit": int(pad_lim)
        if pad_lim is not None and not isinstance(pad_lim, (bytes, list))
        else None,
        "pixel_representation": int(get("PixelRepresentation"))
        if get("PixelRepresentation") is not None
        else None,
        "bits_stored": int(get("BitsStored")) if get("BitsStored") is not None else None,
        "instance_number": int(get("InstanceNumber"))
        if get("InstanceNumber") is not None
        else None,
        "transfer_syntax_uid": str(ds.file_meta.get("TransferSyntaxUID", ""))
        if hasattr(ds, "file_meta")
        else None,
    }


def _raw_pixel_element(ds):
    try:
        return ds.get_item(0x7FE00010, keep_deferred=True)
    except TypeError:  # pydicom < 3: get_item returns the raw element anyway
        return ds.get_item(0x7FE00010)


def pixel_data_problem(ds, path: str | os.PathLike) -> str | None:
    """Why the pixel data of ``ds`` (read with ``defer=True``) is short, or ``None``.

    Compares the declared length of (7FE0,0010) with the bytes left in the file after its start,
    and (for native, uncompressed data) with ``Rows x Columns x SamplesPerPixel x frames x
    BitsAllocated/8``. Encapsulated (compressed) pixel data is left to the decoder.
    """
    if 0x7FE00010 not in ds:
        return None
    el = _raw_pixel_element(ds)
    length = getattr(el, "length", None)
    if length == 0xFFFFFFFF:
        return None  # encapsulated: the decoder notices a cut stream
    value = getattr(el, "value", None)
    value_tell = getattr(el, "value_tell", None)
    if value is None and value_tell is not None and length is not None:  # deferred: still on disk
        present = os.path.getsize(path) - int(value_tell)
        if present < length:
            return (
                f"pixel data truncated: {max(present, 0)} of its {length} bytes are in the file "
                "(file cut short?)"
            )
        have = int(length)
    elif isinstance(value, (bytes, bytearray)):
        have = len(value)
    else:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    expected = (rows * cols * spp * frames * bits + 7) // 8
    if have < expected:
        return (
            f"pixel data truncated: {have} bytes where Rows x Columns x BitsAllocated/8 needs {expected} "
            "(file cut short?)"
        )
    return None


def check_slice_geometry(info: dict, path: str | os.PathLike) -> None:
    """Raise :class:`DicomError` for a PixelSpacing that is not finite and > 0 or a non-finite
    ImagePositionPatient / ImageOrientationPatient (``info`` from :func:`header_info`)."""
    ps = info["pixel_spacing"]
    if ps is not None and not all(np.isfinite(v) and v > 0 for v in ps):
        raise DicomError(
            path, f"invalid PixelSpacing {list(ps)} mm: both values must be finite numbers > 0"
        )
    for key, name in (
        ("image_position_patient", "ImagePositionPatient"),
        ("image_orientation_patient", "ImageOrientationPatient"),
    ):
        v = info[key]
        if v is not None and not all(np.isfinite(x) for x in v):
            raise DicomError(path, f"{name} {list(v)} is not finite; cannot place the slice")


def check_rescale_option(rescale, source: str = "--rescale") -> tuple[float, float]:
    """``(slope, intercept)`` as floats; raise naming ``source`` unless both are finite and the
    slope is not 0."""
    try:
        slope, intercept = (float(v) for v in rescale)
    except (TypeError, ValueError) as e:
        raise InputError(source, f"expected two numbers SLOPE INTERCEPT, got {rescale!r}") from e
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise InputError(
            source,
            f"slope {slope:g} / intercept {intercept:g}: both must be finite and the slope not 0",
        )
    return slope, intercept


_RESCALE_HELP = (
    "the stored values cannot be turned into HU with certainty; if you know the scanner's convention, give it "
    "with --rescale SLOPE INTERCEPT (Python: rescale=(slope, intercept)), e.g. --rescale 1 0 when the stored "
    "values already are HU or --rescale 1 -1024 for unsigned storage with air at 0"
)


def resolve_rescale(
    info: dict, path: str | os.PathLike, rescale=None
) -> tuple[float, float, list[float] | None]:
    """The slope and intercept to use for one file (``info`` from :func:`header_info`).

    Returns:
        ``(slope, intercept, assumed)``: the file's own tags and ``assumed=None`` when both are
        present; otherwise ``rescale`` and ``assumed=[slope, intercept]``.

    Raises:
        DicomError: a tag is missing and ``rescale`` is ``None`` (the message says what to do).
    """
    if not info["rescale_missing"]:
        return info["rescale_slope"], info["rescale_intercept"], None
    if rescale is None:
        missing = ", ".join(info["rescale_missing"])
        raise DicomError(
            path,
            f"no RescaleSlope/RescaleIntercept (missing: {missing}; Type 1 in the CT Image module): {_RESCALE_HELP}",
        )
    slope, intercept = check_rescale_option(rescale, "rescale")
    return slope, intercept, [slope, intercept]


def probe_dicom_slice(path: str | os.PathLike, rescale=None):
    """Header-level checks of one DICOM CT file (no pixel decoding).

    Readable, CT, single frame, pixel data present and as long as its matrix, PixelSpacing /
    position / orientation finite, rescale tags present or ``rescale`` given.

    Returns:
        ``(dataset, info, slope, intercept, assumed)`` (dataset read with deferred pixel data).
    """
    p = Path(path)
    ds = read_dicom_header(p, defer=True)
    check_ct_header(ds, p)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(p, "no pixel data")
    problem = pixel_data_problem(ds, p)
    if problem:
        raise DicomError(p, problem)
    info = header_info(ds)
    check_slice_geometry(info, p)
    slope, intercept, assumed = resolve_rescale(info, p, rescale)
    return ds, info, slope, intercept, assumed


def _slice_direction_2d(iop: tuple[float, ...] | None, path) -> tuple[float, float, float, float]:
    if iop is None:
        return (1.0, 0.0, 0.0, 1.0)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    if abs(abs(normal[2]) - 1.0) > 1e-3:
        raise DicomError(
            path,
            f"slice is not axial (ImageOrientationPatient {list(np.round(iop, 4))}); a single "
            "non-axial slice cannot be stored as a 2D image: put it in a folder to read it as a series",
        )
    # SimpleITK direction (row-major): column j = direction of index axis j (x then y)
    return (float(row[0]), float(col[0]), float(row[1]), float(col[1]))


def _gdcm_slice_hu(p: Path, pydicom_error: Exception) -> np.ndarray:
    """HU of one slice decoded by GDCM (rescale applied by GDCM), when pydicom cannot decode it."""
    import SimpleITK as sitk

    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
    except RuntimeError as e:
        raise DicomError(
            p,
            f"pixel data cannot be decoded (pydicom: {pydicom_error}; SimpleITK: {str(e).strip().splitlines()[-1]})",
        ) from e
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DicomError(p, f"pixel data has shape {arr.shape}; expected one 2D slice")
    log.info("%s: pydicom cannot decode the pixel data (%s); decoded with GDCM", p, pydicom_error)
    return arr


def read_dicom_slice(
    path: str | os.PathLike, rescale: tuple[float, float] | None = None
) -> CTImage:
    """Read one DICOM CT file into a 2D int16 HU :class:`CTImage` (pydicom, rescale applied once).

    Args:
        path: a single-frame CT DICOM file.
        rescale: ``(slope, intercept)`` to assume when the file has no ``RescaleSlope`` /
            ``RescaleIntercept`` (refused otherwise; see the module docstring).

    Returns:
        :class:`CTImage` with a 2D ``SimpleITK.Image`` (size ``(Columns, Rows)``, spacing
        ``(PixelSpacing[1], PixelSpacing[0])`` mm) and ``meta["format"] == "dicom-slice"``.

    Raises:
        DicomError: unreadable / not CT / not axial / truncated / pixel data cannot be decoded /
            PixelSpacing not finite and > 0 / no rescale tags and no ``rescale``.
        UnsupportedFormatError: multi-frame objects.
        InputError: NaN in float pixel data.
    """
    import SimpleITK as sitk

    p = Path(path)
    ds, info, slope, intercept, assumed = probe_dicom_slice(p, rescale)
    if assumed is not None:
        log.warning(
            "%s: no RescaleSlope/RescaleIntercept; assuming slope %g, intercept %g as asked",
            p,
            slope,
            intercept,
        )
    rescale_by = "metalung"
    try:
        stored = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - decoder errors (missing plugins, corrupt data)
        # pydicom lacks a decoder for this transfer syntax (e.g. JPEG lossless without
        # pylibjpeg): GDCM (SimpleITK) decodes it and applies the rescale itself
        hu = _gdcm_slice_hu(p, e)
        rescale_by = "gdcm"
        if assumed is not None:  # GDCM found no rescale tags: its values are the stored ones
            hu = to_hu(hu, slope, intercept, source=p)
            rescale_by = "metalung"
    else:
        if stored.ndim != 2:
            raise DicomError(p, f"pixel data has shape {stored.shape}; expected one 2D slice")
        hu = to_hu(stored, slope, intercept, source=p)
    pad_hu = padding_to_hu(info["pixel_padding_value"], slope, intercept)
    pad_lim_hu = padding_to_hu(info["pixel_padding_range_limit"], slope, intercept)
    arr, hinfo = finalize_hu(hu, pad_hu, pad_lim_hu, source=p)

    img = sitk.GetImageFromArray(arr)  # (rows, cols) -> size (cols, rows) = (x, y)
    ps = info["pixel_spacing"]
    if ps is None:
        log.warning("%s: no PixelSpacing; using 1 mm", p)
        ps = (1.0, 1.0)
    img.SetSpacing((ps[1], ps[0]))
    ipp = info["image_position_patient"]
    if ipp is not None:
        img.SetOrigin((ipp[0], ipp[1]))
    img.SetDirection(_slice_direction_2d(info["image_orientation_patient"], p))
    check_geometry(img, p, DicomError)

    meta = base_meta(p, "dicom-slice")
    meta.update(
        {k: info[k] for k in ("manufacturer", "series_instance_uid", "patient_id", "modality")}
    )
    meta.update(
        {
            "modality": info["modality"] or "CT",
            "rescale_slope": slope,
            "rescale_intercept": intercept,
            "rescale_applied_by": rescale_by,
            "rescale_assumed": assumed,
            "padding_mapped": hinfo["padding_mapped"],
            "clipped_high": hinfo["clipped_high"],
            "rounded": hinfo["rounded"],
            "pixel_padding_value": info["pixel_padding_value"],
            "series_description": info["series_description"],
            "study_instance_uid": info["study_instance_uid"],
            "image_position_patient": list(ipp) if ipp is not None else None,
            "image_orientation_patient": list(info["image_orientation_patient"])
            if info["image_orientation_patient"] is not None
            else None,
            "slice_thickness": info["slice_thickness"],
            "instance_number": info["instance_number"],
            "files": [str(p)],
        }
    )
    return CTImage(image=img, meta=meta)
