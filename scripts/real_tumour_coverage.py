"""Share of real tumours each MetaLung operation applies to, with the reasons when it does not.

Cases (from ``../shared/data/real``, see its README):

* the 111 MSD Task06 patches with tumour (``msd_lung_patches``: 48 x 48 px at 2 mm, int16 HU,
  no body outline, plane and left/right unknown, affine a plain 2 mm diagonal);
* the LIDC-IDRI slice of ``metalung_example`` (512 x 512, 0.6 mm, a subpleural part-solid
  nodule);
* the ``pyradiomics_lung1`` volume (512 x 512 x 48, one 1.4 cm3 apical nodule).

Each operation runs alone through :class:`~metalung_monai.transforms.MetaLungd` (``ops=[op]``,
the lung labels computed by the operation itself, as for a user with no lung masks), ``--seeds``
times per case (random state ``seed``); a try counts as applied when its record says
``"applied": true``. The reasons of the other tries are counted, numbers replaced by ``#`` so
that the same cause is counted once. ``relocate (no engulfing)`` is relocation with
``min_vessel_mm=None`` (every dense voxel blocks: the rule before the calibre rule). The rows
``..., lung labels given (patches)`` pass the patches' aerated region (below -320 HU, holes
filled, one label) as lung labels (``lung_key``), as a user can when the HU lung mask, which needs
a body outline, finds no lung in a patch.

Usage::

    python scripts/real_tumour_coverage.py [--real ../shared/data/real] [--seeds 3]

Prints a Markdown table (docs/metalung.md holds its output) and the reasons.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged
from scipy import ndimage

from metalung_monai.transforms import METALUNG_OPS, MetaLungd
from metalung_monai.transforms.metalung.array import metalung_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_metalung_figure import load_example  # noqa: E402 (a sibling script)

#: (row name, operation, op_kwargs, lung labels given: None or "aerated", MSD patches only)
ROWS = (
    [(op, op, {}, None) for op in METALUNG_OPS]
    + [("relocate (no engulfing)", "relocate", {"relocate": {"min_vessel_mm": None}}, None)]
    + [
        (f"{op}, lung labels given (patches)", op, {}, "aerated")
        for op in ("relocate", "rotate_tumor")
    ]
)


def aerated_lung(d: dict) -> MetaTensor:
    """Lung labels a user can give a patch without body outline: the aerated region (< -320 HU)
    with the tumour and the vessels inside it (holes filled), all labelled 1 (side unknown)."""
    hu = d["image"].numpy()[0]
    lung = (hu < -320) | (d["mask"].numpy()[0] > 0)
    lung = np.stack([ndimage.binary_fill_holes(lung[..., k]) for k in range(lung.shape[-1])], -1)
    return MetaTensor(lung[None].astype(np.float32), affine=d["image"].affine)


def msd_cases(real: Path) -> list[tuple[str, dict]]:
    """The MSD patches that hold tumour, as MONAI dictionaries (their files' plain affine)."""
    folder = real / "msd_lung_patches"
    cases = []
    for f in sorted((folder / "images").glob("*.nii.gz")):
        img = nib.load(str(f))
        m = nib.load(str(folder / "masks" / f.name))
        mask = np.asarray(m.dataobj, np.float32)
        if not mask.any():
            continue
        aff = torch.as_tensor(img.affine, dtype=torch.float64)
        cases.append(
            (
                f.name.removesuffix(".nii.gz"),
                {
                    "image": MetaTensor(np.asarray(img.dataobj, np.float32)[None], affine=aff),
                    "mask": MetaTensor(mask[None], affine=aff),
                },
            )
        )
    return cases


def volume_case(real: Path) -> dict:
    """The pyradiomics lung1 volume and its nodule, loaded by MONAI (ITK reader, RAS)."""
    folder = real / "pyradiomics_lung1"
    return LoadImaged(keys=("image", "mask"), ensure_channel_first=True, reader="ITKReader")(
        {"image": str(folder / "lung1_image.nrrd"), "mask": str(folder / "lung1_label.nrrd")}
    )


def why_not(record: dict) -> str:
    """The record's reason (else its components'), numbers replaced by ``#``."""
    reasons = [record["reason"]] if record.get("reason") else []
    reasons += [c["reason"] for c in record.get("components", []) if c.get("reason")]
    text = "; ".join(dict.fromkeys(reasons)) or "no reason recorded"
    return re.sub(r"(?<![A-Za-z])\d+(\.\d+)?", "#", text)


def run(cases, seeds: int):
    """``{(row, group): (applied, tries, Counter(reasons))}`` over ``cases`` = (name, group, d)."""
    table: dict = {}
    for row, (_label, op, kwargs, given) in enumerate(ROWS):
        for _name, group, d in cases:
            if given and group != "MSD patches":
                continue
            lung_key = None
            if given:
                d = {**d, "lung": aerated_lung(d)}
                lung_key = "lung"
            for seed in range(seeds):
                t = MetaLungd(ops=[op], op_kwargs=kwargs, lung_key=lung_key).set_random_state(seed)
                out = t(dict(d))
                rec = metalung_records(out["image"])[-1]
                applied, tries, reasons = table.setdefault((row, group), [0, 0, Counter()])
                table[(row, group)][1] += 1
                if rec.get("applied", False):
                    table[(row, group)][0] += 1
                else:
                    reasons[why_not(rec)] += 1
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--real",
        type=Path,
        default=Path(
            os.environ.get(
                "METALUNG_REAL_DATA",
                Path(__file__).resolve().parents[1].parent / "shared/data/real",
            )
        ),
    )
    ap.add_argument("--seeds", type=int, default=3, help="tries per case and operation")
    args = ap.parse_args(argv)
    if not args.real.is_dir():
        print(f"real data folder not found: {args.real}", file=sys.stderr)
        return 2
    t0 = time.time()
    cases = [(n, "MSD patches", d) for n, d in msd_cases(args.real)]
    cases.append(("lidc", "LIDC slice", load_example(args.real)))
    cases.append(("lung1", "lung1 volume", volume_case(args.real)))
    groups = list(dict.fromkeys(g for _, g, _ in cases))
    counts = Counter(g for _, g, _ in cases)
    table = run(cases, args.seeds)
    head = " | ".join(f"{g} ({counts[g]})" for g in groups)
    print(f"| operation | {head} | all |")
    print("|---" * (len(groups) + 2) + "|")
    for row, (name, *_) in enumerate(ROWS):
        cells, a_all, n_all = [], 0, 0
        for g in groups:
            if (row, g) not in table:
                cells.append("-")
                continue
            a, n, _ = table[(row, g)]
            a_all, n_all = a_all + a, n_all + n
            cells.append(f"{a / n:.0%} ({a}/{n})")
        print(f"| {name} | {' | '.join(cells)} | {a_all / n_all:.0%} |")
    print(f"\n{args.seeds} tries per case; {time.time() - t0:.0f} s\n\nReasons of non-application:")
    for row, (name, *_) in enumerate(ROWS):
        for g in groups:
            for reason, n in table.get((row, g), (0, 0, Counter()))[2].most_common():
                print(f"- {name}, {g}: {n} x {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
