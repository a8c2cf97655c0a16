"""The experiment folder: where each run lives, what it writes, which runs the experiment owns.

::

    DIR/experiment.json                      manifest: fingerprint, per-model keys, runs written
    DIR/runs/<model>/<arm>/seed<k>/models/   checkpoints (``model.pt``: the best on validation)
    DIR/runs/<model>/<arm>/seed<k>/eval/     history.json, slices.csv, volumes.csv, summary.json,
                                             predictions.npz (and their Markdown twins)
    DIR/runs/<model>/<arm>/seed<k>/done.json the completion record (written last)

A run is marked *done* (``done.json`` with its model's key) only once every output it writes exists
(:data:`RUN_OUTPUTS`); it is reused when its record and the results it is summarised from exist
(:data:`RUN_RECORD`: the weights may be gone); anything else in its folder is redone. Only what a
run wrote (:func:`run_files`) is ever deleted, and only runs the manifest lists (:func:`owned_runs`).

Records (``metalung experiment --records RDIR``): a copy of each finished run's ``done.json`` and
:data:`RUN_RECORD` files (about 30 kB; no weights, no predictions) in ``RDIR/<run folder>/``, from which a later call
restores the runs its ``--out`` lacks (:func:`save_record`, :func:`restore_record`). A grid that
takes several sessions on a machine that keeps only what is committed can keep its records in the
repository.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..utils.atomic import atomic_path
from ..utils.paths import remove_owned, safe_name
from ..utils.runner import completed

__all__ = [
    "MANIFEST",
    "DONE",
    "RUN_PARTS",
    "RUN_OUTPUTS",
    "RUN_RECORD",
    "run_rel",
    "run_files",
    "clear_run",
    "owned_runs",
    "save_record",
    "restore_record",
    "record_conflicts",
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
#: what a finished run is reused from (with ``done.json``) and what its record keeps: the tables and
#: history ``results.md`` is made of (kilobytes), not the weights nor the predictions (megabytes:
#: only the overlay figure draws them, from the runs that still have them)
RUN_RECORD = tuple(
    f for f in RUN_OUTPUTS if not f.startswith("models/") and f != "eval/predictions.npz"
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


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_record(out: Path, rel: str, records: Path) -> Path:
    """Copy the finished run ``rel`` of the experiment folder ``out`` into the records folder:
    ``records/rel/`` gets its :data:`RUN_RECORD` files, then its ``done.json`` (last, each file
    written atomically, so that a killed copy never leaves a record that looks complete). Returns
    the record's folder.
    """
    src, dst = Path(out) / rel, Path(records) / rel
    (dst / DONE).unlink(missing_ok=True)  # an older record stops counting before it is replaced
    for f in RUN_RECORD:
        _copy_atomic(src / f, dst / f)
    _copy_atomic(src / DONE, dst / DONE)
    return dst


def restore_record(records: Path, out: Path, rel: str, key: str) -> dict | None:
    """Restore the run ``rel`` into ``out`` from the records folder when ``records`` holds a
    complete record of it with ``key``; return its completion record (``None``: nothing to restore).

    What the run's folder held before (a killed run) is deleted first (:func:`clear_run`); the
    weights are not restored (a record has none), ``done.json`` is written last.
    """
    src, dst = Path(records) / rel, Path(out) / rel
    if completed(src / DONE, key, outputs=RUN_RECORD) is None:
        return None
    if dst.exists():
        clear_run(Path(out), rel)
    for f in RUN_RECORD:
        _copy_atomic(src / f, dst / f)
    _copy_atomic(src / DONE, dst / DONE)
    return completed(dst / DONE, key, outputs=RUN_RECORD)


def record_conflicts(records: Path, run_keys: Mapping[str, str]) -> list[str]:
    """The runs of ``run_keys`` (run folder -> key) whose record in ``records`` carries another
    key: results of another configuration (datalist, preset, bundles, banks, code version)."""
    out = []
    for rel, key in run_keys.items():
        done = Path(records) / rel / DONE
        if not done.is_file():
            continue
        try:
            rec = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a damaged record is replaced when the run finishes
        if isinstance(rec, dict) and rec.get("key") != key:
            out.append(rel)
    return out
