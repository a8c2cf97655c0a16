"""Scanner model of the phantom: vendor profiles, reconstruction blur, noise, field of view.

Order of operations on the ideal HU volume (float32):

1. blur in-plane with a gaussian whose sigma (mm) stands for the reconstruction kernel (soft
   about 1.0 mm, sharp about 0.45 mm), applied after tissue composition;
2. add gaussian noise (sigma 14-68 HU per patient, higher with sharp kernels), optionally
   correlated in-plane (a small gaussian filter on the noise, renormalised to the target sigma);
3. round, clip to ``[-1024, 3071]`` (air -1000 + noise stays >= -1024);
4. voxels outside the circular reconstruction field of view are padding: ``-1024`` in the HU
   NIfTI (what ``metalung convert`` produces), the vendor's ``padding_value`` (a *stored* value,
   DICOM ``PixelPaddingValue``) in the DICOM series.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["VENDOR_PROFILES", "sample_scanner", "apply_scanner", "fov_disc", "HU_MIN", "HU_MAX"]

HU_MIN = -1024
HU_MAX = 3071

#: per manufacturer: DICOM Manufacturer string, RescaleIntercept choices, stored padding value,
#: kernels {name: gaussian sigma in mm}
VENDOR_PROFILES: dict[str, dict] = {
    "SIEMENS": {
        "manufacturer": "SIEMENS",
        "intercepts": (-1024,),
        "padding_value": -2000,
        "kernels": {"B30f": 1.0, "B45f": 0.75, "B70f": 0.45, "I50f": 0.6},
    },
    "GE": {
        "manufacturer": "GE MEDICAL SYSTEMS",
        "intercepts": (-1024,),
        "padding_value": -2000,
        "kernels": {"STANDARD": 0.95, "LUNG": 0.5, "BONE": 0.55},
    },
    "TOSHIBA": {
        "manufacturer": "TOSHIBA",
        "intercepts": (0, -1024),
        "padding_value": -2048,
        "kernels": {"FC13": 1.0, "FC52": 0.6, "FC86": 0.45},
    },
    "UIH": {
        "manufacturer": "UIH",
        "intercepts": (-1024, 0),
        "padding_value": -3024,
        "kernels": {"B_SOFT_B": 1.0, "B_SHARP_C": 0.5, "L_LUNG_B": 0.55},
    },
}


def sample_scanner(rng: np.random.Generator, vendor: str | None = None) -> dict:
    """Draw a scanner setting: vendor, kernel, noise, rescale intercept and padding.

    Returns:
        dict with ``vendor`` (profile key), ``manufacturer`` (DICOM string), ``kernel``,
        ``kernel_sigma_mm``, ``noise_sigma_hu``, ``noise_corr_px`` (in-plane correlation, gaussian
        sigma in pixels, 0 = white), ``rescale_intercept``, ``padding_value`` (stored value outside
        the field of view) and ``padding_hu`` (the same in HU).
    """
    names = sorted(VENDOR_PROFILES)
    key = vendor if vendor is not None else names[int(rng.integers(len(names)))]
    prof = VENDOR_PROFILES[key]
    kernels = sorted(prof["kernels"])
    kernel = kernels[int(rng.integers(len(kernels)))]
    sigma = float(prof["kernels"][kernel])
    # calibrated on real chest CT (docs/phantom.md): the parenchyma's low tail (p5) of real scans
    noise = float(rng.uniform(14.0, 37.0) if sigma >= 0.9 else rng.uniform(25.0, 68.0))
    intercept = int(prof["intercepts"][int(rng.integers(len(prof["intercepts"])))])
    pad = int(prof["padding_value"])
    return {
        "vendor": key,
        "manufacturer": prof["manufacturer"],
        "kernel": kernel,
        "kernel_sigma_mm": sigma,
        "noise_sigma_hu": round(noise, 2),
        "noise_corr_px": round(float(rng.uniform(0.0, 0.8)), 3),
        "rescale_intercept": intercept,
        "padding_value": pad,
        "padding_hu": pad + intercept,
    }


def fov_disc(ny: int, nx: int, radius_fraction: float = 1.0) -> np.ndarray:
    """Boolean ``(ny, nx)``: inside the inscribed circular field of view (pixel centres)."""
    yy, xx = np.ogrid[:ny, :nx]
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    r = radius_fraction * min(ny, nx) / 2.0
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def apply_scanner(
    hu: np.ndarray,
    spacing_zyx,
    scanner: dict,
    rng: np.random.Generator,
    fov: np.ndarray | None = None,
) -> np.ndarray:
    """Blur, add noise, round and clip a chunk of slices; return int16 HU.

    Args:
        hu: float32 ``(nz, ny, nx)`` ideal HU (modified in place by the blur).
        spacing_zyx: voxel size (mm).
        scanner: a :func:`sample_scanner` dict.
        rng: generator for the noise (consumed: call chunk after chunk in order for
            reproducible volumes).
        fov: boolean ``(ny, nx)`` field of view; outside it the result is -1024.

    Returns:
        int16 array of the same shape, values in ``[-1024, 3071]``.
    """
    _, dy, dx = spacing_zyx
    s = float(scanner["kernel_sigma_mm"])
    if s > 0:
        hu = ndimage.gaussian_filter(hu, sigma=(0.0, s / dy, s / dx), mode="nearest", truncate=3.0)
    sigma = float(scanner["noise_sigma_hu"])
    if sigma > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        c = float(scanner.get("noise_corr_px", 0.0))
        if c > 0.05:
            noise = ndimage.gaussian_filter(noise, sigma=(0.0, c, c), mode="wrap", truncate=3.0)
            # variance of white noise after a normalised 2D gaussian of sigma c: 1 / (4 pi c^2)
            noise *= np.float32(1.0 / np.sqrt(_gauss_power(c)))
        hu = hu + noise * np.float32(sigma)
    out = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    if fov is not None:
        out[:, ~fov] = HU_MIN
    return out


def _gauss_power(c: float) -> float:
    """Sum of squared taps of the 1D sampled gaussian (sigma ``c`` px) as used by scipy, squared (2D)."""
    r = int(3.0 * c + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / c) ** 2)
    k /= k.sum()
    return float((k * k).sum()) ** 2
