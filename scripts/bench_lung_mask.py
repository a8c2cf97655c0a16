"""Time and accuracy of ``lung_mask`` against the plain threshold recipe it replaces, on real CT.

Usage::

    python scripts/bench_lung_mask.py [--data ../shared/data/real/cptac_chest_series] [--repeat 3]

The case is the CPTAC chest series of ``../shared/data/real`` (512 x 512 x 99, 0.564 mm pixels,
3 mm slices, upper abdomen with colon gas to the lung apices). Three inputs are run:

* ``volume``: the whole series;
* ``abdomen``: its lowest 12 slices (36 mm: liver, stomach, colon gas and the lung bases), an
  abdominal scan that holds only the bottom of the lungs;
* ``slices``: every axial slice on its own (99 calls of a 2D slice).

The peer is the one-line recipe of issue 11, what a lung mask by HU thresholds is without
anatomy: body = largest connected component above -500 HU, filled per slice; lungs = the two
largest connected air components below -320 HU inside the body (3D for a volume, 2D for a
slice), right/left by the side of the body's centre their centre lies on.

There is no learned-model mask of this series, so the reference is built from the whole series in
3D, independently of both methods: air below -320 HU inside the body, 3D-connected (6) to one of
the two largest air components of the slice with the most air (mid thorax), holes filled per
slice. Bowel gas is never connected to it; the trachea and main bronchi are (about 0.5 % of it).
For each input and method the script prints the time, the lung voxels, the voxels *outside the
lungs* (labelled but farther than 2 pixels in-plane from the reference: colon gas, gas under the
diaphragm, air outside the body) and the Dice against the reference on the same slices, then the
ratios ours / peer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from metalung_monai.anatomy import lung_mask
from metalung_monai.anatomy._morph import INPLANE_SQUARE, fill_holes_per_slice, largest_component
from metalung_monai.io import read_ct
from metalung_monai.utils.orientation import sitk_to_canonical

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "real" / "cptac_chest_series"
ABDOMEN_SLICES = 12


def peer_lung_mask(hu: np.ndarray, spacing) -> np.ndarray:
    """Issue 11's recipe: the two largest air components (< -320 HU) inside the body (> -500 HU).

    ``hu`` canonical ``(y, x)`` or ``(z, y, x)``; returns uint8 labels, 1 right (smaller x), 2 left.
    """
    vol = hu[None] if hu.ndim == 2 else hu
    body = fill_holes_per_slice(
        largest_component(vol > -500, structure=ndi.generate_binary_structure(3, 1))
    )
    air = body & (vol < -320)
    if hu.ndim == 2:  # a slice: components in 2D
        lab, n = ndi.label(air, structure=INPLANE_SQUARE)
    else:
        lab, n = ndi.label(air)
    out = np.zeros(vol.shape, np.uint8)
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        centre = np.nonzero(body)[2].mean()
        for i in np.argsort(sizes)[::-1][:2]:
            if sizes[i] == 0:
                continue
            comp = lab == i
            out[comp] = 1 if np.nonzero(comp)[2].mean() < centre else 2
    return out[0] if hu.ndim == 2 else out


def reference_lungs(hu: np.ndarray) -> np.ndarray:
    """Lungs of a whole chest volume by 3D connectivity from the mid thorax (see module doc)."""
    body = fill_holes_per_slice(
        largest_component(hu > -500, structure=ndi.generate_binary_structure(3, 1))
    )
    air = body & (hu < -320)
    z_mid = int(np.argmax(air.sum(axis=(1, 2))))
    lab2, n2 = ndi.label(air[z_mid])
    sizes2 = np.bincount(lab2.ravel(), minlength=n2 + 1)
    sizes2[0] = 0
    seeds = np.zeros(air.shape, bool)
    seeds[z_mid] = np.isin(lab2, np.argsort(sizes2)[::-1][:2]) & (lab2 > 0)
    lab, n = ndi.label(air)
    keep = np.unique(lab[seeds])
    return fill_holes_per_slice(np.isin(lab, keep[keep > 0]))


def score(labels: np.ndarray, ref: np.ndarray) -> dict:
    m = labels > 0
    near = ndi.binary_dilation(ref, structure=INPLANE_SQUARE, iterations=2)
    inter = int((m & ref).sum())
    total = int(m.sum()) + int(ref.sum())
    return {
        "voxels": int(m.sum()),
        "outside": int((m & ~near).sum()),
        "dice": 2.0 * inter / total if total else 1.0,
    }


def run(method, hu, sp, mode: str, repeat: int) -> tuple[np.ndarray, float]:
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        if mode == "slices":
            out = np.stack([method(hu[z], sp[1:]) for z in range(hu.shape[0])])
        else:
            out = method(hu, sp)
        best = min(best, time.perf_counter() - t)
    return out, best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT, help="CPTAC chest series folder")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per timing")
    args = ap.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data}: not found (the real CT reference data, see README)")
    hu, sp = sitk_to_canonical(read_ct(args.data, progress=False).image)
    print(f"{args.data.name}: {hu.shape[2]}x{hu.shape[1]}x{hu.shape[0]}, spacing {sp} mm (z, y, x)")
    ref = reference_lungs(hu)
    print(
        f"reference: {int(ref.sum())} lung voxels, slices {np.flatnonzero(ref.any(axis=(1, 2)))[[0, -1]].tolist()}"
    )

    def ours(a, s):
        return lung_mask(a, s, progress=False)

    inputs = {
        "volume": (hu, ref, "volume"),
        "abdomen": (hu[:ABDOMEN_SLICES], ref[:ABDOMEN_SLICES], "volume"),
        "slices": (hu, ref, "slices"),
    }
    header = f"{'input':8} {'method':9} {'time s':>7} {'voxels':>9} {'outside':>8} {'dice':>6}"
    print(header)
    print("-" * len(header))
    for name, (a, r, mode) in inputs.items():
        res = {}
        for label, method in (("lung_mask", ours), ("peer", peer_lung_mask)):
            lab, t = run(method, a, sp, mode, args.repeat)
            res[label] = (t, score(lab, r))
            s = res[label][1]
            print(
                f"{name:8} {label:9} {t:7.2f} {s['voxels']:9d} {s['outside']:8d} {s['dice']:6.3f}"
            )
        (t0, s0), (t1, s1) = res["lung_mask"], res["peer"]
        print(
            f"{name:8} {'ratio':9} {t0 / t1:7.2f} {'':9} "
            f"{(s0['outside'] / s1['outside'] if s1['outside'] else float('nan')):8.3f} "
            f"{s0['dice'] / s1['dice']:6.2f}   (ours / peer: time, outside voxels, Dice)"
        )


if __name__ == "__main__":
    main()
