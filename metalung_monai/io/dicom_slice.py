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
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomError, UnsupportedFormatError
from .ct_image import CTImage, base_meta
from .hu import finalize_hu, padding_to_hu, to_hu

__all__ = [
    "CT_SOP_CLASSES",
    "read_dicom_header",
    "check_ct_header",
    "header_info",
    "read_dicom_slice",
]

log = logging.getLogger(__name__)

CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}


def read_dicom_header(path: str | os.PathLike, pixels: bool = False):
    """Read a DICOM file with pydicom; raise :class:`DicomError` naming it when unreadable.

    Args:
        path: the file.
        pixels: also read the pixel data (otherwise stop before it).

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
    try:
        return pydicom.dcmread(p, stop_before_pixels=not pixels)
    except InvalidDicomError:
        pass  # maybe a valid dataset without the 128-byte preamble: try once more, forced
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomError(p, f"not a readable DICOM file ({type(e).__name__}: {e})") from e
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=not pixels, force=True)
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
    pad = get("PixelPaddingValue")
    pad_lim = get("PixelPaddingRangeLimit")
    ps = _floats(get("PixelSpacing"), 2)
    return {
        "modality": str(get("Modality")) if get("Modality") is not None else None,
        "sop_class_uid": str(get("SOPClassUID")) if get("SOPClassUID") is not None else None,
        "manufacturer": str(get("Manufacturer")).strip() if get("Manufacturer") is not None else None,
        "patient_id": str(get("PatientID")).strip() if get("PatientID") is not None else None,
        "series_instance_uid": str(get("SeriesInstanceUID")) if get("SeriesInstanceUID") is not None else None,
        "study_instance_uid": str(get("StudyInstanceUID")) if get("StudyInstanceUID") is not None else None,
        "series_description": str(get("SeriesDescription")) if get("SeriesDescription") is not None else None,
        "rows": int(ds.Rows) if "Rows" in ds else None,
        "columns": int(ds.Columns) if "Columns" in ds else None,
        "pixel_spacing": ps,
        "image_position_patient": _floats(get("ImagePositionPatient"), 3),
        "image_orientation_patient": _floats(get("ImageOrientationPatient"), 6),
        "slice_thickness": float(get("SliceThickness")) if get("SliceThickness") is not None else None,
        "rescale_slope": float(slope) if slope is not None else 1.0,
        "rescale_intercept": float(intercept) if intercept is not None else 0.0,
        "pixel_padding_value": int(pad) if pad is not None and not isinstance(pad, (bytes, list)) else None,
        "pixel_padding_range_limit": int(pad_lim) if pad_lim is not None and not isinstance(pad_lim, (bytes, list)) else None,
        "pixel_representation": int(get("PixelRepresentation")) if get("PixelRepresentation") is not None else None,
        "bits_stored": int(get("BitsStored")) if get("BitsStored") is not None else None,
        "instance_number": int(get("InstanceNumber")) if get("InstanceNumber") is not None else None,
        "transfer_syntax_uid": str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else None,
    }


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
            p, f"pixel data cannot be decoded (pydicom: {pydicom_error}; SimpleITK: {str(e).strip().splitlines()[-1]})"
        ) from e
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DicomError(p, f"pixel data has shape {arr.shape}; expected one 2D slice")
    log.info("%s: pydicom cannot decode the pixel data (%s); decoded with GDCM", p, pydicom_error)
    return arr


def read_dicom_slice(path: str | os.PathLike) -> CTImage:
    """Read one DICOM CT file into a 2D int16 HU :class:`CTImage` (pydicom, rescale applied once).

    Args:
        path: a single-frame CT DICOM file.

    Returns:
        :class:`CTImage` with a 2D ``SimpleITK.Image`` (size ``(Columns, Rows)``, spacing
        ``(PixelSpacing[1], PixelSpacing[0])`` mm) and ``meta["format"] == "dicom-slice"``.

    Raises:
        DicomError: unreadable / not CT / not axial / pixel data cannot be decoded.
        UnsupportedFormatError: multi-frame objects.
        InputError: NaN in float pixel data.
    """
    import SimpleITK as sitk

    p = Path(path)
    ds = read_dicom_header(p, pixels=True)
    check_ct_header(ds, p)
    info = header_info(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(p, "no pixel data")
    slope, intercept = info["rescale_slope"], info["rescale_intercept"]
    rescale_by = "metalung"
    try:
        stored = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - decoder errors (missing plugins, corrupt data)
        # pydicom lacks a decoder for this transfer syntax (e.g. JPEG lossless without
        # pylibjpeg): GDCM (SimpleITK) decodes it and applies the rescale itself
        hu = _gdcm_slice_hu(p, e)
        rescale_by = "gdcm"
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
    if min(ps) <= 0:
        raise DicomError(p, f"invalid PixelSpacing {list(ps)}")
    img.SetSpacing((ps[1], ps[0]))
    ipp = info["image_position_patient"]
    if ipp is not None:
        img.SetOrigin((ipp[0], ipp[1]))
    img.SetDirection(_slice_direction_2d(info["image_orientation_patient"], p))

    meta = base_meta(p, "dicom-slice")
    meta.update({k: info[k] for k in ("manufacturer", "series_instance_uid", "patient_id", "modality")})
    meta.update(
        {
            "modality": info["modality"] or "CT",
            "rescale_slope": slope,
            "rescale_intercept": intercept,
            "rescale_applied_by": rescale_by,
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
