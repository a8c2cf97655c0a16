"""The ``metalung`` command line.

Each sub-command is one module of :mod:`metalung_monai.commands` exposing
``add_parser(subparsers)`` and ``run(args) -> int``; this module only collects them
(:data:`SUBCOMMANDS`, pipeline order in ``metalung --help``) and reports failures. It is lazy:
``metalung <command> ...`` imports only that command's module, ``metalung --help`` (and an
unknown command) all of them, and a command module imports its heavy domain modules (torch,
MONAI, SciPy, SimpleITK) only inside ``run``, so asking for help never imports torch.

Failure contract, the same for every command: a failure prints **one line**
``metalung <command>: error: <file or option>: <problem>`` to stderr and exits with status 1
(2 for bad usage, as argparse does; 130 when interrupted). That holds for the errors raised on
purpose (:class:`~metalung_monai.errors.MetaLungError`, naming the file or option), for the
operating system's (``OSError``: a full disk, a permission) and for anything unexpected (a bug:
the line names the exception and asks for ``-v``). A traceback is printed only with ``-v`` /
``--verbose``, which every sub-command accepts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings

from . import __version__
from .errors import MetaLungError

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# (sub-command, module that defines add_parser and run); order = pipeline order in --help
SUBCOMMANDS: list[tuple[str, str]] = [
    ("phantom", "metalung_monai.commands.phantom"),
    ("convert", "metalung_monai.commands.convert"),
    ("lung-mask", "metalung_monai.commands.lung_mask"),
    ("augment", "metalung_monai.commands.augment"),
    ("lesion-bank", "metalung_monai.commands.lesion_bank"),
    ("lesion-realism", "metalung_monai.commands.lesion_realism"),
    ("lesion-compare", "metalung_monai.commands.lesion_compare"),
    ("synthesize", "metalung_monai.commands.synthesize"),
    ("experiment", "metalung_monai.commands.experiment"),
    ("evaluate", "metalung_monai.commands.evaluate"),
]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class _Parser(argparse.ArgumentParser):
    """argparse, with a one-line usage error and ``-v`` on every sub-command."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.prog != "metalung":  # sub-commands: -v after the command name works too
            self.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                default=argparse.SUPPRESS,
                help="log progress details; print the traceback of a failure",
            )

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named by ``argv`` (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in dict(SUBCOMMANDS) else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``metalung`` parser with every sub-command, or only ``command`` (imports its module only).

    The top-level options (``-v``, ``--version``, ``--help``) take no value, so the first word of
    the command line that is not an option is the command; :func:`main` passes it here.
    """
    parser = _Parser(
        prog="metalung",
        description="HU-preserving lung-tumour CT augmentation and synthesis for MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"metalung-monai {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log progress details; print the traceback of a failure",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name, module in SUBCOMMANDS:
        if command is None or name == command:
            importlib.import_module(module).add_parser(sub)
    return parser


def _describe(e: BaseException) -> str:
    """One line for an exception that was not raised on purpose."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, MetaLungError):
        return _one_line(e)
    if isinstance(e, MemoryError):
        return "out of memory; ask for less (fewer patients, copies or a smaller size)"
    if isinstance(e, OSError):
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return _one_line(f"{where}{e.strerror or e}")
    return _one_line(
        f"unexpected {type(e).__name__}: {e} (this is a bug; rerun with -v for the traceback "
        "and report it)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(_command_of(argv)).parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        warnings.filterwarnings("ignore")
    try:
        result = args.func(args)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the one place that reports failures
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"metalung {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
