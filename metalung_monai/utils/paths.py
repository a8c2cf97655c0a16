"""Paths built from data, and outputs that never touch their inputs.

Every command of metalung-monai writes only inside its output folder and never over what it
reads. Three rules, one helper each, used by every command (``phantom``, ``convert``,
``lung-mask``, ``augment``, ``experiment``, ``evaluate``):

* **Names from data become safe file names** (:func:`safe_name`, :func:`child_path`). A case id, a
  patient id, a series description or a pickle row is data, not a path: ``"../../x"``,
  ``"/abs/evil"``, ``"a\\b"``, ``"..."``, control characters or a 10,000-character id must not
  choose where a file goes. :func:`safe_name` keeps a name that is already safe and otherwise
  replaces every other character by ``_`` and (by default) appends a short hash of the original, so
  two different hostile names never collide. :func:`child_path` is the last line of defence: it
  joins a safe name to a folder and raises unless the result lies inside that folder.
* **An output is never an input** (:func:`refuse_overlap`): an output path that is, contains or
  lies inside any input (a file or a folder, symbolic links resolved) is refused before anything
  is written.
* **``--overwrite`` deletes only what the command wrote** (:func:`remove_owned`): the command's own
  manifest lists its files (paths relative to the output folder); nothing else is touched, even
  when it sits in the same folder.

Also :func:`check_free_space`: refuse up front a request whose output would not fit on the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError

__all__ = [
    "MAX_NAME_LENGTH",
    "is_safe_name",
    "safe_name",
    "child_path",
    "refuse_overlap",
    "remove_owned",
    "check_free_space",
    "format_bytes",
]

#: longest name (without extension) a data-derived file name may have
MAX_NAME_LENGTH = 96

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# names Windows refuses whatever the extension (a datalist may travel to such a machine)
_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}


def is_safe_name(name: object) -> bool:
    """Whether ``name`` may be used as is as one file-name component.

    Safe: a ``str`` of ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit,
    without ``..``, at most :data:`MAX_NAME_LENGTH` characters, not a reserved device name.
    """
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and _SAFE.fullmatch(name) is not None
        and ".." not in name
        and name.split(".")[0].lower() not in _RESERVED
    )


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_name(text: object, fallback: str = "case", disambiguate: bool = True) -> str:
    """A file-name-safe version of ``text`` (see :func:`is_safe_name`).

    A safe name is returned unchanged. Otherwise every run of other characters becomes ``_``,
    leading and trailing ``.``/``_`` are stripped, ``..`` is broken up, the result is shortened to
    fit :data:`MAX_NAME_LENGTH`, and, with ``disambiguate``, ``-<8 hex of sha1(text)>`` is
    appended, so that ``"../../x"`` and ``"x"`` (or two long ids with the same start) stay apart.

    Args:
        text: any value (converted with ``str``).
        fallback: the base used when nothing printable is left (``"///"`` -> ``"case-<hash>"``).
        disambiguate: append the hash when the name had to change. Without it the caller must
            handle collisions itself (``metalung convert`` does, per source path).

    Examples::

        safe_name("P0001")        -> "P0001"
        safe_name("../../etc/x")  -> "etc_x-<hash>"
        safe_name("/abs/evil")    -> "abs_evil-<hash>"
    """
    raw = str(text)
    if is_safe_name(raw):
        return raw
    s = _UNSAFE_CHARS.sub("_", raw)
    s = re.sub(r"\.{2,}", ".", s).lstrip("._-").rstrip("._") or fallback
    room = MAX_NAME_LENGTH - (9 if disambiguate else 0)  # "-" + 8 hex
    s = s[:room].rstrip("._") or fallback
    head, dot, tail = s.partition(".")
    if head.lower() in _RESERVED:  # "CON" -> "CON_", "con.nii" -> "con_.nii"
        s = f"{head}_{dot}{tail}"[:room] if len(s) < room else f"x{s[: room - 1]}"
    return f"{s}-{_digest(raw)}" if disambiguate else s


def child_path(
    root: str | os.PathLike, name: str, suffix: str = "", source: str | os.PathLike | None = None
) -> Path:
    """``root / (name + suffix)``, refusing any name that could leave ``root``.

    Args:
        root: the folder the file must lie in.
        name: one file-name component (must pass :func:`is_safe_name`; make it with
            :func:`safe_name` first).
        suffix: extension(s) appended as is (``".nii.gz"``), chosen by the program, not by data.
        source: what to name in the error (default: the name itself).

    Raises:
        InputError: ``name`` is not a safe name, or the path would not lie inside ``root``.
    """
    if not is_safe_name(name):
        raise InputError(
            source or repr(name), f"{name!r} is not a safe file name (a path component from data)"
        )
    base = Path(root).resolve()
    path = (base / f"{name}{suffix}").resolve()
    if path.parent != base:
        raise InputError(source or repr(name), f"{name!r} would write outside {base}")
    return Path(root) / f"{name}{suffix}"


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p)))).resolve()


def refuse_overlap(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out"
) -> None:
    """Raise unless the output ``out`` is disjoint from every input.

    An output that *is* an input (``lung-mask CT --out CT``), *contains* one (``augment DL --out
    <the datalist's folder>``) or *lies inside* one (``convert SERIES_DIR --out SERIES_DIR/x``) is
    refused, symbolic links resolved, before anything is written.

    Args:
        out: the output file or folder (need not exist yet).
        inputs: files or folders the command reads.
        option: the option that named ``out``, for the message.

    Raises:
        InputError: naming the option, the output and the input it overlaps.
    """
    o = _resolved(out)
    for inp in inputs:
        if inp is None:
            continue
        i = _resolved(inp)
        if o == i:
            raise InputError(option, f"output {out} is the input {inp}; choose another output path")
        if o in i.parents:
            raise InputError(
                option,
                f"output {out} contains the input {inp}; choose an output folder apart "
                "from the inputs",
            )
        if i in o.parents:
            raise InputError(
                option,
                f"output {out} lies inside the input {inp}; choose an output path apart "
                "from the inputs",
            )


def remove_owned(root: str | os.PathLike, rel_paths: Iterable[str]) -> int:
    """Delete the files ``rel_paths`` (relative to ``root``) that a command wrote; nothing else.

    Paths that would lie outside ``root`` are skipped (a tampered manifest cannot delete elsewhere);
    folders left empty by the deletion are removed, folders holding anything else are kept.

    Returns:
        The number of files deleted.
    """
    base = Path(root).resolve()
    n = 0
    parents: set[Path] = set()
    for rel in rel_paths:
        if not rel or os.path.isabs(rel):
            continue
        # resolve the folder, not the file: a listed symbolic link is removed itself, never its target
        p = (base / rel).parent.resolve() / Path(rel).name
        if base not in p.parents or not (p.is_symlink() or p.is_file()):
            continue
        p.unlink()
        n += 1
        parents.update(q for q in p.parents if base in q.parents)
    for d in sorted(parents, key=lambda q: len(q.parts), reverse=True):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass
    return n


def remove_empty_folders(folder: str | os.PathLike, created: str | os.PathLike) -> None:
    """Remove ``folder`` and its parents up to ``created`` (a folder a command made), stopping at
    the first that is not empty: what a refused or failed run created, and nothing else."""
    folder, created = Path(folder), Path(created)
    try:
        while True:
            folder.rmdir()
            if folder == created:
                break
            folder = folder.parent
    except OSError:  # something else is in there: leave the folder
        pass


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1000, as ``df -H``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


def check_free_space(
    folder: str | os.PathLike,
    needed_bytes: float,
    what: str,
    option: str | None = None,
    reserve: float = 0.05,
) -> None:
    """Raise when ``needed_bytes`` (an estimate of the output) would not fit on ``folder``'s disk.

    ``folder`` need not exist: the nearest existing parent is measured. A margin of ``reserve``
    (5 %) of the disk is kept free.

    Raises:
        InputError: naming ``option`` (or the folder), the estimate and the free space.
    """
    p = _resolved(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    usage = shutil.disk_usage(p)
    free = usage.free - reserve * usage.total
    if needed_bytes > free:
        raise InputError(
            option or folder,
            f"{what} needs about {format_bytes(needed_bytes)}, but {p} has "
            f"{format_bytes(max(free, 0))} to spare ({format_bytes(usage.free)} free, "
            f"{reserve:.0%} of the disk kept free); ask for less or free space",
        )
