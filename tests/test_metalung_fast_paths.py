"""The fast paths of the MetaLung kernels give exactly what the plain formulas give.

Each kernel that was sped up (issue 10, section 5) is compared bit for bit with a direct
implementation of what it computes: OpenCV's float maps against the ``CV_16SC2`` rotation map,
the in-place interleaved rotation against a rotation of a contiguous copy, the snapped distance
table against the float64 formula (and its thresholds and slice-by-slice updates against the
float32 map), the doubling sliding AND against a cumulative sum, the bounding-box noise against
noise indexed on the whole array, the slab-wise labelling of tumour components against one
labelling of the whole mask, and the one-voxel vessel filter against labelling.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from metalung_monai.anatomy import vessels as V
from metalung_monai.transforms.metalung import functional as F


def _remap(a, m1, m2, fill=7.0):
    return cv2.remap(
        a, m1, m2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4
    )


@pytest.mark.parametrize("seed", range(3))
def test_float_maps_take_the_voxels_of_the_integer_map(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        h, w = int(rng.integers(3, 160)), int(rng.integers(3, 160))
        angle = float(rng.choice([0.0, 90.0, -90.0, 45.0, rng.uniform(-180, 180)]))
        centre = None if rng.random() < 0.5 else (rng.uniform(-3, h + 3), rng.uniform(-3, w + 3))
        rot = F.rotation_map((h, w), angle, centre)
        mx, my = F.rotation_maps((h, w), angle, centre)
        for dtype in (np.uint8, np.int16, np.uint16, np.float32, np.float64):
            cn = int(rng.choice([1, 3, 5, 128]))
            a = rng.integers(0, 250, (h, w, cn)).astype(dtype)
            assert np.array_equal(_remap(a, rot, None), _remap(a, mx, my))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8, np.int64, bool])
@pytest.mark.parametrize("planes", [1, 3, 128, 200])
def test_rotation_in_place_of_interleaved_planes_equals_contiguous(dtype, planes):
    rng = np.random.default_rng(planes)
    stack = rng.integers(-100, 100, (40, 56, planes))  # (y, x, planes) in memory
    stack = (stack > 0) if dtype is bool else stack.astype(dtype)
    view = np.moveaxis(stack, -1, 0)  # (planes, y, x), not contiguous
    for angle in (33.0, -71.5, 90.0):
        fast = F.rotate_axial(view, angle, fill=5)
        slow = F.rotate_axial(np.ascontiguousarray(view), angle, fill=5)
        assert fast.dtype == slow.dtype and np.array_equal(fast, slow)
        # the output keeps the input's memory layout (no transposed copy on the way out)
        assert np.moveaxis(fast, 0, -1).flags.c_contiguous


def _inplane_reference(free3, spacing_yx):
    """The float64 formula: OpenCV's distance snapped to sqrt(round(d^2)) * spacing."""
    out = np.zeros(free3.shape, np.float32)
    for z in range(free3.shape[0]):
        if not free3[z].any():
            continue
        padded = np.pad(free3[z], 1).astype(np.uint8)
        if np.isclose(spacing_yx[0], spacing_yx[1], rtol=1e-3):
            d = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(float)
            d = np.sqrt(np.rint(d * d)) * float(spacing_yx[0])
        else:
            d = ndimage.distance_transform_edt(padded, sampling=spacing_yx)
        out[z] = d[1:-1, 1:-1]
    return out


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (1.0, 1.0), (0.6, 0.9)])
def test_inplane_distance_equals_the_float64_formula(spacing):
    rng = np.random.default_rng(1)
    for shape in ((3, 60, 90), (1, 257, 130), (5, 12, 300), (40, 30, 50)):  # 40: threaded
        free = ndimage.binary_opening(rng.random(shape) > 0.15)
        free[0] = False  # an empty slice
        assert np.array_equal(F._inplane_distance(free, spacing), _inplane_reference(free, spacing))


def _all_within_reference(mask3, reach):
    if reach <= 0:
        return mask3
    nz = mask3.shape[0]
    csum = np.zeros((nz + 1,) + mask3.shape[1:], np.int32)
    np.cumsum(mask3, axis=0, dtype=np.int32, out=csum[1:])
    out = np.zeros(mask3.shape, bool)
    width = 2 * reach + 1
    if nz >= width:
        out[reach : nz - reach] = (csum[width:] - csum[:-width]) == width
    return out


def test_sliding_and_equals_the_cumulative_sum():
    rng = np.random.default_rng(2)
    for nz in (1, 2, 5, 9, 17, 40):
        mask = rng.random((nz, 7, 9)) > 0.1
        for reach in range(0, 12):
            assert np.array_equal(F._all_within(mask, reach), _all_within_reference(mask, reach))


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64, np.uint8, np.float16])
def test_noise_in_a_box_equals_noise_indexed_on_the_whole_array(dtype):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 250, (4, 50, 60)).astype(dtype)
    where = np.zeros(img.shape, bool)
    where[1:3, 10:30, 20:25] = rng.random((2, 20, 5)) > 0.3
    out = F.add_integer_noise(img, (-5, 20), np.random.default_rng(9), where=where)
    noise = np.random.default_rng(9).integers(-5, 21, size=int(where.sum()), dtype=np.int16)
    expected = img.copy()
    if np.issubdtype(img.dtype, np.integer):
        expected[where] = np.clip(img[where].astype(np.int64) + noise, *_limits(dtype)).astype(
            dtype
        )
    else:
        expected[where] = img[where] + noise.astype(dtype)
    assert out.dtype == img.dtype and np.array_equal(out, expected)
    whole = F.add_integer_noise(img, (0, 20), np.random.default_rng(9))
    noise = np.random.default_rng(9).integers(0, 21, size=img.shape, dtype=np.int16)
    if np.issubdtype(img.dtype, np.integer):
        ref = np.clip(img.astype(np.int64) + noise, *_limits(dtype)).astype(dtype)
    else:
        ref = img + noise.astype(dtype)
    assert np.array_equal(whole, ref)


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (0.6, 0.9)])
def test_distance_thresholds_and_updates_equal_a_new_float32_map(spacing):
    rng = np.random.default_rng(3)
    free = ndimage.binary_opening(rng.random((6, 70, 50)) > 0.1)
    dist = F.InplaneDistance(free, spacing)
    for _ in range(4):
        ref = F._inplane_distance(free, spacing)  # float32 mm, as the search compared before
        assert np.array_equal(dist.distance(), ref)
        for t in (0.0, 0.5, spacing[0], 1.9999, 2.0, 3.3, 7.0, 1e6):
            assert np.array_equal(dist.greater(t), ref > t)
        # block a small region (a pasted tumour): only its slices change
        z, y, x = (int(rng.integers(0, n - 3)) for n in free.shape)
        free = free.copy()
        free[z : z + 2, y : y + 3, x : x + 3] = False
        assert dist.update(free)
    assert not dist.update(free[:, :-1])  # another shape: not the same map


def _components_by_one_labelling(mask):
    m = np.asarray(mask) != 0
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, m.ndim))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    objects = ndimage.find_objects(labels)
    return [(objects[k], labels[objects[k]] == k + 1) for k in np.argsort(-sizes, kind="stable")]


def test_slab_wise_components_equal_one_labelling():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(v) for v in rng.integers(1, 24, int(rng.choice([2, 3]))))
        mask = rng.random(shape) > rng.choice([0.5, 0.9, 0.99, 1.0])
        got = F.tumor_components(mask.astype(np.uint8) * 2)
        ref = _components_by_one_labelling(mask)
        assert [c.box for c in got] == [box for box, _ in ref]
        assert all(np.array_equal(c.local, local) for c, (_, local) in zip(got, ref))


@pytest.mark.parametrize("was_2d", [False, True])
def test_one_voxel_vessel_filter_equals_labelling(was_2d):
    rng = np.random.default_rng(1)
    shape = (1, 40, 40) if was_2d else (12, 30, 30)
    vol = rng.normal(-600.0, 400.0, shape)
    lung = rng.random(shape) > 0.2
    sp = (1.0, 1.0, 1.0)
    # min_size between one and two voxels: the filter path; above two voxels: labelling
    fast = V._dense(vol, lung, sp, was_2d, -500.0, 1.5, 200.0)
    dense = (vol > -500.0) & lung
    structure = np.ones((3, 3, 3), bool)
    if was_2d:
        structure[[0, 2]] = False
    labels, n = ndimage.label(dense, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    calcified = np.zeros(n + 1, bool)
    calcified[np.unique(labels[vol > 200.0])] = True
    drop = (sizes == 1) & ~calcified
    drop[0] = False
    assert drop.any()  # the case is exercised
    assert np.array_equal(fast, dense & ~drop[labels])
