#!/usr/bin/env python
"""The lung-statistics recipe on the shared real chest CT and on a phantom cohort, side by side.

Prints one row per scan (parenchyma HU p5 / p50 / p95 and the dense fraction of the filled lungs,
at 1.4 mm in-plane; :mod:`metalung_monai.anatomy.lung_statistics`) and whether each phantom
figure lies inside the real range: the yardstick for calibrating the phantom (issue 11).

    python scripts/lung_statistics.py [--cohort outputs/cohort] [--patients 6] [--real DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metalung_monai.anatomy._images import to_canonical_image  # noqa: E402
from metalung_monai.anatomy.lung_statistics import REAL_LUNG_RANGES, lung_statistics  # noqa: E402
from metalung_monai.io.readers import read_ct  # noqa: E402

REAL_FILES = {
    "pyradiomics_lung1": "pyradiomics_lung1/lung1_image.nrrd",
    "cptac_chest_series": "cptac_chest_series",
    "metalung_example": "metalung_example/1-141.dcm",
}
KEYS = ("p5", "p50", "p95", "dense_fraction")


def row(name: str, path: Path, check: bool) -> str:
    arr, spacing = to_canonical_image(read_ct(path).image)
    s = lung_statistics(arr, spacing).as_dict()
    cells = []
    for k in KEYS:
        lo, hi = REAL_LUNG_RANGES[k]
        flag = "" if not check else (" ok" if lo <= s[k] <= hi else " OUT")
        cells.append(f"{s[k]:.4f}{flag}" if k == "dense_fraction" else f"{s[k]:.0f}{flag}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    ap.add_argument("--cohort", type=Path, default=REPO / "outputs" / "cohort")
    ap.add_argument("--patients", type=int, default=6)
    args = ap.parse_args(argv)
    print("| scan | p5 HU | p50 HU | p95 HU | dense fraction |")
    print("|---|---|---|---|---|")
    for name, rel in REAL_FILES.items():
        if (args.real / rel).exists():
            print(row(f"real: {name}", args.real / rel, False))
    images = sorted((args.cohort / "images").glob("*.nii.gz"))[: args.patients]
    for path in images:
        print(row(f"phantom: {path.name}", path, True))
    ranges = ", ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in REAL_LUNG_RANGES.items())
    print(f"\nreal ranges: {ranges}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
