"""Small constructed lesion banks for the HU-mapping and realism tests (known answers).

:func:`make_bank` draws ``n`` 2D lesion patches (S x S, int16 HU): lung parenchyma around
-850 HU with noise, one disc-like lesion per patch whose mean HU depends on its Lung-RADS class
(:data:`CLASS_HU`) plus a per-lesion offset, and a shallow gradient at its edge. Everything is
seeded; ``hu_shift`` adds a constant to the lesion voxels (the "shifted HU" case).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metalung_monai.synthesis.bank import LesionBank, write_bank

#: mean lesion HU per class of the constructed banks
CLASS_HU = {"LR2": -350.0, "LR3": -150.0, "LR4A": 0.0, "LR4B": 40.0}


def lesion_patches(
    n: int,
    size: int = 32,
    seed: int = 0,
    classes: tuple[str, ...] = ("LR2", "LR3", "LR4A", "LR4B"),
    hu_shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(image int16 (n, S, S), mask uint8 (n, S, S), lung_rads labels)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    images = np.empty((n, size, size), np.int16)
    masks = np.empty((n, size, size), np.uint8)
    labels = []
    for i in range(n):
        cls = classes[i % len(classes)]
        labels.append(cls)
        r = rng.uniform(0.12, 0.3) * size
        cy, cx = size / 2 + rng.uniform(-2, 2, 2)
        ey = rng.uniform(0.7, 1.3)
        d = np.sqrt(((yy - cy) * ey) ** 2 + (xx - cx) ** 2)
        m = d <= r
        bg = -850.0 + rng.normal(0, 40, (size, size))
        mu = CLASS_HU[cls] + rng.normal(0, 40) + hu_shift
        les = mu + rng.normal(0, 60, (size, size))
        w = np.clip((r + 1.5 - d) / 3.0, 0, 1)  # a 3-pixel ramp at the edge
        img = bg * (1 - w) + les * w
        images[i] = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
        masks[i] = m.astype(np.uint8)
    return images, masks, labels


def make_bank(
    n: int = 40,
    size: int = 32,
    seed: int = 0,
    n_patients: int = 10,
    hold_fraction: float = 0.3,
    source: str = "real",
    hu_shift: float = 0.0,
    classes: tuple[str, ...] = ("LR2", "LR3", "LR4A", "LR4B"),
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    labels: list[str] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
    context_mm: float | None = None,
) -> LesionBank:
    """A 2D-only bank of constructed lesions (or of the given ``images`` / ``masks``);
    ``context_mm``: the patches' side in mm (a ``context_mm`` column: the pixel size the
    generators and the insertion read), none by default."""
    if images is None:
        images, masks, labels = lesion_patches(n, size, seed, classes, hu_shift)
    n = images.shape[0]
    rng = np.random.default_rng(seed + 1000)
    real = source == "real"
    patients = [f"p{i % n_patients:03d}" if real else f"g{i:05d}" for i in range(n)]
    n_hold = int(round(n_patients * hold_fraction))
    hold_patients = {f"p{i:03d}" for i in rng.permutation(n_patients)[:n_hold]}
    subset = [("hold" if p in hold_patients else "train") if real else "" for p in patients]
    hu = [images[i][masks[i] > 0] for i in range(n)]
    table = pd.DataFrame(
        {
            "lesion_id": [f"{source}{i:05d}" for i in range(n)],
            "kind": "2d",
            "index": np.arange(n),
            "native_index": -1,
            "source": source,
            "generator": "" if real else "test",
            "case_id": patients,
            "patient_id": patients,
            "section": "training" if real else "",
            "subset": subset,
            "lung_rads": labels,
            "type": ["solid" if np.median(h) > -300 else "ground-glass" for h in hu],
            "hu_mean": [float(h.mean()) if h.size else np.nan for h in hu],
            "hu_median": [float(np.median(h)) if h.size else np.nan for h in hu],
            "model_size": size,
        }
    )
    arrays = {
        "image2d": images.astype(np.int16),
        "mask2d": masks.astype(np.uint8),
        "lung2d": np.ones_like(masks, dtype=np.uint8),
    }
    arrays.update(extra_arrays or {})
    if context_mm is not None:
        table["context_mm"] = float(context_mm)
    return LesionBank(arrays=arrays, table=table, meta={"made_by": "tests/lesion_factory.py"})


def model_bank(path, n: int = 40, size: int = 32) -> str:
    """A saved bank of ``n`` constructed lesions at 1 mm per model pixel (``size`` pixels): the
    generator bundles' and the comparison's tests train and sample on it."""
    return save_bank(make_bank(n=n, size=size, seed=0, context_mm=float(size)), path)


def save_bank(bank: LesionBank, path) -> str:
    write_bank(bank, path)
    return str(path)
