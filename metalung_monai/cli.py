"""The ``metalung`` command line.

Each sub-command lives next to the code it drives and exposes ``add_parser(subparsers)``; this
module only collects them, so ``metalung --help`` lists the pipeline in order. On failure a
command prints one line ``metalung <command>: error: <what and where>`` to stderr and exits with
status 1 (2 for bad usage, as argparse does).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from . import __version__
from .errors import MetaLungError

# (sub-command, module that defines add_parser); order = pipeline order in --help
SUBCOMMANDS: list[tuple[str, str]] = [
    ("phantom", "metalung_monai.phantom.cli"),
    ("convert", "metalung_monai.io.convert"),
    ("lung-mask", "metalung_monai.anatomy.cli"),
    ("augment", "metalung_monai.transforms.metalung.offline"),
    ("experiment", "metalung_monai.training.experiment"),
    ("evaluate", "metalung_monai.training.evaluate"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalung",
        description="HU-preserving lung-tumour CT augmentation and synthesis for MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"metalung-monai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        warnings.filterwarnings("ignore")
    try:
        result = args.func(args)
    except MetaLungError as e:
        print(f"metalung {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyboardInterrupt) as e:
        msg = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        print(f"metalung {args.command}: error: {msg}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
