"""Segmentation evaluation as in the MetaLung thesis: per-image scores, tables, figures.

* :mod:`.metrics`: :func:`image_scores` (DICE, IoU, Precision, Recall, false-positive and
  calcified false-positive components of one 2D slice or 3D volume), :func:`scores_from_counts`.
* :mod:`.report`: :func:`results_frame`, :func:`summarize` (means over images, NaN left out),
  :func:`per_class` (per Lung-RADS class, the thesis' Table 8), :func:`per_patient` (3D scores
  from pooled counts), arm/seed tables, :func:`markdown_table`, :func:`write_table`,
  :func:`mean_sd`, :func:`format_mean_sd`.
* :mod:`.paired`: :func:`paired_comparison` (arm B against arm A, case by case: per-patient
  differences, bootstrap interval over patients, Wilcoxon p-value, verdict),
  :func:`paired_arm_table` (every arm against a reference arm, per metric, from a long frame),
  :func:`oriented_pairs` (each comparison read both ways).
* :mod:`.figures`: :func:`overlay_grid`, :func:`training_curves`, :func:`paired_forest`
  (imports matplotlib on use).

Definitions and conventions: ``docs/evaluation.md``.
"""

from .metrics import DEFAULT_CALCIFICATION_HU, METRICS, components, image_scores, scores_from_counts
from .paired import PairedComparison, oriented_pairs, paired_arm_table, paired_comparison
from .report import (
    LUNG_RADS_TEST_CLASSES,
    arm_table,
    class_arm_table,
    format_mean_sd,
    markdown_table,
    mean_sd,
    per_class,
    per_patient,
    results_frame,
    seed_summaries,
    summarize,
    write_table,
)

_LAZY = {"overlay_grid", "paired_forest", "training_curves", "zoom_box"}

__all__ = [
    "METRICS",
    "DEFAULT_CALCIFICATION_HU",
    "LUNG_RADS_TEST_CLASSES",
    "image_scores",
    "scores_from_counts",
    "components",
    "results_frame",
    "summarize",
    "per_class",
    "per_patient",
    "seed_summaries",
    "arm_table",
    "class_arm_table",
    "mean_sd",
    "format_mean_sd",
    "markdown_table",
    "write_table",
    "PairedComparison",
    "paired_comparison",
    "paired_arm_table",
    "oriented_pairs",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        from . import figures

        value = getattr(figures, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
