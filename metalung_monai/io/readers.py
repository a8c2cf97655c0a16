"""Read any supported CT file into int16 HU (:func:`read_ct`) and a binary mask on its grid
(:func:`read_mask`).

Dispatch of :func:`read_ct` by what the path is:

=================================  ==================  =============================================
path                               format              reader
=================================  ==================  =============================================
folder                             ``dicom-series``    SimpleITK GDCM series reader (:mod:`.dicom_series`)
``.dcm`` / ``.dicom`` / ``.ima``   ``dicom-slice``     pydicom, 2D (:mod:`.dicom_slice`)
file with a DICM preamble          ``dicom-slice``     pydicom, 2D
``.nii`` / ``.nii.gz``             ``nifti``           SimpleITK
``.nrrd`` / ``.nhdr``              ``nrrd``            SimpleITK
``.mha`` / ``.mhd``                ``mha``             SimpleITK
=================================  ==================  =============================================

NIfTI is read with SimpleITK (not nibabel) so that every path yields a ``SimpleITK.Image`` with
LPS geometry; ITK applies ``scl_slope``/``scl_inter`` as nibabel does, and its sform/qform
choice gives the same array and (after LPS->RAS) the same affine as MONAI's default
``NibabelReader`` for the files metalung-monai writes and for ordinary scanner conversions
(tested in ``tests/test_io_readers.py``). Volumes are taken to hold HU already (no
rescale is applied); values are rounded, padding (< -1024) mapped to -1024 and clipped to int16.

Before SimpleITK reads a volume image or mask, :func:`.volume_file.check_volume_file` checks the
file itself, because ITK accepts damaged files silently: the header's voxel size must be a finite
number > 0 (ITK turns a NaN/0 NIfTI ``pixdim`` into 1 mm), the whole payload is read once in
bounded chunks and must hold as many bytes as the header announces with no decompression error
(CRC included; ITK reads a cut ``.nii.gz`` with zeros and flipped bytes as garbage), and float data
must not hold NaN or infinity (ITK turns both into 0 in NIfTI). After reading, the image's spacing,
origin and direction must be finite (:func:`check_geometry`).

:func:`probe_ct` / :func:`probe_mask` run the header-level checks only (no voxel data is read):
``metalung convert`` calls them on every input before it writes anything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatchError, InputError, MaskError, UnsupportedFormatError
from ..utils.atomic import full_suffix
from .ct_image import CTImage, base_meta, check_geometry
from .dicom_series import read_dicom_series, select_series
from .dicom_slice import (
    DICOM_SUFFIXES,
    check_rescale_option,
    has_dicm_preamble,
    probe_dicom_slice,
    read_dicom_slice,
)
from .hu import finalize_hu
from .volume_file import check_volume_file, check_volume_header

__all__ = [
    "DICOM_SUFFIXES",
    "VOLUME_SUFFIXES",
    "MASK_SUFFIXES",
    "detect_format",
    "probe_ct",
    "probe_mask",
    "read_ct",
    "read_volume",
    "read_mask",
    "binarize_mask",
    "check_same_grid",
]

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
}
MASK_SUFFIXES = tuple(VOLUME_SUFFIXES) + (".png", ".tif", ".tiff", ".bmp")


def detect_format(path: str | os.PathLike) -> str:
    """Format name of ``path``: ``dicom-series``, ``dicom-slice``, ``nifti``, ``nrrd``, ``mha``,
    ``thesis-pickle`` (``.pkl``/``.pickle``; read by :mod:`.thesis_pickle`, not :func:`read_ct`).

    Raises:
        InputError: the path does not exist.
        UnsupportedFormatError: any other file type.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom-series"
    if not p.exists():
        raise InputError(p, "file or folder does not exist")
    suffix = full_suffix(p).lower()
    if suffix in VOLUME_SUFFIXES:
        return VOLUME_SUFFIXES[suffix]
    if suffix in DICOM_SUFFIXES:
        return "dicom-slice"
    if suffix in (".pkl", ".pickle"):
        return "thesis-pickle"
    if has_dicm_preamble(p):
        return "dicom-slice"
    raise UnsupportedFormatError(
        p,
        f"unsupported file type '{suffix or p.name}'; expected a DICOM folder or file, "
        ".nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd (or a thesis .pkl for `metalung convert`)",
    )


def _sitk_read(p: Path, what: str):
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
        raise InputError(p, f"cannot read {what} ({last})") from e


def read_volume(path: str | os.PathLike) -> CTImage:
    """Read a NIfTI / NRRD / MetaImage CT volume (already HU) into an int16 :class:`CTImage`.

    The file is checked first (:func:`.volume_file.check_volume_file`): header voxel size, the
    whole payload (truncation, decompression errors, CRC), NaN / infinite voxels.

    Raises:
        InputError: unreadable, truncated or corrupt payload, voxel size not a finite number > 0,
            NaN or infinite voxels, more than one component per voxel, not 2D/3D.
    """
    import SimpleITK as sitk

    p = Path(path)
    fmt = detect_format(p)
    check_volume_file(p, fmt)
    img = _sitk_read(p, f"{fmt} image")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            p, f"{img.GetNumberOfComponentsPerPixel()} components per voxel; a CT image has 1"
        )
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() not in (2, 3):
        raise InputError(p, f"{img.GetDimension()}D image; expected 2D or 3D")
    check_geometry(img, p)
    arr = sitk.GetArrayViewFromImage(img)
    arr16, info = finalize_hu(arr, source=p)
    out = sitk.GetImageFromArray(arr16)
    out.CopyInformation(img)
    meta = base_meta(p, fmt)
    meta.update(
        {
            "modality": "CT",
            "padding_mapped": info["padding_mapped"],
            "clipped_high": info["clipped_high"],
            "rounded": info["rounded"],
            "original_pixel_type": img.GetPixelIDTypeAsString(),
        }
    )
    return CTImage(image=out, meta=meta)


def probe_ct(
    path: str | os.PathLike,
    series_uid: str | None = None,
    rescale: tuple[float, float] | None = None,
) -> str:
    """Header-level checks of a CT input, without reading its voxels; returns its format.

    Volumes: the header's voxel size (and that a detached data file exists). A DICOM file: readable,
    CT, pixel data as long as Rows x Columns x BitsAllocated/8, finite PixelSpacing / position,
    rescale tags present or ``rescale`` given. A DICOM folder: the series choice
    (:func:`.dicom_series.select_series`). Thesis pickles are not probed (their rows are all
    validated before their first case is written).

    Raises:
        The same errors :func:`read_ct` raises for these problems.
    """
    p = Path(path)
    fmt = detect_format(p)
    if series_uid is not None and fmt != "dicom-series":
        raise InputError(p, "series_uid / --series only applies to a DICOM folder")
    if fmt == "dicom-series":
        select_series(p, series_uid)
    elif fmt == "dicom-slice":
        probe_dicom_slice(p, rescale)
    elif fmt in ("nifti", "nrrd", "mha"):
        check_volume_header(p, fmt)
    return fmt


def read_ct(
    path: str | os.PathLike,
    series_uid: str | None = None,
    progress: bool = False,
    rescale: tuple[float, float] | None = None,
) -> CTImage:
    """Read a CT image in any supported format as int16 HU with its geometry.

    Args:
        path: DICOM series folder, single DICOM file, ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``,
            ``.mha``/``.mhd``.
        series_uid: for a folder holding several CT series, the ``SeriesInstanceUID`` to read.
        progress: progress bar while reading a DICOM series' headers.
        rescale: DICOM only: ``(slope, intercept)`` to assume for files without
            ``RescaleSlope``/``RescaleIntercept`` (refused by default; see
            :mod:`.dicom_slice`); recorded in ``meta["rescale_assumed"]``.

    Returns:
        :class:`CTImage` (``image``: ``SimpleITK.Image`` int16 HU; 3D for series and volumes,
        2D for one DICOM slice; ``meta``: provenance, see :class:`CTImage`).

    Raises:
        InputError: missing path, NaN / infinite voxels, bad voxel size, truncated or corrupt
        payload; :class:`UnsupportedFormatError`: other file types;
        :class:`DicomError` / :class:`NoSeriesError` / :class:`SliceSizeError`: DICOM problems.
    """
    p = Path(path)
    fmt = detect_format(p)
    if series_uid is not None and fmt != "dicom-series":
        raise InputError(p, "series_uid / --series only applies to a DICOM folder")
    if rescale is not None:
        rescale = check_rescale_option(rescale, "rescale")
    if fmt == "dicom-series":
        return read_dicom_series(p, series_uid=series_uid, progress=progress, rescale=rescale)
    if fmt == "dicom-slice":
        return read_dicom_slice(p, rescale=rescale)
    if fmt == "thesis-pickle":
        raise UnsupportedFormatError(
            p,
            "a thesis pickle holds many slices; convert it with `metalung convert` / convert_thesis_pickle",
        )
    return read_volume(p)


def binarize_mask(
    arr: np.ndarray, source: str | os.PathLike = "<mask>", label: int | None = None
) -> np.ndarray:
    """Turn a mask array into uint8 {0, 1}.

    Values {0, 1} and {0, 255} (or subsets) are binary; with ``label`` the voxels equal to
    ``label`` become 1 and every other value 0 (for multi-label maps).

    Raises:
        MaskError: NaN or infinity, or values other than {0, 1} / {0, 255} (the values found are
        listed).
    """
    a = np.asarray(arr)
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise MaskError(source, f"{int(np.isnan(a).sum())} NaN value(s) in the mask")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise MaskError(source, f"{int(np.isinf(a).sum())} infinite value(s) in the mask")
    if a.dtype.kind not in "biuf":
        raise MaskError(source, f"mask pixel type {a.dtype} is not numeric")
    if label is not None:
        return (a == label).astype(np.uint8)
    values = np.unique(a)
    vset = {float(v) for v in values}
    if vset <= {0.0, 1.0}:
        return (a == 1).astype(np.uint8)
    if vset <= {0.0, 255.0}:
        return (a == 255).astype(np.uint8)
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
    raise MaskError(
        source,
        f"not a binary mask: values found {shown} ({len(values)} distinct); expected {{0, 1}} or "
        "{0, 255} (pick one label of a label map with label=/--mask-label)",
    )


def _grid_diff(
    a, b, rtol_spacing: float = 1e-3, origin_tol_voxels: float = 0.05, dir_tol: float = 1e-4
) -> list[str]:
    out = []
    if a.GetDimension() != b.GetDimension():
        return [f"dimension {a.GetDimension()}D vs {b.GetDimension()}D"]
    if a.GetSize() != b.GetSize():
        return [f"size {list(a.GetSize())} vs {list(b.GetSize())}"]
    sa, sb = np.asarray(a.GetSpacing()), np.asarray(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=rtol_spacing, atol=1e-6):
        out.append(f"spacing {list(np.round(sa, 5))} vs {list(np.round(sb, 5))} mm")
    oa, ob = np.asarray(a.GetOrigin()), np.asarray(b.GetOrigin())
    if np.any(np.abs(oa - ob) > origin_tol_voxels * np.minimum(sa, sb)):
        out.append(f"origin {list(np.round(oa, 3))} vs {list(np.round(ob, 3))} mm")
    da, db = np.asarray(a.GetDirection()), np.asarray(b.GetDirection())
    if np.max(np.abs(da - db)) > dir_tol:
        out.append(f"direction {list(np.round(da, 4))} vs {list(np.round(db, 4))}")
    return out


def check_same_grid(
    image, reference, source: str | os.PathLike, reference_name: str = "the image"
) -> None:
    """Raise :class:`GeometryMismatchError` unless ``image`` lies on ``reference``'s voxel grid.

    Tolerances: spacing relative 1e-3, origin 5 % of a voxel per axis, direction cosines 1e-4.
    """
    diffs = _grid_diff(image, reference)
    if diffs:
        raise GeometryMismatchError(
            source, f"grid does not match {reference_name}: " + "; ".join(diffs)
        )


def _mask_suffix(p: Path) -> str:
    if not p.is_file():
        raise InputError(p, "mask file does not exist")
    suffix = full_suffix(p).lower()
    if suffix not in MASK_SUFFIXES:
        raise UnsupportedFormatError(
            p,
            f"unsupported mask type '{suffix or p.name}'; expected .nii/.nii.gz, .nrrd, .mha or a 2D .png",
        )
    return suffix


def probe_mask(path: str | os.PathLike) -> None:
    """Header-level checks of a mask file (exists, supported type, header voxel size), without
    reading its voxels.

    Raises:
        InputError, UnsupportedFormatError: as :func:`read_mask` for these problems.
    """
    p = Path(path)
    suffix = _mask_suffix(p)
    if suffix in VOLUME_SUFFIXES:
        check_volume_header(p, VOLUME_SUFFIXES[suffix])


def read_mask(
    path: str | os.PathLike,
    reference,
    label: int | None = None,
    reference_name: str | None = None,
):
    """Read a binary mask and check it lies on the reference image's grid.

    Args:
        path: ``.nii``/``.nii.gz``/``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (geometry from the file),
            or ``.png``/``.tif``/``.bmp`` for a 2D reference (geometry taken from the reference;
            only the size is checked). A single-slice 3D mask is accepted for a 2D reference.
        reference: the image (``SimpleITK.Image`` or :class:`CTImage`) the mask belongs to.
        label: read a label map: voxels equal to ``label`` -> 1, others 0.
        reference_name: how to call the reference in errors (default: ``CTImage.meta["source"]``).

    Returns:
        ``SimpleITK.Image`` uint8 {0, 1} with the reference's geometry.

    Raises:
        InputError: missing/unreadable file, truncated or corrupt payload, voxel size not a finite
        number > 0; :class:`UnsupportedFormatError`: other types;
        :class:`MaskError`: NaN or infinite values, non-binary, several components per pixel;
        :class:`GeometryMismatchError`: size/spacing/origin/direction differ (names both files).
    """
    import SimpleITK as sitk

    p = Path(path)
    if isinstance(reference, CTImage):
        reference_name = reference_name or reference.meta.get("source")
        reference = reference.image
    reference_name = f"image '{reference_name}'" if reference_name else "the image"
    suffix = _mask_suffix(p)
    if suffix in VOLUME_SUFFIXES:
        check_volume_file(p, VOLUME_SUFFIXES[suffix], value_error=MaskError, what="value")
    img = _sitk_read(p, "mask")
    planar = suffix in (".png", ".tif", ".tiff", ".bmp")
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        # greyscale saved as RGB(A): accept when all colour channels are equal
        chans = arr[..., :3] if arr.shape[-1] >= 3 else arr
        if not np.all(chans == chans[..., :1]):
            raise MaskError(
                p, f"colour mask with {img.GetNumberOfComponentsPerPixel()} different channels"
            )
        arr = chans[..., 0]
    binary = binarize_mask(arr, p, label=label)
    if binary.ndim == 3 and reference.GetDimension() == 2 and binary.shape[0] == 1:
        binary = binary[0]
        if not planar:
            img = img[:, :, 0]
    ref_size = tuple(reversed(reference.GetSize()))
    if binary.shape != ref_size:
        raise GeometryMismatchError(
            p,
            f"mask array shape {binary.shape} does not match {reference_name} of shape {ref_size} "
            "(numpy order)",
        )
    out = sitk.GetImageFromArray(binary)
    if planar:
        out.CopyInformation(reference)
        return out
    if img.GetDimension() == 4:
        raise MaskError(p, "4D mask")
    check_geometry(img, p)
    check_same_grid(img, reference, p, reference_name)
    out.CopyInformation(reference)
    return out
