"""Lung-RADS class from tumour masks: diameters of discs/spheres of known size, boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalung_monai.anatomy import (
    LUNG_RADS_BOUNDARIES_MM,
    longest_diameter_mm,
    lung_rads_from_diameter,
    lung_rads_from_mask,
    tumor_diameters_mm,
)
from metalung_monai.errors import InputError
from metalung_monai.io import LUNG_RADS_CLASSES


def disc(diameter_mm: float, spacing_yx, shape=(96, 96), centre_mm=None) -> np.ndarray:
    """Pixels whose centre lies within diameter/2 (mm) of the centre, on an anisotropic grid."""
    sy, sx = spacing_yx
    cy, cx = (
        centre_mm if centre_mm is not None else (shape[0] * sy / 2 + 0.13, shape[1] * sx / 2 + 0.29)
    )
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy * sy - cy) ** 2 + (xx * sx - cx) ** 2 <= (diameter_mm / 2) ** 2


def sphere(diameter_mm: float, spacing_zyx, shape=(40, 64, 64)) -> np.ndarray:
    sz, sy, sx = spacing_zyx
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    c = (shape[0] * sz / 2, shape[1] * sy / 2 + 0.2, shape[2] * sx / 2 + 0.1)
    return (zz * sz - c[0]) ** 2 + (yy * sy - c[1]) ** 2 + (xx * sx - c[2]) ** 2 <= (
        diameter_mm / 2
    ) ** 2


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 0.7), (0.5, 0.8), (0.9, 0.6)])
@pytest.mark.parametrize("diameter", [3.0, 5.5, 6.5, 10.0, 16.0, 25.0])
def test_disc_diameter_within_half_mm_plus_one_pixel(diameter, spacing):
    m = disc(diameter, spacing)
    d = longest_diameter_mm(m, spacing)
    assert abs(d - diameter) <= 0.5 + max(spacing)
    assert tumor_diameters_mm(m, spacing) == [pytest.approx(d)]


def test_anisotropic_pixels_are_measured_in_mm():
    # 20 x 10 pixels of 0.5 x 1.0 mm: a 10 x 10 mm square; its diagonal is ~14.1 mm
    m = np.zeros((40, 30), bool)
    m[10:30, 10:20] = True
    d = longest_diameter_mm(m, (0.5, 1.0))
    assert math.hypot(9.5, 9.0) <= d <= math.hypot(10.0, 10.0)
    # the same pixels read as 1 x 0.5 mm: a 20 x 5 mm rectangle
    d2 = longest_diameter_mm(m, (1.0, 0.5))
    assert math.hypot(19.0, 4.5) <= d2 <= math.hypot(20.0, 5.0)
    # an ellipse: the major axis, along x here
    yy, xx = np.mgrid[:80, :80]
    e = ((yy - 40) * 0.6 / 4.0) ** 2 + ((xx - 40) * 0.6 / 9.0) ** 2 <= 1
    assert abs(longest_diameter_mm(e, (0.6, 0.6)) - 18.0) <= 0.5 + 0.6


@pytest.mark.parametrize("spacing", [(1.0, 0.7, 0.7), (2.5, 0.6, 0.6), (5.0, 0.8, 0.8)])
@pytest.mark.parametrize("diameter", [7.0, 12.0, 20.0])
def test_sphere_diameter_is_the_largest_axial_diameter(diameter, spacing):
    m = sphere(diameter, spacing)
    d = longest_diameter_mm(m, spacing)
    # thick slices may miss the equator: the largest axial section is then a bit smaller
    half_step = spacing[0] / 2
    equator_low = 2 * math.sqrt(max((diameter / 2) ** 2 - half_step**2, 0.0))
    assert equator_low - 0.5 - spacing[1] <= d <= diameter + 0.5 + spacing[1]
    # slice thickness never adds to the diameter: a tall cylinder of small section stays small
    cyl = np.zeros((30, 32, 32), bool)
    cyl[:, 14:18, 14:18] = True
    assert longest_diameter_mm(cyl, spacing) < 4 * math.sqrt(2) * spacing[1] + 1e-6


def test_single_pixel_and_empty():
    m = np.zeros((9, 9), bool)
    assert longest_diameter_mm(m, (0.7, 0.7)) == 0.0
    assert tumor_diameters_mm(m, (0.7, 0.7)) == []
    assert lung_rads_from_mask(m, (0.7, 0.7)) == "LR1"
    m[4, 4] = True
    assert longest_diameter_mm(m, (0.7, 0.7)) == pytest.approx(0.7)
    assert lung_rads_from_mask(np.zeros((3, 9, 9)), (1, 1, 1)) == "LR1"


def test_boundaries_exact():
    assert [c for c, _ in LUNG_RADS_BOUNDARIES_MM] == ["LR3", "LR4A", "LR4B"]
    cases = {
        None: "LR1",
        0.0: "LR1",
        0.1: "LR2",
        5.999: "LR2",
        6.0: "LR3",
        7.999: "LR3",
        8.0: "LR4A",
        14.999: "LR4A",
        15.0: "LR4B",
        80.0: "LR4B",
    }
    for d, cls in cases.items():
        assert lung_rads_from_diameter(d) == cls, d
        assert cls in LUNG_RADS_CLASSES
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="diameter"):
            lung_rads_from_diameter(bad)


@given(st.floats(min_value=0.01, max_value=60.0), st.floats(min_value=0.01, max_value=60.0))
@settings(max_examples=200, deadline=None)
def test_class_is_monotonic_in_the_diameter(a, b):
    order = {c: i for i, c in enumerate(LUNG_RADS_CLASSES)}
    lo, hi = sorted((a, b))
    assert order[lung_rads_from_diameter(lo)] <= order[lung_rads_from_diameter(hi)]


@pytest.mark.parametrize(
    "diameter,cls", [(4.0, "LR2"), (7.0, "LR3"), (11.0, "LR4A"), (22.0, "LR4B")]
)
@pytest.mark.parametrize("spacing", [(0.6, 0.6), (0.5, 0.9)])
def test_class_of_discs_well_inside_each_class(diameter, cls, spacing):
    assert lung_rads_from_mask(disc(diameter, spacing), spacing) == cls
    # uint8 {0, 255} masks (PNG) work the same
    assert lung_rads_from_mask(disc(diameter, spacing).astype(np.uint8) * 255, spacing) == cls


def test_class_of_spheres_in_volumes():
    sp = (2.0, 0.7, 0.7)
    assert lung_rads_from_mask(sphere(12.0, sp), sp) == "LR4A"
    assert lung_rads_from_mask(sphere(4.0, sp), sp) == "LR2"


def test_largest_component_rules_not_the_longest():
    sp = (1.0, 1.0)
    m = disc(10.0, sp, shape=(120, 120), centre_mm=(30.0, 30.0))  # 10 mm disc: most pixels
    m[90:92, 20:37] = True  # a thin 17 x 2 mm streak: longer but smaller
    d = tumor_diameters_mm(m, sp)
    assert len(d) == 2
    assert abs(d[0] - 10.0) <= 1.5 and d[1] > 16.0  # largest tumour first
    assert lung_rads_from_mask(m, sp) == "LR4A"
    assert lung_rads_from_mask(m, sp, which="max") == "LR4B"
    # diagonal neighbours belong to the same tumour (8-connectivity)
    diag = np.zeros((10, 10), bool)
    diag[2, 2] = diag[3, 3] = diag[4, 4] = True
    assert len(tumor_diameters_mm(diag, sp)) == 1
    with pytest.raises(InputError, match="which"):
        lung_rads_from_mask(m, sp, which="mean")


@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    sy=st.floats(0.3, 2.0),
    sx=st.floats(0.3, 2.0),
)
@settings(max_examples=60, deadline=None)
def test_rectangle_diameter_is_its_diagonal(h, w, sy, sx):
    m = np.zeros((h + 4, w + 4), bool)
    m[2 : 2 + h, 2 : 2 + w] = True
    d = longest_diameter_mm(m, (sy, sx))
    # the 0.5 contour runs half a pixel outside the pixel centres, with cut corners
    low = max(
        math.hypot((h - 1) * sy, (w - 1) * sx), max(h * sy, w * sx) if min(h, w) == 1 else 0.0
    )
    assert low - 1e-6 <= d <= math.hypot(h * sy, w * sx) + 1e-6


def test_bad_masks():
    with pytest.raises(InputError, match="2D"):
        longest_diameter_mm(np.zeros(5), (1.0,))
    with pytest.raises(InputError, match="spacing"):
        longest_diameter_mm(np.zeros((5, 5)), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="NaN"):
        lung_rads_from_mask(np.full((5, 5), np.nan), (1.0, 1.0))
