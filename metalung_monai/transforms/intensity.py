"""Intensity transforms for display and network input: HU windowing and CLAHE.

Both follow MONAI's conventions: an array transform (``HUWindow``, ``CLAHE``) and a dictionary
twin (``HUWindowd``, ``CLAHEd``); channel-first input (``(C, H, W)`` or ``(C, H, W, D)``) as a
numpy array, a torch tensor or a ``MetaTensor``; the output has the type of the input (a
``MetaTensor`` keeps its meta data and affine) and is ``float32``. They work inside
``monai.transforms.Compose``.

.. warning::
    Neither preserves HU. They are for display and as the last step before a network. HU-based
    steps (lung masks, MetaLung tumour insertion, Lung-RADS measures) must run before them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type

__all__ = ["WINDOW_PRESETS", "HUWindow", "HUWindowd", "CLAHE", "CLAHEd"]

#: (window centre, window width) in HU of the usual CT display windows
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}


def _out_dtype(img):
    return torch.float32 if isinstance(img, torch.Tensor) else np.float32


class HUWindow(Transform):
    """Map HU linearly from a display window to ``output_range`` (float32).

    ``window_center - window_width / 2`` maps to ``output_range[0]`` and ``window_center +
    window_width / 2`` to ``output_range[1]``; with ``clip`` values outside the window are clipped
    to the range. The same as ``monai.transforms.ScaleIntensityRange(a_min=c - w/2, a_max=c + w/2,
    b_min, b_max, clip)`` stated in radiological window terms.

    Args:
        window_center: window level in HU (-600: lung window).
        window_width: window width in HU (1500), > 0.
        output_range: ``(low, high)`` of the output (``(0.0, 1.0)``).
        clip: clip to ``output_range``.
        preset: ``"lung"`` (-600/1500), ``"mediastinum"`` (40/400) or ``"bone"`` (400/1800);
            overrides ``window_center`` / ``window_width``.

    Raises:
        ValueError: non-positive width or an unknown preset.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        window_center: float = -600.0,
        window_width: float = 1500.0,
        output_range: tuple[float, float] = (0.0, 1.0),
        clip: bool = True,
        preset: str | None = None,
    ) -> None:
        if preset is not None:
            if preset not in WINDOW_PRESETS:
                raise ValueError(
                    f"HUWindow: unknown preset {preset!r}; choose from {sorted(WINDOW_PRESETS)}"
                )
            window_center, window_width = WINDOW_PRESETS[preset]
        if not window_width > 0:
            raise ValueError(f"HUWindow: window_width must be > 0 HU, got {window_width}")
        self.window_center = float(window_center)
        self.window_width = float(window_width)
        self.output_range = (float(output_range[0]), float(output_range[1]))
        self.clip = bool(clip)

    @property
    def hu_range(self) -> tuple[float, float]:
        """``(low, high)`` HU of the window."""
        half = self.window_width / 2.0
        return self.window_center - half, self.window_center + half

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the window to ``img`` (any shape; HU); returns float32 of the input's type."""
        lo, hi = self.hu_range
        b0, b1 = self.output_range
        if isinstance(img, torch.Tensor):
            x = img.to(torch.float32)
            out = (x - lo) / (hi - lo) * (b1 - b0) + b0
            if self.clip:
                out = out.clamp(min(b0, b1), max(b0, b1))
        else:
            x = np.asarray(img, dtype=np.float32)
            out = (x - lo) / (hi - lo) * (b1 - b0) + b0
            if self.clip:
                out = np.clip(out, min(b0, b1), max(b0, b1))
        out, *_ = convert_to_dst_type(out, img, dtype=_out_dtype(img))
        return out


class HUWindowd(MapTransform):
    """Dictionary twin of :class:`HUWindow` (same arguments after ``keys``)."""

    backend = HUWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        window_center: float = -600.0,
        window_width: float = 1500.0,
        output_range: tuple[float, float] = (0.0, 1.0),
        clip: bool = True,
        preset: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow(window_center, window_width, output_range, clip, preset)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation of a CT image (float32 in [0, 1]).

    The HU ``window`` is first mapped linearly to [0, 1] (clipped), then
    ``skimage.exposure.equalize_adapthist`` is applied per channel: per axial slice (``mode
    "2d"``, the default for volumes; every 2D image is one slice) or on the whole volume (``"3d"``).

    .. warning::
        For display and network input only: the output is no longer HU and cannot be mapped back.
        Never apply it before HU-based steps (MetaLung tumour insertion, lung masks).

    Args:
        clip_limit: contrast limit of skimage (0.01), in (0, 1].
        kernel_size: tile size in pixels (int or one per spatial axis of the equalised image);
            None: skimage's default, 1/8 of each dimension.
        nbins: histogram bins (256).
        window: ``(low, high)`` HU mapped to [0, 1] before equalisation (-1024, 600).
        mode: ``"2d"`` (per axial slice) or ``"3d"`` (whole volume, skimage nD).
        slice_axis: spatial axis (0-based, channel excluded) across which 3D input is sliced in
            ``"2d"`` mode; None: the axis closest to the patient's head-feet direction from a
            ``MetaTensor``'s affine, else the last spatial axis (MONAI's usual ``D``).

    Raises:
        ValueError: bad window, clip limit, nbins or mode.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        window: tuple[float, float] = (-1024.0, 600.0),
        mode: str = "2d",
        slice_axis: int | None = None,
    ) -> None:
        if not window[1] > window[0]:
            raise ValueError(f"CLAHE: window must be (low, high) with high > low, got {window}")
        if not 0 < clip_limit <= 1:
            raise ValueError(f"CLAHE: clip_limit must be in (0, 1], got {clip_limit}")
        if int(nbins) < 2:
            raise ValueError(f"CLAHE: nbins must be >= 2, got {nbins}")
        if mode not in ("2d", "3d"):
            raise ValueError(f"CLAHE: mode must be '2d' or '3d', got {mode!r}")
        self.clip_limit = float(clip_limit)
        self.kernel_size = kernel_size
        self.nbins = int(nbins)
        self.window = (float(window[0]), float(window[1]))
        self.mode = mode
        self.slice_axis = slice_axis

    def _axial_axis(self, img, n_spatial: int) -> int:
        if self.slice_axis is not None:
            if not -n_spatial <= self.slice_axis < n_spatial:
                raise ValueError(
                    f"CLAHE: slice_axis {self.slice_axis} out of range for {n_spatial} spatial axes"
                )
            return self.slice_axis % n_spatial
        affine = getattr(img, "affine", None)
        if affine is not None:
            from ..utils.orientation import canonical_axes

            space = str(getattr(img, "meta", {}).get("space", "RAS"))
            return canonical_axes(np.asarray(affine), 3, space=space).perm[0]
        return n_spatial - 1

    def _equalize(self, x: np.ndarray) -> np.ndarray:
        from skimage.exposure import equalize_adapthist

        if np.ptp(x) == 0:  # constant image: nothing to equalise (skimage would divide by 0)
            return x.astype(np.float32)
        # skimage treats any 3D array whose last axis has 3 or 4 elements as an RGB(A) picture;
        # a CT volume of 3 or 4 slices is not one: call the grey-level function it wraps
        clahe = getattr(equalize_adapthist, "__wrapped__", equalize_adapthist)
        out = clahe(x, kernel_size=self.kernel_size, clip_limit=self.clip_limit, nbins=self.nbins)
        return np.asarray(out, dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Equalise channel-first ``img`` of HU, ``(C, H, W)`` or ``(C, H, W, D)``."""
        arr = convert_data_type(img, np.ndarray)[0]
        if arr.ndim not in (3, 4):
            raise ValueError(
                f"CLAHE: expected channel-first (C, H, W) or (C, H, W, D), got shape {arr.shape}"
            )
        lo, hi = self.window
        x = np.clip((arr.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        out = np.empty_like(x)
        n_spatial = x.ndim - 1
        axis = self._axial_axis(img, n_spatial) if (n_spatial == 3 and self.mode == "2d") else None
        for c in range(x.shape[0]):
            if axis is None:
                out[c] = self._equalize(x[c])
            else:
                xc = np.moveaxis(x[c], axis, 0)
                oc = np.moveaxis(out[c], axis, 0)  # a view: writes go to out
                for k in range(xc.shape[0]):
                    oc[k] = self._equalize(xc[k])
        res, *_ = convert_to_dst_type(out, img, dtype=_out_dtype(img))
        return res


class CLAHEd(MapTransform):
    """Dictionary twin of :class:`CLAHE` (same arguments after ``keys``)."""

    backend = CLAHE.backend

    def __init__(
        self,
        keys: KeysCollection,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        window: tuple[float, float] = (-1024.0, 600.0),
        mode: str = "2d",
        slice_axis: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clahe = CLAHE(clip_limit, kernel_size, nbins, window, mode, slice_axis)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.clahe(d[key])
        return d
