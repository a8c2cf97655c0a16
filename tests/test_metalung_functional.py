"""MetaLung operations on canonical arrays: HU preservation and geometry, as properties.

Hypothesis draws shapes (2D and 3D), tumour counts and sizes (none, several, touching the
pleura), seeds and angles; every operation must keep the scanner's HU values (no interpolation),
keep masks binary and aligned with the image, and move the tumour only where it may go.
"""

from __future__ import annotations

import numpy as np
import pytest
from chest_factory import make_chest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalung_monai.transforms.metalung import functional as F

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.one_of(
    st.tuples(st.integers(56, 96), st.integers(72, 128)),
    st.tuples(st.integers(4, 7), st.integers(56, 80), st.integers(72, 104)),
)
tumour_lists = st.lists(
    st.tuples(st.sampled_from(["left", "right"]), st.floats(2.0, 6.0)), min_size=0, max_size=3
)


def _chest(shape, tumours, seed, pleura=False):
    return make_chest(shape=shape, tumours=tuple(tumours), seed=seed, tumour_at_pleura=pleura)


# --------------------------------------------------------------------------- mirror
@SETTINGS
@given(shape=shapes, tumours=tumour_lists, seed=st.integers(0, 10_000))
def test_mirror_moves_values_only(shape, tumours, seed):
    c = _chest(shape, tumours, seed)
    img, mask = F.mirror(c.hu), F.mirror(c.mask)
    assert img.dtype == c.hu.dtype and img.shape == c.hu.shape
    assert np.array_equal(np.sort(img, axis=None), np.sort(c.hu, axis=None))  # same multiset
    assert np.array_equal(np.sort(img[mask > 0]), np.sort(c.hu[c.mask > 0]))  # tumour histogram
    assert np.array_equal(img[..., ::-1], c.hu) and np.array_equal(F.mirror(img), c.hu)
    # tumours of the left half (patient left, large x) are now in the right half and vice versa
    w = c.hu.shape[-1]
    x_old, x_new = np.nonzero(c.mask)[-1], np.nonzero(mask)[-1]
    assert np.array_equal(np.sort(x_new), np.sort(w - 1 - x_old))
    assert (x_old >= w / 2).sum() == (x_new < w / 2).sum()


# --------------------------------------------------------------------------- rotation
@SETTINGS
@given(shape=shapes, tumours=tumour_lists, seed=st.integers(0, 10_000), angle=st.floats(-90, 90))
def test_rotation_copies_values_and_keeps_mask_aligned(shape, tumours, seed, angle):
    c = _chest(shape, tumours, seed)
    img = F.rotate_axial(c.hu, angle, fill=F.AIR_HU)
    mask = F.rotate_axial(c.mask, angle, fill=0)
    # the source index of every output voxel, rotated with the same matrix
    index = np.arange(c.hu.size, dtype=np.float64).reshape(c.hu.shape)
    src = F.rotate_axial(index, angle, fill=-1)
    inside = src >= 0
    flat = src[inside].astype(np.int64)
    assert np.array_equal(img[inside], c.hu.ravel()[flat])  # every value is an input value
    assert (img[~inside] == F.AIR_HU).all()  # padding is air, not 0 HU
    assert np.array_equal(mask[inside], c.mask.ravel()[flat])  # same mapping for the mask
    assert set(np.unique(mask)) <= {0, 1} and mask.dtype == np.uint8
    if img.ndim == 3:  # axial rotation: no voxel changes slice
        z_of_src = flat // (c.hu.shape[1] * c.hu.shape[2])
        assert np.array_equal(z_of_src, np.nonzero(inside)[0])


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 10_000), angle=st.floats(-90, 90))
def test_unrotate_restores_every_voxel_the_rotation_kept(shape, seed, angle):
    c = _chest(shape, [("left", 4.0)], seed)
    index = np.arange(c.hu.size, dtype=np.float64).reshape(c.hu.shape)
    kept = np.zeros(c.hu.size, bool)
    src = F.rotate_axial(index, angle, fill=-1)
    kept[src[src >= 0].astype(np.int64)] = True
    back = F.unrotate_axial(F.rotate_axial(c.hu, angle), angle)
    assert np.array_equal(back.ravel()[kept], c.hu.ravel()[kept])
    assert back.dtype == c.hu.dtype


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8, np.bool_, np.int64, np.int32])
def test_rotation_dtypes_and_quarter_turns(dtype):
    a = (np.arange(48 * 64).reshape(48, 64) % 97).astype(dtype)
    sq = (np.arange(33 * 33).reshape(33, 33) % 97).astype(dtype)
    assert F.rotate_axial(a, 30.0, fill=0).dtype == np.dtype(dtype)
    assert np.array_equal(F.rotate_axial(sq, 90.0, fill=0), np.rot90(sq, 1))
    assert np.array_equal(F.rotate_axial(sq, 180.0, fill=0), np.rot90(sq, 2))
    assert np.array_equal(F.rotate_axial(sq, 0.0, fill=0), sq)


def test_rotation_of_many_planes_equals_plane_by_plane():
    rng = np.random.default_rng(1)
    vol = rng.integers(-1024, 2000, size=(300, 24, 20)).astype(np.int16)  # > 128 planes: chunked
    out = F.rotate_axial(vol, 37.0, fill=F.AIR_HU)
    ref = np.stack([F.rotate_axial(p, 37.0, fill=F.AIR_HU) for p in vol[::37]])
    assert np.array_equal(out[::37], ref)
    assert (out == F.AIR_HU).any() and set(np.unique(out)) <= set(np.unique(vol)) | {F.AIR_HU}


# --------------------------------------------------------------------------- noise
@SETTINGS
@given(
    shape=shapes,
    tumours=tumour_lists,
    seed=st.integers(0, 10_000),
    lo=st.integers(0, 5),
    span=st.integers(0, 20),
    tumour_only=st.booleans(),
)
def test_integer_noise_changes_by_integers_in_range_only_where_asked(
    shape, tumours, seed, lo, span, tumour_only
):
    c = _chest(shape, tumours, seed)
    rng = np.random.default_rng(seed)
    where = c.mask > 0 if tumour_only else None
    for image in (c.hu, c.hu.astype(np.float32)):
        out = F.add_integer_noise(image, (lo, lo + span), rng, where=where)
        assert out.dtype == image.dtype
        diff = out.astype(np.float64) - image.astype(np.float64)
        assert np.array_equal(diff, np.round(diff))
        sel = where if where is not None else np.ones(image.shape, bool)
        assert (diff[~sel] == 0).all()
        if sel.any():
            assert diff[sel].min() >= lo and diff[sel].max() <= lo + span
            if sel.sum() > 200 and span > 0:
                assert len(np.unique(diff[sel])) > 1  # really random


def test_integer_noise_saturates_instead_of_wrapping():
    a = np.array([32760, -5, 0], dtype=np.int16)
    out = F.add_integer_noise(a, (20, 20), np.random.default_rng(0))
    assert out.tolist() == [32767, 15, 20]


# --------------------------------------------------------------------------- relocation
def _check_relocation(c, img, mask, results):
    """Properties shared by every relocation outcome."""
    before = c.hu
    # HU: every value comes from the input; the tumour's HU histogram is unchanged
    assert np.isin(img, before).all()
    assert np.array_equal(np.sort(img[mask > 0]), np.sort(before[c.mask > 0]))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert mask.sum() == c.mask.sum()
    # nothing changes outside the lungs (except where the old tumour itself was)
    outside = (c.lungs == 0) & (c.mask == 0)
    assert np.array_equal(img[outside], before[outside])
    new = (mask > 0) & (c.mask == 0)
    # the moved tumour sits in lung parenchyma: never on vessels, calcification, pleura or outside;
    # only a tumour with no vessel-free room (the second search, recorded in ``fallback``) may
    # cover vessels, and then only those thinner than 3 mm (``engulfable_vessels``)
    assert (c.lungs[new] > 0).all()
    covered = (c.dense & ~(c.mask > 0)) & new
    if any("engulfed" in (r.fallback or "") for r in results):
        assert not (covered & ~F.engulfable_vessels(c.dense, before, c.spacing, 3.0)).any()
    else:
        assert not covered.any()
    moved = [r for r in results if r.applied]
    for r in moved:
        assert r.to_lung in ("left", "right") and r.from_lung in ("left", "right")
    # the vacated place is parenchyma: no air, no tumour copy, only lung values of the input
    vacated = (c.mask > 0) & (mask == 0)
    if vacated.any():
        lung_vals = before[(c.lungs > 0) & ~c.dense]
        assert np.isin(img[vacated], lung_vals).all()
        assert (img[vacated] > -1000).all()


@SETTINGS
@given(
    shape=shapes,
    tumours=tumour_lists,
    seed=st.integers(0, 10_000),
    pleura=st.booleans(),
    edge=st.booleans(),
    all_vessel=st.booleans(),
)
def test_relocation_properties(shape, tumours, seed, pleura, edge, all_vessel):
    c = _chest(shape, tumours, seed, pleura)
    if edge:  # a "tumour" touching the image border, outside the lungs (a mask from another tool)
        c.mask[..., :3, :4] = 1
    if all_vessel:  # lungs full of dense tissue: no free space anywhere
        c.dense = c.dense | (c.lungs > 0)
    rng = np.random.default_rng(seed)
    img, mask, results = F.relocate_tumors(c.hu, c.mask, c.lungs, c.dense, c.spacing, rng)
    assert len(results) == len(F.tumor_components(c.mask))
    _check_relocation(c, img, mask, results)
    if all_vessel:
        assert not any(r.applied for r in results)
        assert np.array_equal(img, c.hu) and np.array_equal(mask, c.mask)
    # same seed, same result
    img2, mask2, _ = F.relocate_tumors(
        c.hu, c.mask, c.lungs, c.dense, c.spacing, np.random.default_rng(seed)
    )
    assert np.array_equal(img, img2) and np.array_equal(mask, mask2)


@pytest.mark.parametrize("shape", [(80, 112), (9, 72, 96)])
def test_relocation_goes_to_the_opposite_lung_first(shape):
    c = make_chest(shape=shape, tumours=(("left", 4.0),), seed=3)
    img, mask, res = F.relocate_tumors(
        c.hu, c.mask, c.lungs, c.dense, c.spacing, np.random.default_rng(0)
    )
    assert res[0].applied and res[0].from_lung == "left" and res[0].to_lung == "right"
    assert (c.lungs[mask > 0] == 1).all()
    # 180-degree rotation of the whole tumour (3D: every slice of it), same voxel count
    old = np.argwhere(c.mask > 0)
    new = np.argwhere(mask > 0)
    rot = old.copy()
    rot[:, -2:] = -rot[:, -2:]
    shift = new.min(axis=0) - rot.min(axis=0)
    assert sorted(map(tuple, rot + shift)) == sorted(map(tuple, new))
    _check_relocation(c, img, mask, res)


def test_relocation_falls_back_to_the_same_lung_then_gives_up():
    c = make_chest(shape=(80, 112), tumours=(("left", 4.0),), seed=5)
    dense = c.dense | (c.lungs == 1)  # the right lung is all vessels: no room there
    img, mask, res = F.relocate_tumors(
        c.hu, c.mask, c.lungs, dense, c.spacing, np.random.default_rng(0)
    )
    assert res[0].applied and res[0].to_lung == "left" and res[0].fallback == "same lung"
    assert not ((mask > 0) & (c.mask > 0)).all()
    full = c.dense | (c.lungs > 0)  # both lungs all dense: nowhere to go
    img, mask, res = F.relocate_tumors(
        c.hu, c.mask, c.lungs, full, c.spacing, np.random.default_rng(0)
    )
    assert not res[0].applied and "no free lung space" in res[0].reason
    assert np.array_equal(img, c.hu) and np.array_equal(mask, c.mask)


def test_relocation_without_tumour_is_identity():
    c = make_chest(shape=(64, 96), tumours=(), seed=1)
    img, mask, res = F.relocate_tumors(
        c.hu, c.mask, c.lungs, c.dense, c.spacing, np.random.default_rng(0)
    )
    assert res == [] and np.array_equal(img, c.hu) and not mask.any()


# --------------------------------------------------------------------------- tumour rotation
@SETTINGS
@given(
    shape=shapes,
    tumours=tumour_lists,
    seed=st.integers(0, 10_000),
    angle=st.floats(1, 90),
    sign=st.sampled_from([-1, 1]),
)
def test_tumour_rotation_properties(shape, tumours, seed, angle, sign):
    c = _chest(shape, tumours, seed)
    n = len(F.tumor_components(c.mask))
    img, mask, res = F.rotate_tumors(
        c.hu, c.mask, c.lungs, c.dense, c.spacing, np.random.default_rng(seed), [sign * angle] * n
    )
    assert len(res) == n
    assert np.isin(img, c.hu).all()
    assert set(np.unique(mask)) <= {0, 1}
    # only the tumours' neighbourhoods change; the rest of the image is untouched
    changed = img != c.hu
    near = np.zeros_like(changed)
    for comp in F.tumor_components(c.mask):
        grow = tuple(slice(max(b.start - 8, 0), b.stop + 8) for b in comp.box)
        near[grow] = True
    assert not (changed & ~near).any()
    assert not (mask.astype(bool) & ~near).any()
    # tumour voxels never land on vessels, calcification or outside the lung
    new = (mask > 0) & (c.mask == 0)
    assert (c.lungs[new] > 0).all() and not (c.dense & (c.mask == 0))[new].any()
    # clipping at the pleura loses at most 10 % of a tumour
    assert mask.sum() >= 0.9 * c.mask.sum() - 1


def test_fill_never_copies_air_or_tumour():
    c = make_chest(shape=(80, 112), tumours=(("right", 5.0),), seed=7)
    region = c.mask > 0
    parenchyma = (c.lungs > 0) & ~c.dense
    out, how = F.fill_with_parenchyma(c.hu, region, parenchyma, c.spacing, np.random.default_rng(0))
    assert how == "patch"
    assert np.isin(out[region], c.hu[parenchyma]).all()
    assert np.array_equal(out[~region], c.hu[~region])
    # no donor patch fits (tiny lungs): values are sampled from the nearest parenchyma instead
    tiny = parenchyma & (np.arange(112)[None, :] % 9 == 0)
    out, how = F.fill_with_parenchyma(c.hu, region, tiny, c.spacing, np.random.default_rng(0))
    assert how == "sampled" and np.isin(out[region], c.hu[tiny]).all()
