"""Overview figure of a phantom cohort (matplotlib, Agg backend).

Rows: one per Lung-RADS class present (LR1 .. LR4B). Columns: up to three patients of that class
on the axial slice with the largest tumour area (lung window), tumour outline in red,
calcified nodules circled in yellow; a last column zooms on the largest tumour (or a
calcification) in a wide window. Bottom row: HU histograms of tumour, calcification and lung
parenchyma voxels of the whole cohort (the HU separation the method relies on: calcification and
tumour look alike in shape, not in density), and the tumour diameters per class.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..utils.atomic import atomic_path, save_figure_atomic
from ..utils.paths import child_path, safe_name

__all__ = ["cohort_overview", "save_overview_slice", "HIST_EDGES", "OVERVIEW_CACHE"]

OVERVIEW_CACHE = ".phantom-cache"
#: HU bin edges (10 HU from -1030 to 2050) of the per-patient histograms the overview sums
HIST_EDGES = np.arange(-1030, 2051, 10)
LUNG_WINDOW = (-1350, 150)
WIDE_WINDOW = (-1000, 600)
_ORDER = ("LR1", "LR2", "LR3", "LR4A", "LR4B")


def save_overview_slice(out_dir, pid: str, hu2d, mask2d, truth2d, spacing_yx, k: int) -> Path:
    """Store the slice used by the overview (``.phantom-cache/<pid>_overview.npz``, atomic)."""
    path = child_path(
        Path(out_dir) / OVERVIEW_CACHE,
        safe_name(pid, fallback="patient"),
        "_overview.npz",
        source=pid,
    )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, hu=hu2d, mask=mask2d, truth=truth2d, spacing=np.asarray(spacing_yx), k=k
            )
    return path


def _load_slice(out_dir: Path, summary: dict):
    name = safe_name(summary["patient_id"], fallback="patient")
    path = child_path(out_dir / OVERVIEW_CACHE, name, "_overview.npz", source=summary["patient_id"])
    if path.is_file():
        with np.load(path) as z:
            return z["hu"], z["mask"], z["truth"], tuple(z["spacing"])
    k = int(summary["overview_slice"])
    arrs = []
    base = out_dir.resolve()
    for key in ("image", "mask", "truth"):
        p = out_dir / summary["files"][key]
        if base not in p.resolve().parents:  # a manifest names files inside the cohort only
            raise InputError(summary["files"][key], f"lies outside the cohort folder {out_dir}")
        arrs.append(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[k])
    return arrs[0], arrs[1], arrs[2], tuple(summary["spacing"][1:])


def _hist(summaries, key):
    tot = None
    for s in summaries:
        h = np.asarray(s.get("histograms", {}).get(key, []), dtype=float)
        if h.size:
            tot = h if tot is None else tot + h
    return tot


def cohort_overview(
    out_dir: str | os.PathLike, summaries: list[dict], path: str | os.PathLike, per_class: int = 3
) -> Path:
    """Draw the cohort overview PNG.

    Args:
        out_dir: cohort folder (images are read from it or from its overview cache).
        summaries: per-patient summaries (as in the manifest: ``patient_id``, ``lung_rads``,
            ``tumours``, ``calcifications``, ``histograms``, ``files``, ``overview_slice``, ...).
        path: PNG to write (atomically).
        per_class: patients shown per class.

    Returns:
        ``Path(path)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    out_dir = Path(out_dir)
    by_class: dict[str, list[dict]] = {}
    for s in sorted(summaries, key=lambda s: s["patient_id"]):
        by_class.setdefault(s["lung_rads"], []).append(s)
    classes = [c for c in _ORDER if c in by_class]
    ncol = per_class + 1
    nrow = len(classes) + 1
    fig = plt.figure(figsize=(3.6 * ncol, 3.0 * nrow + 0.6), facecolor="white")
    gs = fig.add_gridspec(
        nrow,
        ncol,
        height_ratios=[1.0] * len(classes) + [1.1],
        hspace=0.3,
        wspace=0.05,
        top=1.0 - 0.85 / (3.0 * nrow + 0.6),
        bottom=0.04,
        left=0.04,
        right=0.99,
    )
    for r, cls in enumerate(classes):
        pats = by_class[cls][:per_class]
        zoom_done = False
        for c in range(per_class):
            ax = fig.add_subplot(gs[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(pats):
                ax.axis("off")
                continue
            s = pats[c]
            hu, mask, truth, sp = _load_slice(out_dir, s)
            crop = _thorax_crop(truth)
            hu_c, mask_c, truth_c = hu[crop], mask[crop], truth[crop]
            if not zoom_done:
                zoom_done = _zoom(fig.add_subplot(gs[r, per_class]), hu, mask, truth, sp, s)
            hu, mask, truth = hu_c, mask_c, truth_c
            ax.imshow(
                hu, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], interpolation="nearest"
            )
            if mask.any():
                ax.contour(mask > 0, levels=[0.5], colors="red", linewidths=0.9)
            calc = truth == 4
            if calc.any():
                lab, n = ndimage.label(calc)
                for cy, cx in ndimage.center_of_mass(calc, lab, range(1, n + 1)):
                    ax.add_patch(
                        Circle((cx, cy), radius=7.0 / sp[1] + 3, fill=False, ec="yellow", lw=1.0)
                    )
            t = s["tumours"]
            if t:
                main = max(t, key=lambda x: x["diameter_mm"])
                desc = f"{main['diameter_mm']:.1f} mm {main['type']}, {main['shape']}"
                if main.get("juxtapleural"):
                    desc += ", pleural"
            else:
                desc = f"no tumour, {len(s['calcifications'])} calc."
            sc = s["scanner"]
            ax.set_title(
                f"{s['patient_id']} {cls}: {desc}\n{sc['manufacturer'].split()[0]} {sc['kernel']}, "
                f"{s['slice_thickness']} mm, noise {sc['noise_sigma_hu']:.0f} HU",
                fontsize=7.5,
            )
        if not zoom_done:
            fig.add_subplot(gs[r, per_class]).axis("off")
    # histograms
    axh = fig.add_subplot(gs[nrow - 1, : max(2, ncol - 2)])
    axh.set_yscale("log")
    colours = {"lung": "tab:blue", "tumour": "tab:red", "calcification": "goldenrod"}
    labels = {
        "lung": "lung parenchyma (incl. vessels)",
        "tumour": "tumour (mask)",
        "calcification": "calcified nodules",
    }
    group = 4  # plot 40 HU bins
    for key in ("lung", "tumour", "calcification"):
        h = _hist(summaries, key)
        if h is None or h.sum() == 0:
            continue
        n_bins = (len(h) // group) * group
        step = float(HIST_EDGES[1] - HIST_EDGES[0])
        edges = HIST_EDGES[0] + step * np.arange(0, n_bins + 1, group)
        h = h[:n_bins].reshape(-1, group).sum(axis=1)
        dens = h / h.sum() / (edges[1] - edges[0])
        axh.stairs(
            dens, edges, color=colours[key], lw=1.4, label=f"{labels[key]} ({int(h.sum())} voxels)"
        )
        axh.stairs(dens, edges, color=colours[key], alpha=0.15, fill=True)
    axh.axvline(200, color="k", ls="--", lw=0.8)
    axh.text(215, 0.5 * axh.get_ylim()[1], "200 HU", fontsize=8)
    axh.set_xlim(-1050, 1700)
    axh.set_xlabel("HU (after blur and noise)")
    axh.set_ylabel("density (log)")
    axh.set_title("HU of tumour vs calcification vs lung voxels (whole cohort)", fontsize=9)
    axh.legend(fontsize=7, loc="lower center")
    axd = fig.add_subplot(gs[nrow - 1, max(2, ncol - 2) :])
    for i, cls in enumerate(_ORDER[1:]):
        ds = [t["diameter_mm"] for s in summaries for t in s["tumours"] if t["lung_rads"] == cls]
        if ds:
            axd.scatter(
                np.full(len(ds), i) + np.linspace(-0.2, 0.2, len(ds)), ds, s=10, color="tab:red"
            )
    for b in (6, 8, 15):
        axd.axhline(b, color="k", ls=":", lw=0.7)
    axd.set_xticks(range(4))
    axd.set_xticklabels(_ORDER[1:])
    axd.set_ylabel("longest axial diameter (mm)")
    axd.set_title("tumour sizes per Lung-RADS class", fontsize=9)
    n_t = sum(len(s["tumours"]) for s in summaries)
    n_sl = sum(int(s.get("n_tumour_slices", 0)) for s in summaries)
    fig.suptitle(
        f"metalung phantom cohort: {len(summaries)} patients, {n_t} tumours, {n_sl} tumour slices "
        "(lung window; red: tumour mask; yellow: calcified nodule, not in the mask)",
        fontsize=11,
        y=1.0 - 0.12 / (3.0 * nrow + 0.6),
    )
    try:
        return save_figure_atomic(fig, path, dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)


def _thorax_crop(truth: np.ndarray):
    """Square crop (slices) around the lungs of a truth slice, with a margin."""
    lung = (truth == 1) | (truth == 2) | (truth == 5) | (truth == 4)
    body = truth > 0
    sel = lung if lung.sum() > 50 else body
    if not sel.any():
        return (slice(None), slice(None))
    ys, xs = np.nonzero(sel)
    cy, cx = 0.5 * (ys.min() + ys.max()), 0.5 * (xs.min() + xs.max())
    half = 0.5 * max(ys.max() - ys.min(), xs.max() - xs.min()) * 1.12 + 4
    ny, nx = truth.shape
    half = min(half, 0.5 * min(ny, nx))
    y0 = int(np.clip(cy - half, 0, ny - 2 * half))
    x0 = int(np.clip(cx - half, 0, nx - 2 * half))
    return (slice(y0, y0 + int(2 * half)), slice(x0, x0 + int(2 * half)))


def _zoom(ax, hu, mask, truth, sp, summary) -> bool:
    """Zoom (60 mm) on the largest tumour, else a calcification, in a wide window."""
    target = mask > 0 if mask.any() else truth == 4
    ax.set_xticks([])
    ax.set_yticks([])
    if not target.any():
        ax.axis("off")
        return False
    lab, n = ndimage.label(target)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        target = lab == int(np.argmax(sizes))
    cy, cx = ndimage.center_of_mass(target)
    half = int(30.0 / sp[1])
    y0, x0 = max(int(cy) - half, 0), max(int(cx) - half, 0)
    sl = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
    ax.imshow(
        hu[sl], cmap="gray", vmin=WIDE_WINDOW[0], vmax=WIDE_WINDOW[1], interpolation="nearest"
    )
    if mask[sl].any():
        ax.contour(mask[sl] > 0, levels=[0.5], colors="red", linewidths=1.0)
    if (truth[sl] == 4).any():
        ax.contour(truth[sl] == 4, levels=[0.5], colors="yellow", linewidths=1.0)
    vals = hu[sl][target[sl]]
    ax.set_title(
        f"zoom 60 mm, W {WIDE_WINDOW[0]}..{WIDE_WINDOW[1]}\nmedian {np.median(vals):.0f} HU",
        fontsize=7.5,
    )
    return True
