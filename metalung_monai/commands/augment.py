"""``metalung augment``: offline MetaLung expansion of a datalist's training cases.

Example::

    metalung augment cohort/datalist.json --out expanded/ --copies 2 --workers 4

runs :func:`metalung_monai.transforms.metalung.offline.expand_datalist` (resumable; what it
writes and refuses: its module docstring and ``docs/metalung.md``) and prints one line: the
training cases before and after, the variants, the time and the paths of the new datalist and of
``heatmap.png``. ``--balance lung`` / ``--balance lung-rads`` chooses each tumour case's variants so
that the expanded set approaches equal left / right lung shares or a uniform Lung-RADS mix
(:mod:`metalung_monai.anatomy.balance`), and prints the before / after table it writes to
``balance.csv`` (picture: ``balance.png``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io.datalist import load_datalist

__all__ = ["add_parser", "run", "OPS", "MAX_COPIES", "BALANCE"]

#: the operations ``--ops`` accepts, in order: the transforms' ``METALUNG_OPS`` (spelled out here
#: because importing the transforms imports torch and ``metalung --help`` must not; a test holds
#: the two equal)
OPS = ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor")
#: most ``--copies``: ``expand_datalist``'s ``MAX_COPIES`` (a test holds the two equal)
MAX_COPIES = 1000
#: the ``--balance`` values: ``anatomy.balance.BALANCE_MODES`` (a test holds the two equal)
BALANCE = ("lung", "lung-rads")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``metalung augment`` on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "augment",
        help="offline MetaLung expansion of a datalist's training cases",
        description="Write MetaLung variants (new NIfTI cases) of every training case of DATALIST and a new "
        "datalist (originals + variants with their augmentation records) in --out; resumable.",
    )
    p.add_argument(
        "datalist",
        metavar="DATALIST",
        help="source datalist.json (e.g. from 'metalung phantom' or 'convert')",
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="output folder (apart from the datalist and the files it lists)",
    )
    p.add_argument(
        "--ops",
        default=",".join(OPS),
        help=f"comma-separated operations (default: all six: {','.join(OPS)})",
    )
    p.add_argument(
        "--copies",
        type=int,
        default=1,
        help=f"variants per random operation and case (default 1, at most {MAX_COPIES})",
    )
    p.add_argument(
        "--balance",
        metavar="WHAT",
        default=None,
        help=f"choose each tumour case's variants (a subset of --ops x --copies) so that the expanded "
        f"set approaches equal left / right lung shares ('lung': mirror and relocation for cases "
        f"of the larger side) or the same share for every Lung-RADS class present ('lung-rads'); "
        f"writes balance.csv and balance.png (one of: {', '.join(BALANCE)}; default: no balancing)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an expansion made with other settings (deletes only the files it wrote)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Expand the datalist described by ``args`` and print the summary line; returns 0."""
    from ..transforms.metalung.offline import expand_datalist

    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    t0 = time.time()
    path = expand_datalist(
        args.datalist,
        args.out,
        ops=ops,
        copies=args.copies,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        **({"balance": args.balance} if args.balance is not None else {}),
    )
    dl = load_datalist(path)
    n_var = sum(1 for e in dl["training"] if e.get("augmentation"))
    n_orig = len(dl["training"]) - n_var
    print(
        f"metalung augment: {n_orig} training cases -> {n_orig + n_var} ({n_var} variants, "
        f"x{(n_orig + n_var) / max(n_orig, 1):.2f}) in {time.time() - t0:.1f} s; "
        f"datalist {path}; heatmap {Path(path).with_name('heatmap.png')}"
    )
    if args.balance is not None:
        import pandas as pd

        table = pd.read_csv(Path(path).with_name("balance.csv"))
        print(f"--balance {args.balance}: tumour cases per category (shares of all tumour cases)")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"picture {Path(path).with_name('balance.png')}")
    return 0
