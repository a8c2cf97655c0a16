#!/usr/bin/env python
"""Lung masks for a datalist of patches cut from inside the chest, where the lung segmentation
finds no lungs (no body outline around a 96 mm tumour-centred MSD patch), so that lesions can be
inserted into them (``FreeSpaced`` needs the lungs).

Every case of DATALIST (all sections) gets ``OUT/lungs/<case>.nii.gz``:
:func:`metalung_monai.anatomy.patch_lung_mask` (HU below ``--below``, opened by one voxel, less
``--edge-px`` voxels at the patch's border; one label) on the image's grid; ``OUT/datalist.json``
is DATALIST with absolute paths and each case's ``lung_mask``. Atomic writes; resumable (a
written mask is kept); prints the lung share of the patches.

    python scripts/patch_lungs.py outputs/msd/data/datalist.json outputs/table5/msd/patch_lungs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from metalung_monai.anatomy import patch_lung_mask
from metalung_monai.io.datalist import SECTIONS, datalist_entries, load_datalist, write_datalist
from metalung_monai.utils.atomic import write_image_atomic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datalist", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--below", type=float, default=-500.0, help="lung threshold in HU (-500)")
    ap.add_argument("--edge-px", type=int, default=4, help="border left out, voxels (4)")
    args = ap.parse_args()
    header = {k: v for k, v in load_datalist(args.datalist).items() if k not in SECTIONS}
    doc, shares = dict(header), []
    for section in SECTIONS:
        entries = datalist_entries(args.datalist, section)
        if not entries:
            continue
        for e in entries:
            case = e.get("case_id") or Path(e["image"]).name.split(".")[0]
            path = args.out / "lungs" / f"{case}.nii.gz"
            if not path.is_file():
                img = sitk.ReadImage(e["image"])
                lung = sitk.GetImageFromArray(
                    patch_lung_mask(sitk.GetArrayFromImage(img), args.below, args.edge_px)
                )
                lung.CopyInformation(img)
                write_image_atomic(lung, path)
            shares.append(float(np.mean(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0)))
            e["lung_mask"] = str(path.resolve())
        doc[section] = entries
    write_datalist(doc, args.out / "datalist.json")
    print(
        f"[patch-lungs] {len(shares)} cases, lung share of a patch median {np.median(shares):.2f} "
        f"(min {min(shares):.2f}); {args.out / 'datalist.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
