"""Scores on the real LIDC example slice (``../shared/data/real``; skipped when absent).

The 164-pixel tumour of LIDC-IDRI-0095 is compared with predictions made from it: a one-pixel
dilation (hand-countable), and false positives on real calcium: a rib / spine voxel outside the
lungs, and a dense (> 200 HU) voxel inside the lung mask computed by :mod:`metalung_monai.anatomy`.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import DiceMetric
from scipy import ndimage as ndi
from skimage.io import imread

from metalung_monai.anatomy import lung_mask
from metalung_monai.evaluation import image_scores
from metalung_monai.utils.orientation import sitk_to_canonical

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def lidc(real_data):
    arr, sp = sitk_to_canonical(sitk.ReadImage(str(real_data / "metalung_example" / "1-141.dcm")))
    hu, sp = arr[0], sp[1:]
    truth = imread(real_data / "metalung_example" / "IM140.png") > 0
    return hu, truth, lung_mask(hu, sp)


def blob_at(shape, yx, r=1):
    m = np.zeros(shape, bool)
    m[yx[0] - r : yx[0] + r + 1, yx[1] - r : yx[1] + r + 1] = True
    return m


def test_dilated_prediction_on_the_real_tumour(lidc):
    hu, truth, lungs = lidc
    assert truth.sum() == 164
    pred = ndi.binary_dilation(truth)
    s = image_scores(pred, truth, hu=hu, lungs=lungs)
    ring = int(pred.sum()) - 164
    assert (s["tp"], s["fp"], s["fn"]) == (164, ring, 0)
    assert s["dice"] == pytest.approx(2 * 164 / (2 * 164 + ring)) and s["recall"] == 1.0
    monai = DiceMetric()(
        torch.as_tensor(pred[None, None], dtype=torch.float32),
        torch.as_tensor(truth[None, None], dtype=torch.float32),
    ).item()
    assert s["dice"] == pytest.approx(monai, rel=1e-6)
    assert (
        s["fp_components"] == 0 and s["calcified_fp_components"] == 0
    )  # the subpleural tumour is < 200 HU


def test_calcium_inside_and_outside_the_lungs(lidc):
    hu, truth, lungs = lidc
    bone = np.argwhere((hu > 600) & (lungs == 0) & (ndi.binary_erosion(hu > 600, iterations=2)))
    in_lung = np.argwhere((hu > 200) & (lungs > 0))
    assert len(bone) and len(in_lung), "the slice has bone and dense voxels inside the lungs"
    fp_bone = blob_at(hu.shape, bone[len(bone) // 2])
    fp_lung = np.zeros_like(truth)
    fp_lung[tuple(in_lung[0])] = True
    pred = truth | fp_bone | fp_lung
    s = image_scores(pred, truth, hu=hu, lungs=lungs)
    assert s["fp_components"] == 2
    assert s["calcified_fp_components"] == 1  # the one in the lung; the bone is outside
    assert image_scores(pred, truth, hu=hu)["calcified_fp_components"] == 2  # no lungs: any calcium
    assert s["dice"] == pytest.approx(2 * 164 / (2 * 164 + 9 + 1))
