"""``InsertLesiond`` / ``RandInsertLesiond`` (issue 13): a bank lesion into free lung of a 2D
slice as a MONAI dictionary transform: integer HU, only the footprint changes, the mask grows by
exactly the inserted lesion, records in ``meta["metalung"]``, seeded draws and replay, no room
and ``prob`` recorded as skips, inside a MONAI ``Compose``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lesion_factory import make_bank
from monai.data import MetaTensor
from monai.transforms import Compose
from test_insertion import _slice

from metalung_monai.errors import InputError
from metalung_monai.transforms.insert_lesion import InsertLesiond, RandInsertLesiond
from metalung_monai.transforms.metalung import metalung_records

SPACING = 0.8


@pytest.fixture(scope="module")
def bank():
    return make_bank(n=24, size=32, seed=0, context_mm=32.0)  # 1 mm per model pixel


def _data(seed=0):
    img, lung, _ = _slice(seed=seed)
    aff = np.diag([SPACING, SPACING, 1.0, 1.0])
    mask = np.zeros_like(img, dtype=np.uint8)
    mask[70:74, 60:64] = 1  # a tumour already there
    return {
        "image": MetaTensor(torch.from_numpy(img[None]), affine=aff),
        "mask": MetaTensor(torch.from_numpy(mask[None]), affine=aff),
        "lung_mask": torch.from_numpy(lung[None].astype(np.uint8)),
    }


def test_insert_changes_the_footprint_only_and_the_mask_by_the_lesion(bank):
    data = _data()
    t = InsertLesiond(("image", "mask"), bank, index=5, seed=3)
    out = t(data)
    img0, img1 = data["image"].numpy()[0], out["image"].numpy()[0]
    m0, m1 = data["mask"].numpy()[0] > 0, out["mask"].numpy()[0] > 0
    assert out["image"].dtype == torch.int16 and isinstance(out["image"], MetaTensor)
    rec = metalung_records(out["image"])[-1]
    row = t.choices.table.iloc[5]  # the 6th train lesion (hold lesions are never drawn)
    assert set(t.choices.table["subset"]) == {"train"}
    assert rec["op"] == "insert_lesion" and rec["applied"] and rec["lesion_id"] == row.lesion_id
    assert metalung_records(out["mask"])[-1] == rec
    assert metalung_records(data["image"]) == []  # the input's metadata is untouched
    inserted = m1 & ~m0
    assert (m1 | ~m0).all() and inserted.sum() == rec["inserted_voxels"]
    (y0, y1), (x0, x1) = rec["box"]
    changed = img1 != img0
    assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    assert changed.sum() <= rec["footprint_voxels"]
    # the lesion keeps its real size: area in mm^2 within 15 % of the bank lesion's
    area_bank = float(t.choices.patches("2d")[1][5].sum())  # 1 mm pixels
    assert abs(inserted.sum() * SPACING**2 / area_bank - 1) < 0.15
    lung = data["lung_mask"].numpy()[0] > 0
    assert lung[inserted].all() and not (inserted & m0).any()
    # deterministic: the same arguments give the same output
    again = t(_data())
    assert torch.equal(again["image"], out["image"]) and torch.equal(again["mask"], out["mask"])


def test_rand_insert_is_seeded_replays_and_skips(bank):
    t = RandInsertLesiond(("image", "mask"), bank, prob=1.0, scale_range=(1.0, 2.0))
    t.set_random_state(7)
    first = t(_data())
    replay = t(_data(), randomize=False)
    assert torch.equal(first["image"], replay["image"])
    assert metalung_records(first["image"]) == metalung_records(replay["image"])
    t2 = RandInsertLesiond(("image", "mask"), bank, prob=1.0, scale_range=(1.0, 2.0))
    t2.set_random_state(7)
    assert torch.equal(t2(_data())["image"], first["image"])
    rec = metalung_records(first["image"])[-1]
    assert 1.0 <= rec["scale"] <= 2.0 and rec["applied"]
    skip = RandInsertLesiond(("image", "mask"), bank, prob=0.0)
    data = _data()
    out = skip(data)
    assert torch.equal(out["image"], data["image"])
    assert metalung_records(out["image"]) == [
        {"op": "insert_lesion", "applied": False, "reason": "prob"}
    ]
    # in a MONAI pipeline, several draws differ
    pipe = Compose([RandInsertLesiond(("image", "mask"), bank)]).set_random_state(1)
    a, b = pipe(_data()), pipe(_data())
    assert not torch.equal(a["image"], b["image"])


def test_no_room_is_a_recorded_skip_and_bad_input_is_refused(bank):
    data = _data()
    data["lung_mask"] = torch.zeros_like(data["lung_mask"])
    out = InsertLesiond(("image", "mask"), bank, index=0)(data)
    assert torch.equal(out["image"], data["image"]) and torch.equal(out["mask"], data["mask"])
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] is False and rec["reason"] == "no room"
    t = InsertLesiond(("image", "mask"), bank, index=0)
    with pytest.raises(InputError, match="lung_mask"):
        t({"image": data["image"], "mask": data["mask"]})
    bad = dict(_data())
    bad["image"] = bad["image"].float() + 0.5
    with pytest.raises(InputError, match="integers"):
        t(bad)
    with pytest.raises(InputError, match="channel-first"):
        t({**_data(), "image": torch.zeros(2, 8, 8, dtype=torch.int16)})
    with pytest.raises(InputError, match="index"):
        InsertLesiond(("image", "mask"), bank, index=999)(_data())
    with pytest.raises(InputError, match="scale_range"):
        RandInsertLesiond(("image", "mask"), bank, scale_range=(2.0, 1.0))
    hold_only = make_bank(n=6, size=32, seed=0, n_patients=2, hold_fraction=1.0, context_mm=32.0)
    with pytest.raises(InputError, match="no 2D lesions"):
        InsertLesiond(("image", "mask"), hold_only)


def test_several_banks_drawn_by_weight(bank):
    gen = make_bank(n=12, size=32, seed=5, source="generated", context_mm=32.0)
    t = RandInsertLesiond(
        ("image", "mask"), {"real": bank, "dcgan": gen}, weights={"real": 1, "dcgan": 3}
    ).set_random_state(0)
    names = []
    for _ in range(40):
        t.randomize()
        names.append(t.inner.name)
    n_gen = names.count("dcgan")
    assert 22 <= n_gen <= 38  # binomial(40, 0.75): mean 30, SD 2.7
    out = t(_data(), randomize=False)
    rec = metalung_records(out["image"])[-1]
    assert rec["bank"] == names[-1] and rec["lesion_id"].startswith(
        "generated" if names[-1] == "dcgan" else "real"
    )
    only_real = RandInsertLesiond(
        ("image", "mask"), {"real": bank, "dcgan": gen}, weights={"real": 1, "dcgan": 0}
    ).set_random_state(1)
    for _ in range(10):
        only_real.randomize()
        assert only_real.inner.name == "real"
    with pytest.raises(InputError, match="weights"):
        RandInsertLesiond(("image", "mask"), {"real": bank}, weights={"other": 1})


def test_precomputed_free_space_is_used_and_gives_the_same_insertion(bank):
    from metalung_monai.anatomy import free_space_mask
    from metalung_monai.transforms import FreeSpaced

    data = _data()
    fs = FreeSpaced("image")(data)
    want = free_space_mask(
        data["image"].numpy()[0], data["lung_mask"].numpy()[0], (SPACING, SPACING), 1.0
    )
    assert fs["free_space"].shape == (1, *want.shape)
    assert np.array_equal(fs["free_space"].numpy()[0] > 0, want)
    t = InsertLesiond(("image", "mask"), bank, index=2, seed=9)
    a, b = t(_data()), t(fs)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    blocked = {**fs, "free_space": torch.zeros_like(fs["free_space"])}
    assert metalung_records(t(blocked)["image"])[-1]["reason"] == "no room"
    off = InsertLesiond(("image", "mask"), bank, index=2, seed=9, free_key=None)
    assert torch.equal(off(blocked)["image"], a["image"])  # free_key=None: always computed


def test_free_space_cache_returns_the_computed_map_keyed_by_content():
    from metalung_monai.transforms import FreeSpaced

    off, on = FreeSpaced("image", cache_mb=0), FreeSpaced("image")
    for seed in (0, 1, 0, 1, 0):  # two cases, each seen again
        data = _data(seed)
        want, got = off(data)["free_space"], on(data)["free_space"]
        assert torch.equal(want, got)
    assert (on.hits, on.misses) == (3, 2)
    # the same pixels with another pixel size, or other lungs: another map, not a hit
    data = _data(0)
    wide = {
        **data,
        "image": MetaTensor(data["image"].as_tensor(), affine=np.diag([1.6, 1.6, 1, 1])),
    }
    assert torch.equal(on(wide)["free_space"], off(wide)["free_space"])
    less = {**data, "lung_mask": torch.zeros_like(data["lung_mask"])}
    assert not on(less)["free_space"].any()
    assert (on.hits, on.misses) == (3, 4)
    # bounded: room for one 160 x 160 map, so the older one is evicted
    one = FreeSpaced("image", cache_mb=(1.5 * 160 * 160) / 2**20)
    for seed in (0, 1, 0):
        one(_data(seed))
    assert (one.hits, one.misses) == (0, 3)
    out = on(_data(0))["free_space"]
    out[...] = 0  # the caller's copy: the cached map is not changed through it
    assert torch.equal(on(_data(0))["free_space"], off(_data(0))["free_space"])
    with pytest.raises(InputError, match="cache_mb"):
        FreeSpaced("image", cache_mb=-1)


def test_a_lesion_smaller_than_a_pixel_is_a_recorded_skip():
    img = np.zeros((1, 32, 32), np.int16) - 850
    msk = np.zeros((1, 32, 32), np.uint8)
    msk[0, 16, 16] = 1  # one pixel of 1 mm: gone at 6 mm pixels
    tiny = make_bank(n=1, size=32, seed=0, context_mm=32.0, images=img, masks=msk, labels=["LR2"])
    data = _data()
    coarse = np.diag([6.0, 6.0, 1.0, 1.0])
    data["image"] = MetaTensor(data["image"].as_tensor(), affine=coarse)
    data["mask"] = MetaTensor(data["mask"].as_tensor(), affine=coarse)
    out = InsertLesiond(("image", "mask"), tiny, index=0)(data)
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] is False and rec["reason"] == "too small"
    assert torch.equal(out["image"].as_tensor(), data["image"].as_tensor())
    assert torch.equal(out["mask"].as_tensor(), data["mask"].as_tensor())
