"""3D lesion insertion (issue 13: "a 3D lesion into a volume across its slices; a 2D lesion only
into 2D data"): the functional core on ``(z, y, x)`` arrays at an anisotropic spacing, and
``FreeSpaced`` / ``InsertLesiond`` / ``RandInsertLesiond`` on MONAI volumes ``(1, H, W, D)``.

Checked on a constructed volume (fast) and on real CT (a real tumour of the pyradiomics case,
5 mm slices, into the tumour-free CPTAC chest series, 3 mm slices): nothing outside the footprint
changes (bit-identical), every voxel integer HU, the footprint inside the free lung, the mask
grows by exactly the inserted voxels, the lesion's volume in mm^3 within 15 % after resampling,
no room -> recorded skip, seeded replay, typed errors for a 2D lesion into 3D data (and back).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from lesion_factory import make_bank
from monai.data import MetaTensor
from scipy import ndimage as ndi

from metalung_monai.errors import InputError
from metalung_monai.synthesis.bank import LesionBank
from metalung_monai.synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion
from metalung_monai.transforms import FreeSpaced, InsertLesiond, RandInsertLesiond
from metalung_monai.transforms.metalung import axcodes_affine, metalung_records

#: the constructed volume's spacing (z, y, x) in mm: thick slices
SPACING = (2.5, 0.8, 0.8)


@functools.lru_cache(maxsize=4)
def _volume(shape=(24, 96, 96), seed=0):
    """``(hu int16, lung bool, free bool)`` in (z, y, x): body at 40 HU, an ellipsoidal lung at
    -850 +- 25 HU (integer noise), five dense vessels running along z; ``free`` = lung voxels at
    least 2 voxels (in-plane) from a vessel and from the pleura, and a slice from its top / base.
    Cached and read-only (the transforms get copies)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = (n / 2 for n in shape)
    lung = ((zz - cz) / (0.45 * shape[0])) ** 2 + ((yy - cy) / (0.4 * shape[1])) ** 2 + (
        (xx - cx) / (0.35 * shape[2])
    ) ** 2 <= 1
    img = np.full(shape, 40, np.int16)
    img[lung] = np.rint(-850 + rng.normal(0, 25, lung.sum())).astype(np.int16)
    vessels = np.zeros(shape, bool)
    for vy, vx in rng.integers(int(0.3 * shape[1]), int(0.7 * shape[1]), size=(5, 2)):
        vessels |= np.hypot(yy - vy, xx - vx) <= 1.5
    img[vessels & lung] = 60
    near = ndi.binary_dilation(vessels, iterations=2)
    inner = ndi.binary_erosion(lung, structure=np.ones((3, 5, 5), bool))
    out = (img, lung, inner & ~near)
    for a in out:
        a.setflags(write=False)
    return out


def _lesion3d(size=24, radii=(5.0, 6.0, 4.5), seed=1, hu=-20.0):
    """A lesion cube ``(z, y, x)`` at 1 mm: an ellipsoid at ``hu`` +- 50 in parenchyma at
    -850 +- 40 HU, a 2-voxel ramp at its edge; ``(hu int16, mask uint8)``."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:size, :size, :size].astype(float) - (size - 1) / 2
    d = np.sqrt(sum((a / r) ** 2 for a, r in zip(g, radii))) * min(radii)
    m = d <= min(radii)
    w = np.clip((min(radii) + 1 - d) / 2.0, 0, 1)
    img = (-850 + rng.normal(0, 40, m.shape)) * (1 - w) + (hu + rng.normal(0, 50, m.shape)) * w
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16), m.astype(np.uint8)


def _bank(n2=8, n3=6, size3d=24, with2d=True, seed=0):
    """A real-source bank with ``n2`` 2D rows (1 mm pixels) and ``n3`` 3D cubes (1 mm voxels);
    every patient in ``train``."""
    base = make_bank(n=max(n2, 1), size=32, seed=seed, hold_fraction=0.0, context_mm=32.0)
    rows3, img3, msk3 = [], [], []
    for i in range(n3):
        radii = tuple(np.random.default_rng(seed + i).uniform(3.5, 6.5, 3))
        hu, m = _lesion3d(size3d, radii, seed=seed + 10 + i, hu=-200.0 + 60 * i)
        img3.append(hu)
        msk3.append(m)
        rows3.append(
            {
                **base.table.iloc[0].to_dict(),
                "lesion_id": f"real3d{i:05d}",
                "kind": "3d",
                "index": i,
                "case_id": f"p{i:03d}",
                "patient_id": f"p{i:03d}",
                "lung_rads": "LR3",
                "model_size": size3d,
                "context_mm": float(size3d),
            }
        )
    table = base.table if with2d else base.table.iloc[:0]
    arrays = dict(base.arrays) if with2d else {k: v[:0] for k, v in base.arrays.items()}
    if n3:
        table = pd.concat([table, pd.DataFrame(rows3)], ignore_index=True)
        arrays.update(
            image3d=np.stack(img3),
            mask3d=np.stack(msk3),
            lung3d=np.ones((n3, size3d, size3d, size3d), np.uint8),
        )
    return LesionBank(arrays=arrays, table=table, meta={"path": "bank3d"})


def _monai(canonical: np.ndarray, spacing=SPACING, axcodes="PLS", dtype=None):
    """A canonical ``(z, y, x)`` array as a MONAI ``(1, H, W, D)`` MetaTensor in ``axcodes``
    (``PLS``: the bundles' ``Orientationd``; ``ARI``: every axis reversed)."""
    arr = np.transpose(canonical, (1, 2, 0))  # (y, x, z): P, L, S
    if axcodes == "ARI":
        arr = arr[::-1, ::-1, ::-1]
    elif axcodes != "PLS":
        raise ValueError(axcodes)
    sp = (spacing[1], spacing[2], spacing[0])
    arr = np.ascontiguousarray(arr)[None]
    t = torch.from_numpy(arr if dtype is None else arr.astype(dtype))
    return MetaTensor(t, affine=torch.as_tensor(axcodes_affine(axcodes, sp)))


def _canonical(x: torch.Tensor, axcodes="PLS") -> np.ndarray:
    arr = x.numpy()[0] if not isinstance(x, np.ndarray) else x[0]
    if axcodes == "ARI":
        arr = arr[::-1, ::-1, ::-1]
    return np.transpose(arr, (2, 0, 1))


def _data(seed=0, axcodes="PLS", tumour=True):
    img, lung, _ = _volume(seed=seed)
    mask = np.zeros(img.shape, np.uint8)
    if tumour:
        mask[11:13, 40:44, 44:48] = 1  # a tumour already there
    return {
        "image": _monai(img, axcodes=axcodes),
        "mask": _monai(mask, axcodes=axcodes),
        "lung_mask": torch.from_numpy(
            np.ascontiguousarray(_monai(lung.astype(np.uint8), axcodes=axcodes).numpy())
        ),
    }


# --------------------------------------------------------------------------- functional core
def test_resample_3d_keeps_integers_and_the_volume_at_anisotropic_spacing():
    hu, m = _lesion3d(size=32)
    vol_mm3 = float(m.sum())  # 1 mm voxels
    for sp in (SPACING, (3.0, 0.564, 0.564), (1.25, 0.7, 0.7)):
        out, om = resample_lesion(hu, m, pixel_mm=1.0, spacing=sp)
        assert out.dtype == np.int16 and om.dtype == bool and out.shape == om.shape
        assert abs(om.sum() * np.prod(sp) / vol_mm3 - 1) < 0.15, sp
        lo = [int(i.min()) for i in np.nonzero(om)]
        assert lo == [3, 3, 3]  # cropped to the mask box plus the 3-voxel band on every axis
        assert abs(np.median(out[om]) - np.median(hu[m > 0])) < 40
    # an anisotropic source (a native window: 2 mm slices) into another anisotropic grid
    thick = hu[::2]
    out, om = resample_lesion(thick, m[::2], pixel_mm=(2.0, 1.0, 1.0), spacing=(3.0, 0.7, 0.7))
    assert abs(om.sum() * 3.0 * 0.49 / (m[::2].sum() * 2.0) - 1) < 0.15
    with pytest.raises(InputError, match="positive"):
        resample_lesion(hu, m, 1.0, (0.8, 0.8))  # a volume needs 3 sizes
    with pytest.raises(InputError, match="positive"):
        resample_lesion(hu, m, (1.0, 1.0), SPACING)  # one pixel size per axis, or one


def test_3d_insert_changes_only_the_footprint_inside_free_lung():
    img, lung, free = _volume()
    hu, m = resample_lesion(*_lesion3d(), pixel_mm=1.0, spacing=SPACING)
    place = find_lesion_place(free, m, SPACING, np.random.default_rng(4), edge_px=2)
    assert place is not None and len(place.centre) == 3 and len(place.box) == 3
    out, inserted, foot = blend_lesion(img, hu, m, place.box, edge_px=2, spacing=SPACING)
    assert out.dtype == np.int16 and out.shape == img.shape
    assert np.array_equal(out[~foot], img[~foot])  # nothing outside the footprint changes
    assert free[foot].all()  # the whole 3D footprint in free parenchyma
    expect = np.zeros_like(inserted)
    expect[place.box] = m
    assert np.array_equal(inserted, expect) and (foot | ~inserted).all()
    assert inserted.any(axis=(1, 2)).sum() >= 3  # across several slices
    # the band is isotropic in mm: 2 pixels = 1.6 mm, less than a 2.5 mm slice, so the
    # footprint reaches no slice beyond the lesion's own
    assert np.array_equal(foot.any(axis=(1, 2)), inserted.any(axis=(1, 2)))
    assert foot.sum() > inserted.sum()
    assert abs(out[inserted].mean() - hu[m].mean()) < 25  # the lesion's HU level arrives
    # the target's noise texture inside the lesion: in-plane high-pass SD as the parenchyma's
    hp = out.astype(float) - ndi.gaussian_filter(out.astype(float), (0.32, 1.0, 1.0))
    ref = img.astype(float) - ndi.gaussian_filter(img.astype(float), (0.32, 1.0, 1.0))
    core = ndi.binary_erosion(inserted, structure=np.ones((1, 5, 5), bool))
    assert 0.6 < hp[core].std() / ref[free & ~foot].std() < 1.5
    # the blend reads only a window around the box: a crop of the image gives the same voxels
    win = tuple(slice(max(b.start - 3, 0), b.stop + 3) for b in place.box)
    local = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(place.box, win))
    sub, _, _ = blend_lesion(img[win], hu, m, local, edge_px=2, spacing=SPACING)
    assert np.array_equal(sub, out[win])
    same = find_lesion_place(free, m, SPACING, np.random.default_rng(4), edge_px=2)
    assert same == place  # seeded


def test_3d_no_room_and_2d_into_3d_are_refused():
    img, lung, free = _volume()
    hu, m = resample_lesion(*_lesion3d(), pixel_mm=1.0, spacing=SPACING, scale=3.0)
    tiny = np.zeros_like(free)
    tiny[10:14, 40:50, 40:50] = True
    assert find_lesion_place(tiny, m, SPACING, np.random.default_rng(0)) is None
    flat_hu, flat_m = hu[hu.shape[0] // 2], m[m.shape[0] // 2]
    with pytest.raises(InputError, match="2D lesion goes only into a 2D"):
        find_lesion_place(free, flat_m, SPACING, np.random.default_rng(0))
    with pytest.raises(InputError, match="a 2D lesion into 3D data"):
        blend_lesion(img, flat_hu, flat_m, (slice(0, flat_m.shape[0]), slice(0, flat_m.shape[1])))
    with pytest.raises(InputError, match="a 3D lesion into 2D data"):
        find_lesion_place(free[12], m, SPACING[1:], np.random.default_rng(0))
    box = tuple(slice(0, n) for n in m.shape)
    with pytest.raises(InputError, match="needs the spacing"):
        blend_lesion(img, hu, m, box)  # 3D: the band is in mm, the spacing is required
    with pytest.raises(InputError, match="does not hold"):
        blend_lesion(img, hu, m, (slice(20, 20 + m.shape[0]), *box[1:]), spacing=SPACING)


# --------------------------------------------------------------------------- MONAI transforms
@pytest.fixture(scope="module")
def bank():
    return _bank()


def test_insertlesiond_puts_a_3d_lesion_into_a_monai_volume(bank):
    data = _data()
    t = InsertLesiond(("image", "mask"), bank, index=2, seed=3)
    out = t(data)
    assert isinstance(out["image"], MetaTensor) and out["image"].dtype == torch.int16
    assert out["image"].shape == data["image"].shape
    assert torch.equal(out["image"].affine, data["image"].affine)
    img0, img1 = data["image"].numpy()[0], out["image"].numpy()[0]  # (H, W, D) = (y, x, z)
    m0, m1 = data["mask"].numpy()[0] > 0, out["mask"].numpy()[0] > 0
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] and rec["lesion_id"] == t.choices3d.table.iloc[2].lesion_id
    assert rec["lesion_id"].startswith("real3d") and metalung_records(out["mask"])[-1] == rec
    assert metalung_records(data["image"]) == []  # the input's metadata is untouched
    assert len(rec["centre"]) == 3 and len(rec["box"]) == 3
    inserted = m1 & ~m0
    assert (m1 | ~m0).all() and inserted.sum() == rec["inserted_voxels"]
    assert not (inserted & m0).any()
    # box and centre index the array as given (y, x, z here): every change lies inside
    box = tuple(slice(a, b) for a, b in rec["box"])
    outside = np.ones(img0.shape, bool)
    outside[box] = False
    changed = img1 != img0
    assert changed.any() and not changed[outside].any() and not inserted[outside].any()
    assert changed.sum() <= rec["footprint_voxels"]
    assert all(s.start <= c < s.stop for c, s in zip(rec["centre"], box))
    assert len(np.unique(np.nonzero(inserted)[2])) >= 3  # across several slices (the z axis)
    # the whole lesion lies in free lung (1 mm from vessels and pleura, off the tumour)
    free = _canonical(FreeSpaced("image")(data)["free_space"]) > 0
    assert free[_canonical(inserted[None])].all()
    # real size kept: volume in mm^3 within 15 % of the bank cube's (1 mm voxels)
    cube = float(t.choices3d.patches("3d")[1][2].sum())
    assert abs(inserted.sum() * np.prod(SPACING) / cube - 1) < 0.15
    again = t(_data())
    assert torch.equal(again["image"], out["image"]) and torch.equal(again["mask"], out["mask"])


def test_orientation_does_not_change_the_insertion(bank):
    """The same volume stored PLS and with every axis reversed (ARI): the same voxels change in
    the patient, and the records index each array as given."""
    t = InsertLesiond(("image", "mask"), bank, index=4, seed=11)
    a, b = t(_data(axcodes="PLS")), t(_data(axcodes="ARI"))
    assert np.array_equal(_canonical(a["image"]), _canonical(b["image"], "ARI"))
    assert np.array_equal(_canonical(a["mask"]), _canonical(b["mask"], "ARI"))
    ra, rb = metalung_records(a["image"])[-1], metalung_records(b["image"])[-1]
    shape = a["image"].shape[1:]
    assert rb["centre"] == [n - 1 - c for c, n in zip(ra["centre"], shape)]
    assert rb["box"] == [[n - e, n - s] for (s, e), n in zip(ra["box"], shape)]
    # a float image of integer HU and plain tensors with a spacing give the same voxels
    data = _data()
    data["image"] = data["image"].float()
    f = t(data)
    assert f["image"].dtype == torch.float32 and torch.equal(f["image"].short(), a["image"])
    plain = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in _data().items()}
    with pytest.raises(InputError, match="no spacing"):
        t(plain)
    ras = InsertLesiond(("image", "mask"), bank, index=4, seed=11, spacing=(0.8, 0.8, 2.5))
    out = ras(plain)  # a plain tensor is read as RAS: another layout, the same lesion volume
    ins = (out["mask"].numpy() > 0) & (plain["mask"].numpy() == 0)
    assert ins.sum() == ra["inserted_voxels"]  # the same lesion, resampled to the same sizes
    changed = out["image"].numpy() != plain["image"].numpy()
    assert changed.any() and not (changed & ~ndi.binary_dilation(ins, iterations=3)).any()


def test_rand_insert_3d_is_seeded_replays_and_uses_the_cached_map(bank):
    t = RandInsertLesiond(("image", "mask"), bank, prob=1.0, scale_range=(1.0, 1.5))
    t.set_random_state(5)
    fs = FreeSpaced("image")(_data())
    assert fs["free_space"].shape == fs["image"].shape and fs["free_space"].dtype == torch.uint8
    first = t(fs)
    rec = metalung_records(first["image"])[-1]
    assert rec["applied"] and rec["lesion_id"].startswith("real3d") and len(rec["box"]) == 3
    replay = t(_data(), randomize=False)  # the map computed per call: the same insertion
    assert torch.equal(first["image"], replay["image"])
    assert torch.equal(first["mask"], replay["mask"])
    assert metalung_records(replay["image"]) == metalung_records(first["image"])
    t2 = RandInsertLesiond(("image", "mask"), bank, prob=1.0, scale_range=(1.0, 1.5))
    assert torch.equal(t2.set_random_state(5)(fs)["image"], first["image"])
    # a slice of the same bank draws a 2D lesion
    from test_insert_lesiond import _data as slice_data

    rec2 = metalung_records(t(slice_data())["image"])[-1]
    assert rec2["lesion_id"].startswith("real0") and len(rec2["box"]) == 2


def test_3d_no_room_is_a_recorded_skip_and_2d_lesions_never_go_into_volumes(bank):
    data = _data()
    data["lung_mask"] = torch.zeros_like(data["lung_mask"])
    out = InsertLesiond(("image", "mask"), bank, index=0)(data)
    assert torch.equal(out["image"], data["image"]) and torch.equal(out["mask"], data["mask"])
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] is False and rec["reason"] == "no room"
    flat = _bank(n3=0)  # 2D lesions only
    with pytest.raises(InputError, match=r"bank3d.*no 3D lesions to insert for 'image'"):
        InsertLesiond(("image", "mask"), flat)(_data())
    with pytest.raises(InputError, match="2D lesion goes only into 2D data"):
        RandInsertLesiond(("image", "mask"), flat)(_data())
    with pytest.raises(InputError, match="no 3D lesions"):
        RandInsertLesiond(("image", "mask"), {"a": flat, "b": flat})(_data())
    cubes = _bank(with2d=False)  # 3D lesions only: a slice is refused
    from test_insert_lesiond import _data as slice_data

    with pytest.raises(InputError, match="no 2D lesions to insert"):
        InsertLesiond(("image", "mask"), cubes)(slice_data())
    # several banks: one without 3D lesions is left out of the draw for a volume
    mixed = RandInsertLesiond(
        ("image", "mask"), {"flat": flat, "cubes": cubes}, weights={"flat": 9, "cubes": 1}
    ).set_random_state(0)
    for _ in range(5):
        mixed.randomize(_data())
        assert mixed.inner.name == "cubes"
    with pytest.raises(InputError, match="channel-first"):
        InsertLesiond(("image", "mask"), bank)({**_data(), "image": torch.zeros(1, 4, 4, 4, 4)})


# --------------------------------------------------------------------------- real CT
@pytest.fixture(scope="module")
def real_pair(real_data):
    """The pyradiomics case's real tumour (5 mm slices) and slices 30-74 of the tumour-free CPTAC
    chest series (3 mm slices, 0.564 mm pixels) with its HU lung mask and free-space map."""
    import SimpleITK as sitk

    from metalung_monai.anatomy import free_space_mask, lung_mask
    from metalung_monai.io import read_ct
    from metalung_monai.utils.orientation import sitk_to_canonical

    src = real_data / "pyradiomics_lung1"
    hu_s, sp_s = sitk_to_canonical(sitk.ReadImage(str(src / "lung1_image.nrrd")))
    lab, _ = sitk_to_canonical(sitk.ReadImage(str(src / "lung1_label.nrrd")))
    box = ndi.find_objects((lab > 0).astype(np.uint8))[0]
    win = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(box, (3, 40, 40)))
    tumour = (hu_s[win].astype(np.int16), (lab[win] > 0).astype(np.uint8), sp_s)
    hu3, sp3 = sitk_to_canonical(read_ct(real_data / "cptac_chest_series", progress=False).image)
    vol = np.ascontiguousarray(hu3[30:75]).astype(np.int16)
    lungs = lung_mask(vol, sp3, progress=False)
    free = free_space_mask(vol, lungs, sp3, min_distance_mm=1.0)
    return tumour, (vol, lungs, free, tuple(float(s) for s in sp3))


@pytest.mark.real_data
@pytest.mark.slow
def test_real_3d_tumour_into_a_real_tumour_free_chest_volume(real_pair):
    (src, src_m, sp_s), (vol, lungs, free, sp) = real_pair
    hu, m = resample_lesion(src, src_m, pixel_mm=sp_s, spacing=sp)
    place = find_lesion_place(free, m, sp, np.random.default_rng(0), edge_px=2)
    assert place is not None
    out, inserted, foot = blend_lesion(vol, hu, m, place.box, edge_px=2, spacing=sp)
    assert out.dtype == np.int16 and np.array_equal(out[~foot], vol[~foot])
    assert free[foot].all() and (lungs[inserted] > 0).all()
    # the same volume in mm^3 after 5 mm -> 3 mm slices (837 voxels, 1.36 cm^3)
    v_src = src_m.sum() * np.prod(sp_s)
    assert abs(inserted.sum() * np.prod(sp) / v_src - 1) < 0.15
    assert inserted.any(axis=(1, 2)).sum() >= 4  # 15 mm of tumour on 3 mm slices
    # the blend keeps the resampled lesion's level; resampling 5 mm slices to 3 mm mixes the
    # nodule's top and base slices with their surroundings (about -60 HU in the median)
    assert abs(np.median(out[inserted]) - np.median(hu[m])) < 25
    assert abs(np.median(hu[m]) - np.median(src[src_m > 0])) < 100


@pytest.mark.real_data
@pytest.mark.slow
def test_real_volume_through_the_monai_transforms(real_pair):
    """A bank cube made as ``metalung lesion-bank`` makes it (32 mm context at 1 mm) from the real
    tumour, inserted into the real volume as a PLS MetaTensor, the free-space map from
    ``FreeSpaced``; then the same with no room (every free voxel taken)."""
    from metalung_monai.synthesis.lesion_bank import crop_window, resize_window

    (src, src_m, sp_s), (vol, lungs, free, sp) = real_pair
    centre = [int(np.mean(i)) for i in np.nonzero(src_m)]
    shape = tuple(max(1, round(32.0 / s)) for s in sp_s)
    cube = resize_window(
        crop_window(src, centre, shape, -1000)[0],
        crop_window(src_m, centre, shape, 0)[0],
        crop_window(np.ones_like(src_m), centre, shape, 0)[0],
        (32, 32, 32),
    )
    bank = _bank(n3=1)
    bank.arrays.update(image3d=cube[0][None], mask3d=cube[1][None], lung3d=cube[2][None])
    bank.table.loc[bank.table["kind"] == "3d", "model_size"] = 32
    bank.table.loc[bank.table["kind"] == "3d", "context_mm"] = 32.0
    data = {
        "image": _monai(vol, spacing=sp),
        "mask": _monai(np.zeros(vol.shape, np.uint8), spacing=sp),
        "lung_mask": _monai(lungs.astype(np.uint8), spacing=sp).as_tensor(),
    }
    data["free_space"] = torch.from_numpy(
        np.ascontiguousarray(_monai(free.astype(np.uint8), spacing=sp).numpy())
    )
    t = InsertLesiond(("image", "mask"), bank, index=0, seed=2)
    out = t(data)
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] and len(rec["box"]) == 3
    before, after = _canonical(data["image"]), _canonical(out["image"])
    inserted = _canonical(out["mask"]) > 0
    changed = before != after
    assert free[inserted].all() and inserted.sum() == rec["inserted_voxels"]
    assert changed.sum() <= rec["footprint_voxels"] and not changed[~free].any()
    assert abs(inserted.sum() * np.prod(sp) / (src_m.sum() * np.prod(sp_s)) - 1) < 0.15
    full = {**data, "free_space": torch.zeros_like(data["free_space"])}
    skip = t(full)
    assert metalung_records(skip["image"])[-1]["reason"] == "no room"
    assert torch.equal(skip["image"], data["image"])
