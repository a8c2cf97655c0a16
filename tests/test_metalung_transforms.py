"""MetaLung as MONAI transforms: MetaTensors, orientation, inversion, randomness, Compose, DataLoader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from chest_factory import as_dict, lps_affine, make_chest
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd, RandFlipd

from metalung_monai.errors import InputError
from metalung_monai.transforms import (
    METALUNG_OPS,
    MetaLungd,
    MirrorLR,
    MirrorLRd,
    RandIntegerNoise,
    RandIntegerNoised,
    RandMirrorLRd,
    RandRelocateTumord,
    RandRotateImage,
    RandRotateImaged,
    RandRotateTumord,
    RandTumorNoised,
    metalung_records,
)
from metalung_monai.utils.orientation import canonical_axes, to_canonical


@pytest.fixture(scope="module")
def chest2d():
    return make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)


@pytest.fixture(scope="module")
def chest3d():
    return make_chest(shape=(12, 80, 104), tumours=(("right", 4.0), ("left", 3.0)), seed=12)


def canonical(t):
    ax = canonical_axes(t.affine.numpy(), t.ndim - 1, t.meta.get("space", "RAS"))
    return to_canonical(t[0].numpy(), ax)


# --------------------------------------------------------------------------- types and metadata
@pytest.mark.parametrize("op", METALUNG_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_every_op_keeps_type_dtype_affine_and_records_itself(chest2d, op, dtype):
    d = as_dict(chest2d, dtype=dtype)
    t = MetaLungd(ops=[op]).set_random_state(0)
    out = t(d)
    for key in ("image", "mask"):
        assert isinstance(out[key], MetaTensor)
        assert out[key].shape == d[key].shape and out[key].dtype == d[key].dtype
        assert torch.equal(out[key].affine, d[key].affine)  # new anatomy, same geometry
    rec = metalung_records(out["image"])
    assert rec[-1]["op"] == op and rec[-1]["applied"] is True
    assert isinstance(out["image"].meta["metalung"], str)  # JSON string: collates in batches
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
    # the input dictionary is not modified
    assert torch.equal(d["image"], as_dict(chest2d, dtype=dtype)["image"])


def test_numpy_and_plain_tensor_inputs_with_axcodes(chest2d):
    img = chest2d.hu[None]  # canonical (y, x) = rows posterior, columns patient left -> "PL"
    out = MirrorLR(axcodes="PL")(img)
    assert isinstance(out, np.ndarray) and np.array_equal(out[0], chest2d.hu[:, ::-1])
    out_t = MirrorLR(axcodes="PL")(torch.as_tensor(img))
    assert isinstance(out_t, torch.Tensor) and np.array_equal(out_t[0].numpy(), chest2d.hu[:, ::-1])
    noisy = RandIntegerNoise(noise_range=(0, 20)).set_random_state(1)(img)
    diff = noisy.astype(int) - img
    assert isinstance(noisy, np.ndarray) and diff.min() >= 0 and diff.max() <= 20


# --------------------------------------------------------------------------- orientation
@pytest.mark.parametrize("perm,flip", [((0, 1, 2), ()), ((2, 1, 0), (0,)), ((1, 2, 0), (1, 2))])
def test_mirror_follows_the_patient_not_the_array(chest3d, perm, flip):
    """The same volume stored in three layouts: the mirror always swaps the patient's lungs."""
    base = as_dict(chest3d)
    # re-store the canonical (z, y, x) array in another order, with the matching affine
    arr = np.transpose(chest3d.hu, perm)
    aff = lps_affine(chest3d.spacing).numpy()
    new_aff = np.eye(4)
    new_aff[:, :3] = aff[:, list(perm)]
    for ax in flip:
        arr = np.flip(arr, ax)
        new_aff[:3, 3] += new_aff[:3, ax] * (arr.shape[ax] - 1)
        new_aff[:3, ax] *= -1
    img = MetaTensor(
        torch.as_tensor(np.ascontiguousarray(arr)[None].astype(np.float32)),
        affine=torch.as_tensor(new_aff),
    )
    assert np.array_equal(canonical(img), chest3d.hu)
    out = MirrorLR()(img)
    assert np.array_equal(canonical(out), chest3d.hu[..., ::-1])
    assert np.array_equal(canonical(MirrorLR()(base["image"])), chest3d.hu[..., ::-1])


# --------------------------------------------------------------------------- inversion
def test_mirror_and_rotation_invert(chest3d):
    d = as_dict(chest3d)
    t = Compose(
        [RandMirrorLRd(prob=1.0), RandRotateImaged(prob=1.0, angle_range=(20, 40))]
    ).set_random_state(3)
    out = t(d)
    assert [op["class"] for op in out["image"].applied_operations] == [
        "RandMirrorLR",
        "RandRotateImage",
    ]
    assert not torch.equal(out["image"], d["image"])
    inv = t.inverse(out)
    assert inv["image"].applied_operations == [] and inv["image"].shape == d["image"].shape
    # every voxel the rotation kept comes back exactly (the same transform applied to an image of
    # voxel indices tells which were kept); those dropped or pushed off the grid are approximated
    index = MetaTensor(
        torch.arange(d["image"].numel(), dtype=torch.float64).reshape(d["image"].shape),
        affine=d["image"].affine,
    )
    src = t.set_random_state(3)({"image": index, "mask": d["mask"]})["image"]
    kept = np.zeros(d["image"].numel(), bool)
    kept[src.numpy()[src.numpy() >= 0].astype(np.int64)] = True
    assert kept.mean() > 0.5  # most voxels (corners leave a 80 x 104 grid at 20-40 degrees)
    assert np.array_equal(inv["image"].numpy().ravel()[kept], d["image"].numpy().ravel()[kept])
    m = MirrorLRd()
    assert torch.equal(m.inverse(m(d))["image"], d["image"])


def test_invertd_undoes_mirror_for_test_time_augmentation(chest2d):
    pre = Compose([MetaLungd(ops=["mirror"], prob=1.0)])
    data = [
        as_dict(chest2d),
        as_dict(make_chest(shape=(96, 128), tumours=(("right", 4.0),), seed=2)),
    ]
    batch = next(iter(DataLoader(Dataset(data, transform=pre), batch_size=2)))
    batch["pred"] = batch["mask"].clone()  # a perfect "prediction" in the mirrored frame
    post = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)
    for item, src in zip(decollate_batch(batch), data):
        assert torch.equal(post(item)["pred"].as_tensor(), src["mask"].as_tensor())


# --------------------------------------------------------------------------- randomness
def test_set_random_state_makes_every_op_reproducible(chest2d):
    for op in METALUNG_OPS:
        a = MetaLungd(ops=[op]).set_random_state(7)(as_dict(chest2d))
        b = MetaLungd(ops=[op]).set_random_state(7)(as_dict(chest2d))
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]), op
    outs = [
        MetaLungd(ops=["rotate_image"]).set_random_state(s)(as_dict(chest2d))["image"]
        for s in (1, 2)
    ]
    assert not torch.equal(*outs)


def test_online_mode_picks_ops_by_weight_and_number(chest2d):
    t = MetaLungd(ops=["noise_image", "mirror"], weights=[1.0, 0.0], num_ops=1).set_random_state(0)
    for _ in range(5):
        assert [r["op"] for r in metalung_records(t(as_dict(chest2d))["image"])] == ["noise_image"]
    t = MetaLungd(num_ops=(2, 3)).set_random_state(0)
    counts = {len(metalung_records(t(as_dict(chest2d))["image"])) for _ in range(12)}
    assert counts <= {2, 3, 4} and len(counts) > 1  # mirror also records on the mask-free path
    unchanged = MetaLungd(prob=0.0)(as_dict(chest2d))
    assert (
        torch.equal(unchanged["image"], as_dict(chest2d)["image"])
        and metalung_records(unchanged["image"]) == []
    )
    with pytest.raises(ValueError, match="unknown operation"):
        MetaLungd(ops=["blur"])
    with pytest.raises(ValueError, match="num_ops"):
        MetaLungd(ops=["mirror"], num_ops=2)


def test_expand_mode_gives_at_least_five_new_cases(chest2d):
    out = MetaLungd(mode="expand").set_random_state(0)(as_dict(chest2d))
    assert isinstance(out, list) and len(out) >= 6  # the input + >= 5 variants
    ops = [metalung_records(v["image"])[-1]["op"] for v in out[1:]]
    assert sorted(ops) == sorted(METALUNG_OPS)
    assert metalung_records(out[0]["image"]) == []
    copies = MetaLungd(mode="expand", copies=3, include_original=False).set_random_state(0)(
        as_dict(chest2d)
    )
    assert len(copies) == 1 + 5 * 3  # mirror is deterministic: once


def test_dataloader_workers_flatten_expansion_and_are_seeded(chest2d):
    data = [as_dict(make_chest(shape=(64, 96), tumours=(("left", 4.0),), seed=s)) for s in range(4)]
    ds = Dataset(
        data, transform=MetaLungd(mode="expand", ops=["mirror", "noise_image", "rotate_image"])
    )
    runs = []
    for _ in range(2):
        loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
        batches = list(loader)
        assert batches[0]["image"].shape == (8, 1, 64, 96)  # 2 items x (1 + 3 variants)
        runs.append(torch.cat([b["image"] for b in batches]))
        recs = [json.loads(s) for s in batches[0]["image"].meta["metalung"]]
        assert [r[-1]["op"] if r else None for r in recs][:4] == [
            None,
            "mirror",
            "noise_image",
            "rotate_image",
        ]
    assert runs[0].shape == (16, 1, 64, 96)


# --------------------------------------------------------------------------- lazy Compose
def test_exact_even_inside_a_lazy_compose(chest2d):
    d = as_dict(chest2d)
    t = Compose(
        [
            RandFlipd(keys=("image", "mask"), prob=1.0, spatial_axis=0),
            RandRotateImaged(prob=1.0),
            MetaLungd(ops=["relocate"]),
        ],
        lazy=True,
    ).set_random_state(0)
    out = t(d)
    assert set(np.unique(out["image"].numpy())) <= set(np.unique(d["image"].numpy())) | {-1024.0}
    assert [op["class"] for op in out["image"].applied_operations] == [
        "RandFlipd",
        "RandRotateImage",
    ]
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
    assert int(out["mask"].sum()) > 0


# --------------------------------------------------------------------------- tumour operations
def test_relocation_uses_given_lungs_and_reports_no_room(chest2d):
    d = as_dict(chest2d, with_lungs=True)
    out = RandRelocateTumord(lung_key="lung").set_random_state(0)(d)
    rec = metalung_records(out["image"])[-1]
    assert rec["applied"] and rec["components"][0]["to_lung"] == "right"
    assert (chest2d.lungs[canonical(out["mask"]) > 0] == 1).all()
    # lungs full of dense tissue: nowhere to go -> unchanged, applied false
    hu = chest2d.hu.copy()
    hu[chest2d.lungs > 0] = 40
    dense = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    dense.hu = hu
    d2 = as_dict(dense, with_lungs=True)
    out2 = RandRelocateTumord(lung_key="lung").set_random_state(0)(d2)
    rec2 = metalung_records(out2["image"])[-1]
    assert rec2["applied"] is False and "no free lung space" in rec2["components"][0]["reason"]
    assert torch.equal(out2["image"], d2["image"]) and torch.equal(out2["mask"], d2["mask"])
    exp = MetaLungd(
        mode="expand", ops=["relocate", "noise_tumor"], lung_key="lung"
    ).set_random_state(0)(d2)
    assert [metalung_records(v["image"])[-1]["op"] for v in exp[1:]] == [
        "noise_tumor"
    ]  # unapplied dropped


def test_tumour_ops_in_3d_with_computed_lungs(chest3d):
    d = as_dict(chest3d)
    for t in (RandRelocateTumord(), RandRotateTumord(), RandTumorNoised()):
        out = t.set_random_state(5)(d)
        rec = metalung_records(out["image"])[-1]
        assert rec["applied"], rec
        img_in, img_out = canonical(d["image"]), canonical(out["image"])
        m_in, m_out = canonical(d["mask"]) > 0, canonical(out["mask"]) > 0
        if rec["op"] == "noise_tumor":
            diff = img_out - img_in
            assert (diff[~m_in] == 0).all() and diff[m_in].min() >= 0 and diff[m_in].max() <= 20
        else:
            assert np.isin(img_out, img_in).all()
        if rec["op"] == "relocate":
            assert np.array_equal(np.sort(img_out[m_out]), np.sort(img_in[m_in]))
        assert (img_out[(chest3d.lungs == 0) & ~m_in] == img_in[(chest3d.lungs == 0) & ~m_in]).all()


def test_noise_ops_only_touch_what_they_should(chest2d):
    d = as_dict(chest2d)
    out = RandIntegerNoised(keys="image").set_random_state(0)(d)
    diff = (out["image"] - d["image"]).numpy()
    assert diff.min() >= 0 and diff.max() <= 20 and np.array_equal(diff, np.round(diff))
    assert torch.equal(out["mask"], d["mask"])
    out = RandTumorNoised(noise_range=(5, 5)).set_random_state(0)(d)
    diff = (out["image"] - d["image"]).numpy()[0]
    m = d["mask"].numpy()[0] > 0
    assert (diff[m] == 5).all() and (diff[~m] == 0).all()


# --------------------------------------------------------------------------- errors
def test_clear_errors(chest2d):
    d = as_dict(chest2d)
    d["mask"] = d["mask"][:, :50]
    with pytest.raises(InputError, match="mask: spatial shape"):
        RandRelocateTumord()(d)
    with pytest.raises(InputError, match="'mask'.*key missing|mask: .*key missing"):
        RandTumorNoised()({"image": as_dict(chest2d)["image"]})
    with pytest.raises(InputError, match="channel-first 2D or 3D"):
        RandRotateImage()(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="angle_range"):
        RandRotateImage(angle_range=(50, 10))(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="axcodes"):
        MirrorLR(axcodes="LL")(np.zeros((1, 8, 8)))
