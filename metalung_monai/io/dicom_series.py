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
* **No slice left out silently** (:func:`check_unread_files`): GDCM leaves a damaged slice out of
  the series' file list without a word (a last slice cut by 2 bytes, or in its header, gave a
  4-slice volume from 5 files). Every file of the folder that GDCM did not list and that looks like
  DICOM (``DICM`` preamble or a DICOM suffix; hidden files aside) is read with pydicom: unreadable, of the chosen
  series (same ``SeriesInstanceUID``), or a CT image object whose header is incomplete ->
  :class:`DicomError` naming the file. Files of the series that GDCM did list are checked for
  pixel data shorter than ``Rows x Columns x BitsAllocated/8`` (:func:`.dicom_slice.pixel_data_problem`).
* **Geometry**: every slice's ``PixelSpacing`` must be finite and > 0, positions and orientation
  finite; a one-slice series also needs a finite, positive ``SpacingBetweenSlices`` (or
  ``SliceThickness``), which gives its slice spacing; the result's spacing is checked again.
* **Rescale tags**: a series without ``RescaleSlope``/``RescaleIntercept`` is refused unless
  ``rescale=(slope, intercept)`` states the convention (see :mod:`.dicom_slice`); the assumed
  values are recorded in ``meta["rescale_assumed"]``. A series where only some slices have the
  tags is always refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DicomError, InputError, NoSeriesError, SliceSizeError
from ._progress import progress_iter
from .ct_image import CTImage, base_meta, check_geometry
from .dicom_slice import (
    CT_SOP_CLASSES,
    DICOM_SUFFIXES,
    check_ct_header,
    check_slice_geometry,
    has_dicm_preamble,
    header_info,
    pixel_data_problem,
    read_dicom_header,
    resolve_rescale,
)
from .hu import finalize_hu, padding_to_hu, to_hu

__all__ = [
    "SeriesInfo",
    "list_dicom_series",
    "select_series",
    "check_unread_files",
    "read_dicom_series",
]

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
            d,
            f"no DICOM series found ({len(files)} file(s), none readable as a DICOM image: {shown})",
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
    return _select(Path(folder), series_uid)[0]


def _select(d: Path, series_uid: str | None) -> tuple[SeriesInfo, list[SeriesInfo]]:
    """:func:`select_series`, also returning every series of the folder."""
    series = list_dicom_series(d)
    chosen = _choose(d, series, series_uid)
    return chosen, series


def _choose(d: Path, series: list[SeriesInfo], series_uid: str | None) -> SeriesInfo:
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
            log.info(
                "%s: reading CT series %s; skipped: %s",
                d,
                ct[0].uid,
                "; ".join(o.summary() for o in others),
            )
        return ct[0]
    if not ct:
        raise series[0].problem  # names the first file and why it is not CT
    raise NoSeriesError(
        d,
        f"{len(ct)} CT series; choose one with series_uid= / --series UID: "
        + "; ".join(s.summary() for s in ct),
    )


def check_unread_files(
    folder: str | os.PathLike, series: list[SeriesInfo], chosen: SeriesInfo
) -> None:
    """Refuse a DICOM-looking file of ``folder`` that GDCM left out of every series and that may
    belong to ``chosen`` (see the module docstring).

    Raises:
        DicomError: naming the file: unreadable; of the chosen series; a CT image object without a
            ``SeriesInstanceUID`` (header cut short).
    """
    d = Path(folder)
    listed = {Path(f).name for s in series for f in s.files}
    for p in sorted(d.iterdir()):
        if p.name in listed or p.name.startswith(".") or not p.is_file():
            continue  # hidden files (macOS "._IM0001.dcm" companions ...) are not slices
        if not (p.name.lower().endswith(DICOM_SUFFIXES) or has_dicm_preamble(p)):
            continue
        try:
            ds = read_dicom_header(p, defer=True)
        except DicomError as e:
            raise DicomError(
                p,
                f"unreadable DICOM file in the series folder ({e.problem}); a damaged slice would be left out "
                "of the series: repair or remove it",
            ) from e
        uid = ds.get("SeriesInstanceUID", None)
        uid = str(uid) if uid not in (None, "") else None
        if uid == chosen.uid:
            problem = pixel_data_problem(ds, p) or "damaged or unreadable pixel data"
            raise DicomError(
                p,
                f"{problem}; the series reader left this slice of series {uid} out: repair or remove the file "
                "(the series would be converted without it)",
            )
        if uid is None:
            meta = getattr(ds, "file_meta", None)
            sop = str(
                ds.get("SOPClassUID", "")
                or (meta.get("MediaStorageSOPClassUID", "") if meta else "")
                or ""
            )
            if sop in CT_SOP_CLASSES or len(ds) == 0:
                raise DicomError(
                    p,
                    "DICOM file with an incomplete header (no SeriesInstanceUID; file cut short?); a damaged "
                    "slice would be left out of the series: repair or remove it",
                )
        log.info("%s: not part of series %s (SeriesInstanceUID %s); ignored", p, chosen.uid, uid)


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
            raise DicomError(
                f,
                f"orientation {list(np.round(iop, 5))} differs from the series' {list(np.round(iop0, 5))}",
            )
    normal = np.cross(iop0[:3], iop0[3:])
    ipps = [h["image_position_patient"] for h in headers]
    if len(files) > 1 and any(p is None for p in ipps):
        bad = files[[p is None for p in ipps].index(True)]
        raise DicomError(bad, "no ImagePositionPatient; cannot place the slice in the series")
    if len(files) == 1:
        return np.zeros(1)
    pos = np.array([np.dot(normal, p) for p in ipps])
    return pos


def _series_rescale(files: list[str], headers: list[dict], rescale) -> list[float] | None:
    """Resolve the rescale of a series; fill in the assumed values (see the module docstring)."""
    missing = [i for i, h in enumerate(headers) if h["rescale_missing"]]
    if not missing:
        return None
    if len(missing) != len(headers):
        i = missing[0]
        raise DicomError(
            files[i],
            f"no RescaleSlope/RescaleIntercept ({', '.join(headers[i]['rescale_missing'])} missing) while "
            "other slices of the series have them: the series is inconsistent; repair the file or remove it",
        )
    slope, intercept, assumed = resolve_rescale(headers[0], files[0], rescale)
    log.warning(
        "%s: no RescaleSlope/RescaleIntercept in its %d slices; assuming slope %g, intercept %g as asked",
        Path(files[0]).parent,
        len(files),
        slope,
        intercept,
    )
    for h in headers:
        h["rescale_slope"], h["rescale_intercept"] = slope, intercept
    return assumed


def _check_spacing(files: list[str], pos: np.ndarray, h0: dict | None = None) -> None:
    if len(pos) < 2:
        if (
            h0 is not None
        ):  # one slice: its spacing comes from SpacingBetweenSlices or SliceThickness
            for key, name in (
                ("spacing_between_slices", "SpacingBetweenSlices"),
                ("slice_thickness", "SliceThickness"),
            ):
                v = h0[key]
                if v is not None:
                    if not (np.isfinite(v) and v > 0):
                        raise DicomError(
                            files[0],
                            f"invalid {name} {v:g} mm: the slice spacing of a one-slice series comes from "
                            "it and must be a finite number > 0",
                        )
                    break
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
    rescale: tuple[float, float] | None = None,
) -> CTImage:
    """Read a DICOM CT series folder into a 3D int16 HU :class:`CTImage`.

    Args:
        folder: folder holding the slices (not recursive; files that are not DICOM are ignored,
            damaged DICOM files are refused).
        series_uid: ``SeriesInstanceUID`` to read when the folder holds several CT series.
        progress: show a progress bar while checking slice headers.
        rescale: ``(slope, intercept)`` to assume when the slices have no ``RescaleSlope`` /
            ``RescaleIntercept`` (refused otherwise); recorded in ``meta["rescale_assumed"]``.

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
    s, all_series = _select(d, series_uid)
    check_unread_files(d, all_series, s)
    files = list(s.files)
    headers = []
    for f in progress_iter(files, progress, desc="DICOM headers", total=len(files)):
        ds = read_dicom_header(f, defer=True)
        check_ct_header(ds, f)
        problem = pixel_data_problem(ds, f)
        if problem:
            raise DicomError(f, problem)
        h = header_info(ds)
        check_slice_geometry(h, f)
        headers.append(h)
    assumed = _series_rescale(files, headers, rescale)
    pos = _check_headers(d, files, headers)
    if len(files) > 1:
        order = np.argsort(pos, kind="stable")
        if not np.array_equal(order, np.arange(len(files))):
            if np.array_equal(order, np.arange(len(files))[::-1]):
                log.info("%s: GDCM order is descending along the normal; reversed", d)
            else:
                log.warning(
                    "%s: GDCM order is not by position; re-sorted by ImagePositionPatient", d
                )
            files = [files[i] for i in order]
            headers = [headers[i] for i in order]
            pos = pos[order]
        _check_spacing(files, pos)
    else:
        _check_spacing(files, pos, headers[0])

    rescales = {(h["rescale_slope"], h["rescale_intercept"]) for h in headers}
    fractional = any(float(a) != int(a) or float(b) != int(b) for a, b in rescales)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if len(rescales) > 1 or fractional:
        reader.SetOutputPixelType(sitk.sitkFloat32)  # per-slice rescale must not be truncated
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise DicomError(
            d, f"SimpleITK could not read series {s.uid}: {str(e).strip().splitlines()[-1]}"
        ) from e
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
    if (
        assumed is not None
    ):  # no rescale tags: GDCM returned the stored values; apply the assumed rescale
        if (
            stored0 is not None
            and stored0.shape == arr.shape[1:]
            and not np.array_equal(arr[0], stored0)
        ):
            raise DicomError(
                files[0], "SimpleITK and pydicom disagree on the stored values of this slice"
            )
        if assumed != [1.0, 0.0]:
            arr = to_hu(arr, assumed[0], assumed[1], source=d)
        rescale_by = "metalung"
    elif stored0 is not None and stored0.shape == arr.shape[1:]:
        h0 = headers[0]
        expected = to_hu(stored0, h0["rescale_slope"], h0["rescale_intercept"], source=files[0])
        if np.array_equal(arr[0], expected):
            pass
        elif rescales != {(1.0, 0.0)} and np.array_equal(arr[0], stored0):
            log.warning(
                "%s: the series reader returned stored values; applying the rescale here", d
            )
            arr = np.stack(
                [
                    to_hu(arr[k], h["rescale_slope"], h["rescale_intercept"], source=files[k])
                    for k, h in enumerate(headers)
                ]
            )
            rescale_by = "metalung"
        else:
            diff = np.abs(arr[0].astype(np.float64) - expected)
            raise DicomError(
                files[0],
                f"SimpleITK and pydicom disagree on the HU of this slice (max difference {diff.max():g}); "
                "cannot tell whether the rescale was applied",
            )

    pads = {
        (
            h["pixel_padding_value"],
            h["pixel_padding_range_limit"],
            h["rescale_slope"],
            h["rescale_intercept"],
        )
        for h in headers
    }
    if len(pads) == 1:
        pv, pl, sl, ic = next(iter(pads))
        arr16, hinfo = finalize_hu(
            arr, padding_to_hu(pv, sl, ic), padding_to_hu(pl, sl, ic), source=d
        )
    else:  # per-slice padding definitions
        slices, hinfo = [], {"padding_mapped": 0, "clipped_high": 0, "rounded": False}
        for k, h in enumerate(headers):
            a, info = finalize_hu(
                arr[k],
                padding_to_hu(h["pixel_padding_value"], h["rescale_slope"], h["rescale_intercept"]),
                padding_to_hu(
                    h["pixel_padding_range_limit"], h["rescale_slope"], h["rescale_intercept"]
                ),
                source=files[k],
            )
            slices.append(a)
            hinfo = {
                k2: (hinfo[k2] or info[k2]) if k2 == "rounded" else hinfo[k2] + info[k2]
                for k2 in hinfo
            }
        arr16 = np.stack(slices)
    out = sitk.GetImageFromArray(arr16)
    out.CopyInformation(img)
    check_geometry(out, d, DicomError)

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
            "rescale_assumed": assumed,
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
