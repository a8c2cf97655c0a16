"""The project's MONAI bundles and running one of them in this process.

:data:`MODELS` names the bundle of each model (``bundles/<model>_lung_tumor``),
:func:`default_bundles_dir` finds the repository's ``bundles/`` and :func:`run_bundle` runs a
bundle's configs with MONAI's ``ConfigWorkflow`` (initialize, run, finalize), as
``python -m monai.bundle run`` would, but in the calling process: the ``experiment`` and
``evaluate`` commands use it, so a failure inside a bundle reaches them as the error raised on
purpose (a typed :class:`~metalung_monai.errors.MetaLungError`, an ``OSError``), not as MONAI's
wrapper.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigWorkflow

from ..errors import MetaLungError

__all__ = ["MODELS", "default_bundles_dir", "run_bundle"]

#: model name -> bundle folder name
MODELS = {
    "unet": "unet_lung_tumor",
    "deeplabv3": "deeplabv3_lung_tumor",
    "maskrcnn": "maskrcnn_lung_tumor",
}


def default_bundles_dir() -> Path:
    """The repository's ``bundles/`` (beside the package in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "bundles"


def _ours(e: BaseException) -> BaseException | None:
    """The error raised on purpose (or by the system) inside a bundle, under MONAI's wrappers."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (MetaLungError, OSError, MemoryError)):
            return e
        e = e.__cause__ or e.__context__
    return None


def run_bundle(
    bundle_dir: Path, configs: Sequence[str], workflow_type: str, verbose: bool = False, **overrides
) -> None:
    """Run a bundle in this process (``ConfigWorkflow``: initialize, run, finalize).

    Args:
        bundle_dir: the bundle folder (``configs/metadata.json`` and the ``configs`` inside).
        configs: config file names in ``configs/``, stacked in this order (e.g.
            ``["train.json", "evaluate.json"]``).
        workflow_type: ``"train"`` or ``"infer"``.
        verbose: the bundle's own logging (``configs/logging.conf``) and MONAI's messages.
        overrides: config ids and their values (``ckpt_dir=...``, ``"train#trainer#max_epochs"``).

    Quiet unless ``verbose``: the bundles' ``StatsHandler`` logs every iteration at INFO level, and
    MONAI and ignite log the traceback of a failure before raising it (the command line reports the
    failure once). An error raised on purpose inside the bundle (:class:`InputError` from a config
    expression, an ``OSError``) is raised as itself, not wrapped in MONAI's ``RuntimeError``.
    """
    if not verbose:
        logging.disable(logging.ERROR)
    try:
        wf = ConfigWorkflow(
            config_file=[str(bundle_dir / "configs" / c) for c in configs],
            meta_file=str(bundle_dir / "configs" / "metadata.json"),
            logging_file=str(bundle_dir / "configs" / "logging.conf") if verbose else False,
            workflow_type=workflow_type,
            bundle_root=str(bundle_dir),
            **overrides,
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        del wf
    except Exception as e:
        ours = _ours(e)
        if ours is not None and ours is not e:
            raise ours from e
        raise
    finally:
        logging.disable(logging.NOTSET)
        # Shut the finished run's DataLoader iterators down here, in the parent: left to the
        # garbage collector they can be finalised inside the next run's forked workers ("can only
        # test a child process" tracebacks).
        gc.collect()
