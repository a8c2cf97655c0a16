"""A MONAI ``ImageReader`` for DICOM CT that yields int16 HU with padding mapped to air.

``monai.transforms.LoadImage(d)(reader=DicomSeriesHUReader())`` on a DICOM series folder returns
the same array layout and affine as MONAI's own ``ITKReader`` (both rely on GDCM's slice order and
geometry), with three differences that matter for CT:

* values are int16 HU with padding / outside-FOV values (< -1024 HU, ``PixelPaddingValue``) set to
  -1024 (``ITKReader`` keeps -3024 / -2000 ...); ``LoadImage`` casts to float32 unless it is
  created with ``dtype=None`` or ``dtype=numpy.int16``;
* a folder that also holds non-image DICOM (a DICOM-SEG, RTSTRUCT ...) reads its CT series
  (``ITKReader`` takes GDCM's first series, which may be the SEG);
* bad input raises the typed errors of :mod:`metalung_monai.errors`. Note that when a reader
  given to ``LoadImage(reader=...)`` raises in ``read()``, MONAI silently tries its default readers
  next (``ITKReader`` would then return raw padding, or the SEG series). With ``strict=True`` (the
  default) ``read()`` therefore returns the error wrapped in a :class:`ReadFailure` and
  ``get_data()`` raises it, which ``LoadImage`` does not intercept.

Example::

    from monai.transforms import LoadImaged
    from metalung_monai.io import DicomSeriesHUReader

    load = LoadImaged(keys="image", reader=DicomSeriesHUReader(), dtype=None, ensure_channel_first=True)
    sample = load({"image": "/data/patient01/CT"})   # MetaTensor int16 (1, x, y, z), affine RAS
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..errors import MetaLungError
from .ct_image import CTImage
from .readers import DICOM_SUFFIXES, read_ct

__all__ = ["DicomSeriesHUReader", "ReadFailure"]


class ReadFailure:
    """An error met in :meth:`DicomSeriesHUReader.read`, raised again by ``get_data``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"ReadFailure({self.error!r})"


_META_KEYS = (
    "format",
    "manufacturer",
    "series_instance_uid",
    "patient_id",
    "modality",
    "rescale_slope",
    "rescale_intercept",
    "padding_mapped",
)


class DicomSeriesHUReader(ImageReader):
    """Read DICOM CT series folders (or single CT slices) as int16 HU for MONAI pipelines.

    Args:
        series_uid: ``SeriesInstanceUID`` to read when a folder holds several CT series
            (``None``: the folder's only CT series; several -> :class:`NoSeriesError`).
        channel_dim: as in ``ITKReader``; ``None`` -> ``original_channel_dim`` = "no_channel".
        reverse_indexing: ``False`` (default, like ``ITKReader``): array axes in ITK index order
            ``(x, y, z)``; ``True``: numpy order ``(z, y, x)``.
        affine_lps_to_ras: convert the affine to RAS (default, like ``ITKReader``).
        progress: progress bar while reading slice headers.
        strict: defer read errors to ``get_data`` (see the module docstring) so that MONAI's
            ``LoadImage`` cannot fall back to another reader; ``False``: ``read`` raises.
        rescale: ``(slope, intercept)`` to assume for DICOM files without ``RescaleSlope`` /
            ``RescaleIntercept`` (refused otherwise; see :mod:`.dicom_slice`).
    """

    def __init__(
        self,
        series_uid: str | None = None,
        channel_dim: str | int | None = None,
        reverse_indexing: bool = False,
        affine_lps_to_ras: bool = True,
        progress: bool = False,
        strict: bool = True,
        rescale: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.strict = strict
        self.rescale = rescale
        self.series_uid = series_uid
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.reverse_indexing = reverse_indexing
        self.affine_lps_to_ras = affine_lps_to_ras
        self.progress = progress

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True when every name is a folder or a DICOM file (``.dcm``/``.dicom``/``.ima``)."""
        for name in ensure_tuple(filename):
            p = Path(f"{name}")
            if not (p.is_dir() or p.name.lower().endswith(DICOM_SUFFIXES)):
                return False
        return True

    def read(
        self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs
    ) -> CTImage | list[CTImage] | ReadFailure:
        """Read one or several folders / slices; returns :class:`CTImage` object(s).

        ``kwargs`` may override ``series_uid``. With ``strict`` an input error is returned as a
        :class:`ReadFailure` (raised by :meth:`get_data`) instead of being raised here.
        """
        series_uid = kwargs.get("series_uid", self.series_uid)
        names = ensure_tuple(data)
        out = []
        for name in names:
            p = Path(f"{name}")
            try:
                out.append(
                    read_ct(
                        p,
                        series_uid=series_uid if p.is_dir() else None,
                        progress=self.progress,
                        rescale=self.rescale,
                    )
                )
            except MetaLungError as e:
                if not self.strict:
                    raise
                return ReadFailure(e)
        return out if len(names) > 1 else out[0]

    def _affine(self, img) -> np.ndarray:
        nd = img.GetDimension()
        direction = np.asarray(img.GetDirection(), dtype=float).reshape(nd, nd)
        spacing = np.asarray(img.GetSpacing(), dtype=float)
        origin = np.asarray(img.GetOrigin(), dtype=float)
        sr = min(max(nd, 1), 3)
        affine = np.eye(sr + 1)
        affine[:sr, :sr] = direction[:sr, :sr] @ np.diag(spacing[:sr])
        affine[:sr, -1] = origin[:sr]
        return orientation_ras_lps(affine) if self.affine_lps_to_ras else affine

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Array (int16 HU) and MONAI metadata (``affine``, ``original_affine``, ``spatial_shape``,
        ``space``, ``spacing``, ``original_channel_dim``, plus the HU provenance keys)."""
        import SimpleITK as sitk

        if isinstance(img, ReadFailure):
            raise img.error
        arrays, compatible = [], {}
        for ct in ensure_tuple(img):
            arr = sitk.GetArrayFromImage(ct.image)  # numpy order (z, y, x)
            data = arr if self.reverse_indexing else arr.T
            header = {k: ct.meta.get(k) for k in _META_KEYS}
            header["spacing"] = np.asarray(ct.image.GetSpacing())
            header[MetaKeys.ORIGINAL_AFFINE] = self._affine(ct.image)
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(ct.image.GetSize())
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = (
                float("nan") if self.channel_dim is None else self.channel_dim
            )
            arrays.append(np.ascontiguousarray(data))
            _copy_compatible_dict(header, compatible)
        return _stack_images(arrays, compatible), compatible
