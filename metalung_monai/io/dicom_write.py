"""Write a 3D int16 HU image as a real DICOM CT series (pydicom), vendor-like on request.

Used to produce DICOM test data (the phantom cohort with ``--dicom``) that exercises every pitfall
of ingestion: unsigned storage with ``RescaleIntercept -1024``, signed storage with intercept 0,
a ``RescaleSlope`` other than 1, a circular field of view padded with a vendor value (GE -2000,
Siemens/Philips -2048 / -3024 ...), and shuffled file names (only ``ImagePositionPatient`` tells the
order). :func:`read_ct` on the folder gives back exactly the HU written (padding -> -1024) and the
same geometry.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path
from ._progress import progress_iter

__all__ = ["write_dicom_series", "circular_fov_mask", "stored_values"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's prefix for generated UIDs


def circular_fov_mask(shape_zyx: tuple[int, ...], radius_fraction: float = 1.0) -> np.ndarray:
    """Boolean mask (z, y, x) of the inscribed circular reconstruction field of view.

    Args:
        shape_zyx: array shape ``(z, y, x)`` (or ``(y, x)``).
        radius_fraction: radius as a fraction of half the smaller in-plane size.

    Returns:
        bool array of ``shape_zyx``; True inside the circle (same for every slice).
    """
    ny, nx = shape_zyx[-2], shape_zyx[-1]
    yy, xx = np.ogrid[:ny, :nx]
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    r = radius_fraction * min(ny, nx) / 2.0
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return np.broadcast_to(disc, tuple(shape_zyx)).copy()


def stored_values(hu: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored values ``(HU - intercept) / slope`` as int; raise if some HU is not representable."""
    if slope == 1 and float(intercept).is_integer() and hu.dtype.kind in "iu":
        return hu.astype(np.int32) - int(intercept)  # exact integer path (the common case)
    s = (hu.astype(np.float64) - intercept) / slope
    r = np.rint(s)
    if not np.array_equal(r * slope + intercept, hu.astype(np.float64)):
        bad = hu[(r * slope + intercept) != hu]
        raise InputError(
            "<image>",
            f"HU {bad.flat[0]} cannot be stored with RescaleSlope {slope:g} / Intercept {intercept:g} "
            "(HU - intercept must be a multiple of the slope)",
        )
    return r.astype(np.int64)


def _ds_str(x: float) -> str:
    return f"{x:.10g}"


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


def write_dicom_series(
    image,
    folder: str | os.PathLike,
    *,
    patient_id: str,
    manufacturer: str = "SIEMENS",
    rescale_intercept: float = -1024,
    rescale_slope: float = 1,
    padding_value: int | None = None,
    fov_mask: np.ndarray | None = None,
    series_description: str = "",
    seed: int = 0,
    shuffle_names: bool = True,
    pixel_representation: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write ``image`` as a CT Image Storage series, one file per axial slice.

    Args:
        image: 3D ``SimpleITK.Image`` of integer HU (int16). Geometry (spacing, origin, direction)
            is written as ``PixelSpacing``, ``SliceThickness``/``SpacingBetweenSlices``,
            ``ImagePositionPatient`` per slice and ``ImageOrientationPatient``. A left-handed
            direction is written as the equivalent right-handed volume (z flipped), which is what
            a DICOM reader returns for it.
        folder: output folder; created atomically (written as a hidden temporary folder beside it,
            then renamed). Must not exist or be empty unless ``overwrite``.
        patient_id: ``PatientID`` (also ``PatientName``).
        manufacturer: ``Manufacturer`` (e.g. ``"SIEMENS"``, ``"GE MEDICAL SYSTEMS"``).
        rescale_intercept: ``RescaleIntercept``; -1024 gives unsigned stored values (air = 0),
            0 signed stored values equal to HU.
        rescale_slope: ``RescaleSlope``; every ``HU - intercept`` must be a multiple of it.
        padding_value: **stored** value written outside the field of view and as
            ``PixelPaddingValue`` (DICOM semantics; e.g. -2000 like GE: -3024 HU with intercept
            -1024, -2000 HU with intercept 0). ``None``: no padding.
        fov_mask: bool array in SimpleITK (z, y, x) order, True inside the field of view; voxels
            outside get ``padding_value``. Default with a ``padding_value``: the inscribed circle
            (:func:`circular_fov_mask`).
        series_description: ``SeriesDescription``.
        seed: seeds the file-name shuffle; UIDs are derived from the seed, the patient and a hash
            of the voxels and geometry (same input -> same UIDs; different input -> different).
        shuffle_names: name files ``IM#####.dcm`` in a random order unrelated to position
            (``InstanceNumber`` stays in slice order).
        pixel_representation: 0 (unsigned) or 1 (signed); ``None`` chooses unsigned when every
            stored value is >= 0, signed otherwise.
        overwrite: replace an existing non-empty ``folder``.
        progress: progress bar over slices.

    Returns:
        Paths of the written files in slice order (z index 0 first).

    Raises:
        InputError: not a 3D integer image, HU not representable with the slope/intercept,
            stored values out of 16-bit range, bad ``fov_mask`` shape.
        FileExistsError: ``folder`` exists and is not empty (without ``overwrite``).
    """
    import SimpleITK as sitk
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if image.GetDimension() != 3:
        raise InputError(
            "<image>", f"write_dicom_series needs a 3D image, got {image.GetDimension()}D"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("<image>", "write_dicom_series needs a scalar image")
    hu = sitk.GetArrayFromImage(image)  # (z, y, x)
    if hu.dtype.kind == "f":
        if np.isnan(hu).any() or not np.array_equal(hu, np.rint(hu)):
            raise InputError(
                "<image>", "HU must be integers (got non-integral or NaN float voxels)"
            )
    elif hu.dtype.kind not in "iu":
        raise InputError("<image>", f"pixel type {hu.dtype} is not numeric")
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    flipped = bool(np.linalg.det(direction) < 0)
    if flipped:  # left-handed: DICOM slices stack along row x column, so store z reversed
        hu = hu[::-1]
        origin = origin + (hu.shape[0] - 1) * spacing[2] * direction[:, 2]
        direction = direction.copy()
        direction[:, 2] *= -1

    slope, intercept = float(rescale_slope), float(rescale_intercept)
    if slope == 0 or not np.isfinite(slope) or not np.isfinite(intercept):
        raise InputError("<image>", f"invalid rescale slope {slope} / intercept {intercept}")
    stored = stored_values(hu, slope, intercept)
    if padding_value is not None:
        if fov_mask is None:
            fov_mask = circular_fov_mask(hu.shape)
        fov = np.asarray(fov_mask, dtype=bool)
        if fov.shape != hu.shape:
            raise InputError(
                "fov_mask", f"shape {fov.shape} differs from the image's (z, y, x) {hu.shape}"
            )
        if flipped:
            fov = fov[::-1]
        stored = np.where(fov, stored, int(padding_value))
    elif fov_mask is not None:
        raise InputError(
            "fov_mask", "a field-of-view mask needs a padding_value to write outside it"
        )
    lo, hi = int(stored.min()), int(stored.max())
    if pixel_representation is None:
        pixel_representation = 0 if lo >= 0 and hi <= 65535 else 1
    if pixel_representation == 0:
        if lo < 0 or hi > 65535:
            raise InputError("<image>", f"stored values {lo}..{hi} do not fit unsigned 16 bit")
        dtype = np.uint16
    elif pixel_representation == 1:
        if lo < -32768 or hi > 32767:
            raise InputError("<image>", f"stored values {lo}..{hi} do not fit signed 16 bit")
        dtype = np.int16
    else:
        raise InputError(
            "<image>", f"pixel_representation must be 0 or 1, got {pixel_representation}"
        )
    stored = stored.astype(dtype)

    final = Path(folder)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise FileExistsError(f"{final}: exists and is not empty (use overwrite=True)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp_dir.mkdir()

    nz, ny, nx = stored.shape
    digest = hashlib.sha256(
        stored.tobytes() + spacing.tobytes() + origin.tobytes() + direction.tobytes()
    ).hexdigest()
    key = (
        seed,
        patient_id,
        digest,
        series_description,
        manufacturer,
        intercept,
        slope,
        padding_value,
    )
    study_uid, series_uid, for_uid = _uid("study", *key), _uid("series", *key), _uid("for", *key)
    rng = np.random.default_rng(seed)
    names = rng.permutation(nz) + 1 if shuffle_names else np.arange(1, nz + 1)
    row_cos, col_cos, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    now = datetime.datetime(2000, 1, 1, 12, 0, 0)  # fixed: byte-identical output for the same input
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sign_vr = "US" if pixel_representation == 0 else "SS"

    paths: list[Path] = []
    try:
        for k in progress_iter(range(nz), progress, desc="DICOM slices", total=nz):
            sop_uid = _uid("sop", k, *key)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = time
            ds.AccessionNumber = ""
            ds.Modality = "CT"
            ds.Manufacturer = manufacturer
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = "metalung-monai"
            ds.SeriesDescription = series_description
            ds.ManufacturerModelName = "metalung-monai"
            ds.PatientName = patient_id
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.BodyPartExamined = "CHEST"
            ds.SliceThickness = _ds_str(spacing[2])
            ds.SpacingBetweenSlices = _ds_str(spacing[2])
            ds.KVP = ""
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            pos = origin + k * spacing[2] * normal
            ds.ImagePositionPatient = [_ds_str(v) for v in pos]
            ds.ImageOrientationPatient = [_ds_str(v) for v in (*row_cos, *col_cos)]
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds_str(float(np.dot(pos, np.cross(row_cos, col_cos))))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = ny, nx
            ds.PixelSpacing = [
                _ds_str(spacing[1]),
                _ds_str(spacing[0]),
            ]  # row spacing (y), column spacing (x)
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = pixel_representation
            if padding_value is not None:
                ds.add_new(0x00280120, sign_vr, int(padding_value))  # PixelPaddingValue
            ds.WindowCenter = ["-600", "40"]
            ds.WindowWidth = ["1500", "400"]
            ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
            ds.RescaleIntercept = _ds_str(intercept)
            ds.RescaleSlope = _ds_str(slope)
            ds.RescaleType = "HU"
            ds.PixelData = (
                np.ascontiguousarray(stored[k])
                .astype(f"<{'u2' if dtype == np.uint16 else 'i2'}")
                .tobytes()
            )
            name = f"IM{int(names[k]):05d}.dcm"
            with atomic_path(tmp_dir / name) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            paths.append(final / name)
        if final.exists():
            if final.is_dir():
                trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(final, trash)
                os.replace(tmp_dir, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                raise FileExistsError(f"{final}: exists and is not a folder")
        else:
            os.replace(tmp_dir, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp_dir)
    return paths
