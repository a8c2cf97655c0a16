"""Per-image scores: hand-computed values, empty-mask conventions, MONAI cross-check, components."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import ConfusionMatrixMetric, DiceMetric, MeanIoU
from scipy import ndimage as ndi

from metalung_monai.errors import GeometryMismatchError, MaskError
from metalung_monai.evaluation import image_scores, per_patient, results_frame, scores_from_counts


def square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------- hand-computed values


def test_partial_overlap_hand_computed():
    truth = square((10, 10), 2, 5, 2, 5)  # 3 x 3 = 9 px
    pred = square((10, 10), 2, 5, 3, 6)  # shifted one column: 6 shared, 3 extra, 3 missed
    s = image_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (6, 3, 3)
    assert (s["pred_voxels"], s["truth_voxels"]) == (9, 9)
    assert s["dice"] == pytest.approx(12 / 18)
    assert s["iou"] == pytest.approx(6 / 12)
    assert s["precision"] == pytest.approx(6 / 9)
    assert s["recall"] == pytest.approx(6 / 9)


def test_over_segmentation_hand_computed():
    truth = square((8, 8), 2, 4, 2, 4)  # 4 px
    pred = square((8, 8), 2, 4, 2, 5)  # 6 px covering the truth
    s = image_scores(pred.astype(np.uint8), truth.astype(np.float32))  # 0/1 numbers work too
    assert (s["tp"], s["fp"], s["fn"]) == (4, 2, 0)
    assert s["dice"] == pytest.approx(0.8) and s["iou"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(4 / 6) and s["recall"] == 1.0
    # DICE and IoU are tied by D = 2J / (1 + J) for every image
    assert s["dice"] == pytest.approx(2 * s["iou"] / (1 + s["iou"]))


def test_perfect_and_disjoint():
    truth = square((6, 6), 1, 3, 1, 3)
    s = image_scores(truth, truth)
    assert s["dice"] == s["iou"] == s["precision"] == s["recall"] == 1.0
    d = image_scores(square((6, 6), 4, 6, 4, 6), truth)
    assert d["dice"] == d["iou"] == d["precision"] == d["recall"] == 0.0
    assert d["fp_components"] == 1 and d["missed_truth_components"] == 1


def test_scores_from_counts_rules():
    assert scores_from_counts(3, 1, 2) == pytest.approx(
        {"dice": 6 / 9, "iou": 3 / 6, "precision": 3 / 4, "recall": 3 / 5}
    )
    with pytest.raises(ValueError):
        scores_from_counts(-1, 0, 0)


# ----------------------------------------------------------------------------- empty-mask conventions


def test_empty_truth_and_empty_prediction_all_nan():
    z = np.zeros((5, 5), bool)
    s = image_scores(z, z)
    assert all(math.isnan(s[m]) for m in ("dice", "iou", "precision", "recall"))
    assert s["pred_components"] == s["fp_components"] == s["truth_components"] == 0


def test_missed_tumour_convention():
    truth = square((5, 5), 1, 3, 1, 3)
    s = image_scores(np.zeros_like(truth), truth)
    assert s["dice"] == 0.0 and s["iou"] == 0.0 and s["recall"] == 0.0
    assert math.isnan(s["precision"])  # no predicted pixel: precision undefined
    assert s["missed_truth_components"] == 1


def test_false_alarm_convention():
    pred = square((5, 5), 1, 3, 1, 3)
    s = image_scores(pred, np.zeros_like(pred))
    assert s["dice"] == 0.0 and s["iou"] == 0.0 and s["precision"] == 0.0
    assert math.isnan(s["recall"])  # no truth pixel: recall undefined
    assert s["fp_components"] == 1


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float32))[None, None]


def test_empty_conventions_against_monai():
    """Both empty: NaN as MONAI's ignore_empty=True; false alarm: 0 as MONAI's ignore_empty=False."""
    z = np.zeros((6, 6), bool)
    m = square((6, 6), 1, 3, 1, 3)
    for ignore in (True, False):
        monai_dice = DiceMetric(ignore_empty=ignore)(_t(m), _t(z)).item()  # prediction, no truth
        if ignore:
            assert math.isnan(monai_dice)
        else:
            assert monai_dice == image_scores(m, z)["dice"] == 0.0
    assert math.isnan(DiceMetric(ignore_empty=True)(_t(z), _t(z)).item())
    assert math.isnan(image_scores(z, z)["dice"])
    assert MeanIoU(ignore_empty=False)(_t(m), _t(z)).item() == image_scores(m, z)["iou"] == 0.0
    assert DiceMetric(ignore_empty=True)(_t(z), _t(m)).item() == image_scores(z, m)["dice"] == 0.0


# ----------------------------------------------------------------------------- MONAI cross-check


def random_masks(rng, n, shape):
    """Random blobby masks with every empty case: truth/prediction empty or not."""
    preds, truths = [], []
    for i in range(n):
        t = (
            ndi.binary_opening(rng.random(shape) < rng.uniform(0.05, 0.6))
            if i % 5
            else np.zeros(shape, bool)
        )
        p = rng.random(shape) < rng.uniform(0.05, 0.6) if i % 7 else np.zeros(shape, bool)
        if i % 3 == 0:  # a prediction correlated with the truth
            p = t ^ (rng.random(shape) < 0.1)
        preds.append(p)
        truths.append(t)
    return np.stack(preds), np.stack(truths)


@pytest.mark.parametrize("shape", [(24, 20), (6, 12, 10)])
def test_matches_monai_metric_classes(shape, rng):
    preds, truths = random_masks(rng, 40, shape)
    ours = results_frame([image_scores(p, t) for p, t in zip(preds, truths)])
    yp, y = (
        torch.as_tensor(preds[:, None].astype(np.float32)),
        torch.as_tensor(truths[:, None].astype(np.float32)),
    )

    dice_ie = DiceMetric(ignore_empty=True, reduction="none")(yp, y)[:, 0].numpy()
    dice_all = DiceMetric(ignore_empty=False, reduction="none")(yp, y)[:, 0].numpy()
    iou_ie = MeanIoU(ignore_empty=True, reduction="none")(yp, y)[:, 0].numpy()
    iou_all = MeanIoU(ignore_empty=False, reduction="none")(yp, y)[:, 0].numpy()
    cm = ConfusionMatrixMetric(
        metric_name=["precision", "recall"], compute_sample=True, reduction="none"
    )
    cm(yp, y)
    precision, recall = (v[:, 0].numpy() for v in cm.aggregate())

    has_truth = truths.reshape(len(truths), -1).any(1)
    has_pred = preds.reshape(len(preds), -1).any(1)
    assert has_truth.sum() >= 5 and (~has_truth).sum() >= 5 and (has_truth & ~has_pred).sum() >= 1
    assert (~has_truth & has_pred).sum() >= 1 and (~has_truth & ~has_pred).sum() >= 1
    # truth present: identical to MONAI whatever ignore_empty
    np.testing.assert_allclose(ours["dice"][has_truth], dice_ie[has_truth], rtol=1e-5)
    np.testing.assert_allclose(ours["iou"][has_truth], iou_ie[has_truth], rtol=1e-5)
    # empty truth: NaN when the prediction is empty too (ignore_empty=True), else 0 (ignore_empty=False)
    np.testing.assert_allclose(ours["dice"][~has_truth & has_pred], dice_all[~has_truth & has_pred])
    np.testing.assert_allclose(ours["iou"][~has_truth & has_pred], iou_all[~has_truth & has_pred])
    assert (
        np.isnan(ours["dice"][~has_truth & ~has_pred]).all()
        and np.isnan(dice_ie[~has_truth & ~has_pred]).all()
    )
    # precision and recall: the same numbers and the same NaNs, sample by sample
    np.testing.assert_allclose(ours["precision"], precision, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(ours["recall"], recall, rtol=1e-5, equal_nan=True)
    # the mean over images ignoring NaN equals MONAI's "mean" reduction where no false alarm exists
    keep = torch.as_tensor(has_truth)
    dm = DiceMetric(ignore_empty=True, reduction="mean")
    dm(yp[keep], y[keep])
    monai_mean = dm.aggregate().item()
    assert np.nanmean(ours["dice"][has_truth]) == pytest.approx(monai_mean, rel=1e-5)


def test_torch_tensors_accepted():
    t = square((8, 8), 2, 5, 2, 5)
    p = square((8, 8), 3, 6, 2, 5)
    assert image_scores(torch.as_tensor(p), torch.as_tensor(t.astype(np.float32))) == image_scores(
        p, t
    )


# ----------------------------------------------------------------------------- components


def chest_slice():
    """64 x 64 slice: lung parenchyma (-850 HU) in both lungs, a tumour, a calcification, a vessel."""
    hu = np.full((64, 64), 40, np.int16)  # soft tissue
    lungs = np.zeros((64, 64), np.uint8)
    lungs[8:56, 4:30], lungs[8:56, 34:60] = 1, 2
    hu[lungs > 0] = -850
    tumour = square((64, 64), 20, 26, 10, 16)
    hu[tumour] = 30
    calc = square((64, 64), 40, 43, 44, 47)
    hu[calc] = 400  # calcified nodule
    vessel = square((64, 64), 30, 32, 40, 52)
    hu[vessel] = 20
    return hu, lungs, tumour, calc, vessel


def test_true_tumour_and_two_false_positives_one_calcified():
    hu, lungs, tumour, calc, vessel = chest_slice()
    pred = tumour.copy()
    pred[21:27, 11:17] = True  # the tumour, one pixel off
    pred |= ndi.binary_dilation(calc)  # FP 1: on the 400 HU calcification
    pred[30:32, 44:49] = True  # FP 2: on a vessel (20 HU)
    s = image_scores(pred, tumour, hu=hu, lungs=lungs)
    assert s["pred_components"] == 3
    assert s["fp_components"] == 2
    assert s["calcified_fp_components"] == 1
    assert s["truth_components"] == 1 and s["missed_truth_components"] == 0
    # without lungs any voxel above the threshold counts; without HU nothing is measured
    assert image_scores(pred, tumour, hu=hu)["calcified_fp_components"] == 1
    assert image_scores(pred, tumour)["calcified_fp_components"] is None
    # calcium outside the lungs (e.g. a rib) is not a calcified nodule when lungs are given
    lungs_without = lungs.copy()
    lungs_without[38:46, 42:50] = 0
    assert image_scores(pred, tumour, hu=hu, lungs=lungs_without)["calcified_fp_components"] == 0
    assert image_scores(pred, tumour, hu=hu)["calcified_fp_components"] == 1
    # a higher threshold than the calcium's 400 HU finds none
    assert (
        image_scores(pred, tumour, hu=hu, lungs=lungs, calcification_hu=450)[
            "calcified_fp_components"
        ]
        == 0
    )


def test_calcification_threshold_is_strict():
    hu, lungs, tumour, calc, _ = chest_slice()
    pred = tumour | calc
    for value, expected in ((200, 0), (201, 1)):
        h = hu.copy()
        h[calc] = value
        assert image_scores(pred, tumour, hu=h, lungs=lungs)["calcified_fp_components"] == expected


def test_calcified_component_touching_the_tumour_is_not_a_false_positive():
    hu, lungs, tumour, _, _ = chest_slice()
    hu2 = hu.copy()
    hu2[26, 12] = 350  # a calcified speck at the tumour's edge
    pred = tumour.copy()
    pred[26, 11:14] = True
    s = image_scores(pred, tumour, hu=hu2, lungs=lungs)
    assert (
        s["pred_components"] == 1 and s["fp_components"] == 0 and s["calcified_fp_components"] == 0
    )


def test_components_are_fully_connected():
    pred = np.zeros((6, 6), bool)
    pred[1, 1] = pred[2, 2] = True  # touch at a corner: one object
    pred[4, 4] = True
    s = image_scores(pred, np.zeros_like(pred))
    assert s["pred_components"] == 2 and s["fp_components"] == 2


def test_lesion_level_misses():
    truth = square((20, 20), 2, 5, 2, 5) | square((20, 20), 12, 16, 12, 16)
    pred = square((20, 20), 3, 4, 3, 4)
    s = image_scores(pred, truth)
    assert s["truth_components"] == 2 and s["missed_truth_components"] == 1


# ----------------------------------------------------------------------------- 3D


def test_volume_scores_and_3d_components():
    truth = np.zeros((6, 12, 12), bool)
    truth[1:4, 3:7, 3:7] = True  # 3 slices x 16 px = 48 voxels
    pred = np.zeros_like(truth)
    pred[2:5, 3:7, 3:7] = True  # shifted one slice up: 32 shared
    pred[0:2, 9:11, 9:11] = True  # FP blob over two slices: 8 voxels
    s = image_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (32, 16 + 8, 16)
    assert s["dice"] == pytest.approx(64 / (64 + 24 + 16))
    assert s["pred_components"] == 2 and s["fp_components"] == 1  # one 3D object, not two slices

    # per patient: counts pooled over the slices = the 3D score of the stack
    rows = [dict(image_scores(pred[z], truth[z]), patient_id="P1", slice_index=z) for z in range(6)]
    pp = per_patient(results_frame(rows))
    assert len(pp) == 1 and pp["n_images"].iloc[0] == 6
    for m in ("dice", "iou", "precision", "recall"):
        assert pp[m].iloc[0] == pytest.approx(s[m])
    # per-slice 2D components: the blob on slices 0 and 1, and slice 4 where the shifted tumour
    # has no truth; in 3D the shifted tumour touches the truth and is not a false positive
    assert pp["fp_components"].iloc[0] == 3


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_typed_errors_naming_the_input():
    t = square((8, 8), 2, 4, 2, 4)
    with pytest.raises(MaskError, match=r"^case_7 pred: mask is not binary"):
        image_scores(np.where(t, 0.7, 0.0), t, name="case_7")
    with pytest.raises(MaskError, match="truth: mask holds NaN"):
        image_scores(t, np.where(t, np.nan, 0.0))
    with pytest.raises(GeometryMismatchError, match="pred: shape"):
        image_scores(t[:7], t)
    with pytest.raises(GeometryMismatchError, match="2D"):
        image_scores(t[0], t[0])
    with pytest.raises(GeometryMismatchError, match="hu: shape"):
        image_scores(t, t, hu=np.zeros((4, 4)))
    with pytest.raises(MaskError, match="lungs"):
        image_scores(t, t, hu=np.zeros((8, 8)), lungs=np.full((8, 8), 3))
    with pytest.raises(MaskError, match="hu: CT holds NaN"):
        image_scores(t, t, hu=np.full((8, 8), np.nan))
    # ValueError for generic callers
    with pytest.raises(ValueError):
        image_scores(t * 2, t)
