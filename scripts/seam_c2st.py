"""Is the seam of an inserted lesion visible? The classifier two-sample test on context crops.

Real tumours in their surroundings (crops centred on each tumour of every tumour slice of the
datalist's ``test`` patients) against lesions of a bank inserted into the same patients'
tumour-free slices that hold lung, each lesion put in by our blend and by the peers' pastes (hard
copy-paste as TumorCP, blurred-mask alpha paste as SyntheticTumors) at the same place; crops of
the same size around it. Writes ``OUT/seam.csv``, ``OUT/seam.md`` and ``OUT/seam.png`` (examples of
each set). See ``metalung_monai.evaluation.seam``.

Usage:
    python scripts/seam_c2st.py --datalist outputs/cohort/datalist.json \
        --bank outputs/synth/cohort/bank --out outputs/seam/cohort
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _resample(sample: dict, pixel_mm: float) -> dict:
    """A 2D sample resampled in-plane to ``pixel_mm`` (image linear with anti-aliasing, rounded
    to integer HU; label and lung nearest), its affine updated."""
    import torch
    from monai.data import MetaTensor
    from skimage.transform import resize

    from metalung_monai.training.data import slice_affine

    aff = np.asarray(sample["image"].affine, dtype=float)
    sp = np.linalg.norm(aff[:2, :2], axis=0)
    shape = tuple(
        max(int(round(n * s / pixel_mm)), 1) for n, s in zip(sample["image"].shape[1:], sp)
    )
    new_aff = slice_affine((pixel_mm, pixel_mm))
    out = dict(sample)
    for k, order in (("image", 1), ("label", 0), ("lung", 0)):
        a = sample[k].numpy()[0].astype(np.float64)
        r = resize(a, shape, order=order, anti_aliasing=order > 0, preserve_range=True)
        out[k] = MetaTensor(
            torch.from_numpy(np.rint(r)[None].astype(np.float32)), affine=new_aff.clone()
        )
    return out


def _threshold_lung(sample: dict, below: float) -> dict:
    """``sample`` with its lung = the voxels below ``below`` HU, opened by one pixel (label 1)."""
    from metalung_monai.anatomy import patch_lung_mask

    lung = patch_lung_mask(sample["image"].numpy()[0], below, edge_px=4)
    out = dict(sample)
    out["lung"] = sample["lung"].clone()
    out["lung"][0] = sample["lung"].new_tensor(lung.astype(np.float32))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datalist", required=True)
    ap.add_argument("--bank", required=True, help="lesion bank folder (metalung lesion-bank)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--section", default="test", help="datalist section of the patients (test)")
    ap.add_argument(
        "--fold", type=int, default=None, help="only the section's entries of this fold"
    )
    ap.add_argument(
        "--healthy", default=None, help="datalist of the healthy slices (default: --datalist)"
    )
    ap.add_argument("--healthy-section", default=None, help="its section (default: --section)")
    ap.add_argument(
        "--pixel-mm",
        type=float,
        default=None,
        help="resample the healthy slices in-plane to this pixel size (mm)",
    )
    ap.add_argument("--size", type=int, default=32, help="crop side in pixels (32)")
    ap.add_argument(
        "--n", type=int, default=0, help="inserted lesions (default: as many as real crops)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lung-below",
        type=float,
        default=None,
        help="healthy slices' lung = voxels below this HU (opened by 1 px), for patches without "
        "a body outline (the MSD patches), instead of the lung mask",
    )
    ap.add_argument(
        "--min-lung-px", type=int, default=2000, help="healthy slices need this much lung"
    )
    ap.add_argument(
        "--same-slices",
        action="store_true",
        help="a same-scan test: insert into the real tumours' own slices too (off their tumours; "
        "never a patient's own lesion), for data without healthy lung of the same scans",
    )
    ap.add_argument(
        "--relocate-control",
        action="store_true",
        help="also move every real tumour within its own slice by each method (a control: the "
        "lesion's own pixels, scan and patient; what is left to find is the seam and the place)",
    )
    ap.add_argument(
        "--fit-crop",
        action="store_true",
        help="only crops that lie inside their slice, real and inserted (small patches)",
    )
    args = ap.parse_args()

    from metalung_monai.evaluation.seam import (
        PASTE_METHODS,
        dense_ring_share,
        inserted_context_sets,
        real_context_set,
        relocated_context_sets,
        seam_c2st,
    )
    from metalung_monai.synthesis.bank import read_bank
    from metalung_monai.training.data import slice_samples
    from metalung_monai.training.inputs import section_entries
    from metalung_monai.utils.atomic import save_figure_atomic

    t0 = time.time()
    entries = section_entries(Path(args.datalist), args.section, "for the real tumours")
    if args.fold is not None:
        entries = [e for e in entries if e.get("fold") == args.fold]
    samples = slice_samples(entries, tumour_only=False)
    tumour = [s for s in samples if bool(s["label"].any())]
    if args.healthy:
        h_section = args.healthy_section or args.section
        samples = slice_samples(
            section_entries(Path(args.healthy), h_section, "for the healthy slices"),
            tumour_only=False,
        )
    if args.pixel_mm:
        samples = [_resample(s, args.pixel_mm) for s in samples]
    if args.lung_below is not None:
        samples = [_threshold_lung(s, args.lung_below) for s in samples]
    healthy = [
        s
        for s in samples
        if (args.same_slices or not bool(s["label"].any()))
        and int((s["lung"] > 0).sum()) >= args.min_lung_px
    ]
    real = real_context_set(tumour, args.size, fit_crop=args.fit_crop)
    n = args.n or len(real)
    inserted, counts = inserted_context_sets(
        healthy, read_bank(args.bank), n, args.size, args.seed, fit_crop=args.fit_crop
    )
    print(
        f"[seam] {len(real)} real tumour crops of {len(set(real.groups))} patients; "
        f"{len(healthy)} healthy slices; inserted {counts}",
        flush=True,
    )
    if args.relocate_control:
        src = [_resample(s, args.pixel_mm) for s in tumour] if args.pixel_mm else tumour
        if args.lung_below is not None:  # the same lungs as the slices inserted into
            src = [_threshold_lung(s, args.lung_below) for s in src]
        moved, moved_counts = relocated_context_sets(
            src, args.size, args.seed, fit_crop=args.fit_crop
        )
        print(f"[seam] relocated real tumours: {moved_counts}", flush=True)
        counts = {"inserted": counts, "relocated": moved_counts}
    table = seam_c2st(real, inserted, seed=args.seed)
    if args.relocate_control:  # against the same tumours at their own places (paired)
        paired = moved.pop("real")
        control = seam_c2st(paired, moved, seed=args.seed)
        control["comparison"] = [
            c.replace("real vs real", "moved tumours' originals vs themselves").replace(
                " vs real", " moved vs the same tumours in place"
            )
            for c in control["comparison"]
        ]
        table = pd.concat([table, control], ignore_index=True)
        inserted.update({f"moved, {k}": v for k, v in moved.items()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "seam.csv.tmp", index=False)
    (out / "seam.csv.tmp").replace(out / "seam.csv")
    lines = [
        f"# Seam C2ST: {len(real)} real tumour crops ({args.section} patients of {args.datalist}) "
        f"vs lesions of {args.bank} inserted into their "
        f"{'slices, tumour slices included (same scans)' if args.same_slices else 'tumour-free slices'}"
        f"; crops {args.size} px{', inside the slice' if args.fit_crop else ''}, "
        f"seed {args.seed}; {time.time() - t0:.0f} s",
        "",
        "| comparison | n | AUC [95 % CI] |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {r.comparison} | {r.n_a} / {r.n_b} | {r.auc:.3f} [{r.lo:.3f}, {r.hi:.3f}] |"
        for r in table.itertuples()
    ]
    areas = {"real": real, **inserted}
    if args.relocate_control:
        areas["moved tumours' originals"] = paired
    lines += [
        "",
        "Lesion pixels in the crops, median [IQR] (a classifier can also tell sets apart by "
        "size: the draws that find room are the smaller lesions): "
        + "; ".join(
            "{}: {:.0f} [{:.0f}, {:.0f}]".format(
                k, *np.percentile(v.mask.sum(axis=(1, 2)), (50, 25, 75))
            )
            for k, v in areas.items()
            if len(v)
        ),
        "",
        "Lesions touching dense tissue (a 2-pixel ring around the lesion, > -300 HU: pleura, "
        "mediastinum, vessels), median share of the ring; share of lesions with more than a "
        "quarter of it: "
        + "; ".join(
            f"{k}: {np.nanmedian(r):.2f}; {np.mean(r > 0.25):.2f}"
            for k, v in areas.items()
            if len(v)
            for r in [dense_ring_share(v)]
        ),
    ]
    lines += [
        "",
        "Methods: " + "; ".join(f"`{k}`: {v}" for k, v in PASTE_METHODS.items()),
        "",
        f"Insertion draws: {json.dumps(counts)}",
    ]
    (out / "seam.md.tmp").write_text("\n".join(lines) + "\n")
    (out / "seam.md.tmp").replace(out / "seam.md")
    # a picture: 6 crops of each set, lung window
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {"real": real, **inserted}
    fig, axes = plt.subplots(len(sets), 6, figsize=(9, 1.6 * len(sets)))
    rng = np.random.default_rng(args.seed)
    for r, (name, s) in enumerate(sets.items()):
        idx = (
            rng.choice(len(s), min(6, len(s)), replace=False)
            if name == "real"
            else np.arange(min(6, len(s)))
        )
        for c in range(6):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idx):
                ax.imshow(s.image[idx[c]], cmap="gray", vmin=-1000, vmax=400)
            if c == 0:
                ax.set_title(name, fontsize=8, loc="left")
    save_figure_atomic(fig, out / "seam.png", dpi=120, bbox_inches="tight")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
