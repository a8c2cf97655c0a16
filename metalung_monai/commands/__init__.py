"""The ``metalung`` sub-commands, one module each; the domain packages expose functions only.

Every module here is one sub-command (``phantom``, ``convert``, ``lung-mask``, ``augment``,
``experiment``, ``evaluate``; the module name is the command name with ``-`` as ``_``) and exposes

* ``add_parser(subparsers) -> argparse.ArgumentParser``: registers the command, its options and
  help on the sub-parsers of :func:`metalung_monai.cli.build_parser` and sets ``func=run``;
* ``run(args: argparse.Namespace) -> int``: checks what the domain functions do not (options that
  only exist on the command line, output paths), calls the domain functions, prints the command's
  summary line and returns the exit status (0). Failures are raised, never printed:
  :func:`metalung_monai.cli.main` turns them into the one-line error of the failure contract.

``metalung --help`` builds every parser, so a module's top level imports only the standard
library and our light modules (:mod:`metalung_monai.errors`, :mod:`metalung_monai.utils`,
:mod:`metalung_monai.io`: numpy at most). The heavy domain modules behind a command (anatomy and
phantom with SciPy / scikit-image, transforms, training and evaluation with torch and MONAI,
SimpleITK) are imported inside ``run``: asking for help never pays for them (neither
``metalung --help`` nor ``metalung <command> --help`` imports torch, MONAI, SciPy or SimpleITK;
``tests/test_cli_contract.py`` holds it). :data:`metalung_monai.cli.SUBCOMMANDS` lists the
modules in pipeline order; ``metalung <command>`` imports only that command's module.
"""

import argparse


def positive_int(text: str) -> int:
    """argparse ``type`` of a whole number >= 1 (a one-line usage error otherwise)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v
