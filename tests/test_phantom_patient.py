"""Synthetic patients: HU per tissue, tumour sizes per Lung-RADS class, masks, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from metalung_monai.anatomy.lung_rads import lung_rads_from_mask, tumor_diameters_mm
from metalung_monai.errors import InputError
from metalung_monai.phantom import PatientParams, generate_patient, sample_patient_params
from metalung_monai.phantom.body import TRUTH_LABELS, ChestAnatomy
from metalung_monai.phantom.vessels import PlanningMap, grow_vessel_trees

TUMOURS = [
    {
        "kind": "solid",
        "shape": "lobulated",
        "diameter_mm": 22.0,
        "mode": "interior",
        "lung": "right",
    },
    {
        "kind": "ggo",
        "shape": "lobulated",
        "diameter_mm": 13.0,
        "mode": "juxtapleural",
        "lung": "left",
    },
    {
        "kind": "part-solid",
        "shape": "spiculated",
        "diameter_mm": 11.0,
        "mode": "juxtavascular",
        "lung": "left",
    },
]


def _params(
    seed=3, index=2, cls="LR4B", size=192, thickness=2.5, tumours=TUMOURS, calcs=(8.0, 5.0)
):
    prm = sample_patient_params(seed, index, cls, size=size, slice_thickness=thickness)
    if tumours is not None:
        prm.tumours = [dict(t) for t in tumours]
    prm.calcification_diameters_mm = list(calcs)
    return prm


@pytest.fixture(scope="module")
def patient():
    return generate_patient(_params())


@pytest.fixture(scope="module")
def class_patients():
    out = {}
    for i, cls in enumerate(("LR1", "LR2", "LR3", "LR4A", "LR4B")):
        prm = sample_patient_params(11, i, cls, size=128, slice_thickness=(2.5, 5.0))
        out[cls] = generate_patient(prm)
    return out


def test_array_types_and_geometry(patient):
    prm = patient.params
    assert (
        patient.hu.dtype == np.int16
        and patient.mask.dtype == np.uint8
        and patient.truth.dtype == np.uint8
    )
    assert patient.hu.shape == patient.mask.shape == patient.truth.shape
    assert patient.hu.shape[1:] == (192, 192)
    assert patient.hu.min() >= -1024 and patient.hu.max() <= 3071
    assert set(np.unique(patient.mask)) == {0, 1}
    assert set(np.unique(patient.truth)) <= set(TRUTH_LABELS)
    dz, dy, dx = patient.spacing
    assert dz == pytest.approx(2.5) and dy == pytest.approx(prm.fov_mm / 192) and dx == dy
    # z extent covers the lungs (apex to bases, 200-265 mm) plus a margin
    assert 200.0 < patient.hu.shape[0] * dz < 340.0
    lungs = np.isin(patient.truth, (1, 2))
    zs = np.flatnonzero(lungs.any(axis=(1, 2)))
    assert zs[0] > 0 and zs[-1] < patient.hu.shape[0] - 1  # margin below and above the lungs
    # outside the circular field of view: padding mapped to -1024, truth 0
    assert np.all(patient.hu[:, ~patient.fov] == -1024)
    assert np.all(patient.truth[:, ~patient.fov] == 0)
    img = patient.to_sitk()
    assert img.GetSpacing() == pytest.approx((dx, dy, dz))
    assert img.GetOrigin() == pytest.approx(patient.origin)
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_patient_left_is_image_right(patient):
    """Canonical LPS: x grows to the patient's left, so the left lung (label 2) has larger x."""
    xs = np.arange(patient.hu.shape[2])
    right = (patient.truth == 1).sum(axis=(0, 1))
    left = (patient.truth == 2).sum(axis=(0, 1))
    assert (xs * left).sum() / left.sum() > (xs * right).sum() / right.sum() + 20
    # heart left of the midline, liver right, vertebrae posterior (larger y) to the heart
    heart_x = np.argwhere(patient.truth == 7)[:, 2].mean()
    assert heart_x > 0.5 * patient.hu.shape[2] - 5


def test_hu_ranges_per_tissue(patient):
    hu, tr = patient.hu.astype(float), patient.truth

    def med(lab):
        v = hu[tr == lab]
        assert v.size > 0, f"label {lab} absent"
        return float(np.median(v))

    assert -910 <= med(1) <= -790 and -910 <= med(2) <= -790  # lung parenchyma about -850
    assert -135 <= med(8) <= -60  # fat about -100
    assert 15 <= med(10) <= 70  # muscle about 40
    assert 40 <= med(11) <= 140  # liver / spleen / stomach (with or without contrast)
    assert np.percentile(hu[tr == 6], 99) > 600  # cortical bone
    assert 150 <= med(6) <= 700  # marrow and cortex together
    assert med(4) > 200  # calcified nodules
    assert med(3) < -700  # trachea / main bronchi lumen
    inside_fov_air = (tr == 0) & patient.fov[None]
    assert np.median(hu[inside_fov_air]) <= -990


def _eroded_core(mask3d, comp):
    """Voxels of the tumour component ``comp`` on its largest slice, eroded by one pixel."""
    k = int(np.argmax(comp.sum(axis=(1, 2))))
    core = ndimage.binary_erosion(comp[k], iterations=1)
    return k, core


def test_tumour_hu_by_type(patient):
    lab, n = ndimage.label(patient.mask, structure=np.ones((3, 3, 3)))
    assert n == len(patient.tumours) == 3
    for t in patient.tumours:
        comp = lab == lab[tuple(t["centre_index"])] if lab[tuple(t["centre_index"])] else None
        if comp is None:  # centroid of a lobulated shape may fall outside it: nearest component
            idx = np.argwhere(patient.mask)
            j = np.argmin(((idx - np.asarray(t["centre_index"])) ** 2).sum(1))
            comp = lab == lab[tuple(idx[j])]
        k, core = _eroded_core(patient.mask, comp)
        vals = patient.hu[k][core].astype(float)
        assert vals.size >= 3
        if t["type"] == "solid":
            assert -100 <= np.median(vals) <= 100, t
        elif t["type"] == "ggo":
            assert -700 <= np.median(vals) <= -300, t
        else:  # part-solid: ground glass around a denser core
            assert np.max(vals) > np.min(vals) + 150, t
            assert -750 <= np.median(vals) <= 100, t


@pytest.mark.slow
@pytest.mark.parametrize("cls", ["LR1", "LR2", "LR3", "LR4A", "LR4B"])
def test_tumour_size_matches_lung_rads(class_patients, cls):
    vol = class_patients[cls]
    assert vol.params.lung_rads == cls
    assert lung_rads_from_mask(vol.mask, vol.spacing) == cls
    assert vol.lung_rads == cls
    diam = tumor_diameters_mm(vol.mask, vol.spacing)
    assert len(diam) == len(vol.tumours)
    if cls == "LR1":
        assert vol.mask.max() == 0 and vol.tumours == []
        return
    assert 1 <= len(vol.tumours) <= 3
    main = max(t["diameter_mm"] for t in vol.tumours)
    assert main == pytest.approx(max(diam), abs=0.01)  # the stored diameter is the measured one
    assert 4.0 <= min(diam) and max(diam) <= 40.0
    for t in vol.tumours:
        assert t["lung"] in ("right", "left") and t["type"] in ("solid", "part-solid", "ggo")
        assert t["shape"] in ("lobulated", "spiculated")
        assert isinstance(t["juxtapleural"], bool) and isinstance(t["juxtavascular"], bool)
        assert len(t["centre_mm"]) == 3


@pytest.mark.slow
def test_tumours_inside_the_lung(patient, class_patients):
    """Tumour voxels are lung: surrounded by lung, except the pleural contact of juxtapleural ones."""
    lung_like = {1, 2, 4, 5}
    for vol in [patient, *class_patients.values()]:
        lab, _ = ndimage.label(vol.mask, structure=np.ones((3, 3, 3)))
        for t in vol.tumours:
            idx = np.argwhere(vol.mask)
            j = np.argmin(((idx - np.asarray(t["centre_index"])) ** 2).sum(1))
            comp = lab == lab[tuple(idx[j])]
            ring = (
                ndimage.binary_dilation(comp, structure=ndimage.generate_binary_structure(3, 1))
                & ~comp
            )
            labels = set(np.unique(vol.truth[ring]).tolist())
            own = 1 if t["lung"] == "right" else 2
            assert {0, 9}.isdisjoint(labels), (vol.patient_id, t, labels)  # never outside the body
            ring_labels = vol.truth[ring]
            assert np.mean(np.isin(ring_labels, (own, 4, 5))) > 0.5, (vol.patient_id, t)
            if t["juxtapleural"]:
                assert labels - lung_like, (vol.patient_id, t, labels)
            else:
                assert labels <= lung_like, (vol.patient_id, t, labels)


def test_juxtapleural_placement(patient):
    pleural = [t for t in patient.tumours if t["mode"] == "juxtapleural"]
    assert pleural and all(t["juxtapleural"] for t in pleural)


@pytest.mark.slow
def test_calcifications_not_in_mask(patient, class_patients):
    for vol in [patient, *class_patients.values()]:
        calc = vol.truth == 4
        assert not np.any(calc & (vol.mask > 0))
        lab, n = ndimage.label(calc, structure=np.ones((3, 3, 3)))
        assert n == len(vol.calcifications)
        for i in range(1, n + 1):
            assert vol.hu[lab == i].max() > 200
    assert len(patient.calcifications) == 2


@pytest.mark.slow
def test_healthy_patient_has_empty_mask(class_patients):
    vol = class_patients["LR1"]
    assert vol.mask.sum() == 0 and vol.n_tumour_slices == 0
    assert np.isin(vol.truth, (1, 2)).sum() > 1000


@pytest.mark.slow
def test_deterministic_and_seed_dependent(patient):
    again = generate_patient(_params())
    assert np.array_equal(again.hu, patient.hu)
    assert np.array_equal(again.mask, patient.mask)
    assert np.array_equal(again.truth, patient.truth)
    assert again.tumours == patient.tumours
    other = generate_patient(_params(seed=4))
    assert other.hu.shape != patient.hu.shape or not np.array_equal(other.hu, patient.hu)


def test_params_sampling_and_validation():
    a = sample_patient_params(5, 7, "LR3", size=256)
    b = sample_patient_params(5, 7, "LR3", size=256)
    assert a.to_dict() == b.to_dict()
    assert PatientParams.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.patient_id == "P0008" and a.lung_rads == "LR3"
    assert all(6.0 <= t["diameter_mm"] < 8.0 for t in a.tumours[:1])
    thick = {sample_patient_params(0, i, "LR2").slice_thickness for i in range(40)}
    assert thick == {2.5, 3.0, 5.0}
    assert sample_patient_params(0, 1, "LR2", slice_thickness=1.0).slice_thickness == 1.0
    assert 330 <= a.fov_mm <= 380
    assert a.scanner["manufacturer"] and a.scanner["rescale_intercept"] in (0, -1024)
    assert 8 <= a.scanner["noise_sigma_hu"] <= 40
    with pytest.raises(InputError, match="slice_thickness"):
        sample_patient_params(0, 0, "LR2", slice_thickness=(0.5, 5.0))
    with pytest.raises(InputError, match="lung_rads"):
        sample_patient_params(0, 0, "LR5")
    with pytest.raises(InputError, match="size"):
        sample_patient_params(0, 0, "LR2", size=8)


def test_vessel_trees_follow_murray():
    """Space-filling trees: hundreds of segments per lung, radius ~6 mm down to < 1 mm at the twig
    tips (branching stops at 2 mm, calibrated on real CT), r^3 conserved."""
    rng = np.random.default_rng(2)
    anatomy = ChestAnatomy.sample(rng, 350.0, contrast=False)
    pmap = PlanningMap(anatomy)
    segs = grow_vessel_trees(anatomy, pmap, rng)
    vessels = segs.kind < 2
    for lung in (1, 2):
        sel = vessels & (segs.lung == lung)
        assert sel.sum() > 200
        assert segs.ra[sel].max() > 4.0 and segs.rb[sel].min() < 1.0
    # Murray's law at every bifurcation: parent r^3 = sum of children r^3 (radii at the branch start)
    par = segs.parent[vessels]
    kids = np.flatnonzero(vessels)
    checked = 0
    for p in np.unique(par[par >= 0])[:300]:
        ch = kids[par == p]
        if len(ch) == 2:
            assert segs.ra[p] ** 3 == pytest.approx((segs.ra[ch] ** 3).sum(), rel=1e-6)
            checked += 1
    assert checked > 100
    # vessels stay in their lung (coarse check of the segment ends)
    assert np.mean(pmap.lung_label(segs.b[vessels]) == segs.lung[vessels]) > 0.97
