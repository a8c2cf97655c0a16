"""Figures of segmentation results: prediction overlays per arm, training curves and the paired
comparisons of the arms (a forest plot).

Drawn with matplotlib's object API (``matplotlib.figure.Figure``, Agg; no pyplot state, safe in
worker processes) and written with :func:`~metalung_monai.utils.atomic.save_figure_atomic`.
Images are canonical 2D arrays ``(y, x)`` in HU shown in radiological display: the patient's
right on the left of the picture (see :mod:`metalung_monai.utils.orientation`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metalung_monai.errors import GeometryMismatchError, InputError
from metalung_monai.utils.atomic import save_figure_atomic

from .metrics import DEFAULT_CALCIFICATION_HU, _binary, components, image_scores
from .paired import BETTER, WORSE, oriented_pairs

__all__ = [
    "TRUTH_COLOR",
    "PRED_COLOR",
    "overlay_grid",
    "paired_forest",
    "training_curves",
    "zoom_box",
]

TRUTH_COLOR = "#33ff33"  # green
PRED_COLOR = "#ff2a2a"  # red
BOX_COLOR = "#ffd400"  # yellow
_ARM_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
)


def zoom_box(
    mask: np.ndarray, shape: tuple[int, int], min_size: int = 64, context: float = 3.0
) -> tuple[int, int, int, int]:
    """Square crop ``(y0, y1, x0, x1)`` centred on ``mask``'s bounding box.

    The side is ``context`` times the box's longer side, at least ``min_size`` pixels and at most
    the image; the crop is shifted to stay inside the image. An empty mask gives the whole image.
    """
    h, w = shape
    if not mask.any():
        return 0, h, 0, w
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
    extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    side = int(min(max(min_size, math.ceil(context * extent)), h, w))

    def span(c: float, n: int) -> tuple[int, int]:
        a = int(round(c - side / 2.0))
        a = min(max(a, 0), n - side)
        return a, a + side

    y0, y1 = span(cy, h)
    x0, x1 = span(cx, w)
    return y0, y1, x0, x1


def _outline_segments(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge outline of a 2D mask as line segments ``(n, 2, 2)`` in (x, y) image coordinates.

    Edges lie on pixel borders (half-integer coordinates), so the outline is exact: every pixel
    inside is inside the line. Borders of the array draw no edge.
    """
    m = np.pad(mask.astype(bool), 1, mode="edge")
    segs = []
    # dy[r, c]: original rows r-1 and r differ in column c -> horizontal edge at y = r - 0.5
    dy = m[1:, 1:-1] != m[:-1, 1:-1]
    r, c = np.nonzero(dy)
    y = r - 0.5
    segs.append(np.stack([np.stack([c - 0.5, y], 1), np.stack([c + 0.5, y], 1)], 1))
    # dx[r, c]: original columns c-1 and c differ in row r -> vertical edge at x = c - 0.5
    dx = m[1:-1, 1:] != m[1:-1, :-1]
    r, c = np.nonzero(dx)
    x = c - 0.5
    segs.append(np.stack([np.stack([x, r - 0.5], 1), np.stack([x, r + 0.5], 1)], 1))
    return np.concatenate(segs, 0) if segs else np.zeros((0, 2, 2))


def _draw_outline(ax, mask: np.ndarray, color: str, lw: float, label: str | None = None) -> None:
    from matplotlib.collections import LineCollection

    segs = _outline_segments(mask)
    if len(segs):
        ax.add_collection(
            LineCollection(segs, colors=color, linewidths=lw, label=label, capstyle="projecting")
        )


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        raise InputError("rows", "no slice to draw")
    arms: list[str] = []
    for i, r in enumerate(rows):
        for key in ("image", "truth"):
            if key not in r:
                raise InputError(f"rows[{i}]", f"missing key '{key}'")
        img = np.asarray(r["image"])
        if img.ndim != 2:
            raise GeometryMismatchError(
                f"rows[{i}].image", f"expected a 2D (y, x) slice, got shape {img.shape}"
            )
        masks = {
            "truth": r["truth"],
            **{f"preds[{a}]": p for a, p in dict(r.get("preds") or {}).items()},
        }
        for k, m in masks.items():
            if np.shape(m) != img.shape:
                raise GeometryMismatchError(
                    f"rows[{i}].{k}", f"shape {np.shape(m)} differs from the image's {img.shape}"
                )
        for a in dict(r.get("preds") or {}):
            if a not in arms:
                arms.append(a)
    return arms


def overlay_grid(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    window: tuple[float, float] = (-1000.0, 400.0),
    zoom: bool = True,
    min_crop: int = 64,
    panel_inches: float = 2.6,
    dpi: int = 130,
    calcification_hu: float = DEFAULT_CALCIFICATION_HU,
) -> Path:
    """Grid of test slices (rows) by arms (columns): truth outlined green, prediction red.

    The first column shows the whole slice with the truth and, when zoomed, a yellow box around
    the region the other columns show; the arm columns zoom on the tumour (a square of three
    times its size, at least ``min_crop`` pixels; the predictions' bounding box when the truth is
    empty; the whole slice when both are). Each arm panel is labelled with its DICE, its number of
    false-positive components (of which calcified when the row gives ``lungs``) and, when
    predicted components lie outside the zoomed view, how many ("+2 outside").

    Args:
        rows: one dict per slice: ``image`` (2D HU array ``(y, x)``, canonical), ``truth`` (2D bool
            or 0/1), ``preds`` (``{arm_name: 2D bool}``; arms missing from a row show "n/a"),
            ``title`` (str, optional, shown left of the row), ``lungs`` (optional 2D lung labels:
            false positives holding a voxel above ``calcification_hu`` inside them are counted as
            calcified in the panel label).
        path: output PNG (or any format matplotlib writes, by extension); written atomically.
        window: display range ``(lowest, highest)`` HU: black at or below the first, white at or
            above the second. Default (-1000, 400) HU shows lung and soft tissue.
        zoom: zoom the arm columns on the tumour.
        min_crop: smallest side of the zoomed square, pixels.
        panel_inches: size of one panel.
        dpi: resolution of the file.
        calcification_hu: threshold of calcified false positives (HU), as in :func:`image_scores`.

    Returns:
        The path written.

    Raises:
        InputError: no row, or a row without ``image`` / ``truth``.
        GeometryMismatchError: a mask whose shape differs from its image, or a non-2D image.
        MaskError: a mask that is not binary.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    arms = _check_rows(rows)
    n_rows, n_cols = len(rows), 1 + len(arms)
    fig = Figure(figsize=(panel_inches * n_cols, panel_inches * n_rows + 0.55), dpi=dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    lo, hi = float(window[0]), float(window[1])
    for i, r in enumerate(rows):
        img = np.asarray(r["image"], dtype=float)
        truth = _binary(r["truth"], f"rows[{i}].truth")
        preds = {
            a: _binary(p, f"rows[{i}].preds[{a}]") for a, p in dict(r.get("preds") or {}).items()
        }
        lungs = r.get("lungs")
        focus = truth if truth.any() else np.any(np.stack([*preds.values(), truth]), axis=0)
        y0, y1, x0, x1 = (
            zoom_box(focus, img.shape, min_crop) if zoom else (0, img.shape[0], 0, img.shape[1])
        )
        zoomed = (y1 - y0, x1 - x0) != img.shape

        ax = axes[i, 0]
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        _draw_outline(ax, truth, TRUTH_COLOR, 0.9)
        if zoomed:
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=BOX_COLOR, lw=0.9)
            )
        for xt, txt, ha in ((0.02, "R", "left"), (0.98, "L", "right")):
            ax.text(
                xt, 0.97, txt, color="white", fontsize=7, ha=ha, va="top", transform=ax.transAxes
            )
        ax.text(
            0.02,
            0.02,
            f"truth {int(truth.sum())} px",
            color=TRUTH_COLOR,
            fontsize=7,
            transform=ax.transAxes,
            va="bottom",
            bbox=dict(facecolor="black", alpha=0.55, lw=0, pad=1.5),
        )
        ax.set_ylabel(str(r.get("title", f"slice {i}")), fontsize=8)
        if i == 0:
            ax.set_title("CT + truth", fontsize=9)

        crop = (slice(y0, y1), slice(x0, x1))
        for j, arm in enumerate(arms, start=1):
            ax = axes[i, j]
            if i == 0:
                ax.set_title(str(arm), fontsize=9)
            if arm not in preds:
                ax.set_facecolor("#dddddd")
                ax.text(
                    0.5,
                    0.5,
                    "no prediction\nfor this slice",
                    color="#555555",
                    ha="center",
                    va="center",
                    fontsize=8,
                    transform=ax.transAxes,
                )
                continue
            ax.imshow(img[crop], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            p = preds[arm]
            _draw_outline(ax, truth[crop], TRUTH_COLOR, 1.3)
            _draw_outline(ax, p[crop], PRED_COLOR, 1.3)
            if lungs is not None:
                s = image_scores(p, truth, hu=img, lungs=lungs, calcification_hu=calcification_hu)
            else:
                s = image_scores(p, truth)
            label = "DICE n/a" if math.isnan(s["dice"]) else f"DICE {s['dice']:.2f}"
            if s["fp_components"]:
                label += f", {s['fp_components']} FP"
                if s["calcified_fp_components"]:
                    label += f" ({s['calcified_fp_components']} calc.)"
            labels, n = components(p)
            if n and zoomed:
                inside = np.unique(labels[crop])
                outside = n - int(np.count_nonzero(inside))
                if outside:
                    label += f"\n+{outside} outside"
            ax.text(
                0.03,
                0.03,
                label,
                color="white",
                fontsize=7,
                va="bottom",
                transform=ax.transAxes,
                bbox=dict(facecolor="black", alpha=0.55, lw=0, pad=1.5),
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([], [], color=TRUTH_COLOR, lw=2, label="truth"),
        Line2D([], [], color=PRED_COLOR, lw=2, label="prediction"),
    ]
    if n_cols > 1:
        handles.append(Line2D([], [], color=BOX_COLOR, lw=2, label="zoomed region"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.subplots_adjust(
        left=0.06,
        right=0.99,
        top=1 - 0.3 / (panel_inches * n_rows + 0.55),
        bottom=0.45 / (panel_inches * n_rows + 0.55),
        wspace=0.04,
        hspace=0.04,
    )
    return save_figure_atomic(fig, path, dpi=dpi, facecolor="white")


def _runs(values: Any, source: str) -> list[np.ndarray]:
    """A metric history as a list of runs (seeds): a flat list is one run, a list of lists several."""
    vals = list(values)
    if not vals:
        return []
    if np.ndim(vals[0]) == 0:
        return [np.asarray(vals, dtype=float)]
    runs = [np.asarray(v, dtype=float) for v in vals]
    if any(r.ndim != 1 for r in runs):
        raise InputError(source, "expected a list of numbers or a list of lists (one per seed)")
    return runs


def training_curves(
    histories: Mapping[str, Mapping[str, Sequence[Any]]],
    path: str | os.PathLike,
    xlabel: str = "epoch",
    log_loss: bool = False,
    dpi: int = 130,
) -> Path:
    """Training loss and validation metrics of each arm against epoch (or iteration).

    One panel per metric (``loss`` first, then the others in order of appearance), one colour per
    arm. A metric given for several seeds is drawn as the mean over seeds (line) with a band of
    ± one SD; runs of different lengths are averaged where they exist.

    Args:
        histories: ``{arm: {metric: values}}`` where ``values`` is a list of floats (one run) or a
            list of lists (one per seed). ``<metric>_x`` gives the x positions of ``metric``
            (e.g. ``"val_dice_x": [2, 4, 6]`` when validating every 2 epochs); default 1, 2, ...
        path: output PNG; written atomically.
        xlabel: label of the x axis.
        log_loss: logarithmic y axis for metrics whose name contains "loss".
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        InputError: no arm or no metric, or values that are not numbers.
    """
    from matplotlib.figure import Figure

    if not histories:
        raise InputError("histories", "no arm to draw")
    metrics: list[str] = []
    for h in histories.values():
        for k in h:
            if not k.endswith("_x") and k not in metrics:
                metrics.append(k)
    if not metrics:
        raise InputError("histories", "no metric to draw")
    first_seen = {k: i for i, k in enumerate(metrics)}
    metrics.sort(key=lambda k: (0 if k == "loss" else 1 if "loss" in k else 2, first_seen[k]))

    fig = Figure(figsize=(4.2 * len(metrics), 3.3), dpi=dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for a, (arm, h) in enumerate(histories.items()):
            if metric not in h:
                continue
            try:
                runs = _runs(h[metric], f"histories[{arm}][{metric}]")
            except (TypeError, ValueError) as e:
                raise InputError(
                    f"histories[{arm}][{metric}]", f"values are not numbers ({e})"
                ) from None
            if not runs:
                continue
            n = max(len(r) for r in runs)
            stack = np.full((len(runs), n), np.nan)
            for k, r in enumerate(runs):
                stack[k, : len(r)] = r
            x = np.asarray(h.get(f"{metric}_x", np.arange(1, n + 1)), dtype=float)
            if x.shape != (n,):
                raise InputError(
                    f"histories[{arm}][{metric}_x]", f"{x.size} x positions for {n} values"
                )
            with np.errstate(invalid="ignore"):
                valid = (~np.isnan(stack)).sum(0)
                mean = np.where(valid > 0, np.nansum(stack, 0) / np.maximum(valid, 1), np.nan)
                sd = np.sqrt(
                    np.where(
                        valid > 1,
                        np.nansum((stack - mean) ** 2, 0) / np.maximum(valid - 1, 1),
                        np.nan,
                    )
                )
            color = _ARM_COLORS[a % len(_ARM_COLORS)]
            label = f"{arm} (n={len(runs)})" if len(runs) > 1 else str(arm)
            ax.plot(
                x, mean, color=color, lw=1.6, label=label, marker="o" if n <= 15 else None, ms=3
            )
            if len(runs) > 1:
                ax.fill_between(
                    x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0, where=~np.isnan(sd)
                )
        ax.set_title(metric.replace("_", " "), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if log_loss and "loss" in metric:
            ax.set_yscale("log")
        elif "dice" in metric or "iou" in metric or "precision" in metric or "recall" in metric:
            ax.set_ylim(0, 1)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    several = any(len(_runs(h[m], "")) > 1 for h in histories.values() for m in metrics if m in h)
    title = "mean over seeds (n), band ± 1 SD" if several else None
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncol=min(len(handles), 5),
        fontsize=8,
        frameon=False,
        title=title,
        title_fontsize=8,
    )
    fig.tight_layout(
        rect=(0, 0.1 + 0.04 * ((len(handles) - 1) // 5) + (0.05 if several else 0), 1, 1)
    )
    return save_figure_atomic(fig, path, dpi=dpi, facecolor="white")


#: colour of a paired verdict in :func:`paired_forest` (no difference shown: grey)
_VERDICT_COLORS = {BETTER: "#2ca02c", WORSE: "#d62728"}
_TIE_COLOR = "#7f7f7f"


def paired_forest(
    paired,
    path: str | os.PathLike,
    metric: str = "dice",
    references: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    dpi: int = 130,
) -> Path:
    """Forest plot of the paired comparisons: each arm's difference from each reference arm.

    One panel per reference arm (e.g. ``none``, ``monai``, ``copypaste``), one row per other arm:
    the mean per-patient difference (arm - reference, in the metric's units: DICE is a fraction
    of 1) as a dot with its 95 % bootstrap interval as a bar, green when the interval lies above
    0 (better), red when below (worse), grey otherwise; the value and interval are printed at the
    right. A pair that was judged the other way round is read with the sign turned
    (:func:`~metalung_monai.evaluation.paired.oriented_pairs`); a pair not judged is left empty.

    Args:
        paired: :func:`~metalung_monai.evaluation.paired_arm_table` rows (several references
            concatenated: the experiment's ``paired_<model>.csv``).
        path: output PNG; written atomically.
        metric: the metric drawn.
        references: the panels, in order (default: every reference of ``paired`` in order of
            appearance).
        arms: the rows, top to bottom (default: every arm of ``paired`` in order of appearance).
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        InputError: no comparison of ``metric`` in ``paired``, a column missing, or a reference
            that was never compared.
    """
    from matplotlib.figure import Figure

    both = oriented_pairs(paired, metric)
    if not len(both):
        raise InputError("paired", f"no paired comparison of {metric!r} to draw")
    judged = paired[paired["metric"] == metric]
    order = list(dict.fromkeys([*judged["reference"], *judged["arm"]]))
    refs = list(references) if references is not None else list(dict.fromkeys(judged["reference"]))
    missing = [r for r in refs if r not in set(both["reference"])]
    if missing:
        raise InputError("references", f"never compared on {metric!r}: {', '.join(missing)}")
    rows = list(arms) if arms is not None else order
    cells = {(r.arm, r.reference): r for r in both.itertuples(index=False)}
    ends = np.abs(both[["mean_diff", "ci_low", "ci_high"]].to_numpy(dtype=float))
    ends = ends[np.isfinite(ends)]  # an interval is NaN under 2 patients
    span = 1.1 * ends.max() if ends.size and ends.max() > 0 else 0.05

    height = 0.9 + 0.32 * len(rows)
    fig = Figure(figsize=(4.6 * len(refs), height), dpi=dpi)
    axes = fig.subplots(1, len(refs), squeeze=False, sharey=True)[0]
    y = np.arange(len(rows))[::-1]
    for ax, ref in zip(axes, refs):
        ax.axvline(0.0, color="black", lw=0.8)
        for yi, arm in zip(y, rows):
            r = cells.get((arm, ref))
            if r is None:
                continue
            color = _VERDICT_COLORS.get(r.verdict, _TIE_COLOR)
            ax.plot([r.ci_low, r.ci_high], [yi, yi], color=color, lw=2.2, solid_capstyle="butt")
            ax.plot([r.mean_diff], [yi], "o", color=color, ms=5)
            ax.text(
                1.02,
                yi,
                f"{r.mean_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=7,
                color=color,
            )
        ax.set_xlim(-span, span)
        ax.set_title(f"arm - {ref}", fontsize=10)
        ax.set_xlabel(f"{metric.upper()} difference per patient, 95 % interval", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(rows, fontsize=8)
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    fig.suptitle(
        "paired comparisons: green better, red worse, grey no difference shown", fontsize=9
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.subplots_adjust(wspace=0.55)
    return save_figure_atomic(fig, path, dpi=dpi, facecolor="white")
