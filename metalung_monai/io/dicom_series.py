"""A folder of DICOM CT slices: list its series, pick one, read it as a 3D int16 HU image.

Reading uses SimpleITK's GDCM series reader (``ImageSeriesReader``), which sorts the files by
position along the slice normal (``GetGDCMSeriesFileNames``; file names and ``InstanceNumber`` do
not matter) and **applies RescaleSlope/Intercept itself**. metalung-monai adds:

* **Series choice** (:func:`select_series`): the folder's series are listed with
  ``ImageSeriesReader.GetGDCMSeriesIDs``; non-image companions (DICOM-SEG, RTSTRUCT, SR ...) are
  skipped. One CT series -> it is read. Several CT series and no ``series_uid`` ->
  :class:`NoSeriesError` listing each UID with its slice count and description: picking one
  silently (e.g. the largest) could pair a mask with the wrong reconstruction, so the user chooses
  with ``series_uid=`` / ``--series UID``.
* **Header checks** on every slice (pydicom, headers only): CT modality, equal slice size
  (:class:`SliceSizeError` names the odd file), one orientation, distinct positions, uniform
  spacing (a missing slice raises :class:`DicomError` naming the two files around the gap).
* **Order check**: the GDCM order is verified against ``ImagePositionPatient`` projected on the
  slice normal; files are re-sorted (ascending) if it is not monotonic.
* **Rescale exactly once**: the first slice returned by SimpleITK is compared with pydicom's
  ``stored * slope + intercept`` of the same file. Equal -> nothing more to do; equal to the
  *stored* values (the reader did not rescale) -> the rescale is applied here, per slice; anything
  else -> :class:`DicomError`. Slices with different or fractional slopes/intercepts are read as
  float32 so nothing is truncated, then rounded.
* Padding (values < -1024 HU, ``PixelPaddingValue``) -> -1024, int16 (see :mod:`.hu`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DicomError, InputError, NoSeriesError, SliceSizeError
from ._progress import progress_iter
from .ct_image import CTImage, base_meta
from .dicom_slice import check_ct_header, header_info, read_dicom_header
from .hu import finalize_hu, padding_to_hu, to_hu

__all__ = ["SeriesInfo", "list_dicom_series", "select_series", "read_dicom_series"]

log = logging.getLogger(__name__)


@dataclass
class SeriesInfo:
    """One series of a folder as GDCM groups it.

    Attributes:
        uid: ``SeriesInstanceUID`` (the GDCM series identifier).
        files: file paths in GDCM's order (ascending position along the slice normal).
        modality: ``Modality`` of the first file (``None`` when absent).
        description: ``SeriesDescription`` of the first file.
        problem: why the series is not a readable CT series (``None`` when it is), as raised by
            the header check of its first file.
    """

    uid: str
    files: list[str] = field(default_factory=list)
    modality: str | None = None
    description: str | None = None
    problem: InputError | None = None

    @property
    def is_ct(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        kind = self.modality or "?"
        desc = f", '{self.description}'" if self.description else ""
        return f"{self.uid} ({len(self.files)} file{'s' * (len(self.files) != 1)}, {kind}{desc})"


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """List the DICOM series of ``folder`` (not recursive) with GDCM, CT ones first-class.

    Raises:
        NoSeriesError: the folder does not exist, is empty, or holds no DICOM image file.
    """
    import SimpleITK as sitk

    d = Path(folder)
    if not d.is_dir():
        raise NoSeriesError(d, "folder does not exist")
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d))
    if not ids:
        files = sorted(p.name for p in d.iterdir() if p.is_file())
        if not files:
            raise NoSeriesError(d, "no DICOM series found (the folder is empty)")
        shown = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
        raise NoSeriesError(
            d, f"no DICOM series found ({len(files)} file(s), none readable as a DICOM image: {shown})"
        )
    out = []
    for uid in ids:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid))
        info = SeriesInfo(uid=uid, files=files)
        if files:
            try:
                ds = read_dicom_header(files[0])
                info.modality = str(ds.get("Modality", "") or "") or None
                info.description = str(ds.get("SeriesDescription", "") or "") or None
                check_ct_header(ds, files[0])
            except InputError as e:
                info.problem = e
        else:
            info.problem = NoSeriesError(d, f"series {uid} has no files")
        out.append(info)
    return out


def select_series(folder: str | os.PathLike, series_uid: str | None = None) -> SeriesInfo:
    """Choose the series to read (see the module docstring for the rule).

    Args:
        folder: the DICOM folder.
        series_uid: ``SeriesInstanceUID`` to read; ``None`` -> the only CT series.

    Raises:
        NoSeriesError: no series, ``series_uid`` absent, or several CT series and no choice.
        DicomError: the chosen (or only) series is not CT (e.g. a DICOM-SEG).
    """
    d = Path(folder)
    series = list_dicom_series(d)
    listing = "; ".join(s.summary() for s in series)
    if series_uid is not None:
        for s in series:
            if s.uid == series_uid:
                if s.problem is not None:
                    raise s.problem
                return s
        raise NoSeriesError(d, f"series {series_uid} not found; the folder holds: {listing}")
    ct = [s for s in series if s.is_ct]
    if len(ct) == 1:
        others = [s for s in series if not s.is_ct]
        if others:
            log.info("%s: reading CT series %s; skipped: %s", d, ct[0].uid, "; ".join(o.summary() for o in others))
        return ct[0]
    if not ct:
        raise series[0].problem  # names the first file and why it is not CT
    raise NoSeriesError(
        d, f"{len(ct)} CT series; choose one with series_uid= / --series UID: "
        + "; ".join(s.summary() for s in ct)
    )


def _check_headers(d: Path, files: list[str], headers: list[dict]) -> np.ndarray:
    """Consistency checks over the slices; returns positions along the normal (mm)."""
    sizes = [(h["columns"], h["rows"]) for h in headers]
    values, counts = np.unique(np.array(sizes), axis=0, return_counts=True)
    if len(values) > 1:
        common = tuple(int(v) for v in values[np.argmax(counts)])
        odd = next(i for i, s in enumerate(sizes) if s != common)
        raise SliceSizeError(
            files[odd],
            f"slice of {sizes[odd][0]}x{sizes[odd][1]} pixels in a series of {common[0]}x{common[1]} "
            f"slices (series {headers[0]['series_instance_uid']} in {d})",
        )
    iops = [h["image_orientation_patient"] for h in headers]
    if len(files) > 1 and any(i is None for i in iops):
        bad = files[[i is None for i in iops].index(True)]
        raise DicomError(bad, "no ImageOrientationPatient; cannot place the slice in the series")
    iop0 = np.asarray(iops[0] if iops[0] is not None else (1, 0, 0, 0, 1, 0), dtype=float)
    for f, iop in zip(files, iops):
        if iop is not None and np.max(np.abs(np.asarray(iop) - iop0)) > 1e-4:
            raise DicomError(f, f"orientation {list(np.round(iop, 5))} differs from the series' {list(np.round(iop0, 5))}")
    normal = np.cross(iop0[:3], iop0[3:])
    ipps = [h["image_position_patient"] for h in headers]
    if len(files) > 1 and any(p is None for p in ipps):
        bad = files[[p is None for p in ipps].index(True)]
        raise DicomError(bad, "no ImagePositionPatient; cannot place the slice in the series")
    if len(files) == 1:
        return np.zeros(1)
    pos = np.array([np.dot(normal, p) for p in ipps])
    return pos


def _check_spacing(files: list[str], pos: np.ndarray) -> None:
    if len(pos) < 2:
        return
    gaps = np.diff(pos)
    i0 = int(np.argmin(np.abs(gaps)))
    if abs(gaps[i0]) < 1e-3:
        raise DicomError(
            files[i0 + 1],
            f"same slice position ({pos[i0]:.3f} mm along the normal) as {Path(files[i0]).name}: "
            "duplicate slice or two series with one SeriesInstanceUID",
        )
    g = float(np.min(np.abs(gaps)))  # missing slices make multiples of it
    tol = max(0.02, 0.02 * g)
    bad = np.flatnonzero(np.abs(np.abs(gaps) - g) > tol)
    if bad.size:
        i = int(bad[0])
        raise DicomError(
            files[i + 1],
            f"non-uniform slice spacing: {abs(gaps[i]):.3f} mm from {Path(files[i]).name} while the "
            f"smallest spacing in the series is {g:.3f} mm (missing or extra slices?)",
        )


def read_dicom_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    progress: bool = False,
) -> CTImage:
    """Read a DICOM CT series folder into a 3D int16 HU :class:`CTImage`.

    Args:
        folder: folder holding the slices (not recursive; other files are ignored).
        series_uid: ``SeriesInstanceUID`` to read when the folder holds several CT series.
        progress: show a progress bar while checking slice headers.

    Returns:
        :class:`CTImage`: ``image`` 3D int16 HU with GDCM's geometry (spacing ``(x, y, z)`` mm,
        origin = position of the most inferior slice along the normal, direction from
        ``ImageOrientationPatient``); ``meta["format"] == "dicom-series"``, ``meta["files"]`` in
        slice order (index z = 0 first).

    Raises:
        NoSeriesError, DicomError, SliceSizeError, InputError: see the module docstring.
    """
    import SimpleITK as sitk

    d = Path(folder)
    s = select_series(d, series_uid)
    files = list(s.files)
    headers = []
    for f in progress_iter(files, progress, desc="DICOM headers", total=len(files)):
        ds = read_dicom_header(f)
        check_ct_header(ds, f)
        headers.append(header_info(ds))
    pos = _check_headers(d, files, headers)
    if len(files) > 1:
        order = np.argsort(pos, kind="stable")
        if not np.array_equal(order, np.arange(len(files))):
            if np.array_equal(order, np.arange(len(files))[::-1]):
                log.info("%s: GDCM order is descending along the normal; reversed", d)
            else:
                log.warning("%s: GDCM order is not by position; re-sorted by ImagePositionPatient", d)
            files = [files[i] for i in order]
            headers = [headers[i] for i in order]
            pos = pos[order]
        _check_spacing(files, pos)

    rescales = {(h["rescale_slope"], h["rescale_intercept"]) for h in headers}
    fractional = any(float(a) != int(a) or float(b) != int(b) for a, b in rescales)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if len(rescales) > 1 or fractional:
        reader.SetOutputPixelType(sitk.sitkFloat32)  # per-slice rescale must not be truncated
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise DicomError(d, f"SimpleITK could not read series {s.uid}: {str(e).strip().splitlines()[-1]}") from e
    arr = sitk.GetArrayFromImage(img)  # (z, y, x), rescaled by GDCM
    if arr.shape[0] != len(files):
        raise DicomError(d, f"read {arr.shape[0]} slices from {len(files)} files")

    rescale_by = "gdcm"
    try:
        ds0 = read_dicom_header(files[0], pixels=True)
        stored0 = ds0.pixel_array
    except Exception as e:  # noqa: BLE001 - no pydicom decoder for this transfer syntax
        log.debug("%s: cross-check of the rescale skipped (%s)", files[0], e)
        stored0 = None
    if stored0 is not None and stored0.shape == arr.shape[1:]:
        h0 = headers[0]
        expected = to_hu(stored0, h0["rescale_slope"], h0["rescale_intercept"], source=files[0])
        if np.array_equal(arr[0], expected):
            pass
        elif rescales != {(1.0, 0.0)} and np.array_equal(arr[0], stored0):
            log.warning("%s: the series reader returned stored values; applying the rescale here", d)
            arr = np.stack(
                [to_hu(arr[k], h["rescale_slope"], h["rescale_intercept"], source=files[k]) for k, h in enumerate(headers)]
            )
            rescale_by = "metalung"
        else:
            diff = np.abs(arr[0].astype(np.float64) - expected)
            raise DicomError(
                files[0],
                f"SimpleITK and pydicom disagree on the HU of this slice (max difference {diff.max():g}); "
                "cannot tell whether the rescale was applied",
            )

    pads = {(h["pixel_padding_value"], h["pixel_padding_range_limit"], h["rescale_slope"], h["rescale_intercept"]) for h in headers}
    if len(pads) == 1:
        pv, pl, sl, ic = next(iter(pads))
        arr16, hinfo = finalize_hu(arr, padding_to_hu(pv, sl, ic), padding_to_hu(pl, sl, ic), source=d)
    else:  # per-slice padding definitions
        slices, hinfo = [], {"padding_mapped": 0, "clipped_high": 0, "rounded": False}
        for k, h in enumerate(headers):
            a, info = finalize_hu(
                arr[k],
                padding_to_hu(h["pixel_padding_value"], h["rescale_slope"], h["rescale_intercept"]),
                padding_to_hu(h["pixel_padding_range_limit"], h["rescale_slope"], h["rescale_intercept"]),
                source=files[k],
            )
            slices.append(a)
            hinfo = {k2: (hinfo[k2] or info[k2]) if k2 == "rounded" else hinfo[k2] + info[k2] for k2 in hinfo}
        arr16 = np.stack(slices)
    out = sitk.GetImageFromArray(arr16)
    out.CopyInformation(img)

    h0 = headers[0]
    meta = base_meta(d, "dicom-series")
    meta.update(
        {
            "manufacturer": h0["manufacturer"],
            "series_instance_uid": s.uid,
            "patient_id": h0["patient_id"],
            "modality": h0["modality"] or "CT",
            "rescale_slope": h0["rescale_slope"],
            "rescale_intercept": h0["rescale_intercept"],
            "rescale_varies": len(rescales) > 1,
            "rescale_applied_by": rescale_by,
            "padding_mapped": hinfo["padding_mapped"],
            "clipped_high": hinfo["clipped_high"],
            "rounded": hinfo["rounded"],
            "pixel_padding_value": h0["pixel_padding_value"],
            "series_description": h0["series_description"],
            "study_instance_uid": h0["study_instance_uid"],
            "slice_thickness": h0["slice_thickness"],
            "n_slices": len(files),
            "files": [str(f) for f in files],
        }
    )
    return CTImage(image=out, meta=meta)
