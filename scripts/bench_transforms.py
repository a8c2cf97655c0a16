#!/usr/bin/env python
"""MetaLung speed against the transforms people use today, in one run, as ratios.

Times (ms per call, image + mask) on the real 512 x 512 example slice
(``../shared/data/real/metalung_example``) and on a 512 x 512 x 128 volume (a phantom patient,
since no real volume that large is available here):

* ours: the six MetaLung dictionary transforms (tumour operations with the datalist's lung mask
  and, separately, computing it);
* peers: MONAI ``Flipd``, ``RandRotated(mode="nearest")``, ``RandGaussianNoised``; TorchIO
  ``RandomFlip``, ``RandomAffine`` (nearest); ``scipy.ndimage.rotate(order=0)`` of image and
  mask and ``np.random.randint`` noise as in the thesis' listing;
* floors: two memory copies of the slice, an OpenCV nearest warp of image and mask.

Timings on shared machines swing by several times under load: compare the ratios printed by one
run, never absolute times from different runs. Each figure is the median over ``--repeats``
calls after warm-up.

    python scripts/bench_transforms.py [--repeats 50] [--volume-repeats 3] [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
warnings.filterwarnings("ignore")

TARGETS_MS = {
    "mirror": 0.5,
    "noise_image": 1.0,
    "noise_tumor": 1.0,
    "rotate_image": 2.0,
    "rotate_tumor": 2.0,
    "relocate": 15.0,
}


def median_ms(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else (min(times), 0, max(times))
    return statistics.median(times), q[2] - q[0]


def load_slice(real: Path) -> dict:
    """The real example slice, its tumour mask and its HU-threshold lung labels (MONAI dictionary)."""
    from make_metalung_figure import load_example
    from monai.data import MetaTensor

    from metalung_monai.anatomy import lung_mask
    from metalung_monai.utils.orientation import (
        canonical_axes,
        canonical_spacing,
        from_canonical,
        to_canonical,
    )

    d = load_example(real)
    img = d["image"]
    ax = canonical_axes(img.affine.numpy(), 2, img.meta.get("space", "RAS"))
    hu = to_canonical(img[0].numpy(), ax)
    lungs = from_canonical(
        lung_mask(hu, canonical_spacing(img.affine.numpy(), ax), progress=False), ax
    )
    d["lung"] = MetaTensor(torch.as_tensor(lungs[None].astype(np.float32)), affine=img.affine)
    return d


def load_volume(depth: int = 128) -> dict:
    """A 512 x 512 phantom patient cropped to ``depth`` slices around its tumour, loaded by MONAI.

    Written as NIfTI and read with ``LoadImaged`` so that the array layout, ``(1, x, y, z)``, and
    the affine are what a MONAI pipeline sees.
    """
    import SimpleITK as sitk
    from monai.transforms import LoadImaged

    from metalung_monai.anatomy import lung_mask
    from metalung_monai.phantom import generate_patient, sample_patient_params

    vol = generate_patient(sample_patient_params(0, 5, "LR4A", size=512, slice_thickness=2.0))
    zc = int(np.argwhere(vol.mask)[:, 0].mean())
    z0 = int(np.clip(zc - depth // 2, 0, max(vol.hu.shape[0] - depth, 0)))
    sl = slice(z0, z0 + depth)
    arrays = {"image": vol.hu[sl], "mask": vol.mask[sl]}
    arrays["lung"] = lung_mask(arrays["image"], vol.spacing, progress=False)
    tmp = Path(tempfile.mkdtemp())
    for key, arr in arrays.items():
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(tuple(float(v) for v in vol.spacing[::-1]))
        sitk.WriteImage(img, str(tmp / f"{key}.nii.gz"))
    return LoadImaged(keys=tuple(arrays), ensure_channel_first=True)(
        {k: str(tmp / f"{k}.nii.gz") for k in arrays}
    )


TUMOUR_OPS = ("relocate", "rotate_tumor", "noise_tumor")


def ours(data: dict, repeats: int, with_lungs: bool) -> dict[str, tuple[float, float]]:
    """ms per call of each operation on image + mask (the tumour operations use the lung mask
    given in the data with ``with_lungs``, else compute it per call)."""
    from metalung_monai.transforms import METALUNG_OPS, MetaLungd

    res = {}
    pair = {k: data[k] for k in ("image", "mask")}
    for op in METALUNG_OPS:
        use_lungs = with_lungs and op in TUMOUR_OPS
        t = MetaLungd(ops=[op], lung_key="lung" if use_lungs else None).set_random_state(0)
        d = data if use_lungs else pair
        res[op] = median_ms(lambda: t(d), repeats)  # noqa: B023 - timed at once
    return res


def peers(data: dict, repeats: int) -> dict[str, tuple[float, float]]:
    import cv2
    import torchio as tio
    from monai.transforms import Flipd, RandGaussianNoised, RandRotated
    from scipy import ndimage

    keys = ("image", "mask")
    d = {k: data[k] for k in keys}
    nd = d["image"].ndim - 1
    res = {}
    rot = RandRotated(
        keys=keys, prob=1.0, range_x=math.pi / 2, mode=("nearest", "nearest"), padding_mode="zeros"
    ).set_random_state(0)
    res["monai RandRotated(nearest)"] = median_ms(lambda: rot(d), repeats)
    flip = Flipd(keys=keys, spatial_axis=0)
    res["monai Flipd"] = median_ms(lambda: flip(d), repeats)
    noise = RandGaussianNoised(keys="image", prob=1.0, std=10.0).set_random_state(0)
    res["monai RandGaussianNoised"] = median_ms(lambda: noise(d), repeats)
    img4 = d["image"].as_tensor() if nd == 3 else d["image"].as_tensor()[..., None]
    msk4 = d["mask"].as_tensor() if nd == 3 else d["mask"].as_tensor()[..., None]
    subject = tio.Subject(image=tio.ScalarImage(tensor=img4), mask=tio.LabelMap(tensor=msk4))
    aff = tio.RandomAffine(
        scales=0,
        degrees=(0, 0, 0, 0, -90, 90),
        image_interpolation="nearest",
        default_pad_value=-1024,
    )
    res["torchio RandomAffine(nearest)"] = median_ms(lambda: aff(subject), repeats)
    tflip = tio.RandomFlip(axes=(0,), flip_probability=1.0)
    res["torchio RandomFlip"] = median_ms(lambda: tflip(subject), repeats)
    arr, m = d["image"].numpy()[0], d["mask"].numpy()[0]
    axes = (0, 1)
    res["scipy ndimage.rotate(order=0) (thesis)"] = median_ms(
        lambda: (
            ndimage.rotate(arr, 37.0, axes=axes, reshape=False, order=0, cval=-1024),
            ndimage.rotate(m, 37.0, axes=axes, reshape=False, order=0),
        ),
        max(repeats // 5, 3),
    )
    res["np.random.randint noise (thesis)"] = median_ms(
        lambda: arr + np.random.randint(0, 21, size=arr.shape), repeats
    )
    res["floor: two memory copies"] = median_ms(lambda: (arr.copy(), m.copy()), repeats)
    if nd == 2:
        M = cv2.getRotationMatrix2D((255.5, 255.5), 37.0, 1.0)
        res["floor: cv2 nearest warp (image+mask)"] = median_ms(
            lambda: (
                cv2.warpAffine(arr, M, arr.shape[::-1], flags=cv2.INTER_NEAREST),
                cv2.warpAffine(m, M, m.shape[::-1], flags=cv2.INTER_NEAREST),
            ),
            repeats,
        )
    return res


RATIO_PAIRS = [
    ("mirror", "monai Flipd"),
    ("mirror", "torchio RandomFlip"),
    ("rotate_image", "monai RandRotated(nearest)"),
    ("rotate_image", "torchio RandomAffine(nearest)"),
    ("rotate_image", "scipy ndimage.rotate(order=0) (thesis)"),
    ("noise_image", "monai RandGaussianNoised"),
    ("noise_image", "np.random.randint noise (thesis)"),
]


def report(
    slice_ours, slice_ours_nolung, slice_peers, vol_total, vol_total_nolung, vol_ops, vol_peers
) -> str:
    lines = [
        "## 512 x 512 real slice (LIDC example), image + mask, ms per call (median, IQR)",
        "",
        "| operation | ours | ours, lung mask computed per call | target |",
        "|---|---|---|---|",
    ]
    for op, (ms, iqr) in slice_ours.items():
        ms2 = slice_ours_nolung[op][0]
        ok = "ok" if ms <= TARGETS_MS[op] else "MISSED"
        lines.append(f"| {op} | {ms:.2f} ({iqr:.2f}) | {ms2:.2f} | <= {TARGETS_MS[op]} ms: {ok} |")
    lines += ["", "| peer | ms per call (median, IQR) |", "|---|---|"]
    lines += [f"| {k} | {v[0]:.2f} ({v[1]:.2f}) |" for k, v in slice_peers.items()]
    lines += ["", "| ours vs peer (same run) | speed-up |", "|---|---|"]
    for a, b in RATIO_PAIRS:
        if b in slice_peers:
            lines.append(f"| {a} vs {b} | {slice_peers[b][0] / slice_ours[a][0]:.1f}x |")
    lines += [
        "",
        "## 512 x 512 x 128 volume (phantom), image + mask",
        "",
        f"All six operations one after another: **{vol_total:.2f} s** with the lung mask given "
        f"(target <= 1.5 s: {'ok' if vol_total <= 1.5 else 'MISSED'}), {vol_total_nolung:.2f} s computing it.",
        "",
        "| operation | ms per call |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v[0]:.1f} |" for k, v in vol_ops.items()]
    lines += ["", "| peer (volume) | ms per call |", "|---|---|"]
    lines += [f"| {k} | {v[0]:.1f} |" for k, v in vol_peers.items()]
    lines += ["", "| ours vs peer (volume) | speed-up |", "|---|---|"]
    for a, b in RATIO_PAIRS:
        if b in vol_peers:
            lines.append(f"| {a} vs {b} | {vol_peers[b][0] / vol_ops[a][0]:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-data", type=Path, default=REPO.parent / "shared" / "data" / "real")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--volume-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args = ap.parse_args(argv)
    if not (args.real_data / "metalung_example").is_dir():
        print(
            f"bench_transforms: error: {args.real_data / 'metalung_example'} not found",
            file=sys.stderr,
        )
        return 1
    torch.set_num_threads(2)

    sl = load_slice(args.real_data)
    slice_ours = ours(sl, args.repeats, with_lungs=True)
    slice_nolung = ours(sl, max(args.repeats // 5, 5), with_lungs=False)
    slice_peers = peers(sl, args.repeats)
    vol = load_volume()
    vol_ops = ours(vol, args.volume_repeats, with_lungs=True)
    vol_nolung = ours(vol, 1, with_lungs=False)
    vol_peers = peers(vol, args.volume_repeats)
    from metalung_monai.transforms import METALUNG_OPS, MetaLungd

    chain = [
        MetaLungd(ops=[op], lung_key="lung" if op in TUMOUR_OPS else None).set_random_state(0)
        for op in METALUNG_OPS
    ]

    def all_six(d):
        for t in chain:
            d = t(d)
        return d

    vol_total = median_ms(lambda: all_six(dict(vol)), args.volume_repeats, warmup=1)[0] / 1e3
    vol_total_nolung = sum(v[0] for v in vol_nolung.values()) / 1e3
    text = report(
        slice_ours, slice_nolung, slice_peers, vol_total, vol_total_nolung, vol_ops, vol_peers
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_transforms.md").write_text(text + "\n")
    (args.out / "bench_transforms.json").write_text(
        json.dumps(
            {
                "slice": {
                    "ours": slice_ours,
                    "ours_lung_computed": slice_nolung,
                    "peers": slice_peers,
                },
                "volume": {
                    "ours": vol_ops,
                    "ours_lung_computed": vol_nolung,
                    "peers": vol_peers,
                    "all_six_s": vol_total,
                    "all_six_lung_computed_s": vol_total_nolung,
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
