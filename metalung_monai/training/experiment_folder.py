"""The experiment folder: where each run lives, what it writes, which runs the experiment owns.

::

    DIR/experiment.json                      manifest: fingerprint, per-model keys, runs written
    DIR/runs/<model>/<arm>/seed<k>/models/   checkpoints (``model.pt``: the best on validation)
    DIR/runs/<model>/<arm>/seed<k>/eval/     history.json, slices.csv, volumes.csv, summary.json,
                                             predictions.npz (and their Markdown twins)
    DIR/runs/<model>/<arm>/seed<k>/done.json the completion record (written last)

A run is *done* when its ``done.json`` carries its model's key and every output it is summarised
from exists (:data:`RUN_OUTPUTS`); anything else in its folder is redone. Only what a run wrote
(:func:`run_files`) is ever deleted, and only runs the manifest lists (:func:`owned_runs`).
"""

from __future__ import annotations

from pathlib import Path

from ..utils.paths import remove_owned, safe_name

__all__ = [
    "MANIFEST",
    "DONE",
    "RUN_PARTS",
    "RUN_OUTPUTS",
    "run_rel",
    "run_files",
    "clear_run",
    "owned_runs",
]

#: the experiment's manifest in its folder
MANIFEST = "experiment.json"
#: a run's completion record in its folder
DONE = "done.json"
#: what a run writes inside its folder (all of it, and nothing else, is deleted when it is redone)
RUN_PARTS = ("models", "eval")
#: outputs a finished run is summarised from (``done.json`` is written only once they all exist)
RUN_OUTPUTS = (
    "models/model.pt",
    "eval/history.json",
    "eval/slices.csv",
    "eval/volumes.csv",
    "eval/summary.json",
    "eval/predictions.npz",
)


def run_rel(model: str, arm: str, seed: int) -> str:
    """A run's folder relative to the experiment folder (names checked: they become paths)."""
    arm_dir = "+".join(safe_name(part) for part in str(arm).split("+"))  # "metalung+monai"
    return "/".join(("runs", safe_name(model), arm_dir, f"seed{int(seed)}"))


def run_files(out: Path, rel: str) -> list[str]:
    """The files a run wrote (relative to ``out``): its ``models/``, ``eval/`` and ``done.json``."""
    run_dir = out / rel
    files = [f"{rel}/{DONE}"]
    for part in RUN_PARTS:
        d = run_dir / part
        if d.is_dir():
            files += [
                p.relative_to(out).as_posix()
                for p in sorted(d.rglob("*"))
                if p.is_file() or p.is_symlink()
            ]
    return files


def clear_run(out: Path, rel: str) -> None:
    """Delete what the run ``rel`` wrote (:func:`run_files`), nothing else in its folder."""
    remove_owned(out, run_files(out, rel))


def owned_runs(out: Path, manifest: dict) -> set[str]:
    """The run folders the experiment wrote, from its manifest.

    Folders written before manifests listed their runs: every ``runs/<model>/<arm>/seed<k>``.
    """
    if "runs" in manifest:
        return {str(r) for r in manifest["runs"]}
    runs = out / "runs"
    return (
        {p.relative_to(out).as_posix() for p in runs.glob("*/*/seed*") if p.is_dir()}
        if runs.is_dir()
        else set()
    )
