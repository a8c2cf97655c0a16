"""Scanner model of the phantom: vendor profiles, kernel blur, noise, field of view."""

from __future__ import annotations

import numpy as np
import pytest

from metalung_monai.phantom.scanner import VENDOR_PROFILES, apply_scanner, fov_disc, sample_scanner


def _scanner(blur=0.0, noise=0.0, corr=0.0):
    return {"kernel_sigma_mm": blur, "noise_sigma_hu": noise, "noise_corr_px": corr}


@pytest.mark.parametrize("corr", [0.0, 0.6])
def test_noise_sigma_and_correlation(corr):
    out = apply_scanner(
        np.zeros((6, 96, 96), np.float32),
        (2.5, 0.7, 0.7),
        _scanner(noise=25.0, corr=corr),
        np.random.default_rng(0),
    )
    assert out.dtype == np.int16
    assert out.std() == pytest.approx(25.0, rel=0.05)
    a = out[:, :, :-1].astype(float).ravel()
    b = out[:, :, 1:].astype(float).ravel()
    r = np.corrcoef(a, b)[0, 1]
    if corr == 0.0:
        assert abs(r) < 0.05
    else:
        assert r > 0.3


def test_kernel_blur_width():
    """A step edge blurred by a gaussian of sigma s mm: 10-90 % rise over 2.56 s."""
    hu = np.full((1, 64, 200), -1000.0, np.float32)
    hu[..., 100:] = 0.0
    s_mm, px = 1.0, 0.25
    out = apply_scanner(hu, (1.0, px, px), _scanner(blur=s_mm), np.random.default_rng(0)).astype(
        float
    )
    prof = out[0, 32]
    x10 = np.argmax(prof > -900)
    x90 = np.argmax(prof > -100)
    assert (x90 - x10) * px == pytest.approx(2.56 * s_mm, abs=2 * px)


def test_field_of_view_and_clipping():
    hu = np.full((2, 64, 64), -1000.0, np.float32)
    hu[:, 30:34, 30:34] = 5000.0
    fov = fov_disc(64, 64)
    out = apply_scanner(
        hu, (1.0, 1.0, 1.0), _scanner(noise=30.0), np.random.default_rng(1), fov=fov
    )
    assert fov[32, 32] and not fov[0, 0] and fov.sum() == pytest.approx(np.pi * 32**2, rel=0.03)
    assert np.all(out[:, ~fov] == -1024)
    assert out.min() >= -1024 and out.max() == 3071


def test_vendor_sampling():
    rng = np.random.default_rng(0)
    draws = [sample_scanner(rng) for _ in range(200)]
    assert {d["vendor"] for d in draws} == set(VENDOR_PROFILES)
    assert {d["rescale_intercept"] for d in draws} == {0, -1024}
    assert {d["padding_value"] for d in draws} == {-2000, -2048, -3024}
    for d in draws:
        prof = VENDOR_PROFILES[d["vendor"]]
        assert d["manufacturer"] == prof["manufacturer"] and d["kernel"] in prof["kernels"]
        assert d["padding_hu"] == d["padding_value"] + d["rescale_intercept"]
        if d["kernel_sigma_mm"] >= 0.9:
            assert 14 <= d["noise_sigma_hu"] <= 37
        else:
            assert 25 <= d["noise_sigma_hu"] <= 68
    assert (
        sample_scanner(np.random.default_rng(1), vendor="GE")["manufacturer"]
        == "GE MEDICAL SYSTEMS"
    )
