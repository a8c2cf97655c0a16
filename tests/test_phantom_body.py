"""The phantom's chest: parameters drawn once (get-params), rendering that only reads them (apply)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from metalung_monai.phantom.body import ChestAnatomy
from metalung_monai.phantom.body_params import (
    BodyParams,
    cavity_half_axes,
    sample_body_params,
    superellipse_rho,
)
from metalung_monai.phantom.labels import LABEL_LUNG_L, LABEL_LUNG_R
from metalung_monai.phantom.lungs import dome_height
from metalung_monai.phantom.shapes import Canvas, Grid


def _canvas() -> Canvas:
    # a coarse 4-mm grid over the chest (about 70 x 100 x 100 voxels)
    return Canvas(Grid((75, 100, 100), (4.0, 4.0, 4.0), (-30.0, -200.0, -200.0)))


def test_sampling_is_one_function_of_the_generator():
    """Same seed -> equal parameters; the draw consumes the generator; other seeds differ."""
    a = sample_body_params(np.random.default_rng(5), 350.0, contrast=True)
    rng = np.random.default_rng(5)
    b = sample_body_params(rng, 350.0, contrast=True)
    assert isinstance(a, BodyParams)
    scalars = [f.name for f in dataclasses.fields(BodyParams) if f.name != "tubes"]
    for name in scalars:
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(va, dict):
            assert va.keys() == vb.keys()
            assert all(np.array_equal(np.asarray(va[k]), np.asarray(vb[k])) for k in va)
        else:
            assert va == vb, name
    assert [t.name for t in a.tubes] == [t.name for t in b.tubes]
    assert rng.random() != np.random.default_rng(5).random()  # the generator moved on
    c = sample_body_params(np.random.default_rng(6), 350.0, contrast=True)
    assert c.cavity_half_width != a.cavity_half_width


def test_params_are_anatomically_ordered():
    """Derived numbers follow from the drawn ones: body outside the cavity, domes, hila, spine."""
    for seed in range(5):
        p = sample_body_params(np.random.default_rng(seed), 300.0, contrast=bool(seed % 2))
        assert p.body_half_width > p.muscle_half_width > p.cavity_half_width > 0
        assert p.body_half_depth > p.muscle_half_depth > p.cavity_half_depth > 0
        assert p.diaphragm.right_z > p.diaphragm.left_z  # right dome higher
        assert p.scan_bottom_z < 0.0 < p.lung_height < p.scan_top_z
        assert p.spinal_canal_y > p.vertebral_body_y > p.cavity_centre_y  # spine at the back
        assert p.hilum_x > 0 and set(p.artery_hila) == set(p.vein_hila) == {"right", "left"}
        assert p.hu_cortical_bone > p.hu_marrow > p.hu_muscle > p.hu_fat > p.hu_lung
        width, depth = cavity_half_axes(p, p.lung_height)
        assert width < p.cavity_half_width and depth < p.cavity_half_depth  # narrower apex
        # the stomach's centre lies under the left dome (4 mm + 0.8 of its height below it)
        assert p.stomach_z + 4.0 + 0.5 * p.stomach_semi_axes[0] < float(
            dome_height(p.diaphragm, p.stomach_y, p.stomach_x)
        )


def test_rendering_reads_the_params_only():
    """A logged BodyParams renders the same anatomy again, with no random state."""
    p = sample_body_params(np.random.default_rng(11), 350.0, contrast=False)
    first = _canvas()
    ChestAnatomy(p).render(first)
    again = _canvas()
    ChestAnatomy(copy.deepcopy(p)).render(again)
    np.testing.assert_array_equal(first.label, again.label)
    np.testing.assert_array_equal(first.hu, again.hu)
    for lung in (LABEL_LUNG_R, LABEL_LUNG_L):
        assert (first.label == lung).sum() > 1000
    # a changed parameter changes the picture (the renderer really reads it)
    wider = dataclasses.replace(p, midline_x=p.midline_x + 20.0)
    moved = _canvas()
    ChestAnatomy(wider).render(moved)
    assert (moved.label == LABEL_LUNG_R).sum() > (first.label == LABEL_LUNG_R).sum()


def test_sample_classmethod_is_the_function():
    a = ChestAnatomy.sample(np.random.default_rng(3), 350.0, contrast=False)
    b = sample_body_params(np.random.default_rng(3), 350.0, contrast=False)
    assert a.params.cavity_half_width == b.cavity_half_width
    assert a.tubes is a.params.tubes


@pytest.mark.parametrize("fov", [260.0, 500.0])
def test_body_fits_the_field_of_view(fov):
    p = sample_body_params(np.random.default_rng(0), fov, contrast=False)
    t = np.linspace(0, 2 * np.pi, 721)
    # the outline's farthest point from the body centre, on a 0.5-mm ladder of rays
    r = np.linspace(1.0, fov, 2000)[:, None]
    rho = superellipse_rho(
        r * np.sin(t),
        r * np.cos(t),
        0.0,
        p.body_half_width,
        p.body_half_depth,
        p.body_half_depth,
        p.outline_exponent_front,
        p.outline_exponent_back,
    )
    assert r[:, 0][(rho <= 1.0).any(axis=1)].max() <= 0.5 * fov - 6.0 + 1.0
