"""The result of reading a CT file: an int16 HU SimpleITK image plus what was learnt on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["CTImage", "base_meta", "check_geometry"]


@dataclass
class CTImage:
    """A CT image in HU with its provenance.

    Attributes:
        image: ``SimpleITK.Image`` of pixel type int16 holding HU (air -1024 after padding is
            mapped, water 0); geometry (spacing in mm, origin, direction cosines, LPS) kept from the
            file. 3D for DICOM series and volumes, 2D for a single DICOM slice.
        meta: at least ``source`` (str path), ``format`` (``"dicom-series"``, ``"dicom-slice"``,
            ``"nifti"``, ``"nrrd"``, ``"mha"``), ``manufacturer``, ``series_instance_uid``,
            ``patient_id``, ``modality``, ``rescale_slope``, ``rescale_intercept`` (as found in the
            file; ``None`` when the format has none), ``padding_mapped`` (number of voxels set to
            -1024 because they were padding / outside the field of view). DICOM readers add
            ``files``, ``series_description``, ``pixel_padding_value`` and more;
            ``rescale_assumed`` is ``[slope, intercept]`` when a DICOM input had no rescale tags
            and the caller chose to assume them (``rescale=``), else ``None``.
    """

    image: Any
    meta: dict = field(default_factory=dict)

    @property
    def array(self) -> np.ndarray:
        """The HU voxels as a numpy array in SimpleITK order ((z, y, x) or (y, x)), int16."""
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(self.image)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm in SimpleITK index order ((x, y, z) or (x, y))."""
        return tuple(float(s) for s in self.image.GetSpacing())

    @property
    def ndim(self) -> int:
        return int(self.image.GetDimension())


def base_meta(source, fmt: str) -> dict:
    """Meta dictionary with every required key present (values ``None`` until known)."""
    return {
        "source": str(source),
        "format": fmt,
        "manufacturer": None,
        "series_instance_uid": None,
        "patient_id": None,
        "modality": None,
        "rescale_slope": None,
        "rescale_intercept": None,
        "padding_mapped": 0,
        "clipped_high": 0,
        "rescale_assumed": None,
    }


def check_geometry(image, source, error=None) -> None:
    """Raise unless the image's spacing is finite and > 0 and its origin and direction are finite.

    The last check after any reader: a header value that a reader turned into NaN, infinity or a
    zero / negative voxel size must not reach an output (the datalist would hold NaN, resampling
    would silently do nothing).

    Args:
        image: a ``SimpleITK.Image``.
        source: the file or folder to name in the error.
        error: exception class (default :class:`~metalung_monai.errors.InputError`).
    """
    error = error or InputError
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise error(
            source,
            f"voxel size {[float(v) for v in spacing]} mm: every value must be a finite number > 0",
        )
    if not np.all(np.isfinite(image.GetOrigin())):
        raise error(source, f"origin {list(image.GetOrigin())} is not finite")
    if not np.all(np.isfinite(image.GetDirection())):
        raise error(source, "direction cosines are not finite")
