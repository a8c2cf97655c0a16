"""HU window and CLAHE transforms: values, types, meta data, dictionary twins, Compose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRange
from skimage.exposure import equalize_adapthist

from metalung_monai.transforms import CLAHE, WINDOW_PRESETS, CLAHEd, HUWindow, HUWindowd


def chest_like(rng, shape=(1, 64, 64)) -> np.ndarray:
    """int16 HU: air around, soft tissue body, low-contrast lung with faint structures."""
    hu = np.full(shape, -1000, np.int16)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    body = ((yy - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + (
        (xx - shape[2] / 2) / (shape[2] * 0.45)
    ) ** 2 <= 1
    lung = ((yy - shape[1] / 2) / (shape[1] * 0.3)) ** 2 + (
        (xx - shape[2] / 2) / (shape[2] * 0.35)
    ) ** 2 <= 1
    base = np.where(lung, -850, np.where(body, 40, -1000)) + rng.normal(0, 15, shape[1:])
    base[lung & ((xx % 9) < 2)] += 60  # faint stripes
    hu[:] = np.round(base).astype(np.int16)
    return hu


def test_window_values_and_clipping():
    w = HUWindow(window_center=-600, window_width=1500)
    assert w.hu_range == (-1350.0, 150.0)
    x = np.array([[-2000, -1350, -600, 150, 1000]], np.int16)
    np.testing.assert_allclose(w(x), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(
        HUWindow(-600, 1500, clip=False)(x)[0, 0], (-2000 + 1350) / 1500, atol=1e-6
    )
    np.testing.assert_allclose(
        HUWindow(40, 400, output_range=(-1.0, 1.0))(np.array([40.0, 240.0, -160.0])),
        [0.0, 1.0, -1.0],
        atol=1e-6,
    )
    # same as MONAI's ScaleIntensityRange stated in window terms
    rng = np.random.default_rng(0)
    img = rng.integers(-1500, 1500, (1, 16, 16)).astype(np.int16)
    ref = ScaleIntensityRange(a_min=-1350, a_max=150, b_min=0.0, b_max=1.0, clip=True)(img)
    np.testing.assert_allclose(w(img), np.asarray(ref), atol=1e-6)


def test_window_presets():
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0) and WINDOW_PRESETS["mediastinum"] == (
        40.0,
        400.0,
    )
    for name, (c, wd) in WINDOW_PRESETS.items():
        w = HUWindow(preset=name)
        assert (w.window_center, w.window_width) == (c, wd)
        np.testing.assert_allclose(
            w(np.array([c - wd / 2, c, c + wd / 2])), [0.0, 0.5, 1.0], atol=1e-6
        )
    with pytest.raises(ValueError, match="preset"):
        HUWindow(preset="brain")
    with pytest.raises(ValueError, match="width"):
        HUWindow(window_width=0)


def test_window_types_dtypes_and_meta():
    hu = torch.tensor([[[-1350, -600], [150, 400]]], dtype=torch.int16)
    out_t = HUWindow()(hu)
    assert (
        isinstance(out_t, torch.Tensor)
        and not isinstance(out_t, MetaTensor)
        and out_t.dtype == torch.float32
    )
    out_n = HUWindow()(hu.numpy())
    assert isinstance(out_n, np.ndarray) and out_n.dtype == np.float32
    affine = torch.diag(torch.tensor([0.7, 0.7, 1.0, 1.0], dtype=torch.float64))
    mt = MetaTensor(hu, affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    out_m = HUWindow()(mt)
    assert isinstance(out_m, MetaTensor) and out_m.dtype == torch.float32
    assert out_m.meta["filename_or_obj"] == "case.nii.gz" and torch.equal(out_m.affine, affine)
    np.testing.assert_allclose(out_m.numpy(), [[[0.0, 0.5], [1.0, 1.0]]], atol=1e-6)
    d = HUWindowd(keys=["image"], preset="mediastinum")({"image": mt, "label": torch.ones(1, 2, 2)})
    np.testing.assert_allclose(
        d["image"].numpy(), [[[0.0, 0.0], [310 / 400, 1.0]]], atol=1e-6
    )  # -160..240 HU
    assert torch.equal(d["label"], torch.ones(1, 2, 2))


def test_clahe_2d_output_and_contrast():
    rng = np.random.default_rng(1)
    hu = chest_like(rng, (1, 128, 128))
    c = CLAHE()
    out = c(hu)
    assert out.shape == hu.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # equals skimage on the windowed image
    x = np.clip((hu[0].astype(np.float32) + 1024) / 1624, 0, 1)
    np.testing.assert_allclose(out[0], equalize_adapthist(x, clip_limit=0.01, nbins=256), atol=1e-5)
    # local contrast in the lung goes up (the stripes stand out more than with a plain window)
    lung = (slice(50, 78), slice(40, 88))
    plain = HUWindow(window_center=-212, window_width=1624)(hu)[0][lung]
    assert out[0][lung].std() > 1.5 * plain.std()
    # a larger clip limit gives more contrast
    assert CLAHE(clip_limit=0.05)(hu)[0][lung].std() > out[0][lung].std()


def test_clahe_volume_per_slice_follows_the_axial_axis():
    rng = np.random.default_rng(2)
    vol = np.concatenate(
        [chest_like(rng, (1, 48, 48))[..., None] + 10 * k for k in range(4)], axis=-1
    )  # (1,48,48,4)
    vol = vol.astype(np.int16)
    out = CLAHE()(vol)  # plain array: the last axis is the axial one
    assert out.shape == vol.shape
    for k in range(4):
        np.testing.assert_allclose(out[..., k], CLAHE()(vol[..., k]), atol=1e-6)
    # a MetaTensor whose first spatial axis runs head-feet: sliced along that axis
    moved = np.ascontiguousarray(np.moveaxis(vol, -1, 1))  # (1, 4, 48, 48)
    affine = torch.tensor(
        [[0.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64
    )
    mt = MetaTensor(torch.from_numpy(moved), affine=affine, meta={"space": "RAS"})
    got = CLAHE()(mt)
    assert (
        isinstance(got, MetaTensor)
        and got.dtype == torch.float32
        and torch.equal(got.affine, affine)
    )
    np.testing.assert_allclose(got.numpy(), np.moveaxis(out, -1, 1), atol=1e-6)
    # explicit slice_axis and the 3D mode
    np.testing.assert_allclose(CLAHE(slice_axis=0)(moved), got.numpy(), atol=1e-6)
    out3 = CLAHE(mode="3d")(vol)
    assert out3.shape == vol.shape and 0 <= out3.min() and out3.max() <= 1
    assert not np.allclose(out3, out)


def test_clahe_constant_image_types_and_dict():
    flat = torch.full((1, 16, 16), -1024, dtype=torch.int16)
    out = CLAHE()(flat)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and float(out.max()) == 0.0
    rng = np.random.default_rng(3)
    img = MetaTensor(torch.from_numpy(chest_like(rng)), meta={"filename_or_obj": "x.dcm"})
    pipe = Compose([CLAHEd(keys="image", clip_limit=0.02), HUWindowd(keys="raw", preset="lung")])
    d = pipe({"image": img, "raw": img})
    assert isinstance(d["image"], MetaTensor) and d["image"].meta["filename_or_obj"] == "x.dcm"
    np.testing.assert_allclose(d["image"].numpy(), CLAHE(clip_limit=0.02)(img.numpy()), atol=1e-6)
    assert CLAHE.backend and HUWindow.backend


def test_clahe_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        CLAHE(window=(600, -1024))
    with pytest.raises(ValueError, match="clip_limit"):
        CLAHE(clip_limit=0)
    with pytest.raises(ValueError, match="mode"):
        CLAHE(mode="4d")
    with pytest.raises(ValueError, match="channel-first"):
        CLAHE()(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="slice_axis"):
        CLAHE(slice_axis=3)(np.zeros((1, 4, 4, 4)))
