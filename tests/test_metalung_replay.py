"""MONAI's randomness contract for the MetaLung transforms, and replay of their records.

* every ``Rand*`` transform draws all its parameters in ``randomize()``: ``randomize=False``
  replays the previous call bit for bit (array and dictionary transforms, :class:`MetaLungd`);
* a record (``metalung_records``) replayed through the deterministic twin gives the random
  output again, without the random state;
* the random streams are the documented ones (an explicit re-computation of the draws from
  ``set_random_state``), so a seed gives the outputs it gave before the twins existed;
* :class:`MetaLungd` chooses its operations with MONAI's ``SomeOf`` and inverts through it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chest_factory import as_dict, make_chest
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, SomeOf

from metalung_monai.errors import InputError
from metalung_monai.transforms import (
    METALUNG_OPS,
    IntegerNoise,
    IntegerNoised,
    MetaLungd,
    MirrorLR,
    RandIntegerNoise,
    RandIntegerNoised,
    RandMirrorLR,
    RandMirrorLRd,
    RandRelocateTumor,
    RandRelocateTumord,
    RandRotateImage,
    RandRotateImaged,
    RandRotateTumor,
    RandRotateTumord,
    RandTumorNoise,
    RandTumorNoised,
    RelocateTumor,
    RelocateTumord,
    RotateImage,
    RotateTumor,
    TumorNoise,
    metalung_records,
    replay_record,
)

_MAX_SEED = 2**32 - 1


@pytest.fixture(scope="module")
def chest():
    """A small 2D slice with two tumours (two components: one angle each for the tumour rotation)."""
    return make_chest(shape=(64, 96), tumours=(("right", 4.0), ("left", 3.0)), seed=3)


def same(a, b) -> bool:
    """Bit-identical values and identical MetaLung records."""
    a_arr = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b_arr = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return (
        a_arr.dtype == b_arr.dtype
        and np.array_equal(a_arr, b_arr)
        and metalung_records(a) == metalung_records(b)
    )


def same_dict(a: dict, b: dict, keys=("image", "mask")) -> bool:
    return all(same(a[k], b[k]) for k in keys)


# --------------------------------------------------------------------------- array transforms
#: (random transform, call with (image, mask) or image only, deterministic twin class)
ARRAY_CASES = {
    "mirror": (lambda: RandMirrorLR(prob=1.0), False, MirrorLR),
    "rotate_image": (lambda: RandRotateImage(prob=1.0), False, RotateImage),
    "relocate": (lambda: RandRelocateTumor(prob=1.0), True, RelocateTumor),
    "rotate_tumor": (lambda: RandRotateTumor(prob=1.0), True, RotateTumor),
    "noise_image": (lambda: RandIntegerNoise(prob=1.0), False, IntegerNoise),
    "noise_tumor": (lambda: RandTumorNoise(prob=1.0), True, TumorNoise),
}


def _call(t, d, pair, **kw):
    if pair:
        return t(d["image"], d["mask"], **kw)
    return (t(d["image"], **kw),)


@pytest.mark.parametrize("op", METALUNG_OPS)
def test_array_randomize_false_replays_the_last_draw(chest, op):
    make, pair, _ = ARRAY_CASES[op]
    t = make().set_random_state(4)
    first = _call(t, as_dict(chest), pair)
    again = _call(t, as_dict(chest), pair, randomize=False)
    assert all(same(a, b) for a, b in zip(first, again))
    assert metalung_records(first[0])[-1]["op"] == op
    if op != "mirror":  # a new draw gives another output (the mirror has nothing to draw)
        new = _call(t, as_dict(chest), pair)
        assert not np.array_equal(new[0].numpy(), first[0].numpy())


@pytest.mark.parametrize("op", METALUNG_OPS)
def test_array_record_replayed_through_the_twin(chest, op):
    make, pair, twin_class = ARRAY_CASES[op]
    t = make().set_random_state(9)
    out = _call(t, as_dict(chest), pair)
    record = metalung_records(out[0])[-1]
    assert record["applied"] is True
    for twin in (replay_record(record), twin_class.from_record(record), t.twin_of(record)):
        assert type(twin) is twin_class
        replayed = _call(twin, as_dict(chest), pair)
        assert all(same(a, b) for a, b in zip(out, replayed))


def test_twins_take_the_parameters_by_name(chest):
    d = as_dict(chest)
    rot = RandRotateTumor().set_random_state(2)
    out = rot(d["image"], d["mask"])
    assert len(rot.angles) == 2  # one angle per tumour component, drawn in randomize()
    twin = RotateTumor(angles=rot.angles, seed=rot.seed)
    assert all(same(a, b) for a, b in zip(out, twin(d["image"], d["mask"])))
    with pytest.raises(ValueError, match="2 tumour component.*1 angle"):
        RotateTumor(angles=[10.0], seed=0)(d["image"], d["mask"])
    angle = RandRotateImage().set_random_state(5)
    assert same(angle(d["image"]), RotateImage(angle=angle.angle)(d["image"]))
    noise = RandIntegerNoise().set_random_state(5)
    assert same(noise(d["image"]), IntegerNoise(seed=noise.seed)(d["image"]))


def test_records_without_replay_arguments_and_undrawn_replays_are_refused(chest):
    old = {"op": "relocate", "applied": True, "components": []}  # logged before the twins
    with pytest.raises(ValueError, match="no 'seed'"):
        replay_record(old)
    with pytest.raises(ValueError, match="not a MetaLung record"):
        replay_record({"op": "blur"})
    d = as_dict(chest)
    with pytest.raises(RuntimeError, match="nothing drawn yet"):
        RandIntegerNoise()(d["image"], randomize=False)
    with pytest.raises(ValueError, match="needs the tumour mask"):
        RandRotateTumor().set_random_state(0).randomize(None)


# --------------------------------------------------------------------------- dictionary transforms
DICT_CASES = {
    "mirror": lambda: RandMirrorLRd(("image", "mask", "lung"), prob=1.0),
    "rotate_image": lambda: RandRotateImaged(("image", "mask", "lung"), prob=1.0),
    "relocate": lambda: RandRelocateTumord(lung_key="lung"),
    "rotate_tumor": lambda: RandRotateTumord(lung_key="lung"),
    "noise_image": lambda: RandIntegerNoised(("image",)),
    "noise_tumor": lambda: RandTumorNoised(),
}


@pytest.mark.parametrize("op", METALUNG_OPS)
def test_dict_randomize_false_replays_and_records_replay_through_twins(chest, op):
    t = DICT_CASES[op]().set_random_state(6)
    out = t(as_dict(chest, with_lungs=True))
    assert same_dict(out, t(as_dict(chest, with_lungs=True), randomize=False))
    record = metalung_records(out["image"])[-1]
    assert record["op"] == op and record["applied"] is True
    twin = t.twin_of(record)
    assert not hasattr(twin, "randomize")  # deterministic: no random state at all
    assert same_dict(out, twin(as_dict(chest, with_lungs=True)))
    if op in ("relocate", "rotate_tumor"):
        generic = replay_record(record, keys=("image", "mask"), lung_key="lung")
    elif op == "noise_tumor":
        generic = replay_record(record, keys=("image", "mask"))
    elif op == "noise_image":
        generic = replay_record(record, keys="image")
    else:
        generic = replay_record(record, keys=("image", "mask", "lung"))
    assert same_dict(out, generic(as_dict(chest, with_lungs=True)))


def test_integer_noise_draws_one_seed_per_key(chest):
    t = RandIntegerNoised(("image", "lung")).set_random_state(1)
    out = t(as_dict(chest, with_lungs=True))
    assert len(set(t.seeds.values())) == 2
    again = IntegerNoised(("image", "lung"), seed=[t.seeds["image"], t.seeds["lung"]])
    assert same_dict(out, again(as_dict(chest, with_lungs=True)), keys=("image", "lung"))


def test_relocation_twin_replays_an_unapplied_record(chest):
    """No room anywhere: the record says applied false, and its twin says it again."""
    dense = make_chest(shape=(64, 96), tumours=(("right", 4.0),), seed=3)
    dense.hu = dense.hu.copy()
    dense.hu[dense.lungs > 0] = 40
    t = RandRelocateTumord(lung_key="lung").set_random_state(0)
    out = t(as_dict(dense, with_lungs=True))
    record = metalung_records(out["image"])[-1]
    assert record["applied"] is False
    twin = RelocateTumord.from_record(record, lung_key="lung")
    assert same_dict(out, twin(as_dict(dense, with_lungs=True)))


# --------------------------------------------------------------------------- MetaLungd
@pytest.fixture(scope="module")
def volume():
    return make_chest(shape=(8, 48, 64), tumours=(("right", 3.0), ("left", 3.0)), seed=12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metalungd_replays_by_randomize_false_and_by_records(chest, volume, seed):
    for case, calls in ((chest, 2), (volume, 1)):
        t = MetaLungd(lung_key="lung", num_ops=(1, 3)).set_random_state(seed)
        for _ in range(calls):
            out = t(as_dict(case, with_lungs=True))
            assert same_dict(out, t(as_dict(case, with_lungs=True), randomize=False))
            records = metalung_records(out["image"])
            assert [r["op"] for r in records] == t.chosen
            assert same_dict(out, t.replay(as_dict(case, with_lungs=True), records))


def test_metalungd_expand_variants_replay_from_their_records(chest):
    t = MetaLungd(lung_key="lung", mode="expand", copies=2, include_original=False)
    variants = t.set_random_state(3)(as_dict(chest, with_lungs=True))
    assert len(variants) == 11
    for v in variants:
        records = metalung_records(v["image"])
        assert same_dict(v, t.replay(as_dict(chest, with_lungs=True), records))
    with pytest.raises(ValueError, match="randomize=False replays online mode"):
        t(as_dict(chest), randomize=False)


def _draw_seed(R: np.random.RandomState) -> int:
    return int(R.randint(0, _MAX_SEED, dtype=np.int64))


def _angle(R: np.random.RandomState, lo=1.0, hi=90.0) -> float:
    a = float(R.uniform(lo, hi))
    return -a if R.rand() < 0.5 else a


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])  # all six operations, and a skipped call
def test_set_random_state_streams_are_the_documented_ones(chest, seed):
    """Re-compute MetaLungd's draws by hand from ``seed`` (the order they had before the twins:
    the coin, SomeOf's size and choice from MetaLungd's R; each operation's coin and parameters
    from its own R seeded in operation order) and apply them with the deterministic twins."""
    prob, num_ops = 0.9, (1, 3)
    t = MetaLungd(lung_key="lung", num_ops=num_ops, prob=prob).set_random_state(seed)
    out = t(as_dict(chest, with_lungs=True))

    R = np.random.RandomState(seed)
    # MetaLungd.set_random_state: one seed per random operation (the mirror has none), in order
    op_seeds = {name: _draw_seed(R) for name in METALUNG_OPS if name != "mirror"}
    d = as_dict(chest, with_lungs=True)
    if R.rand() < prob:
        k = R.randint(num_ops[0], num_ops[1] + 1)
        order = R.choice(len(METALUNG_OPS), k, replace=False, p=np.ones(6) / 6)
        for name in (METALUNG_OPS[i] for i in order):
            geo = ("image", "mask", "lung")
            if name != "mirror":
                outer = np.random.RandomState(op_seeds[name])  # the dictionary transform's coin
                inner = np.random.RandomState(op_seeds[name])  # the array transform's draws
                assert outer.rand() < 1.0 and inner.rand() < 1.0  # prob 1: every coin says yes
            if name == "mirror":
                twin = replay_record({"op": "mirror"}, keys=geo)
            elif name == "rotate_image":
                twin = replay_record({"op": "rotate_image", "angle": _angle(inner)}, keys=geo)
            elif name == "relocate":
                rec = {"op": name, "seed": _draw_seed(inner)}
                twin = replay_record(rec, keys=("image", "mask"), lung_key="lung")
            elif name == "rotate_tumor":
                s = _draw_seed(inner)
                n = _components(d["mask"])  # after the previous operations
                rec = {"op": name, "seed": s, "angles": [_angle(inner) for _ in range(n)]}
                twin = replay_record(rec, keys=("image", "mask"), lung_key="lung")
            elif name == "noise_image":
                rec = {"op": name, "seed": _draw_seed(inner), "noise_range": [0, 20]}
                twin = replay_record(rec, keys="image")
            else:
                rec = {"op": name, "seed": _draw_seed(inner), "noise_range": [0, 20]}
                twin = replay_record(rec, keys=("image", "mask"))
            d = twin(d)
    assert same_dict(out, d)


def _components(mask) -> int:
    from scipy import ndimage

    m = mask.numpy()[0] != 0
    return int(ndimage.label(m, ndimage.generate_binary_structure(m.ndim, m.ndim))[1])


def test_single_operation_draws_no_choice(chest):
    """With one operation MetaLungd's R gives only the coin (SomeOf would also draw a size and a
    choice, and move every seeded single-operation stream)."""
    out = MetaLungd(ops=["noise_image"], prob=0.7).set_random_state(8)(as_dict(chest))
    R = np.random.RandomState(8)
    inner = np.random.RandomState(_draw_seed(R))
    assert R.rand() < 0.7 and inner.rand() < 1.0
    assert same(out["image"], IntegerNoise(seed=_draw_seed(inner))(as_dict(chest)["image"]))
    # plain SomeOf draws even for one transform: its stream moves
    some = SomeOf([lambda x: x], num_transforms=1, weights=[1.0])
    some.set_random_state(8)
    some(0)
    assert some.R.rand() != np.random.RandomState(8).rand()


def test_metalungd_typed_errors_are_not_wrapped(chest):
    d = as_dict(chest)
    d["mask"] = torch.cat([d["mask"], d["mask"]])  # two channels: refused by the relocation
    with pytest.raises(InputError, match="one-channel"):
        MetaLungd(ops=["relocate", "noise_tumor"], num_ops=2).set_random_state(0)(d)


# --------------------------------------------------------------------------- inversion via SomeOf
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_metalungd_inverts_through_someof(chest, seed):
    t = MetaLungd(lung_key="lung", ops=["mirror", "relocate"], num_ops=2).set_random_state(seed)
    d = as_dict(chest, with_lungs=True)
    d["extra"] = d["image"].clone()  # a MetaTensor MetaLungd does not own: never traced
    out = t(d)
    classes = [op["class"] for op in out["image"].applied_operations]
    assert classes == ["MirrorLR", "MetaLungSomeOf"]
    assert out["extra"].applied_operations == [] and d["extra"].applied_operations == []
    inv = t.inverse(out)
    for key in ("image", "mask", "lung"):
        assert inv[key].applied_operations == []
        # only the mirror is undone: in either order, that is a flip of the output
        assert torch.equal(inv[key], torch.flip(out[key], (2,)))


def test_metalungd_inverse_with_rotation_and_invertd(chest):
    pre = Compose(
        [
            MetaLungd(
                ops=["mirror", "rotate_image"],
                num_ops=(1, 2),
                op_kwargs={"rotate_image": {"angle_range": (10, 30)}},
            )
        ]
    )
    d = as_dict(chest)
    index = MetaTensor(  # voxel indices: which voxels the geometric operations kept
        torch.arange(d["image"].numel(), dtype=torch.float64).reshape(d["image"].shape),
        affine=d["image"].affine,
    )
    for seed in (1, 2, 3):
        out = pre.set_random_state(seed)(d)
        src = pre.set_random_state(seed)({"image": index, "mask": d["mask"]})["image"].numpy()
        kept = np.zeros(index.numel(), bool)
        kept[src[src >= 0].astype(np.int64)] = True
        assert kept.mean() > 0.5
        out["pred"] = out["mask"].clone()
        post = Invertd(keys="pred", transform=pre, orig_keys="mask", nearest_interp=True)
        inv = post(out)["pred"]
        assert inv.applied_operations == []
        assert np.array_equal(inv.numpy().ravel()[kept], d["mask"].numpy().ravel()[kept])
        assert np.array_equal(
            pre.inverse(out)["image"].numpy().ravel()[kept], d["image"].numpy().ravel()[kept]
        )
    # nothing invertible chosen: no SomeOf trace, inverse returns the data unchanged
    t = MetaLungd(ops=["noise_image", "relocate"], num_ops=2).set_random_state(0)
    out = t(as_dict(chest))
    assert out["image"].applied_operations == []
    assert t.inverse(out)["image"] is out["image"]
