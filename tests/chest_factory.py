"""Small synthetic chests in the canonical layout for MetaLung tests (fast, exact labels).

``make_chest`` builds a 2D ``(y, x)`` or 3D ``(z, y, x)`` HU array with air outside, a soft-tissue
body, two lungs of textured parenchyma (integer HU around -850), vessel cross-sections (+40 HU),
a calcification (+600 HU) and tumours (about 0 HU, their own texture) with their mask, plus the
true lung labels (1 right = small x, 2 left = large x) and dense structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor


@dataclass
class Chest:
    hu: np.ndarray  # int16, canonical
    mask: np.ndarray  # uint8 tumour mask
    lungs: np.ndarray  # uint8 labels 0/1/2
    dense: np.ndarray  # bool: vessels + calcification + tumours (inside lungs)
    spacing: tuple[float, ...]


def _ellipse(shape, centre, radii):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def make_chest(
    shape=(96, 128),
    tumours=(("left", 5.0),),
    seed=0,
    n_vessels=12,
    spacing=None,
    calcification=True,
    tumour_at_pleura=False,
) -> Chest:
    """A chest with tumours given as ``(lung, radius_px)``; 3D when ``shape`` has three axes."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    spacing = spacing or ((2.5,) if nd == 3 else ()) + (1.0, 1.0)
    inplane = shape[-2:]
    h, w = inplane
    body2 = _ellipse(inplane, (h / 2, w / 2), (h * 0.45, w * 0.47))
    right2 = _ellipse(inplane, (h / 2, w * 0.30), (h * 0.32, w * 0.15))
    left2 = _ellipse(inplane, (h / 2, w * 0.70), (h * 0.32, w * 0.15))
    reps = (shape[0], 1, 1) if nd == 3 else None

    def up(a):
        return np.tile(a[None], reps) if nd == 3 else a

    body, right, left = up(body2), up(right2), up(left2)
    if nd == 3:  # lungs shorter than the body: first and last slice are soft tissue only
        right[0] = left[0] = right[-1] = left[-1] = False
    hu = np.full(shape, -1000, np.int32)
    hu[body] = 40 + rng.integers(-10, 11, size=int(body.sum()))
    lungs = np.zeros(shape, np.uint8)
    lungs[right] = 1
    lungs[left] = 2
    lung = lungs > 0
    hu[lung] = -850 + rng.integers(-40, 41, size=int(lung.sum()))
    dense = np.zeros(shape, bool)
    lung_pts = np.argwhere(lung)
    for _ in range(n_vessels):
        c = lung_pts[rng.integers(len(lung_pts))]
        v = _ellipse(shape, c, (1.6,) * nd) & lung
        hu[v] = 40 + rng.integers(-5, 6, size=int(v.sum()))
        dense |= v
    if calcification:
        c = lung_pts[rng.integers(len(lung_pts))]
        v = _ellipse(shape, c, (1.5,) * nd) & lung
        hu[v] = 600
        dense |= v
    mask = np.zeros(shape, np.uint8)
    for side, r in tumours:
        label = 1 if side == "right" else 2
        cand = np.argwhere((lungs == label) & ~dense)
        zc = [shape[0] // 2] if nd == 3 else []
        if tumour_at_pleura:
            xs = np.nonzero((lungs == label).any(axis=tuple(range(nd - 1))))[0]
            x = xs[-1] - r + 1 if label == 2 else xs[0] + r - 1
            c = np.array(zc + [h // 2, x])
        else:
            c = cand[rng.integers(len(cand))]
            c[-2:] = np.clip(c[-2:], r + 2, np.array(inplane) - r - 3)
            if nd == 3:
                c[0] = zc[0]
        radii = ((max(r / 2.5, 1.0),) if nd == 3 else ()) + (r, r * 0.8)
        t = _ellipse(shape, c, radii) & (lungs == label)
        hu[t] = rng.integers(-60, 61, size=int(t.sum()))
        mask[t] = 1
        dense |= t
    return Chest(hu.astype(np.int16), mask, lungs, dense, tuple(float(s) for s in spacing))


def lps_affine(spacing_canonical) -> torch.Tensor:
    """RAS affine (MONAI convention) of an array stored in canonical order (z, y, x) / (y, x).

    MONAI arrays are (C, *spatial) with spatial axes as stored; here the stored order *is* the
    canonical order, so axis ``-1`` points to the patient's left (RAS x negative), axis ``-2`` to
    posterior (RAS y negative), axis ``0`` of a volume to superior.
    """
    nd = len(spacing_canonical)
    aff = torch.eye(4, dtype=torch.float64)
    aff[:3, :3] = 0
    world = (2, 1, 0) if nd == 3 else (1, 0)  # array axis -> world axis (x=0, y=1, z=2)
    signs = {0: -1.0, 1: -1.0, 2: 1.0}  # LPS direction in RAS
    for ax, wax in enumerate(world):
        aff[wax, ax] = signs[wax] * float(spacing_canonical[ax])
    return aff


def as_dict(chest: Chest, dtype=torch.float32, with_lungs: bool = False) -> dict:
    """MONAI dictionary with channel-first MetaTensors carrying a correct affine."""
    aff = lps_affine(chest.spacing)
    d = {
        "image": MetaTensor(
            torch.as_tensor(chest.hu[None].astype(np.float32)).to(dtype), affine=aff
        ),
        "mask": MetaTensor(torch.as_tensor(chest.mask[None].astype(np.float32)), affine=aff),
    }
    if with_lungs:
        d["lung"] = MetaTensor(torch.as_tensor(chest.lungs[None].astype(np.float32)), affine=aff)
    return d
