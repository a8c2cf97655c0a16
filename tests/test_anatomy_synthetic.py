"""Lung mask, dense structures and free space on a synthetic chest with known anatomy.

The phantom (canonical (z, y, x), 2.5 x 1 x 1 mm): a soft-tissue body, two lung ellipsoids at
-850 HU holding vessel tubes (40 HU), a trachea (-1000 HU) from the top slice down to a carina
between the lungs and two main bronchi into the lungs, a spine, a table, air outside with
field-of-view padding (-2048) in the corners, a juxtapleural solid tumour (0 HU) bulging into the
left lung from the chest wall, a calcification (600 HU) and a solid nodule in the right lung,
gas below the diaphragm and an air bubble in the chest wall. Gaussian noise (sd 20 HU).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from metalung_monai.anatomy import (
    LEFT_LUNG,
    RIGHT_LUNG,
    analyse_lungs,
    free_space_distance,
    free_space_mask,
    lung_mask,
    vessel_mask,
)
from metalung_monai.errors import GeometryMismatchError, InputError, MaskError

SPACING = (2.5, 1.0, 1.0)
SHAPE = (44, 128, 160)


def _tube(zz, yy, xx, p0, p1, radius_mm, spacing=SPACING):
    """Voxels within radius_mm (physical) of the segment p0-p1 (points in voxel (z, y, x))."""
    s = np.asarray(spacing, float)
    p0 = np.asarray(p0, float) * s
    p1 = np.asarray(p1, float) * s
    pts = np.stack([zz * s[0], yy * s[1], xx * s[2]], -1)
    d = p1 - p0
    t = np.clip(((pts - p0) @ d) / float(d @ d), 0.0, 1.0)
    nearest = p0 + t[..., None] * d
    return ((pts - nearest) ** 2).sum(-1) <= radius_mm**2


def _ball(zz, yy, xx, c, radius_mm, spacing=SPACING):
    s = spacing
    return ((zz - c[0]) * s[0]) ** 2 + ((yy - c[1]) * s[1]) ** 2 + (
        (xx - c[2]) * s[2]
    ) ** 2 <= radius_mm**2


def synthetic_chest(seed: int = 0, joined: bool = False) -> tuple[np.ndarray, dict]:
    """Canonical HU volume (int16) and a dict of ground-truth boolean masks."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    hu = np.full(SHAPE, -1000.0)
    body = ((yy - 64) / 52) ** 2 + ((xx - 80) / 72) ** 2 <= 1
    hu[body] = 40
    hu[(yy >= 120) & (yy <= 123) & (np.abs(xx - 80) < 75)] = 150  # table, apart from the body
    hu[_tube(zz, yy, xx, (0, 100, 80), (43, 100, 80), 9)] = 700  # spine
    fov = ((yy - 64) ** 2 + (xx - 80) ** 2) > 88**2
    lung_r = ((zz - 20) * 2.5 / 42) ** 2 + ((yy - 62) / 36) ** 2 + ((xx - 52) / 23) ** 2 <= 1
    lung_l = ((zz - 20) * 2.5 / 42) ** 2 + ((yy - 62) / 36) ** 2 + ((xx - 108) / 23) ** 2 <= 1
    hu[lung_r | lung_l] = -850
    bridge = np.zeros(SHAPE, bool)
    if joined:  # lungs touching at an anterior junction (a 4 mm air bridge over 5 slices)
        bridge = (np.abs(zz - 20) <= 2) & (np.abs(yy - 34) <= 2) & (xx > 60) & (xx < 100)
        hu[bridge] = -850
    vessels = np.zeros(SHAPE, bool)
    for c in ((62, 45), (50, 58), (75, 50), (62, 115), (48, 102), (78, 110)):  # along z
        vessels |= _tube(zz, yy, xx, (5, *c), (35, *c), 2.0)
    vessels |= _tube(zz, yy, xx, (20, 45, 40), (20, 80, 64), 1.5)  # in-plane, right lung
    vessel_tubes = vessels.copy()
    vessels &= lung_r | lung_l
    hu[vessels] = 40
    trachea = _tube(zz, yy, xx, (43, 48, 80), (28, 48, 80), 7.0)
    bronchi = _tube(zz, yy, xx, (28, 48, 80), (24, 52, 60), 4.0) | _tube(
        zz, yy, xx, (28, 48, 80), (24, 52, 100), 4.0
    )
    hu[trachea | bronchi] = -1000
    tumour = _ball(zz, yy, xx, (20, 62, 125.5), 6.0)  # touches the chest wall of the left lung
    hu[tumour] = 0
    nodule = _ball(zz, yy, xx, (14, 80, 40), 3.0) & lung_r
    hu[nodule] = 20
    calc = _ball(zz, yy, xx, (26, 45, 62), 2.0)
    hu[calc] = 600
    # stomach gas below the left lung base, a diaphragm (slice 3) in between
    gas = ((zz - 1) * 2.5 / 4.0) ** 2 + ((yy - 75) / 14.0) ** 2 + ((xx - 110) / 18.0) ** 2 <= 1
    hu[gas] = -1000
    bubble = _ball(zz, yy, xx, (20, 20, 80), 2.5)  # small air pocket in the anterior chest wall
    hu[bubble] = -1000
    vessels &= ~(trachea | bronchi | tumour | calc | nodule)  # what was painted over is not vessel
    hu += rng.normal(0, 20, SHAPE)
    hu[fov] = -2048
    truth = {
        "lung_r": lung_r,
        "lung_l": lung_l,
        "bridge": bridge,
        "vessels": vessels,
        "vessel_tubes": vessel_tubes,
        "trachea": trachea,
        "bronchi": bronchi,
        "bronchi_out": bronchi & ~(lung_r | lung_l),
        "tumour": tumour,
        "nodule": nodule,
        "calc": calc,
        "gas": gas,
        "bubble": bubble,
        "body": body,
        "fov": fov,
    }
    return np.round(hu).astype(np.int16), truth


@pytest.fixture(scope="module")
def chest():
    hu, truth = synthetic_chest()
    return hu, truth, lung_mask(hu, SPACING, progress=False)


CARINA_Z = 28  # the trachea runs from the top slice down to here


# ------------------------------------------------------------------------------------------
# lung mask
# ------------------------------------------------------------------------------------------


def test_lungs_labelled_right_and_left(chest):
    hu, truth, lab = chest
    assert lab.dtype == np.uint8 and lab.shape == hu.shape
    assert set(np.unique(lab).tolist()) == {0, 1, 2}
    # canonical x grows towards the patient's left: the lung at small x is the right lung (1)
    assert (lab[truth["lung_r"]] == RIGHT_LUNG).mean() > 0.99
    assert (lab[truth["lung_l"]] == LEFT_LUNG).mean() > 0.99
    assert not (lab[truth["lung_r"]] == LEFT_LUNG).any()
    assert not (lab[truth["lung_l"]] == RIGHT_LUNG).any()
    x_right = np.nonzero(lab == RIGHT_LUNG)[2].mean()
    x_left = np.nonzero(lab == LEFT_LUNG)[2].mean()
    assert x_right < 80 < x_left


def test_nothing_outside_the_lungs_is_lung(chest):
    hu, truth, lab = chest
    lung = lab > 0
    # the trachea above the carina, gas below the diaphragm, a bubble in the chest wall,
    # room air, field-of-view padding (-2048) and the table are not lung
    trachea = truth["trachea"].copy()
    trachea[:CARINA_Z] = False
    assert trachea.sum() > 1000
    for key, region in (
        ("trachea", trachea),
        ("gas", truth["gas"]),
        ("bubble", truth["bubble"]),
        ("outside body", ~truth["body"]),
    ):
        assert not lung[region].any(), f"{key}: {int(lung[region].sum())} voxels labelled lung"
    # what is lung beyond the truth is only the juxtapleural tumour, bronchi at the hilum and
    # single border pixels added by the 3x3 smoothing of the pleural border (in-plane neighbours
    # of true lung)
    true_lung = truth["lung_r"] | truth["lung_l"] | truth["tumour"] | truth["bronchi"]
    extra = lung & ~true_lung
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = True
    assert not (extra & ~ndimage.binary_dilation(true_lung, structure=in_plane)).any()
    assert extra.sum() <= 1e-3 * true_lung.sum()


def test_fov_padding_is_air(chest):
    hu, truth, lab = chest
    assert (hu == -2048).any()
    assert np.array_equal(lung_mask(np.maximum(hu, -1024), SPACING, progress=False), lab)


def test_juxtapleural_tumour_is_inside_left_lung(chest):
    hu, truth, lab = chest
    t = truth["tumour"]
    assert (lab[t] == LEFT_LUNG).mean() >= 0.95
    assert not (lab[t] == RIGHT_LUNG).any()
    # the notch closing is what brings it in: plain thresholding + hole filling leaves it out
    no_close = lung_mask(hu, SPACING, close_notches=False, progress=False)
    assert (no_close[t] > 0).mean() < 0.5
    # and the notch closing adds nothing else to the lung (no chest wall, no mediastinum) but
    # the ends of vessels where they cross the pleura at the lung's tips
    added = (lab > 0) & (no_close == 0)
    assert added[t].sum() > 0.5 * t.sum()
    assert not (added & ~t & ~truth["vessel_tubes"]).any()


def test_holes_inside_the_lung_are_filled(chest):
    hu, truth, lab = chest
    for key in ("nodule", "calc"):
        assert (lab[truth[key]] == RIGHT_LUNG).all(), key
    inner_vessels = truth["vessels"] & (lab > 0)
    assert inner_vessels.sum() > 0.9 * truth["vessels"].sum()
    no_fill = lung_mask(hu, SPACING, fill_holes=False, close_notches=False, progress=False)
    assert not (no_fill[truth["nodule"]] > 0).any()
    assert not (no_fill[truth["calc"]] > 0).any()


def test_touching_lungs_are_split_at_the_junction():
    hu, truth = synthetic_chest(seed=1, joined=True)
    lab = lung_mask(hu, SPACING, progress=False)
    assert (lab[truth["lung_r"]] == RIGHT_LUNG).mean() > 0.99
    assert (lab[truth["lung_l"]] == LEFT_LUNG).mean() > 0.99
    zz, yy, xx = np.nonzero(truth["bridge"])
    got = lab[zz, yy, xx]
    assert (got > 0).all()
    # the junction is cut near the midline (x = 80)
    assert (got[xx < 77] == RIGHT_LUNG).all() and (got[xx > 83] == LEFT_LUNG).all()


def test_single_slices(chest):
    hu, truth, _ = chest
    for z in (10, 20, 30):  # 30: the trachea lies between the lungs
        lab = lung_mask(hu[z], SPACING[1:])
        assert lab.shape == hu[z].shape and lab.dtype == np.uint8
        assert (lab[truth["lung_r"][z]] == RIGHT_LUNG).mean() > 0.99
        assert (lab[truth["lung_l"][z]] == LEFT_LUNG).mean() > 0.99
        assert not (lab[truth["trachea"][z]] > 0).any()


# ------------------------------------------------------------------------------------------
# dense structures and free space
# ------------------------------------------------------------------------------------------


def test_vessel_mask(chest):
    hu, truth, lab = chest
    v = vessel_mask(hu, lab, SPACING)
    assert v.dtype == bool and v.shape == hu.shape
    lung = lab > 0
    assert not (v & ~lung).any()
    for key in ("vessels", "calc", "nodule", "tumour"):
        inside = truth[key] & lung
        assert v[inside].all(), key
    parenchyma = lung & ~(truth["vessel_tubes"] | truth["calc"] | truth["nodule"] | truth["tumour"])
    assert parenchyma.sum() > 100000
    assert not v[parenchyma].any()


def test_vessel_mask_drops_specks_but_never_calcium(chest):
    hu, truth, lab = chest
    hu = hu.copy()
    speck = (20, 70, 30)  # parenchyma of the right lung
    calc = (20, 55, 30)
    assert lab[speck] == RIGHT_LUNG and lab[calc] == RIGHT_LUNG
    hu[speck] = -300
    hu[calc] = 400
    v = vessel_mask(hu, lab, SPACING, min_size=5.0)  # one voxel is 2.5 mm3
    assert not v[speck]
    assert v[calc]
    assert vessel_mask(hu, lab, SPACING, min_size=0)[speck]
    # the calcification is never free space, even with a vessel mask that misses it
    d = free_space_distance(hu, lab, SPACING, vessels=np.zeros(hu.shape, bool))
    assert d[calc] == 0


def test_free_space_distance_is_the_distance_to_dense_or_pleura(chest):
    hu, truth, lab = chest
    v = vessel_mask(hu, lab, SPACING)
    d = free_space_distance(hu, lab, SPACING, vessels=v)
    assert d.dtype == np.float32 and d.shape == hu.shape
    assert (d[v] == 0).all() and (d[lab == 0] == 0).all() and (d[truth["calc"]] == 0).all()
    free = (lab > 0) & ~v
    assert (d[free] > 0).all()
    # brute force on a sample: the distance in mm to the nearest non-free voxel centre
    s = np.asarray(SPACING)
    blocked = cKDTree(np.argwhere(~free) * s)
    rng = np.random.default_rng(0)
    pts = np.argwhere(free)
    pick = pts[rng.choice(len(pts), 400, replace=False)]
    expect, _ = blocked.query(pick * s)
    np.testing.assert_allclose(d[tuple(pick.T)], expect, rtol=1e-5, atol=1e-4)
    # it grows away from the calcification (centre (26, 45, 62), radius 2 mm) along +x: the
    # voxels 1, 2, 3 mm beyond its edge (x = 64) are 1, 2, 3 mm from it (the pleura is further)
    np.testing.assert_allclose(d[26, 45, 65:68], [1.0, 2.0, 3.0], atol=1e-6)
    # and across slices with their true thickness (2.5 mm): the calcification is one slice thick
    np.testing.assert_allclose([d[25, 45, 62], d[24, 45, 62]], [2.5, 5.0], atol=1e-6)


@pytest.mark.slow
def test_free_space_mask_keeps_clear_of_vessels_calcium_and_pleura(chest):
    hu, truth, lab = chest
    s = np.asarray(SPACING)
    dense_truth = truth["vessels"] | truth["calc"] | truth["nodule"] | truth["tumour"]
    dense_tree = cKDTree(np.argwhere(dense_truth & (lab > 0)) * s)
    outside_tree = cKDTree(np.argwhere(lab == 0) * s)
    previous = None
    for r in (2.0, 4.0, 7.0):
        m = free_space_mask(hu, lab, SPACING, r)
        assert m.dtype == bool and m.any()
        pts = np.argwhere(m) * s
        assert dense_tree.query(pts)[0].min() >= r - 1e-6
        assert outside_tree.query(pts)[0].min() >= r - 1e-6
        if previous is not None:
            assert not (m & ~previous).any() and m.sum() < previous.sum()
        previous = m
    # a sphere of radius r around any centre of the mask stays in free parenchyma
    v = vessel_mask(hu, lab, SPACING)
    free = (lab > 0) & ~v
    m = free_space_mask(hu, lab, SPACING, 4.0, vessels=v)
    c = np.argwhere(m)[len(np.argwhere(m)) // 2]
    zz, yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    ball = ((zz - c[0]) * s[0]) ** 2 + ((yy - c[1]) * s[1]) ** 2 + (
        (xx - c[2]) * s[2]
    ) ** 2 < 4.0**2
    assert free[ball].all()


def test_analyse_lungs_matches_the_separate_functions(chest):
    hu, truth, lab = chest
    a = analyse_lungs(hu, SPACING)
    assert np.array_equal(a.lungs, lab)
    v = vessel_mask(hu, lab, SPACING)
    assert np.array_equal(a.vessels, v)
    np.testing.assert_array_equal(a.free_distance, free_space_distance(hu, lab, SPACING, vessels=v))
    assert np.array_equal(a.free_space(3.0), free_space_mask(hu, lab, SPACING, 3.0, vessels=v))
    assert a.right_voxels == int((lab == 1).sum()) and a.left_voxels == int((lab == 2).sum())
    assert a.volume_ml(1) == pytest.approx(a.right_voxels * 2.5 / 1000)
    # 2D too
    a2 = analyse_lungs(hu[20], SPACING[1:])
    assert np.array_equal(a2.lungs, lung_mask(hu[20], SPACING[1:]))
    assert a2.free_distance.shape == hu[20].shape


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_bad_input_raises_typed_errors(chest):
    hu, truth, lab = chest
    with pytest.raises(InputError, match="2D"):
        lung_mask(np.zeros(10), (1.0,))
    with pytest.raises(InputError, match="spacing"):
        lung_mask(hu, (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        lung_mask(hu, (0.0, 1.0, 1.0))
    bad = hu.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lung_mask(bad, SPACING)
    with pytest.raises(GeometryMismatchError):
        vessel_mask(hu, lab[:-1], SPACING)
    with pytest.raises(MaskError, match="labels"):
        vessel_mask(hu, lab * 2, SPACING)
    with pytest.raises(MaskError):
        free_space_distance(hu, lab, SPACING, vessels=lab)
    with pytest.raises(InputError, match="min_distance"):
        free_space_mask(hu, lab, SPACING, -1.0)


# ------------------------------------------------------------------------------------------
# SimpleITK wrappers: orientation is the image's, labels follow the patient
# ------------------------------------------------------------------------------------------


def _sitk_lps(arr, spacing_zyx, flip_xy=False):
    import SimpleITK as sitk

    sz, sy, sx = spacing_zyx
    data = arr[:, ::-1, ::-1] if flip_xy else arr
    img = sitk.GetImageFromArray(np.ascontiguousarray(data))
    img.SetSpacing((sx, sy, sz))
    if flip_xy:  # stored right-to-left and anterior-to-posterior reversed (as in RAS files)
        img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        img.SetOrigin(((arr.shape[2] - 1) * sx, (arr.shape[1] - 1) * sy, 0.0))
    return img


def test_image_wrappers_follow_the_patient_not_the_array(chest):
    import SimpleITK as sitk

    from metalung_monai.anatomy import (
        analyse_lungs_image,
        free_space_distance_image,
        free_space_mask_image,
        lung_mask_image,
        vessel_mask_image,
    )
    from metalung_monai.utils.orientation import sitk_to_canonical

    hu, truth, lab = chest
    for flip in (False, True):
        img = _sitk_lps(hu, SPACING, flip_xy=flip)
        out = lung_mask_image(img, progress=False)
        assert out.GetPixelID() == sitk.sitkUInt8
        assert out.GetSize() == img.GetSize() and out.GetDirection() == img.GetDirection()
        assert out.GetOrigin() == img.GetOrigin() and out.GetSpacing() == img.GetSpacing()
        canon, sp = sitk_to_canonical(out)
        assert sp == SPACING
        assert np.array_equal(canon, lab)
    img = _sitk_lps(hu, SPACING, flip_xy=True)
    lungs_img = lung_mask_image(img, progress=False)
    v_img = vessel_mask_image(img, lungs_img)
    assert np.array_equal(
        sitk_to_canonical(v_img)[0], vessel_mask(hu, lab, SPACING).astype(np.uint8)
    )
    d_img = free_space_distance_image(img, lungs_img, v_img)
    np.testing.assert_array_equal(
        sitk_to_canonical(d_img)[0], free_space_distance(hu, lab, SPACING)
    )
    m_img = free_space_mask_image(img, 4.0, lungs_img)
    assert np.array_equal(sitk_to_canonical(m_img)[0] > 0, free_space_mask(hu, lab, SPACING, 4.0))
    both = analyse_lungs_image(img)
    assert set(both) == {"lungs", "vessels", "free_distance"}
    assert np.array_equal(sitk_to_canonical(both["lungs"])[0], lab)
    # a lung mask on another grid is refused
    other = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    with pytest.raises(GeometryMismatchError, match="lungs_image"):
        vessel_mask_image(img, other)


def test_image_wrappers_on_single_slices(chest):
    import SimpleITK as sitk

    from metalung_monai.anatomy import lung_mask_image

    hu, truth, _ = chest
    expect = lung_mask(hu[30], SPACING[1:])
    img2d = sitk.GetImageFromArray(hu[30])
    img2d.SetSpacing((1.0, 1.0))
    out = lung_mask_image(img2d)
    assert out.GetDimension() == 2 and np.array_equal(sitk.GetArrayFromImage(out), expect)
    img3d = _sitk_lps(hu[30:31], SPACING)  # a volume of one slice is handled as that slice
    out3 = lung_mask_image(img3d)
    assert out3.GetSize() == img3d.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(out3)[0], expect)


def test_degenerate_inputs_give_empty_or_valid_labels():
    rng = np.random.default_rng(5)
    for arr in (
        np.full((32, 32), -1000, np.int16),  # only air
        np.zeros((3, 16, 16), np.float32),  # only water
        np.full((1, 1), -1024),
        rng.integers(-1100, 500, (2, 30, 30)),
    ):
        sp = (1.0,) * arr.ndim
        lab = lung_mask(arr, sp, progress=False)
        assert lab.shape == arr.shape and lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2}
        a = analyse_lungs(arr, sp)
        assert (a.free_distance[a.lungs == 0] == 0).all()
    assert not lung_mask(np.full((32, 32), -1000), (1.0, 1.0)).any()
    assert not lung_mask(np.zeros((3, 16, 16)), (1.0, 1.0, 1.0)).any()
