"""MetaLung on real tumours: relocation of large tumours (the calibre rule), the reasons recorded
when an operation cannot apply, and the six operations on the real MSD lung patches
(``../shared/data/real``; those tests skip when it is absent)."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from chest_factory import make_chest
from monai.data import MetaTensor

from metalung_monai.transforms import METALUNG_OPS, MetaLungd
from metalung_monai.transforms.metalung import functional as F
from metalung_monai.transforms.metalung.array import RelocateTumor, metalung_records
from metalung_monai.transforms.metalung.offline_case import expand_case

SPACING = (2.0, 2.0, 2.0)
WIDE_HU, CALC_HU = 90, 600  # HU of the wide vessels and the calcification (no other voxel has them)


def _lungs_with_small_vessels(diameter_mm: float, seed: int = 0):
    """Two ellipsoid lungs (96 x 128 x 72 mm each, 2 mm voxels) crossed every 8 mm by 2 mm
    vessels along z, one 10 mm vessel and a calcification near the edge of each lung, and a spherical tumour of
    ``diameter_mm`` in the left lung (canonical ``(z, y, x)``, x towards the patient's left)."""
    rng = np.random.default_rng(seed)
    shape = (40, 80, 120)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    hu = (40 + rng.integers(-10, 11, size=shape)).astype(np.int16)
    lungs = np.zeros(shape, np.uint8)
    for label, cx in ((1, 30), (2, 90)):
        lungs[((z - 20) / 18.0) ** 2 + ((y - 40) / 32.0) ** 2 + ((x - cx) / 24.0) ** 2 <= 1] = label
    lung = lungs > 0
    hu[lung] = -850 + rng.integers(-40, 41, size=int(lung.sum()))
    small = np.zeros(shape, bool)
    small[:, ::4, ::4] = True
    small &= lung
    hu[small] = 40 + rng.integers(-5, 6, size=int(small.sum()))
    for cx in (30, 90):  # away from the lungs' middle, where a large tumour can go
        hu[((y - 16) ** 2 + (x - cx) ** 2 <= 2.5**2) & lung] = WIDE_HU
        hu[20, 64:66, cx : cx + 2] = CALC_HU
    r = diameter_mm / 2.0 / SPACING[0]  # voxels
    tumour = (((z - 20) ** 2 + (y - 40) ** 2 + (x - 96) ** 2) <= r**2) & lung
    hu[tumour] = rng.integers(-60, 61, size=int(tumour.sum()))
    mask = tumour.astype(np.uint8)
    return hu, mask, lungs


def _relocate(hu, mask, lungs, **kwargs):
    aff = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    img, msk, lung = (
        MetaTensor(torch.as_tensor(a[None].astype(np.float32)), affine=aff)
        for a in (hu, mask, lungs)
    )
    op = RelocateTumor(seed=0, axcodes="SPL", spacing=SPACING, **kwargs)
    out_img, out_mask = op(img, msk, lung)
    return out_img.numpy()[0], out_mask.numpy()[0], metalung_records(out_img)[-1]


def test_a_large_tumour_engulfs_small_vessels_and_keeps_out_of_the_rest():
    hu, mask, lungs = _lungs_with_small_vessels(40.0)
    assert mask.sum() * 8 / 1000 > 30  # a 40 mm tumour: about 33 cm3
    # every dense voxel blocking (the rule before): no room anywhere, and the reason says why
    img, out_mask, rec = _relocate(hu, mask, lungs, min_vessel_mm=None)
    comp = rec["components"][0]
    assert not rec["applied"] and np.array_equal(img, hu) and np.array_equal(out_mask, mask)
    m = re.search(
        r"tumour ([\d.]+) cm3 needs a free disc of (\d+) mm .*largest free disc on as many slices "
        r"in the opposite "
        r"\(right\) lung (\d+) mm, same \(left\) lung (\d+) mm \(every dense voxel blocks\)",
        comp["reason"],
    )
    assert m, comp["reason"]
    assert float(m.group(1)) > 30 and int(m.group(2)) >= 44
    assert int(m.group(3)) < int(m.group(2)) and int(m.group(4)) < int(m.group(2))
    # the calibre rule (default 3 mm): moved to the opposite lung over the 2 mm vessels
    img, out_mask, rec = _relocate(hu, mask, lungs)
    comp = rec["components"][0]
    assert rec["applied"] and comp["to_lung"] == "right"
    assert comp["fallback"] == "vessels up to 3 mm engulfed"
    new = out_mask > 0
    assert new.sum() == mask.sum() and (lungs[new] == 1).all()
    # the tumour's values moved unchanged; no value is new; wide vessels, calcium untouched
    assert np.array_equal(np.sort(img[new]), np.sort(hu[mask > 0]))
    assert np.isin(np.unique(img), np.unique(hu)).all()
    for value in (WIDE_HU, CALC_HU):
        assert np.array_equal(img == value, hu == value)
    # more than the 2 mm margin from the pleura: one voxel around the tumour is still lung
    from scipy import ndimage

    assert (lungs[ndimage.binary_dilation(new, np.ones((3, 3, 3), bool))] == 1).all()


def test_nothing_fits_records_the_sizes():
    hu, mask, lungs = _lungs_with_small_vessels(64.0)
    img, out_mask, rec = _relocate(hu, mask, lungs)
    assert not rec["applied"] and np.array_equal(img, hu) and np.array_equal(out_mask, mask)
    reason = rec["components"][0]["reason"]
    m = re.search(
        r"no free lung space large enough: tumour ([\d.]+) cm3 needs a free disc of (\d+) mm .* "
        r"on (\d+) slices \(plus the margin\); largest free disc on as many slices in the opposite \(right\) lung (\d+) mm, same "
        r"\(left\) lung (\d+) mm \(vessels up to 3 mm engulfed\)",
        reason,
    )
    assert m, reason
    assert float(m.group(1)) > 100 and int(m.group(2)) > 64 and int(m.group(3)) > 25
    assert int(m.group(4)) < int(m.group(2)) and int(m.group(5)) < int(m.group(2))


@pytest.mark.parametrize("shape", [(80, 112), (9, 72, 96)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tumours_that_fit_clear_of_vessels_are_placed_as_before(shape, seed):
    c = make_chest(shape=shape, tumours=(("left", 4.0), ("right", 3.0)), seed=seed)
    runs = [
        F.relocate_tumors(
            c.hu, c.mask, c.lungs, c.dense, c.spacing, np.random.default_rng(seed), **kw
        )
        for kw in ({"min_vessel_mm": None}, {})
    ]
    assert all(r.applied and r.fallback is None for r in runs[1][2])
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert [r.as_dict() for r in runs[0][2]] == [r.as_dict() for r in runs[1][2]]


def test_engulfable_vessels_by_calibre():
    hu = np.full((40, 40), -850, np.int16)
    dense = np.zeros((40, 40), bool)
    dense[5:35, 5] = True  # 1 mm wide: engulfable
    dense[5:35, 10:12] = True  # 2 mm: engulfable
    dense[20, 30] = True  # a 1-voxel calcification: never
    hu[20, 30] = 400
    yy, xx = np.ogrid[:40, :40]
    dense |= (yy - 10) ** 2 + (xx - 25) ** 2 <= 3**2  # 7 mm vessel: blocks, wall included
    out = F.engulfable_vessels(dense, hu, (1.0, 1.0), 3.0)
    assert out[5:35, 5].all() and out[5:35, 10:12].all()
    assert not out[20, 30]
    assert not (out & ((yy - 10) ** 2 + (xx - 25) ** 2 <= 3**2)).any()
    assert not (out & ~dense).any()
    # a wider calibre lets the 7 mm vessel be covered too
    assert F.engulfable_vessels(dense, hu, (1.0, 1.0), 8.0)[10, 25]


def test_offline_record_says_why_an_operation_was_skipped(tmp_path):
    import SimpleITK as sitk

    hu = np.full((48, 48), -800, np.int16)  # a patch of lung with no body outline: no lung mask
    hu[20:28, 20:28] = 0
    mask = (hu == 0).astype(np.uint8)
    paths = {}
    for name, arr in (("image", hu), ("mask", mask)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((2.0, 2.0))
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(img, paths[name])
    cfg = {"ops": ["mirror", "relocate"], "copies": 2, "seed": 0, "key": "k"}
    record = expand_case(paths, "P1", str(tmp_path / "out"), cfg)
    assert [v["augmentation"]["op"] for v in record["variants"]] == ["mirror"]
    (skip,) = record["skipped"]
    assert skip["op"] == "relocate" and skip["count"] == 2 and len(skip["reasons"]) == 2
    assert all(r.startswith("no lung in the image") for r in skip["reasons"])
    on_disk = json.loads((tmp_path / "out" / "records" / "P1.json").read_text())
    assert on_disk["skipped"] == record["skipped"]


# --------------------------------------------------------------------------- real MSD patches
def _msd(real_data, n: int):
    folder = real_data / "msd_lung_patches"
    cases = []
    for f in sorted((folder / "images").glob("*.nii.gz")):
        m = np.asarray(nib.load(str(folder / "masks" / f.name)).dataobj, np.float32)
        if not m.any():
            continue
        img = nib.load(str(f))
        aff = torch.as_tensor(img.affine, dtype=torch.float64)
        cases.append(
            {
                "image": MetaTensor(np.asarray(img.dataobj, np.float32)[None], affine=aff),
                "mask": MetaTensor(m[None], affine=aff),
            }
        )
        if len(cases) == n:
            break
    return cases


@pytest.mark.parametrize("op", METALUNG_OPS)
def test_every_operation_on_real_patches_applies_or_says_why(real_data, op):
    for k, d in enumerate(_msd(real_data, 6)):
        hu = d["image"].numpy()
        out = MetaLungd(ops=[op]).set_random_state(k)(dict(d))
        (rec,) = metalung_records(out["image"])
        assert rec["op"] == op
        if not rec["applied"]:
            reasons = [rec.get("reason")] + [c.get("reason") for c in rec.get("components", [])]
            assert any(reasons), rec
            assert torch.equal(out["image"].as_tensor(), d["image"].as_tensor())
            continue
        res = out["image"].numpy()
        mask = out["mask"].numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        if op in ("mirror", "relocate", "rotate_tumor"):  # no new value
            assert np.isin(res, hu).all()
        elif op == "rotate_image":  # input values and the documented padding (air)
            assert np.isin(res, np.append(hu, -1024)).all()
        if op in ("mirror", "relocate"):  # the tumour's values are kept
            assert np.array_equal(np.sort(res[mask > 0]), np.sort(hu[d["mask"].numpy() > 0]))


def test_mirror_of_a_patch_without_anatomical_affine_flips_the_first_axis(real_data):
    d = _msd(real_data, 1)[0]
    assert np.allclose(np.asarray(d["image"].affine)[:3, :3], np.diag([2.0, 2.0, 2.0]))
    out = MetaLungd(ops=["mirror"]).set_random_state(0)(dict(d))
    assert metalung_records(out["image"])[0]["axis"] == 1
    assert torch.equal(out["image"].as_tensor(), torch.flip(d["image"].as_tensor(), (1,)))


@pytest.mark.parametrize("op", ["relocate", "rotate_tumor"])
def test_tumour_operations_without_lungs_say_so(op):
    # empty lung labels (what lung_mask gives a patch without body outline): rotating the tumour
    # within its own footprint used to drop tumour voxels and leave their HU unlabelled
    c = make_chest(shape=(48, 48), tumours=(("left", 5.0),), seed=0)
    aff = torch.eye(4, dtype=torch.float64)
    d = {
        "image": MetaTensor(torch.as_tensor(c.hu[None].astype(np.float32)), affine=aff),
        "mask": MetaTensor(torch.as_tensor(c.mask[None].astype(np.float32)), affine=aff),
        "lung": MetaTensor(torch.zeros((1, 48, 48)), affine=aff),
    }
    out = MetaLungd(ops=[op], lung_key="lung").set_random_state(0)(dict(d))
    (rec,) = metalung_records(out["image"])
    assert not rec["applied"] and rec["reason"].startswith("no lung in the image")
    assert torch.equal(out["image"].as_tensor(), d["image"].as_tensor())
    assert torch.equal(out["mask"].as_tensor(), d["mask"].as_tensor())


def test_relocation_on_real_patches_with_lung_labels_given(real_data):
    # a patch is one slice stored as a volume: it is relocated as a slice (no margin across
    # slices it does not have); lung labels = the aerated region, as docs/metalung.md says
    from scipy import ndimage

    applied = 0
    for k, d in enumerate(_msd(real_data, 6)):
        hu, tumour = d["image"].numpy()[0], d["mask"].numpy()[0] > 0
        lung = np.stack(
            [
                ndimage.binary_fill_holes(((hu < -320) | tumour)[..., z])
                for z in range(hu.shape[-1])
            ],
            -1,
        )
        d["lung"] = MetaTensor(lung[None].astype(np.float32), affine=d["image"].affine)
        out = MetaLungd(ops=["relocate"], lung_key="lung").set_random_state(k)(dict(d))
        (rec,) = metalung_records(out["image"])
        if rec["applied"]:
            applied += 1
            res, mask = out["image"].numpy()[0], out["mask"].numpy()[0] > 0
            assert np.isin(res, hu).all()
            assert np.array_equal(np.sort(res[mask]), np.sort(hu[tumour]))
            assert all(len(c["shift_voxels"]) == 3 for c in rec["components"] if c["applied"])
        else:
            assert "no free lung space large enough: tumour" in json.dumps(rec)
    assert applied >= 3
