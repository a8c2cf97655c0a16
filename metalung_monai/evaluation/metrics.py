"""Per-image segmentation scores as in the MetaLung thesis: DICE, IoU, Precision, Recall, components.

Every score is computed pixel-wise on the whole 2D slice (or voxel-wise on the whole 3D volume) of
one test image, from the confusion counts of the binary prediction against the binary truth:

* DICE = 2 TP / (2 TP + FP + FN)
* IoU = TP / (TP + FP + FN)
* Precision = TP / (TP + FP)
* Recall = TP / (TP + FN)

A ratio whose denominator is zero is **NaN** (undefined), never 0 or 1. That single rule gives the
conventions for empty masks (see ``docs/evaluation.md``):

============================  ======  ======  =========  ======
case                          DICE    IoU     Precision  Recall
============================  ======  ======  =========  ======
truth and prediction empty    NaN     NaN     NaN        NaN
truth, no prediction (miss)   0       0       NaN        0
prediction, no truth (alarm)  0       0       0          NaN
============================  ======  ======  =========  ======

NaN scores are left out of the means over images (as MONAI's ``ignore_empty=True`` does for an
empty truth). The numbers agree with MONAI's ``DiceMetric``, ``MeanIoU`` and
``ConfusionMatrixMetric(compute_sample=True)`` sample by sample, except DICE / IoU of a false
alarm (prediction, no truth): MONAI's ``ignore_empty=True`` gives NaN there, ``ignore_empty=False``
gives 0 as here (a false alarm is an error of the method and counts against it).

Connected components use full connectivity (8-connected in 2D, 26-connected in 3D, as
``skimage.measure.label``'s default): pixels that touch at a corner belong to one object.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from metalung_monai.errors import GeometryMismatchError, MaskError

__all__ = [
    "METRICS",
    "DEFAULT_CALCIFICATION_HU",
    "scores_from_counts",
    "image_scores",
    "components",
]

#: The four per-image ratios, in the order the tables show them.
METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")

#: HU above which a voxel is calcium (calcified nodules; tumours stay below, see docs/anatomy.md).
DEFAULT_CALCIFICATION_HU: float = 200.0


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def scores_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """DICE, IoU, Precision and Recall from confusion counts; a zero denominator gives NaN.

    Args:
        tp: true-positive voxels (predicted and in the truth).
        fp: false-positive voxels (predicted, not in the truth).
        fn: false-negative voxels (in the truth, not predicted).

    Returns:
        ``{"dice", "iou", "precision", "recall"}`` as Python floats in [0, 1] or NaN:
        DICE = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), Precision = TP/(TP+FP), Recall = TP/(TP+FN).

    Raises:
        ValueError: a negative count.
    """
    if min(tp, fp, fn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got tp={tp}, fp={fp}, fn={fn}")
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor / MetaTensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _binary(x: Any, source: str) -> np.ndarray:
    """A bool array from a bool / 0-1 array; anything else is a :class:`MaskError` naming ``source``."""
    a = _as_numpy(x)
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.number)):
        raise MaskError(source, f"mask of dtype {a.dtype} is not numeric")
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise MaskError(source, "mask holds NaN")
    if a.size and not np.isin(a, (0, 1)).all():
        vals = np.unique(a)
        shown = ", ".join(f"{v:g}" for v in vals[:6]) + (", ..." if vals.size > 6 else "")
        raise MaskError(
            source, f"mask is not binary (values {shown}); threshold or argmax it first"
        )
    return a.astype(bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask with full connectivity.

    Args:
        mask: bool array, 2D ``(y, x)`` or 3D ``(z, y, x)``.

    Returns:
        ``(labels, n)``: int32 labels (0 = background, 1..n) of the same shape, and the count.
    """
    structure = ndi.generate_binary_structure(mask.ndim, mask.ndim)
    labels, n = ndi.label(mask, structure=structure)
    return labels.astype(np.int32, copy=False), int(n)


def image_scores(
    pred: Any,
    truth: Any,
    hu: Any | None = None,
    lungs: Any | None = None,
    calcification_hu: float = DEFAULT_CALCIFICATION_HU,
    name: str | None = None,
) -> dict[str, Any]:
    """Scores of one predicted tumour mask against its truth (one 2D slice or one 3D volume).

    Args:
        pred: predicted tumour mask, 2D ``(y, x)`` or 3D ``(z, y, x)``, bool or 0/1 (numpy array or
            torch tensor). Probabilities must be thresholded first.
        truth: reference tumour mask of the same shape, bool or 0/1.
        hu: optional CT of the same shape in Hounsfield units (int16 or float; air -1024, water 0),
            used to tell calcified false positives.
        lungs: optional lung labels of the same shape (0 outside, 1 right, 2 left lung; any value
            > 0 counts as lung). With ``hu`` only calcium inside the lungs counts; the mask should
            have its holes filled so that nodules inside the lung are lung (as
            :func:`metalung_monai.anatomy.lung_mask` does).
        calcification_hu: a false-positive component is *calcified* when at least one of its voxels
            is strictly above this value (HU) and inside the lungs. Default 200 HU.
        name: optional case name put in front of error messages (``"case_0003 pred: ..."``).

    Returns:
        dict with

        * ``dice, iou, precision, recall``: floats in [0, 1] or NaN (see the module docstring for the
          empty-mask conventions),
        * ``tp, fp, fn``: voxel counts; ``pred_voxels`` (= tp + fp), ``truth_voxels`` (= tp + fn),
        * ``pred_components``: connected components of the prediction (full connectivity),
        * ``fp_components``: predicted components that touch no truth voxel,
        * ``calcified_fp_components``: those of them holding a voxel > ``calcification_hu`` inside
          the lungs; ``None`` when ``hu`` is not given (not measured),
        * ``truth_components``: connected components of the truth; ``missed_truth_components``:
          those that no predicted voxel touches (lesion-level misses).

    Raises:
        GeometryMismatchError: arrays of different shapes, or not 2D / 3D.
        MaskError: a mask that is not binary or holds NaN; ``hu`` with NaN; lung labels
            outside {0, 1, 2}.

    Example:
        >>> import numpy as np
        >>> t = np.zeros((8, 8), bool); t[2:4, 2:4] = True
        >>> p = np.zeros((8, 8), bool); p[2:4, 2:5] = True
        >>> round(image_scores(p, t)["dice"], 3)    # 2*4 / (2*4 + 2 + 0)
        0.8
    """
    prefix = f"{name} " if name else ""
    p = _binary(pred, f"{prefix}pred")
    t = _binary(truth, f"{prefix}truth")
    if p.ndim not in (2, 3):
        raise GeometryMismatchError(
            f"{prefix}pred", f"expected a 2D (y, x) or 3D (z, y, x) mask, got shape {p.shape}"
        )
    if p.shape != t.shape:
        raise GeometryMismatchError(
            f"{prefix}pred", f"shape {p.shape} differs from the truth's {t.shape}"
        )

    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    out: dict[str, Any] = scores_from_counts(tp, fp, fn)
    out.update(tp=tp, fp=fp, fn=fn, pred_voxels=tp + fp, truth_voxels=tp + fn)

    dense = None
    if hu is not None:
        h = _as_numpy(hu)
        if h.shape != p.shape:
            raise GeometryMismatchError(
                f"{prefix}hu", f"shape {h.shape} differs from the masks' {p.shape}"
            )
        if np.issubdtype(h.dtype, np.floating) and np.isnan(h).any():
            raise MaskError(f"{prefix}hu", "CT holds NaN")
        dense = h > calcification_hu
        if lungs is not None:
            lab = _as_numpy(lungs)
            if lab.shape != p.shape:
                raise GeometryMismatchError(
                    f"{prefix}lungs", f"shape {lab.shape} differs from the masks' {p.shape}"
                )
            if lab.dtype != bool and lab.size and not np.isin(lab, (0, 1, 2)).all():
                raise MaskError(
                    f"{prefix}lungs", "lung labels must be 0 (outside), 1 (right) or 2 (left)"
                )
            dense &= lab > 0

    labels, n_pred = components(p)
    truth_per_comp = np.bincount(labels[t], minlength=n_pred + 1)[1:]
    fp_comp = truth_per_comp == 0
    out["pred_components"] = n_pred
    out["fp_components"] = int(fp_comp.sum())
    if dense is None:
        out["calcified_fp_components"] = None
    else:
        dense_per_comp = np.bincount(labels[dense], minlength=n_pred + 1)[1:]
        out["calcified_fp_components"] = int((fp_comp & (dense_per_comp > 0)).sum())

    t_labels, n_truth = components(t)
    hit = np.bincount(t_labels[p], minlength=n_truth + 1)[1:]
    out["truth_components"] = n_truth
    out["missed_truth_components"] = int((hit == 0).sum())
    return out
