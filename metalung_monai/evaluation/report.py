"""Tables of evaluation results: means over images, per Lung-RADS class, per patient, per arm.

The unit is one row per test image, as returned by :func:`~metalung_monai.evaluation.image_scores`
plus identifying columns (``case_id``, ``patient_id``, ``lung_rads``, and for experiments ``arm``
and ``seed``). :func:`results_frame` turns such rows into a DataFrame; the other functions reduce it:

* :func:`summarize`: mean of each metric over images, NaN left out (the thesis' numbers),
* :func:`per_class`: the same per Lung-RADS class (the thesis' Table 8),
* :func:`per_patient`: one 3D score per patient from the confusion counts pooled over its images,
* :func:`seed_summaries`, :func:`arm_table`, :func:`class_arm_table`: per arm, mean ± SD over seeds,
* :func:`markdown_table`, :func:`write_table`: CSV and Markdown output (written atomically).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metalung_monai.errors import InputError
from metalung_monai.utils.atomic import atomic_path

from .metrics import METRICS, scores_from_counts

__all__ = [
    "LUNG_RADS_TEST_CLASSES",
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
]

#: Lung-RADS classes of the thesis' test set (4 test patients each).
LUNG_RADS_TEST_CLASSES: tuple[str, ...] = ("LR2", "LR3", "LR4A", "LR4B")

#: Identifying columns, shown first when present.
_ID_COLUMNS = ("arm", "seed", "patient_id", "case_id", "lung_rads", "slice_index", "image")
#: Count columns of :func:`image_scores`.
_COUNT_COLUMNS = (
    "tp",
    "fp",
    "fn",
    "pred_voxels",
    "truth_voxels",
    "pred_components",
    "fp_components",
    "calcified_fp_components",
    "truth_components",
    "missed_truth_components",
)


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per test image: identifying columns, then the metrics, then the counts.

    Args:
        rows: dicts as returned by :func:`image_scores`, usually extended with ``case_id``,
            ``patient_id``, ``lung_rads`` (``"LR2"`` ... or None), ``arm``, ``seed``.

    Returns:
        DataFrame; metric columns are float (NaN where undefined), count columns int64, or float
        when some values are missing (``calcified_fp_components`` is None without HU).

    Raises:
        InputError: a row without one of the metric keys ``dice, iou, precision, recall``.
    """
    rows = [dict(r) for r in rows]
    for i, r in enumerate(rows):
        missing = [m for m in METRICS if m not in r]
        if missing:
            raise InputError(
                f"rows[{i}]", f"missing metric key(s) {', '.join(missing)} (use image_scores)"
            )
    df = pd.DataFrame(rows)
    for m in METRICS:
        df[m] = (
            pd.to_numeric(df[m], errors="raise").astype(float)
            if len(df)
            else pd.Series(dtype=float)
        )
    for c in _COUNT_COLUMNS:
        if c in df.columns:
            col = pd.to_numeric(df[c].astype(object).where(df[c].notna(), np.nan), errors="raise")
            df[c] = col.astype("int64") if col.notna().all() and len(col) else col.astype(float)
    order = [c for c in _ID_COLUMNS if c in df.columns] + list(METRICS)
    order += [c for c in _COUNT_COLUMNS if c in df.columns]
    order += [c for c in df.columns if c not in order]
    return df[order]


def _nanmean(values: Any) -> float:
    a = np.asarray(values, dtype=float)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def _total(df: pd.DataFrame, col: str) -> float | int:
    """Sum of a count column; NaN when the column is absent or has no value (not measured)."""
    if col not in df.columns:
        return math.nan
    s = pd.to_numeric(df[col], errors="coerce")
    if s.notna().sum() == 0:
        return math.nan
    return int(s.sum())


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Means over the test images of a results frame, NaN left out.

    Args:
        df: frame from :func:`results_frame` (one row per image, one arm and seed).

    Returns:
        dict of plain Python ints / floats (NaN where undefined: map it to ``null`` before writing
        strict JSON) with

        * ``n_images``: rows,
        * ``dice, iou, precision, recall``: mean over the images where the metric is defined
          (NaN excluded); ``n_dice, n_iou, n_precision, n_recall``: how many images that is,
        * ``n_missed``: images with a truth and no predicted voxel (Precision undefined there),
        * ``n_false_alarm``: images with a prediction and no truth,
        * ``n_empty``: images with neither (no metric defined),
        * ``dice_pooled``: DICE from the confusion counts summed over all images (MONAI's
          ``compute_sample=False`` "micro" pooling; large tumours weigh more),
        * ``fp_components``, ``calcified_fp_components``: totals over the images (NaN when not
          measured, e.g. no HU given).
    """
    out: dict[str, Any] = {"n_images": int(len(df))}
    for m in METRICS:
        col = df[m] if m in df.columns else pd.Series(dtype=float)
        out[m] = _nanmean(col)
        out[f"n_{m}"] = int(pd.to_numeric(col, errors="coerce").notna().sum())
    if {"pred_voxels", "truth_voxels"} <= set(df.columns):
        pv, tv = df["pred_voxels"].to_numpy(), df["truth_voxels"].to_numpy()
        out["n_missed"] = int(((tv > 0) & (pv == 0)).sum())
        out["n_false_alarm"] = int(((tv == 0) & (pv > 0)).sum())
        out["n_empty"] = int(((tv == 0) & (pv == 0)).sum())
    else:
        out["n_missed"] = out["n_false_alarm"] = out["n_empty"] = math.nan
    if {"tp", "fp", "fn"} <= set(df.columns):
        out["dice_pooled"] = scores_from_counts(
            int(df["tp"].sum()), int(df["fp"].sum()), int(df["fn"].sum())
        )["dice"]
    else:
        out["dice_pooled"] = math.nan
    out["fp_components"] = _total(df, "fp_components")
    out["calcified_fp_components"] = _total(df, "calcified_fp_components")
    return out


def _require(df: pd.DataFrame, col: str, why: str) -> None:
    if col not in df.columns:
        raise InputError(col, f"column missing from the results frame ({why})")


def per_class(
    df: pd.DataFrame,
    metric: str = "dice",
    classes: Sequence[str] = LUNG_RADS_TEST_CLASSES,
    total: bool = True,
) -> pd.DataFrame:
    """Mean of one metric per Lung-RADS class (the thesis' Table 8), with counts.

    Args:
        df: frame from :func:`results_frame` with a ``lung_rads`` column.
        metric: column to average (``dice``, ``iou``, ``precision``, ``recall``, ...).
        classes: classes to report, in this order; images of other classes (LR1, None) are left out.
        total: add a row ``"all"`` over the images of the listed classes.

    Returns:
        DataFrame with columns ``lung_rads``, ``n_images`` (images of the class), ``n`` (images
        where the metric is defined), ``<metric>`` (mean over those, NaN when none), ``sd``
        (SD over images, ddof=1; NaN under two images), ``n_missed`` (truth, no prediction).

    Raises:
        InputError: ``lung_rads`` or ``metric`` is not a column.
    """
    _require(df, "lung_rads", "per_class needs the Lung-RADS class of each image")
    _require(df, metric, "the metric to average")
    groups: list[tuple[str, pd.DataFrame]] = [(c, df[df["lung_rads"] == c]) for c in classes]
    if total:
        groups.append(("all", df[df["lung_rads"].isin(list(classes))]))
    records = []
    for name, sub in groups:
        vals = pd.to_numeric(sub[metric], errors="coerce").to_numpy(dtype=float)
        vals = vals[~np.isnan(vals)]
        missed = (
            int(((sub["truth_voxels"] > 0) & (sub["pred_voxels"] == 0)).sum())
            if {"truth_voxels", "pred_voxels"} <= set(sub.columns)
            else math.nan
        )
        records.append(
            {
                "lung_rads": name,
                "n_images": int(len(sub)),
                "n": int(vals.size),
                metric: float(vals.mean()) if vals.size else math.nan,
                "sd": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
                "n_missed": missed,
            }
        )
    return pd.DataFrame.from_records(records)


def per_patient(df: pd.DataFrame, patient_col: str = "patient_id") -> pd.DataFrame:
    """One 3D score per patient from the confusion counts pooled over the patient's images.

    Summing TP, FP and FN over the slices of one patient and applying the formulas once gives
    exactly the 3D (volume) DICE / IoU / Precision / Recall of the stack of those slices. When the
    test set holds only some slices of a patient (the thesis' tumour slices), it is the 3D score on
    that sub-volume. Component counts are summed over slices (2D components); for 3D components,
    call :func:`image_scores` on the stacked volume instead.

    Args:
        df: frame from :func:`results_frame` with ``tp, fp, fn`` and ``patient_col``
            (one arm and seed; group first otherwise).
        patient_col: the column naming the patient.

    Returns:
        DataFrame, one row per patient (sorted): ``patient_id``, ``lung_rads`` (when present: the
        patient's class, or the classes joined with "/" if its images disagree), ``n_images``,
        ``dice, iou, precision, recall`` (NaN by the same empty-mask rules), ``tp, fp, fn`` and the
        summed component counts.

    Raises:
        InputError: a missing column.
    """
    _require(df, patient_col, "per_patient groups by it")
    for c in ("tp", "fp", "fn"):
        _require(df, c, "per_patient pools the confusion counts")
    records = []
    for pid, sub in df.groupby(patient_col, sort=True, dropna=False):
        tp, fp, fn = (int(sub[c].sum()) for c in ("tp", "fp", "fn"))
        rec: dict[str, Any] = {patient_col: pid}
        if "lung_rads" in sub.columns:
            cls = sorted({str(v) for v in sub["lung_rads"].dropna()})
            rec["lung_rads"] = "/".join(cls) if cls else None
        rec["n_images"] = int(len(sub))
        rec.update(scores_from_counts(tp, fp, fn))
        rec.update(tp=tp, fp=fp, fn=fn)
        for c in ("fp_components", "calcified_fp_components"):
            if c in sub.columns:
                rec[c] = _total(sub, c)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of the finite values, e.g. one per seed.

    NaN values (a seed where the metric is undefined) are left out. No value gives (NaN, NaN);
    one value gives (value, NaN).
    """
    a = np.asarray([float(v) for v in values], dtype=float)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else math.nan)


def format_mean_sd(values: Iterable[float], fmt: str = ".3f") -> str:
    """``"0.412 ± 0.031"`` (mean ± SD over seeds, ddof=1); one value: ``"0.412"``; none: ``"n/a"``."""
    m, sd = mean_sd(values)
    if math.isnan(m):
        return "n/a"
    if math.isnan(sd):
        return format(m, fmt)
    return f"{format(m, fmt)} ± {format(sd, fmt)}"


def _groups(df: pd.DataFrame, cols: Sequence[str]):
    present = [c for c in cols if c in df.columns]
    if not present:
        yield (), df
        return
    for key, sub in df.groupby(present, sort=False, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), sub


def seed_summaries(df: pd.DataFrame, arm_col: str = "arm", seed_col: str = "seed") -> pd.DataFrame:
    """:func:`summarize` for every (arm, seed) of a frame holding several runs.

    Returns:
        DataFrame, one row per (arm, seed) in order of appearance, columns ``arm_col``,
        ``seed_col`` (when present in ``df``) and the keys of :func:`summarize`.
    """
    cols = [c for c in (arm_col, seed_col) if c in df.columns]
    records = []
    for key, sub in _groups(df, cols):
        rec = dict(zip(cols, key))
        rec.update(summarize(sub))
        records.append(rec)
    return pd.DataFrame.from_records(records)


def arm_table(
    df: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    arm_col: str = "arm",
    seed_col: str = "seed",
    fmt: str = ".3f",
    extra: Sequence[str] = ("n_missed", "fp_components", "calcified_fp_components"),
) -> pd.DataFrame:
    """Comparison table of arms: per arm, each metric's mean over images, as mean ± SD over seeds.

    Args:
        df: frame from :func:`results_frame` with ``arm_col`` (and ``seed_col`` for several seeds).
        metrics: metric columns to show.
        arm_col, seed_col: the columns naming the arm and the seed (a missing seed column = one run).
        fmt: number format of the metrics; the ``extra`` counts are shown with one decimal.
        extra: :func:`summarize` counts to add (mean ± SD over seeds).

    Returns:
        DataFrame of strings, one row per arm: ``arm``, ``n_seeds``, ``n_images`` (per seed), the
        metrics and the extra counts.
    """
    _require(df, arm_col, "arm_table compares arms")
    seeds = seed_summaries(df, arm_col, seed_col)
    records = []
    for arm, sub in seeds.groupby(arm_col, sort=False):
        n_img = sorted(set(int(v) for v in sub["n_images"]))
        rec: dict[str, Any] = {
            arm_col: arm,
            "n_seeds": int(len(sub)),
            "n_images": "/".join(str(v) for v in n_img),
        }
        for m in metrics:
            rec[m] = format_mean_sd(sub[m], fmt)
        for e in extra:
            rec[e] = format_mean_sd(sub[e], ".1f") if e in sub.columns else "n/a"
        records.append(rec)
    return pd.DataFrame.from_records(records)


def class_arm_table(
    df: pd.DataFrame,
    metric: str = "dice",
    classes: Sequence[str] = LUNG_RADS_TEST_CLASSES,
    arm_col: str = "arm",
    seed_col: str = "seed",
    fmt: str = ".3f",
    total: bool = True,
) -> pd.DataFrame:
    """Table 8 with several arms and seeds: rows Lung-RADS classes, one column per arm.

    Each cell is the per-class mean of ``metric`` over images (:func:`per_class`), as mean ± SD
    over the seeds of that arm. ``n_images`` is the number of images of the class (of the first
    arm's first seed; the test set is the same for every arm).

    Returns:
        DataFrame of strings: ``lung_rads``, ``n_images``, then one column per arm.
    """
    _require(df, arm_col, "class_arm_table compares arms")
    per_run: dict[Any, list[pd.DataFrame]] = {}
    for key, sub in _groups(df, [arm_col, seed_col]):
        per_run.setdefault(key[0], []).append(per_class(sub, metric, classes, total=total))
    if not per_run:
        raise InputError(arm_col, "the results frame has no rows")
    first = next(iter(per_run.values()))[0]
    table = pd.DataFrame({"lung_rads": first["lung_rads"], "n_images": first["n_images"]})
    for arm, tables in per_run.items():
        stacked = np.stack([t[metric].to_numpy(dtype=float) for t in tables])  # (seeds, classes)
        table[str(arm)] = [format_mean_sd(stacked[:, j], fmt) for j in range(stacked.shape[1])]
    return table


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured Markdown table of ``df``.

    Floats use ``floatfmt``; integer columns stay integers (also a float column whose values
    are all whole numbers or NaN, e.g. counts with a missing value); NaN and None show as
    ``n/a``. Numeric columns are right-aligned. A named or non-default index becomes the first
    column.

    Returns:
        The table, lines joined by ``\\n``, ending with a newline.
    """
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    headers = [str(c) for c in df.columns]
    cols = []
    numeric = []
    for c in df.columns:
        s = df[c]
        is_num = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        whole = False
        if is_num and pd.api.types.is_float_dtype(s):
            v = s.to_numpy(dtype=float)
            fin = v[~np.isnan(v)]
            whole = (
                fin.size > 0
                and bool(np.all(fin == np.round(fin)))
                and c
                in _COUNT_COLUMNS
                + (
                    "n_images",
                    "n",
                    "n_missed",
                    "n_false_alarm",
                    "n_empty",
                    "fp_components",
                    "calcified_fp_components",
                )
            )
        cells = []
        for v in s.tolist():
            if whole and v is not None and not (isinstance(v, float) and math.isnan(v)):
                v = int(v)
            cells.append(_cell(v, floatfmt))
        cols.append(cells)
        numeric.append(is_num)
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for i in range(len(df)):
        lines.append("| " + " | ".join(col[i] for col in cols) + " |")
    return "\n".join(lines) + "\n"


def _stem(path_stem: str | os.PathLike) -> Path:
    p = Path(path_stem)
    if p.suffix.lower() in (".csv", ".md"):
        p = p.with_suffix("")
    return p


def write_table(
    df: pd.DataFrame, path_stem: str | os.PathLike, floatfmt: str = ".3f"
) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (full precision) and ``<stem>.md`` (:func:`markdown_table`) atomically.

    Args:
        df: the table.
        path_stem: output path without extension (a ``.csv`` / ``.md`` extension is dropped);
            parent folders are created.
        floatfmt: number format of the Markdown table.

    Returns:
        ``(csv_path, md_path)``.
    """
    stem = _stem(path_stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    keep_index = not isinstance(df.index, pd.RangeIndex) or df.index.name is not None
    md = markdown_table(df, floatfmt)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=keep_index)
    with atomic_path(md_path) as tmp:
        tmp.write_text(md, encoding="utf-8")
    return csv_path, md_path
