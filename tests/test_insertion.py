"""Lesion insertion into free lung (``metalung_monai.synthesis.insertion``): resampling to the
target's pixel size, placement inside free parenchyma (seeded; no room -> None), and the blend
(integer HU, nothing outside the footprint changes, the mask is exactly the inserted lesion, the
target's noise texture inside the lesion)."""

from __future__ import annotations

import numpy as np
import pytest
from lesion_factory import lesion_patches
from scipy import ndimage as ndi

from metalung_monai.errors import InputError
from metalung_monai.synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion


def _slice(size=160, seed=0):
    """Body at 40 HU, one elliptic lung at -850 +- 25 HU (integer noise), six dense vessels;
    ``free`` = lung voxels at least 2 px from a vessel and from the pleura."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lung = ((yy - size / 2) / (0.38 * size)) ** 2 + ((xx - size / 2) / (0.3 * size)) ** 2 <= 1
    img = np.full((size, size), 40, np.int16)
    img[lung] = np.rint(-850 + rng.normal(0, 25, lung.sum())).astype(np.int16)
    vessels = np.zeros_like(lung)
    for cy, cx in rng.integers(int(0.3 * size), int(0.7 * size), size=(6, 2)):
        vessels |= np.hypot(yy - cy, xx - cx) <= 2
    img[vessels & lung] = 60
    free = ndi.binary_erosion(lung & ~ndi.binary_dilation(vessels, iterations=2), iterations=2)
    return img, lung, free


def _lesion(i=3):
    image, mask, _ = lesion_patches(8, size=32, seed=1)
    return image[i], mask[i]


def test_resample_keeps_integers_and_scales_the_area():
    hu, m = _lesion()
    out, om = resample_lesion(hu, m, pixel_mm=1.0, spacing=(0.7, 0.7))
    assert out.dtype == np.int16 and om.dtype == bool
    assert abs(om.sum() / (m.sum() / 0.49) - 1) < 0.15
    ys, xs = np.nonzero(om)
    assert ys.min() == 3 and xs.min() == 3  # cropped to the mask box plus the 3-pixel band
    big, bm = resample_lesion(hu, m, pixel_mm=1.0, spacing=(1.0, 1.0), scale=2.0)
    assert abs(bm.sum() / (4 * m.sum()) - 1) < 0.1
    assert hu[m > 0].min() - 1 <= big[bm].mean() <= hu[m > 0].max() + 1
    dot = np.zeros_like(m)
    dot[5, 5] = 1  # one pixel: sampled at rows / columns 1, 4, 7, ... at 3 mm it is lost
    with pytest.raises(InputError, match="vanishes"):
        resample_lesion(hu, dot, pixel_mm=1.0, spacing=(3.0, 3.0))
    with pytest.raises(InputError, match="empty"):
        resample_lesion(hu, np.zeros_like(m), 1.0, (1.0, 1.0))
    with pytest.raises(InputError, match="integers"):
        resample_lesion(hu.astype(np.float32), m, 1.0, (1.0, 1.0))


def test_insert_changes_only_the_footprint_inside_free_lung():
    img, lung, free = _slice()
    hu, m = resample_lesion(*_lesion(), pixel_mm=1.0, spacing=(1.0, 1.0))
    place = find_lesion_place(free, m, (1.0, 1.0), np.random.default_rng(4), edge_px=2)
    assert place is not None
    out, inserted, foot = blend_lesion(img, hu, m, place.box, edge_px=2)
    assert out.dtype == np.int16 and out.shape == img.shape
    assert np.array_equal(out[~foot], img[~foot])  # nothing outside the footprint changes
    assert foot.sum() > inserted.sum() and (foot | ~inserted).all()  # mask inside the footprint
    assert free[foot].all()  # the whole footprint in free parenchyma
    expect = np.zeros_like(inserted)
    expect[place.box] = m
    assert np.array_equal(inserted, expect)  # the mask is exactly the placed lesion
    # the lesion's HU level arrives: mean inside within 25 HU of the lesion's own mean
    assert abs(out[inserted].mean() - hu[m].mean()) < 25
    # the target's noise texture is inside the lesion: its high-pass SD is the parenchyma's
    hp = out.astype(float) - ndi.gaussian_filter(out.astype(float), 1.0)
    core = ndi.binary_erosion(inserted, iterations=2)
    ref = img.astype(float) - ndi.gaussian_filter(img.astype(float), 1.0)
    assert 0.6 < hp[core].std() / ref[free & ~foot].std() < 1.5
    same = find_lesion_place(free, m, (1.0, 1.0), np.random.default_rng(4), edge_px=2)
    assert same == place  # seeded


def test_no_room_gives_none_and_bad_boxes_are_refused():
    img, lung, free = _slice()
    hu, m = resample_lesion(*_lesion(), pixel_mm=1.0, spacing=(1.0, 1.0), scale=4.0)
    tiny = np.zeros_like(free)
    tiny[80:86, 80:86] = True
    assert find_lesion_place(tiny, m, (1.0, 1.0), np.random.default_rng(0)) is None
    with pytest.raises(InputError, match="does not hold"):
        blend_lesion(img, hu, m, (slice(150, 150 + m.shape[0]), slice(0, m.shape[1])))
    with pytest.raises(InputError, match="integer HU"):
        blend_lesion(img.astype(float), hu, m, (slice(0, m.shape[0]), slice(0, m.shape[1])))


@pytest.mark.real_data
@pytest.mark.slow
def test_real_tumour_into_a_real_tumour_free_chest_slice(real_data):
    """An MSD lung-cancer patch's tumour (2 mm pixels) into slice 50 of the tumour-free CPTAC
    chest series (0.564 mm pixels), into the free space of its HU lung mask."""
    import nibabel as nib

    from metalung_monai.anatomy import free_space_mask, lung_mask
    from metalung_monai.io import read_ct
    from metalung_monai.utils.orientation import sitk_to_canonical

    hu3, sp3 = sitk_to_canonical(read_ct(real_data / "cptac_chest_series", progress=False).image)
    img, sp = hu3[50].astype(np.int16), tuple(float(s) for s in sp3[1:])
    lungs = lung_mask(img, sp, progress=False)
    free = free_space_mask(img, lungs, sp, min_distance_mm=1.0)
    msd = real_data / "msd_lung_patches"
    src = np.asarray(nib.load(msd / "images" / "lung_018_p0.nii.gz").dataobj)[..., 0]
    src_m = np.asarray(nib.load(msd / "masks" / "lung_018_p0.nii.gz").dataobj)[..., 0] > 0
    hu, m = resample_lesion(src.astype(np.int16), src_m.astype(np.uint8), 2.0, sp)
    place = find_lesion_place(free, m, sp, np.random.default_rng(0), edge_px=3)
    assert place is not None
    out, inserted, foot = blend_lesion(img, hu, m, place.box, edge_px=3)
    assert np.array_equal(out[~foot], img[~foot]) and free[foot].all()
    assert abs(inserted.sum() * sp[0] * sp[1] / (src_m.sum() * 4.0) - 1) < 0.1  # same mm^2
    assert abs(np.median(out[inserted]) - np.median(src[src_m])) < 40
    assert (lungs[inserted] > 0).all()


def test_a_crop_with_an_empty_margin_is_never_placed_across_the_arrays_edge():
    """Free lung reaching the array's edge (a patch cut through the lung, as the MSD patches with
    their threshold lungs): the footprint fits there, but the crop's empty margin would leave the
    array; every place found keeps the whole crop inside, and the crop is blended there."""
    free = np.zeros((21, 14), bool)
    free[:, :9] = True  # a strip of lung along the left edge
    m = np.zeros((15, 12), bool)
    m[6:9, 5:8] = True  # a small lesion in the middle of a crop with a wide empty margin
    img = np.full(free.shape, -850, np.int16)
    hu = np.where(m, 20, -850).astype(np.int16)
    placed = 0
    for seed in range(40):
        place = find_lesion_place(free, m, (1.0, 1.0), np.random.default_rng(seed), edge_px=1)
        if place is None:
            continue
        placed += 1
        assert all(b.start >= 0 and b.stop <= n for b, n in zip(place.box, free.shape))
        blend_lesion(img, hu, m, place.box, edge_px=1)  # no "box leaves the image" error
    assert placed > 0
