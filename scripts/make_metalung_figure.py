#!/usr/bin/env python
"""Picture of each MetaLung operation on the real example slice (docs/images/metalung_ops.png).

Reads ``../shared/data/real/metalung_example`` (an LIDC-IDRI slice, CC BY 3.0, with its tumour
mask), applies each of the six operations with a fixed seed, and draws: the slice after the
operation (lung window; tumour outline in red, its old place dashed), a zoom on the tumour, and
the tumour's HU histogram before and after.

    python scripts/make_metalung_figure.py [--real-data DIR] [--out docs/images/metalung_ops.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metalung_monai.transforms import METALUNG_OPS, MetaLungd, metalung_records  # noqa: E402
from metalung_monai.utils.atomic import save_figure_atomic  # noqa: E402
from metalung_monai.utils.orientation import canonical_axes, to_canonical  # noqa: E402

TITLES = {
    "mirror": "1. mirror",
    "relocate": "2. relocate tumour",
    "rotate_image": "3. rotate image",
    "rotate_tumor": "4. rotate tumour",
    "noise_image": "5. noise on image",
    "noise_tumor": "6. noise on tumour",
}


def load_example(real: Path) -> dict:
    """The example slice and mask as a MONAI dictionary (MetaTensors, channel first)."""
    import tempfile

    import SimpleITK as sitk
    from monai.transforms import LoadImaged

    from metalung_monai.io import read_ct, read_mask

    ct = read_ct(real / "metalung_example" / "1-141.dcm")
    mask = read_mask(real / "metalung_example" / "IM140.png", ct)
    tmp = Path(tempfile.mkdtemp())
    sitk.WriteImage(ct.image, str(tmp / "image.nii.gz"))
    sitk.WriteImage(mask, str(tmp / "mask.nii.gz"))
    return LoadImaged(keys=("image", "mask"), ensure_channel_first=True)(
        {"image": str(tmp / "image.nii.gz"), "mask": str(tmp / "mask.nii.gz")}
    )


def canonical(t) -> np.ndarray:
    ax = canonical_axes(t.affine.numpy(), t.ndim - 1, t.meta.get("space", "RAS"))
    return to_canonical(t[0].numpy(), ax)


def zoom_box(mask: np.ndarray, half: int = 28):
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.mean()), int(xs.mean())
    return slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-data", type=Path, default=REPO.parent / "shared" / "data" / "real")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "metalung_ops.png")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args(argv)
    if not (args.real_data / "metalung_example").is_dir():
        print(
            f"make_metalung_figure: error: {args.real_data / 'metalung_example'} not found",
            file=sys.stderr,
        )
        return 1
    data = load_example(args.real_data)
    img0, m0 = canonical(data["image"]), canonical(data["mask"]) > 0
    rows = 1 + len(METALUNG_OPS)
    fig, axes = plt.subplots(
        rows, 3, figsize=(12, 3.6 * rows), gridspec_kw={"width_ratios": [1.3, 1, 1.2]}
    )
    win = dict(cmap="gray", vmin=-1000, vmax=400, interpolation="nearest")
    bins = np.arange(-1000, 200, 25)

    def draw(row, img, mask, title, old=None, rec_text=""):
        ax = axes[row, 0]
        ax.imshow(img, **win)
        ax.contour(mask, [0.5], colors="red", linewidths=0.8)
        if old is not None and not np.array_equal(old, mask):
            ax.contour(old, [0.5], colors="yellow", linewidths=0.7, linestyles="dashed")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        box = zoom_box(mask if mask.any() else m0)
        az = axes[row, 1]
        az.imshow(img[box], **win)
        az.contour(mask[box], [0.5], colors="red", linewidths=0.9)
        az.set_title("zoom on the tumour" + rec_text, fontsize=9)
        az.set_axis_off()
        ah = axes[row, 2]
        ah.hist(img0[m0], bins=bins, alpha=0.5, label=f"before ({m0.sum()} px)", color="tab:blue")
        ah.hist(
            img[mask],
            bins=bins,
            histtype="step",
            lw=1.5,
            label=f"after ({mask.sum()} px)",
            color="tab:red",
        )
        ah.set_xlabel("HU inside the tumour mask", fontsize=8)
        ah.legend(fontsize=7)
        ah.tick_params(labelsize=7)

    draw(0, img0, m0, "original (LIDC-IDRI-0095)")
    for row, op in enumerate(METALUNG_OPS, start=1):
        out = MetaLungd(ops=[op]).set_random_state(args.seed)(data)
        rec = metalung_records(out["image"])[-1]
        img, m = canonical(out["image"]), canonical(out["mask"]) > 0
        note = ""
        if "angle_deg" in rec:
            note = f" ({rec['angle_deg']:+.1f} deg)"
        elif rec.get("components"):
            c = rec["components"][0]
            note = (
                f" ({c.get('from_lung')} -> {c.get('to_lung', c.get('from_lung'))} lung)"
                if op == "relocate"
                else (f" ({c.get('angle_deg', 0):+.1f} deg)")
            )
        if op.startswith("noise"):
            diff = img - img0
            extra = f"{int((diff != 0).sum())} px +{int(diff.min())}..{int(diff.max())} HU"
        else:
            extra = "every value from the input" if np.isin(img, img0).all() else "NEW VALUES"
        draw(row, img, m, f"{TITLES[op]}: {extra}", old=m0, rec_text=note)
    fig.suptitle(
        "MetaLung on a real CT slice (patient's left lung on the right of the picture)\n"
        "red: tumour mask after the operation; yellow dashed: where it was",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, args.out, dpi=56)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
