"""Lung masks on the real CT reference cases (``../shared/data/real``; skipped when absent).

Figures asserted here (and reported in docs/anatomy.md):

* ``lungmask_slice/0.dcm``: total lung pixels within 10 % of the 50,644 found by the learned R231
  model (32,376 right + 18,268 left), right lung larger and on the patient's right (small x).
* ``metalung_example``: the 164-pixel subpleural tumour lies in the left lung (label 2).
* ``pyradiomics_lung1``: the 837-voxel nodule lies in the lung, both lungs are found, the trachea
  is not lung.
* ``dcmqi_ge_3slice``: the lungs do not overlap the annotated heart and liver.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from metalung_monai.anatomy import (
    LEFT_LUNG,
    RIGHT_LUNG,
    analyse_lungs,
    free_space_mask,
    lung_mask,
    vessel_mask,
)

pytestmark = pytest.mark.real_data

R231_RIGHT, R231_LEFT = 32376, 18268


def read_canonical(path):
    """Canonical HU array and spacing of a file read with SimpleITK (rescale applied)."""
    import SimpleITK as sitk

    from metalung_monai.utils.orientation import sitk_to_canonical

    arr, sp = sitk_to_canonical(sitk.ReadImage(str(path)))
    if arr.shape[0] == 1:  # one DICOM slice
        return arr[0], sp[1:]
    return arr, sp


@pytest.fixture(scope="module")
def lungmask_slice(real_data):
    hu, sp = read_canonical(real_data / "lungmask_slice" / "0.dcm")
    return hu, sp, lung_mask(hu, sp)


def test_lungmask_slice_against_r231(lungmask_slice, real_data):
    hu, sp, lab = lungmask_slice
    assert hu.min() == -2048  # outside the field of view, as stored
    right, left = int((lab == RIGHT_LUNG).sum()), int((lab == LEFT_LUNG).sum())
    total = right + left
    print(
        f"lungmask_slice: right {right} left {left} total {total} (R231: {R231_RIGHT} + {R231_LEFT})"
    )
    assert abs(total - (R231_RIGHT + R231_LEFT)) <= 0.10 * (R231_RIGHT + R231_LEFT)
    assert (
        abs(right - R231_RIGHT) <= 0.10 * R231_RIGHT and abs(left - R231_LEFT) <= 0.10 * R231_LEFT
    )
    assert right > left
    # the right lung is the patient's right: small x, the LEFT side of the radiological picture
    x_right = np.nonzero(lab == RIGHT_LUNG)[1]
    x_left = np.nonzero(lab == LEFT_LUNG)[1]
    assert x_right.mean() < hu.shape[1] / 2 < x_left.mean()
    assert x_right.max() < x_left.min()
    # the padding value does not matter, and the second copy of the slice gives the same mask
    assert np.array_equal(lung_mask(np.maximum(hu, -1024), sp), lab)
    hu1, sp1 = read_canonical(real_data / "lungmask_slice" / "1.dcm")
    assert np.array_equal(lung_mask(hu1, sp1), lab)


def test_lungmask_slice_dense_and_free_space(lungmask_slice):
    hu, sp, lab = lungmask_slice
    a = analyse_lungs(hu, sp)
    assert np.array_equal(a.lungs, lab)
    lung = lab > 0
    assert a.vessels[lung & (hu > 200)].all()  # calcium / contrast-filled vessels: dense
    assert (a.free_distance[a.vessels | ~lung] == 0).all()
    assert a.vessels[lung & (hu < -700)].sum() == 0  # parenchyma is not dense
    m = free_space_mask(hu, lab, sp, 5.0)
    assert m.any() and (a.free_distance[m] >= 5.0).all()
    v = vessel_mask(hu, lab, sp)
    assert np.array_equal(v, a.vessels)


def test_metalung_example_tumour_in_left_lung(real_data):
    from skimage.io import imread

    hu, sp = read_canonical(real_data / "metalung_example" / "1-141.dcm")
    tumour = imread(real_data / "metalung_example" / "IM140.png") > 0
    assert tumour.shape == hu.shape and tumour.sum() == 164
    lab = lung_mask(hu, sp)
    inside = int((lab[tumour] > 0).sum())
    print(
        f"metalung_example: tumour pixels in the lung mask {inside}/164, left {int((lab[tumour] == 2).sum())}"
    )
    assert inside == 164  # all of it, including its partial-volume pleural border pixel
    assert (lab[tumour & (lab > 0)] == LEFT_LUNG).all()  # the patient's left lung
    assert (lab == RIGHT_LUNG).sum() > 10000 and (lab == LEFT_LUNG).sum() > 10000


@pytest.fixture(scope="module")
def lung1(real_data):
    hu, sp = read_canonical(real_data / "pyradiomics_lung1" / "lung1_image.nrrd")
    tumour, tsp = read_canonical(real_data / "pyradiomics_lung1" / "lung1_label.nrrd")
    assert tsp == sp
    t0 = time.perf_counter()
    lab = lung_mask(hu, sp, progress=False)
    print(f"pyradiomics_lung1 {hu.shape}: lung_mask {time.perf_counter() - t0:.2f} s")
    return hu, sp, tumour > 0, lab


@pytest.mark.slow
def test_lung1_tumour_inside_and_both_lungs(lung1):
    hu, sp, tumour, lab = lung1
    assert tumour.sum() == 837
    voxel_ml = float(np.prod(sp)) / 1000
    right, left = (lab == RIGHT_LUNG).sum() * voxel_ml, (lab == LEFT_LUNG).sum() * voxel_ml
    inside = int((lab[tumour] > 0).sum())
    print(
        f"pyradiomics_lung1: right {right:.0f} ml left {left:.0f} ml; tumour voxels in lung {inside}/837"
    )
    assert right > 500 and left > 500
    assert np.nonzero(lab == RIGHT_LUNG)[2].mean() < np.nonzero(lab == LEFT_LUNG)[2].mean()
    assert inside >= 0.99 * 837
    # the nodule is in the lung on its own side of the body
    side = np.unique(lab[tumour & (lab > 0)])
    assert len(side) == 1
    x_t = np.nonzero(tumour)[2].mean()
    x_r, x_l = np.nonzero(lab == RIGHT_LUNG)[2].mean(), np.nonzero(lab == LEFT_LUNG)[2].mean()
    assert side[0] == (RIGHT_LUNG if abs(x_t - x_r) < abs(x_t - x_l) else LEFT_LUNG)
    # the same nodule on one axial slice, processed as a 2D image
    z = int(np.argmax(tumour.sum(axis=(1, 2))))
    lab2d = lung_mask(hu[z], sp[1:])
    assert (lab2d[tumour[z]] == side[0]).mean() >= 0.99


def _trachea_sections(hu_slice, px_area):
    """Air tubes walled by soft tissue: compact components below -950 HU of 60-500 mm2 whose
    surrounding ring (1-4 pixels out) has a median above -300 HU (lung around would be -800)."""
    lab, _ = ndi.label(hu_slice < -950)
    out = []
    for i, box in enumerate(ndi.find_objects(lab), start=1):
        m = lab[box] == i
        if not 60 <= m.sum() * px_area <= 500 or m.sum() / m.size < 0.6:
            continue
        full = lab == i
        ring = ndi.binary_dilation(full, iterations=4) & ~ndi.binary_dilation(full, iterations=1)
        if np.median(hu_slice[ring]) > -300:
            out.append(full)
    return out


@pytest.mark.slow
def test_lung1_trachea_is_not_lung(lung1):
    hu, sp, tumour, lab = lung1
    found = 0
    for z in range(hu.shape[0] // 2, hu.shape[0]):  # the upper half of the scan
        for section in _trachea_sections(hu[z], sp[1] * sp[2]):
            found += 1
            assert not (lab[z][section] > 0).any(), f"slice {z}: trachea labelled lung"
    assert found >= 8


def test_dcmqi_lungs_do_not_overlap_heart_or_liver(real_data):
    import SimpleITK as sitk

    from metalung_monai.utils.orientation import sitk_to_canonical

    folder = real_data / "dcmqi_ge_3slice"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(folder / f"0{i}.dcm") for i in (1, 2, 3)])
    hu, sp = sitk_to_canonical(reader.Execute())
    lab = lung_mask(hu, sp)
    assert (lab == RIGHT_LUNG).sum() > 20000 and (lab == LEFT_LUNG).sum() > 20000
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndi.generate_binary_structure(2, 1)
    for organ in ("heart", "liver"):
        m, _ = sitk_to_canonical(sitk.ReadImage(str(folder / f"{organ}_seg.nrrd")))
        # the annotations are drawn a little wide (about 1 % of the heart label is lung-dark):
        # compare with their core, 4 pixels (3.2 mm) in from the edge
        core = ndi.binary_erosion(m > 0, structure=inplane, iterations=4)
        assert core.sum() > 10000
        print(
            f"dcmqi {organ}: lung voxels in the annotation core {int((lab[core] > 0).sum())}/{int(core.sum())}"
        )
        assert (lab[core] > 0).sum() <= 0.005 * core.sum(), organ
