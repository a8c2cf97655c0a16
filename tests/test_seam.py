"""The seam test of inserted lesions (issue 13): pastes, context crops, the paired insertion sets
and the classifier two-sample test on crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lesion_factory import make_bank
from monai.data import MetaTensor
from scipy import ndimage as ndi

from metalung_monai.errors import InputError
from metalung_monai.evaluation.realism import LesionSet
from metalung_monai.evaluation.seam import (
    PASTE_METHODS,
    context_crop,
    dense_ring_share,
    inserted_context_sets,
    paste_lesion,
    real_context_set,
    relocated_context_sets,
    seam_c2st,
)
from metalung_monai.training.data import slice_affine
from metalung_monai.transforms.insert_lesion import lesion_choices


def _slice(rng, patient="p0", tumour=False, tumour_hu=30):
    """A 128 x 128 slice: body at 40 HU, two lung ellipses of -850 HU with 20 HU noise."""
    yy, xx = np.mgrid[:128, :128]
    img = np.full((128, 128), 40, np.int16)
    lung = np.zeros((128, 128), np.uint8)
    for lab, cx in ((1, 40), (2, 88)):
        m = ((yy - 64) / 45.0) ** 2 + ((xx - cx) / 20.0) ** 2 < 1
        lung[m] = lab
    img[lung > 0] = (-850 + rng.normal(0, 20, int((lung > 0).sum()))).round().astype(np.int16)
    lab = np.zeros((128, 128), np.float32)
    if tumour:
        t = (yy - 60) ** 2 + (xx - 40) ** 2 < 25
        img[t] = tumour_hu
        lab[t] = 1
    aff = slice_affine((1.0, 1.0))

    def mt(a):
        return MetaTensor(torch.from_numpy(a[None].astype(np.float32)), affine=aff.clone())

    return {"image": mt(img), "label": mt(lab), "lung": mt(lung), "patient_id": patient}


def test_pastes_change_only_the_box_and_keep_integer_hu(rng):
    img = np.full((40, 40), -850, np.int16)
    hu = np.full((9, 9), 30, np.int16)
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    box = (slice(10, 19), slice(20, 29))
    outside = np.ones_like(img, bool)
    outside[box] = False
    for method in PASTE_METHODS:
        out = paste_lesion(img, hu, m, box, method)
        assert out.dtype == np.int16 and np.array_equal(out[outside], img[outside]), method
    copy = paste_lesion(img, hu, m, box, "copy")
    assert (copy[box][m] == 30).all() and (copy[box][~m] == -850).all()
    blurred = paste_lesion(img, hu, m, box, "blurred")
    assert -850 < blurred[box][~m].max() < 30  # a soft rim outside the mask
    with pytest.raises(InputError, match="unknown paste method 'smear'"):
        paste_lesion(img, hu, m, box, "smear")


def test_context_crop_centres_and_pads_with_air():
    img = np.arange(100, dtype=np.int16).reshape(10, 10)
    msk = np.zeros((10, 10), bool)
    msk[0, 0] = True
    ci, cm = context_crop(img, msk, (0, 0), 6)
    assert ci.shape == (6, 6) and ci[3, 3] == img[0, 0] and cm[3, 3] == 1
    assert (ci[:3] == -1000).all() and (ci[:, :3] == -1000).all() and cm.sum() == 1


def test_inserted_sets_are_paired_and_centred(rng):
    healthy = [_slice(rng, f"p{i}") for i in range(3)]
    bank = make_bank(n=16, size=32, seed=0, context_mm=32.0)
    sets, counts = inserted_context_sets(healthy, bank, n=8, size=24, seed=0)
    assert counts["inserted"] == 8
    assert counts["drawn"] == counts["inserted"] + counts["no_room"] + counts["too_small"]
    for s in sets.values():
        assert len(s) == 8 and s.image.shape == (8, 24, 24) and set(s.groups) <= {"p0", "p1", "p2"}
        for m in s.mask:  # the lesion's centroid is the crop's centre
            cy, cx = ndi.center_of_mass(m)
            assert abs(cy - 12) <= 1.0 and abs(cx - 12) <= 1.0
    # the same lesion at the same place: masks identical, pixels differ only by the paste
    assert np.array_equal(sets["blend"].mask, sets["copy"].mask)
    assert not np.array_equal(sets["copy"].image, sets["blend"].image)
    real = real_context_set([_slice(rng, "p9", tumour=True)], size=24)
    assert len(real) == 1 and real.mask[0].sum() > 0 and real.groups[0] == "p9"
    with pytest.raises(InputError, match="no healthy slices"):
        inserted_context_sets([], bank, n=2)


def test_same_scan_insertion_keeps_off_tumours_skips_own_patient_and_fits_crops(rng):
    """Inserted beside real tumours (the same slices): never over a tumour or its margin, never a
    lesion of the slice's own patient, and with ``fit_crop`` no crop leaves its slice."""
    bank = make_bank(n=16, size=32, seed=0, context_mm=32.0)
    own = str(lesion_choices(bank).table["patient_id"].iloc[0])  # a patient of the drawn lesions
    # a ground-glass tumour (-650 HU): lung parenchyma to the free-space map's -500 HU threshold
    gg = dict(tumour=True, tumour_hu=-650)
    slices = [_slice(rng, "x0", **gg)] + [_slice(rng, own, **gg) for _ in range(3)]
    size = 40
    sets, counts = inserted_context_sets(slices, bank, n=12, size=size, seed=1, fit_crop=True)
    assert counts["inserted"] == 12 and counts["same_patient"] > 0
    assert counts["drawn"] == sum(v for k, v in counts.items() if k != "drawn")
    tumour = slices[0]["label"].numpy()[0] > 0
    near = ndi.binary_dilation(tumour, iterations=1)  # the 1 mm margin at 1 mm pixels
    sources = [x["image"].numpy()[0].astype(np.int16) for x in slices]
    for img, msk in zip(sets["copy"].image, sets["copy"].mask):
        assert (img != -1000).all()  # no air padding: the crop lies inside its slice
        # find where the crop was cut (outside the lesion the slice is untouched by a hard copy)
        out = msk == 0
        hits = [  # every window of every slice that equals the crop outside the lesion
            tuple(rc)
            for src in sources
            for rc in np.argwhere(
                ((np.lib.stride_tricks.sliding_window_view(src, (size, size)) == img) | ~out).all(
                    axis=(-2, -1)
                )
            )
        ]
        assert len(hits) == 1
        r, c = hits[0]
        assert not (near[r : r + size, c : c + size] & (msk > 0)).any()  # off the tumour
    real_all = real_context_set(slices, size=size)
    real_fit = real_context_set(slices, size=size, fit_crop=True)
    assert len(real_fit) == len(real_all) == 4  # the tumours at (60, 40) leave room for 40 px
    assert len(real_context_set(slices, size=120, fit_crop=True)) == 0


def test_relocated_real_tumours_keep_their_own_pixels(rng):
    """The same-scan control: each real tumour moved within its own slice; a hard copy carries
    exactly the tumour's pixels and HU, crops are centred on its new place."""
    slices = [_slice(rng, f"q{i}", tumour=True, tumour_hu=-650) for i in range(3)]
    slices.append(_slice(rng, "q9"))  # no tumour: nothing to move
    sets, counts = relocated_context_sets(slices, size=24, seed=0)
    assert counts == {"tumours": 3, "no_room": 0, "inserted": 3}
    assert np.array_equal(sets["real"].mask.sum(axis=(1, 2)), sets["copy"].mask.sum(axis=(1, 2)))
    tumour = slices[0]["label"].numpy()[0] > 0
    for k in range(3):
        msk = sets["copy"].mask[k] > 0
        assert msk.sum() == tumour.sum()  # the whole tumour, nothing else
        assert (sets["copy"].image[k][msk] == -650).all()  # its own HU
        cy, cx = ndi.center_of_mass(msk)
        assert abs(cy - 12) <= 1.0 and abs(cx - 12) <= 1.0
        assert list(sets["copy"].groups) == ["q0", "q1", "q2"]
    assert np.array_equal(sets["blend"].mask, sets["copy"].mask)
    with pytest.raises(InputError, match="unknown paste methods"):
        relocated_context_sets(slices, methods=("smudge",))


def test_seam_c2st_finds_a_visible_seam_and_not_an_invisible_one():
    rng = np.random.default_rng(0)
    n, size = 48, 16
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - 8) ** 2 + (xx - 8) ** 2 < 16
    ring = ((yy - 8) ** 2 + (xx - 8) ** 2 < 30) & ~disc

    def crops(seam):
        img = (-850 + rng.normal(0, 25, (n, size, size))).round()
        img[:, disc] = 20 + rng.normal(0, 25, (n, int(disc.sum())))
        if seam:
            img[:, ring] = 300  # a bright halo: a seam anyone can see
        return LesionSet(
            "x",
            img.astype(np.int16),
            np.repeat(disc[None], n, 0).astype(np.uint8),
            np.array([f"p{i % 8}" for i in range(n)], object),
            np.array(["LR3"] * n, object),
        )

    real = crops(False)
    table = seam_c2st(
        real,
        {"visible": crops(True), "invisible": crops(False)},
        seed=0,
        epochs=4,
        repeats=1,
        min_steps=60,
    )
    auc = dict(zip(table["comparison"], table["auc"]))
    assert auc["visible vs real"] > 0.9
    assert auc["invisible vs real"] < 0.75
    assert "real vs real (patient halves)" in auc


def test_dense_ring_share_tells_a_juxtapleural_lesion_from_one_in_parenchyma():
    img = np.full((2, 20, 20), -850, np.int16)
    img[1, :, 14:] = 40  # a chest wall on the right of the second crop
    mask = np.zeros((2, 20, 20), np.uint8)
    mask[:, 8:12, 10:14] = 1  # touching the wall in the second crop
    img[mask > 0] = 20
    s = LesionSet("x", img, mask, np.array(["a", "b"], object), np.array(["", ""], object))
    share = dense_ring_share(s)
    assert share[0] == 0.0 and 0.2 < share[1] < 0.5  # the wall is a side of the ring
