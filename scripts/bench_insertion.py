#!/usr/bin/env python
"""Lesion insertion speed against a plain copy-paste and a blurred-edge paste, in one run, as ratios.

One 512 x 512 slice (slice 50 of the real CPTAC chest series in ``../shared/data/real`` when
present, else a constructed chest slice) and one real-size lesion (an MSD lung-cancer patch's
tumour when present, else a constructed one). Times in ms per call, median over ``--repeats``
interleaved rounds (ours, peers, ours, ...: a shared machine's load falls on all alike):

* ours: ``find_lesion_place`` (given the free-space map), ``blend_lesion``, both together
  (the issue 13 target: <= 5 ms per lesion given the free-space map), and a whole
  ``RandInsertLesiond`` call (free-space map of the slice computed per call, as online);
* peers: TumorCP's operation, the lesion's voxels copied into the slice inside its mask (numpy
  assignment: the floor of any insertion), and SyntheticTumors' blurred edge (the mask blurred
  with a Gaussian of sigma 1.5 px and the lesion alpha-composited, ``scipy.ndimage``).

    python scripts/bench_insertion.py [--repeats 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def _data():
    from metalung_monai.anatomy import free_space_mask, lung_mask

    if (REAL / "cptac_chest_series").is_dir():
        from metalung_monai.io import read_ct
        from metalung_monai.utils.orientation import sitk_to_canonical

        hu3, sp3 = sitk_to_canonical(read_ct(REAL / "cptac_chest_series", progress=False).image)
        img, sp, what = hu3[50].astype(np.int16), tuple(float(s) for s in sp3[1:]), "CPTAC slice 50"
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:512, :512]
        lung = ((yy - 256) / 190) ** 2 + ((xx - 256) / 150) ** 2 <= 1
        img = np.full((512, 512), 40, np.int16)
        img[lung] = np.rint(-850 + rng.normal(0, 25, lung.sum())).astype(np.int16)
        sp, what = (0.7, 0.7), "constructed slice"
    lungs = lung_mask(img, sp, progress=False)
    free = free_space_mask(img, lungs, sp, min_distance_mm=1.0)
    if (REAL / "msd_lung_patches").is_dir():
        import nibabel as nib

        msd = REAL / "msd_lung_patches"
        src = np.asarray(nib.load(msd / "images" / "lung_018_p0.nii.gz").dataobj)[..., 0]
        src_m = np.asarray(nib.load(msd / "masks" / "lung_018_p0.nii.gz").dataobj)[..., 0] > 0
        lesion, pixel_mm = (src.astype(np.int16), src_m.astype(np.uint8)), 2.0
    else:
        yy, xx = np.mgrid[:48, :48]
        m = np.hypot(yy - 24, xx - 24) <= 5
        lesion, pixel_mm = ((np.where(m, 20, -850)).astype(np.int16), m.astype(np.uint8)), 2.0
    return img, sp, lungs, free, lesion, pixel_mm, what


def _unet_step_ms(repeats: int) -> float:
    """Median ms of one training step of the U-Net bundle's quick preset on the CPU."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(
        2, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2, norm="batch"
    )
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True)
    x = torch.randn(16, 1, 128, 128)
    y = (torch.rand(16, 1, 128, 128) > 0.95).long()
    out = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss(net(x), y).backward()
        opt.step()
        if i:  # the first step warms up
            out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=None, help="write bench_insertion.json / .md here")
    args = p.parse_args()
    torch.set_num_threads(1)
    from metalung_monai.evaluation.seam import paste_lesion
    from metalung_monai.synthesis.bank import LesionBank, empty_arrays
    from metalung_monai.synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion
    from metalung_monai.transforms import FreeSpaced, RandInsertLesiond

    img, sp, lungs, free, (lhu, lm), pixel_mm, what = _data()
    hu, m = resample_lesion(lhu, lm, pixel_mm, sp)
    rng = np.random.default_rng(0)
    place = find_lesion_place(free, m, sp, rng, edge_px=2)
    if place is None:
        sys.exit("bench_insertion: no room for the lesion in the slice")
    box = place.box
    # a one-lesion bank for the transform (the same lesion at its model size, 1 px = pixel_mm)
    arrays = empty_arrays(lhu.shape[-1])
    arrays.update(image2d=lhu[None], mask2d=lm[None], lung2d=np.ones_like(lm)[None])
    table = pd.DataFrame(
        [
            {
                "lesion_id": "bench:0",
                "kind": "2d",
                "index": 0,
                "native_index": -1,
                "source": "real",
                "subset": "train",
                "patient_id": "bench",
                "lung_rads": "LR4B",
                "context_mm": pixel_mm * lhu.shape[-1],
                "model_size": lhu.shape[-1],
            }
        ]
    )
    bank = LesionBank(arrays=arrays, table=table, meta={"path": "bench"})
    aff = np.diag([sp[0], sp[1], 1.0, 1.0])
    data = {
        "image": MetaTensor(torch.from_numpy(img[None].copy()), affine=aff),
        "mask": MetaTensor(torch.zeros((1, *img.shape), dtype=torch.uint8), affine=aff),
        "lung_mask": torch.from_numpy(lungs[None].astype(np.uint8)),
    }
    online = RandInsertLesiond(("image", "mask"), bank).set_random_state(0)
    cached = {**data, "free_space": torch.from_numpy(free[None].astype(np.uint8))}
    sigma = 1.5

    def ours_place():
        find_lesion_place(free, m, sp, rng, edge_px=2)

    def ours_blend():
        blend_lesion(img, hu, m, box, edge_px=2)

    def ours_both():
        pl = find_lesion_place(free, m, sp, rng, edge_px=2)
        blend_lesion(img, hu, m, pl.box, edge_px=2)

    def ours_online():
        online(data)

    def ours_online_cached():
        online(cached)

    memo = FreeSpaced("image")  # as the bundles' arms: FreeSpaced, then RandInsertLesiond
    memo(data)  # the case seen before (every epoch after the first on a plain Dataset)

    def ours_online_memo():
        online(memo(data))

    def copy_paste():  # the peers as the seam test defines them (evaluation.seam)
        paste_lesion(img, hu, m, box, method="copy")

    def blurred_paste():
        paste_lesion(img, hu, m, box, method="blurred", sigma_px=sigma)

    calls = {
        "ours: place (free-space map given)": ours_place,
        "ours: blend": ours_blend,
        "ours: place + blend": ours_both,
        "ours: RandInsertLesiond (free-space map per call)": ours_online,
        "ours: RandInsertLesiond (map cached by FreeSpaced)": ours_online_cached,
        "ours: FreeSpaced (cache hit) + RandInsertLesiond": ours_online_memo,
        "TumorCP copy-paste (floor)": copy_paste,
        "SyntheticTumors blurred-edge paste": blurred_paste,
    }
    times = {k: [] for k in calls}
    for f in calls.values():  # warm-up
        f()
    for _ in range(args.repeats):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["TumorCP copy-paste (floor)"]
    lines = [
        f"# Lesion insertion, {what} {img.shape}, lesion crop {m.shape} ({int(m.sum())} px), "
        f"median of {args.repeats} interleaved rounds",
        "",
        "| call | ms | x copy-paste |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v:.3f} | {v / floor:.1f} |" for k, v in med.items()]
    target = med["ours: place + blend"] <= 5.0
    lines += ["", f"target (place + blend <= 5 ms): {'met' if target else 'NOT met'}"]
    # the training step it rides on: the U-Net bundle's quick preset (batch 16 of 128 x 128)
    step = _unet_step_ms(max(3, args.repeats // 10))
    per_batch = 16 * med["ours: RandInsertLesiond (free-space map per call)"]
    per_batch_c = 16 * med["ours: RandInsertLesiond (map cached by FreeSpaced)"]
    per_batch_m = 16 * med["ours: FreeSpaced (cache hit) + RandInsertLesiond"]
    lines += [
        "",
        f"U-Net quick training step (batch 16 x 128 x 128, forward + backward + AdamW, one "
        f"thread): {step:.0f} ms. Online insertion into every sample of a batch of 16 at this "
        f"slice size: {per_batch:.0f} ms = {per_batch / step:.0%} of a step with the map "
        f"computed per call, {per_batch_c:.0f} ms = {per_batch_c / step:.0%} with the map "
        f"given, {per_batch_m:.0f} ms = {per_batch_m / step:.0%} with FreeSpaced's cache hit "
        "(target < 10 %; with prob p the share scales by p; DataLoader workers run it beside "
        "the step)",
    ]
    med["unet_quick_step"] = step
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_insertion.md").write_text(text + "\n")
        (args.out / "bench_insertion.json").write_text(json.dumps({"ms": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
