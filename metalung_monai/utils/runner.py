"""One resumable runner: what every long-running command of metalung-monai needs.

``metalung phantom``, ``augment`` and ``experiment`` (and the generative commands after them) all
write many cases into one output folder, may be killed at any moment and are run again on the
same folder to finish. This module holds the pieces they share, so that each is written once:

* :class:`Manifest`: the command's JSON manifest in its output folder (what produced the folder,
  its configuration fingerprint, the cases it owns), read with typed errors and written
  atomically; :meth:`Manifest.remove_owned` is ``--overwrite``: it deletes only the files a
  previous run listed (:func:`~metalung_monai.utils.paths.remove_owned`), never anything else.
* :func:`fingerprint` / :func:`file_fingerprint`: a short hex digest of a configuration (its
  canonical JSON: sorted keys) or of a file's bytes. A folder made with another fingerprint is
  refused unless ``--overwrite``; a case record with another fingerprint is redone.
* :func:`seed_sequence`, :func:`case_seed`, :func:`case_streams`: per-case random state derived
  from ``(seed, case key)`` only, so results do not depend on the number of workers, on the order
  of completion or on where a run was interrupted.
* :func:`run_pool`: run jobs in this process (``workers=1``) or in a process pool with a bounded
  window of jobs in flight (memory does not grow with the number of jobs); results are handed to
  a callback in the main process as they complete, and a failure (or Ctrl-C) cancels the jobs not
  started yet. :func:`init_torch_worker` is the pool initializer of torch-using jobs.
* :func:`progress`: the one progress bar (tqdm) of the package; a silent stand-in with the same
  methods when disabled.
* :func:`completed` / :func:`mark_done`: atomic per-case completion records. A case is finished
  when its record exists, is readable, carries the current fingerprint and every output it
  vouches for exists; the record is written (atomically) after all of them.
* :func:`stale_partials` / :func:`remove_stale_partials`: the temporary files
  (:func:`~metalung_monai.utils.atomic.atomic_path`) a killed run left, once their writer is gone.

Typical use (a command ``cmd`` writing ``cases`` into ``out``)::

    manifest = Manifest(out, ".cmd-manifest.json", what="cmd")
    key = fingerprint({"seed": seed, "copies": copies, "source": file_fingerprint(src)})
    old = manifest.read()                           # None: a new folder
    if old is not None and old.get("key") != key:
        if not overwrite:
            raise InputError(out, f"made with other settings ({describe_diff(old, cfg)})")
        manifest.remove_owned(owned_files(old))     # only what that run wrote
    manifest.write({"key": key, "cases": list(cases)})
    remove_stale_partials(out, ("", "images"))
    todo = [c for c in cases if completed(out / "records" / f"{c}.json", key) is None]
    with progress(total=len(cases), initial=len(cases) - len(todo), desc="cmd") as bar:
        def done(case, record):
            mark_done(out / "records" / f"{case}.json", record)
            bar.update(1)
        run_pool(work, ((c, (c, case_seed(seed, c))) for c in todo), workers, on_result=done)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import stale_partial, write_json_atomic
from .paths import remove_owned

__all__ = [
    "Manifest",
    "fingerprint",
    "file_fingerprint",
    "describe_diff",
    "seed_sequence",
    "case_seed",
    "case_streams",
    "run_pool",
    "init_torch_worker",
    "progress",
    "completed",
    "mark_done",
    "stale_partials",
    "remove_stale_partials",
]


# --------------------------------------------------------------------------- manifest
class Manifest:
    """A command's JSON manifest: ``folder / name``, read with typed errors, written atomically.

    The content is the command's own (a JSON object: its parameters, fingerprint, cases); this
    class only reads, writes and deletes what it lists.

    Args:
        folder: the command's output folder (need not exist yet).
        name: file name of the manifest, e.g. ``".phantom-manifest.json"``.
        what: the command, for messages (``"phantom"`` -> "unreadable phantom manifest").
        hint: what the user can do about an unreadable manifest (ends the message).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str,
        what: str,
        hint: str = "move it away to start afresh",
    ) -> None:
        self.folder = Path(folder)
        self.name = name
        self.what = what
        self.hint = hint

    @property
    def path(self) -> Path:
        """``folder / name``."""
        return self.folder / self.name

    def exists(self) -> bool:
        """Whether something exists under the manifest's name (a folder there is unreadable)."""
        return self.path.exists()

    def read(self, required: Sequence[str] = ()) -> dict | None:
        """The manifest as a dict, ``None`` when there is none.

        Args:
            required: keys whose values must be JSON objects when present (e.g. ``("patients",)``).

        Raises:
            InputError: naming the manifest file: unreadable (not UTF-8, not JSON) or not a JSON
                object, or a ``required`` key that is not an object.
        """
        if not self.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(
                self.path, f"unreadable {self.what} manifest ({type(e).__name__}: {e}); {self.hint}"
            ) from e
        if not isinstance(data, dict):
            raise InputError(
                self.path, f"not a {self.what} manifest (not a JSON object); {self.hint}"
            )
        for key in required:
            if not isinstance(data.get(key, {}), dict):
                raise InputError(
                    self.path,
                    f"not a {self.what} manifest (its {key!r} is not a table); {self.hint}",
                )
        return data

    def write(self, data: dict) -> Path:
        """Write ``data`` (strict JSON: no NaN) atomically; returns the path."""
        return write_json_atomic(data, self.path)

    def remove_owned(self, rel_paths: Iterable[str]) -> int:
        """``--overwrite``: delete the files ``rel_paths`` (relative to ``folder``) and nothing else.

        See :func:`~metalung_monai.utils.paths.remove_owned`: paths leaving the folder are skipped,
        folders left empty are removed. Returns the number of files deleted.
        """
        return remove_owned(self.folder, rel_paths)


# --------------------------------------------------------------------------- fingerprints
def fingerprint(
    cfg: Any, algorithm: str = "sha1", length: int = 16, default: Callable | None = None
) -> str:
    """Short hex digest of ``cfg``'s canonical JSON (``json.dumps(cfg, sort_keys=True)``, UTF-8).

    Args:
        cfg: a JSON-serialisable configuration (dicts, lists, numbers, strings).
        algorithm: a :mod:`hashlib` algorithm (``"sha1"``, ``"sha256"``).
        length: hex characters kept (16: 64 bits).
        default: ``json.dumps``'s ``default`` for values JSON cannot hold (e.g. ``str``); by default
            such a value raises ``TypeError`` rather than hashing a lossy text.

    Example::

        fingerprint({"seed": 0, "ops": ["mirror"]}) == fingerprint({"ops": ["mirror"], "seed": 0})
    """
    text = json.dumps(cfg, sort_keys=True, default=default)
    return hashlib.new(algorithm, text.encode()).hexdigest()[:length]


def file_fingerprint(path: str | os.PathLike, algorithm: str = "sha1", length: int = 16) -> str:
    """Short hex digest of the bytes of ``path`` (e.g. the source datalist of a run)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def describe_diff(old: dict, new: dict, limit: int = 4) -> str:
    """``"seed: 0 != 1; size: 128 != 256"``: the first ``limit`` keys whose values differ."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs[:limit]) or "unknown difference"


# --------------------------------------------------------------------------- seeds
def _key_int(key: int | str) -> int:
    """An integer case key as is; a text key as the first 32 bits of its SHA-1 (UTF-8)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str):
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    raise TypeError(f"case key must be an int or a str, got {type(key).__name__}")


def seed_sequence(seed: int, key: int | str) -> np.random.SeedSequence:
    """``numpy.random.SeedSequence([seed, key])`` of one case of a run seeded with ``seed``.

    ``key`` is the case's index (an ``int``, used as is: phantom patient ``i``) or its id (a
    ``str``: the first 32 bits of its SHA-1, as ``augment`` derives a case's state). The same
    ``(seed, key)`` gives the same sequence in any process, whatever else the run holds.
    """
    return np.random.SeedSequence([int(seed), _key_int(key)])


def case_seed(seed: int, key: int | str) -> int:
    """One 32-bit integer seed of a case: ``seed_sequence(seed, key).generate_state(1)[0]``.

    For APIs that take an integer (``Randomizable.set_random_state(seed)``).
    """
    return int(seed_sequence(seed, key).generate_state(1)[0])


def case_streams(seed: int, key: int | str, n: int) -> list[np.random.Generator]:
    """``n`` independent generators of a case (``seed_sequence(seed, key).spawn(n)``).

    Give each stage of a case its own stream (parameters, anatomy, noise, ...), so that changing
    how much one stage draws leaves the others' draws unchanged.
    """
    return [np.random.default_rng(s) for s in seed_sequence(seed, key).spawn(int(n))]


# --------------------------------------------------------------------------- pool
def init_torch_worker(threads: int = 1) -> None:
    """Pool initializer for jobs that use torch: ``threads`` intra-op threads, MONAI logs quiet.

    ``workers`` processes each using every core would oversubscribe the machine.
    """
    import logging

    import torch

    torch.set_num_threads(int(threads))
    logging.getLogger("monai").setLevel(logging.ERROR)


def run_pool(
    fn: Callable[..., Any],
    jobs: Iterable[tuple[Any, tuple]],
    workers: int = 1,
    on_result: Callable[[Any, Any], None] | None = None,
    initializer: Callable[[], None] | None = None,
    window: int = 2,
) -> int:
    """Run ``fn(*args)`` for every ``(key, args)`` of ``jobs``; hand each result to ``on_result``.

    Args:
        fn: the work of one job; with ``workers > 1`` a picklable module-level function.
        jobs: ``(key, args)`` pairs, consumed lazily: ``key`` stays in this process (any object,
            e.g. the case's parameters), ``args`` go to ``fn``. A generator is read only as jobs
            are submitted, so the jobs' inputs are not all held at once.
        workers: ``1`` (or less): in this process, in order, without ``initializer``.
            ``> 1``: a ``ProcessPoolExecutor`` of ``workers`` processes (fewer when there are
            fewer jobs), with at most ``window * workers`` jobs in flight.
        on_result: ``on_result(key, result)``, called in this process as each job completes
            (in completion order with workers): record it, update a bar.
        initializer: run once in each worker process (e.g. :func:`init_torch_worker`).
        window: jobs in flight per worker.

    Returns:
        The number of jobs run.

    Raises:
        Whatever ``fn`` or ``on_result`` raises (and ``KeyboardInterrupt``): the jobs not started
        are cancelled, running ones finish, results already handed over stay handed over.
    """
    workers = int(workers)
    n = 0
    if workers <= 1:
        for key, args in jobs:
            result = fn(*args)
            if on_result is not None:
                on_result(key, result)
            n += 1
        return n
    queue = iter(jobs)
    first = list(_take(queue, window * workers))
    if not first:
        return 0
    with ProcessPoolExecutor(max_workers=min(workers, len(first)), initializer=initializer) as ex:
        running: dict[Future, Any] = {}

        def submit(key, args) -> None:
            running[ex.submit(fn, *args)] = key

        try:
            for key, args in first:
                submit(key, args)
            del first
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = running.pop(fut)
                    result = fut.result()
                    if on_result is not None:
                        on_result(key, result)
                    n += 1
                    nxt = next(queue, None)
                    if nxt is not None:
                        submit(*nxt)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)  # finished jobs stay recorded
            raise
    return n


def _take(it, k: int):
    for _ in range(max(int(k), 1)):
        item = next(it, None)
        if item is None:
            return
        yield item


# --------------------------------------------------------------------------- progress
class _NoBar:
    """A silent progress bar: the methods of a tqdm bar that commands use, doing nothing."""

    def __init__(self, iterable=None) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    terminal_only: bool = False,
):
    """The package's progress bar: a ``tqdm.auto.tqdm`` or a silent stand-in.

    Use it as an iterable wrapper (``for x in progress(xs, desc=...)``) or as a counter
    (``bar = progress(total=n, desc=...)``; ``bar.update(1)``; ``bar.close()``, or a ``with``
    block). The silent stand-in (when not ``enabled``, or ``terminal_only`` and stderr is not a
    terminal) has the same methods (``update``, ``set_postfix_str``, ``set_description``,
    ``close``), so callers never test for ``None``.

    Args:
        iterable: what to wrap (optional).
        total: expected count (default ``len(iterable)`` when it has one).
        desc: label shown before the bar.
        enabled: ``False`` (a command's ``--no-progress``) gives the silent stand-in.
        unit: what is counted (``"case"``, ``"run"``).
        initial: count already done (a resumed run: the finished cases).
        leave: keep the finished bar on screen.
        terminal_only: show it only when stderr is a terminal (nested or per-item bars).
    """
    if not enabled or (terminal_only and not _stderr_is_terminal()):
        return _NoBar(iterable)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)


def _stderr_is_terminal() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


# --------------------------------------------------------------------------- completion records
def completed(
    path: str | os.PathLike,
    key: str,
    key_field: str = "key",
    outputs: Iterable[str | os.PathLike] = (),
) -> dict | None:
    """The completion record at ``path`` when the case it records is finished, else ``None``.

    Finished: every path of ``outputs`` (absolute, or relative to the record's folder) is a file,
    the record is a readable JSON object and its ``key_field`` equals ``key`` (the current
    fingerprint). A damaged record (a torn disk, not a killed write: writes are atomic) counts as
    unfinished, so the case is redone.
    """
    p = Path(path)
    if not p.is_file() or not all((p.parent / o).is_file() for o in outputs):
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get(key_field) == key else None


def mark_done(path: str | os.PathLike, record: dict) -> Path:
    """Write a case's completion ``record`` (strict JSON) atomically, after all its outputs."""
    return write_json_atomic(record, path)


# --------------------------------------------------------------------------- killed runs
def stale_partials(root: str | os.PathLike, rel_paths: Iterable[str]) -> list[str]:
    """The entries of ``rel_paths`` (relative to ``root``) that are temporary files of a killed write.

    See :func:`~metalung_monai.utils.atomic.stale_partial`: a ``.<stem>.partial-<pid>-<hex>``
    name whose writing process is gone. A live writer's file (a concurrent run) is not stale.
    """
    return [rel for rel in rel_paths if stale_partial(Path(rel).name) is not None]


def remove_stale_partials(root: str | os.PathLike, folders: Iterable[str] = ("",)) -> int:
    """Delete the stale temporary files and folders a killed run left in ``root``'s ``folders``.

    Args:
        root: the output folder.
        folders: sub-folders to look in, relative to ``root`` (``""``: ``root`` itself); missing
            ones are skipped. Only direct entries named like
            :data:`~metalung_monai.utils.atomic.PARTIAL_NAME` whose writer is gone are deleted
            (a temporary folder, e.g. a DICOM series being written, with its content).

    Returns:
        The number of entries deleted.
    """
    n = 0
    for rel in folders:
        folder = Path(root) / rel
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if stale_partial(p.name) is None:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            n += 1
    return n
