"""The datalist: a MONAI Decathlon-style JSON index of cases.

Layout (paths relative to the datalist file, so a folder can be moved as a whole)::

    {
      "name": "metalung-phantom", "version": 1, "modality": "CT",
      "labels": {"0": "background", "1": "tumour"},
      "training": [{"image": "images/P0001.nii.gz", "mask": "masks/P0001.nii.gz",
                    "patient_id": "P0001", "lung_rads": "LR4A", "split": "train", "fold": 2,
                    "manufacturer": "SIEMENS"}, ...],
      "test": [...]
    }

``spacing`` (mm) and ``shape`` are in the canonical axis order of
:mod:`metalung_monai.utils.orientation`: ``(z, y, x)`` for volumes, ``(y, x)`` for slices.
Optional provenance keys: ``source`` (input path), ``series_instance_uid`` (DICOM),
``source_row`` (thesis pickle row), ``source_case`` and ``augmentation`` (MetaLung variants).
Every split is by patient: ``patient_id`` (required) names the patient, a patient's cases share
one section, and a training patient's cases share one ``fold`` (:func:`fill_folds`).

It loads with MONAI's own ``monai.data.load_decathlon_datalist(path, data_list_key="training")``;
:func:`load_datalist` adds schema validation (``datalist.schema.json``) with errors that name the
file, the entry and the field. ``image`` is int16 HU, ``mask`` uint8 {0, 1} (absent or ``null``
for cases without a tumour annotation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatalistError
from ..utils.atomic import write_json_atomic

__all__ = [
    "SECTIONS",
    "LUNG_RADS_CLASSES",
    "datalist_schema",
    "validate_datalist",
    "validate_entry",
    "load_datalist",
    "datalist_entries",
    "write_datalist",
    "patient_split",
    "assign_folds",
    "fill_folds",
]

SECTIONS = ("training", "validation", "test")
LUNG_RADS_CLASSES = ("LR1", "LR2", "LR3", "LR4A", "LR4B")
PATH_KEYS = ("image", "mask", "lung_mask")


@lru_cache(maxsize=1)
def datalist_schema() -> dict:
    """The JSON schema of a datalist (``metalung_monai/io/datalist.schema.json``)."""
    with open(Path(__file__).with_name("datalist.schema.json"), encoding="utf-8") as fh:
        return json.load(fh)


def validate_datalist(
    datalist: Mapping[str, Any], source: str | os.PathLike = "<datalist>"
) -> None:
    """Raise :class:`DatalistError` naming the entry and field when ``datalist`` breaks the schema.

    Also checks that a patient never appears in both ``training`` and ``test``.
    """
    import jsonschema

    validator = jsonschema.Draft7Validator(datalist_schema())
    errors = sorted(validator.iter_errors(datalist), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise DatalistError(source, f"schema violation at '{where}': {err.message}")
    train_p = {e["patient_id"] for e in datalist.get("training", [])}
    test_p = {e["patient_id"] for e in datalist.get("test", [])}
    leaked = sorted(train_p & test_p)
    if leaked:
        raise DatalistError(
            source, f"patients in both 'training' and 'test': {', '.join(leaked[:5])}"
        )


@lru_cache(maxsize=1)
def _entry_validator():
    import jsonschema

    schema = datalist_schema()
    return jsonschema.Draft7Validator(
        {"definitions": schema["definitions"], "$ref": "#/definitions/entry"}
    )


def validate_entry(
    entry: Mapping[str, Any], source: str | os.PathLike = "<datalist>", where: str = "entry"
) -> None:
    """Raise :class:`DatalistError` naming ``source``, ``where`` and the field when one entry
    breaks the schema (what :func:`validate_datalist` checks of each entry, in time independent
    of the datalist's size)."""
    errors = sorted(_entry_validator().iter_errors(entry), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = "/".join(str(p) for p in err.absolute_path)
        raise DatalistError(
            source, f"schema violation at '{where}{'/' + field if field else ''}': {err.message}"
        )


def load_datalist(path: str | os.PathLike) -> dict:
    """Read and validate a datalist JSON file; paths stay as written (relative)."""
    p = Path(path)
    if not p.is_file():
        raise DatalistError(p, "datalist file does not exist")

    def refuse_constant(name: str):  # NaN, Infinity, -Infinity: not JSON, and no valid value here
        raise DatalistError(p, f"not valid JSON: holds {name} (a number must be finite)")

    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh, parse_constant=refuse_constant)
    except json.JSONDecodeError as e:
        raise DatalistError(p, f"not valid JSON ({e.msg} at line {e.lineno})") from e
    except UnicodeDecodeError as e:
        raise DatalistError(p, f"not a JSON text file (byte {e.start} is not UTF-8)") from e
    validate_datalist(data, p)
    return data


def datalist_entries(
    path: str | os.PathLike,
    sections: str | Sequence[str] = ("training",),
    check_files: bool = True,
) -> list[dict]:
    """Entries of ``sections`` with ``image``/``mask``/``lung_mask`` turned into absolute paths.

    Equivalent to ``monai.data.load_decathlon_datalist`` plus validation; with ``check_files`` a
    missing file raises :class:`DatalistError` naming it.
    """
    p = Path(path)
    data = load_datalist(p)
    base = p.resolve().parent
    out = []
    for section in [sections] if isinstance(sections, str) else sections:
        if section not in SECTIONS:
            raise DatalistError(
                p, f"unknown section '{section}' (expected one of {', '.join(SECTIONS)})"
            )
        for i, entry in enumerate(data.get(section, [])):
            e = dict(entry)
            for key in PATH_KEYS:
                if e.get(key):
                    full = (base / e[key]).resolve()
                    if check_files and not full.exists():
                        raise DatalistError(p, f"{section}[{i}].{key}: file {full} does not exist")
                    e[key] = str(full)
            e.setdefault(
                "split", {"training": "train", "validation": "validation", "test": "test"}[section]
            )
            out.append(e)
    return out


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate ``datalist`` and write it atomically to ``path``."""
    validate_datalist(datalist, path)
    return write_json_atomic(dict(datalist), path)


def patient_split(
    patient_classes: Mapping[str, str | None],
    n_test_per_class: int = 4,
    test_classes: Iterable[str] = ("LR2", "LR3", "LR4A", "LR4B"),
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Patient-level train/test split, holding out ``n_test_per_class`` patients per class.

    The thesis held out 4 patients per Lung-RADS class (LR2, LR3, LR4A, LR4B); patients of other
    classes (e.g. healthy LR1) stay in training. A class with too few patients keeps at least one
    in training (a warning-free, deterministic choice for a given ``seed``).

    Returns:
        ``(train_ids, test_ids)``, each sorted; no patient is in both.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str | None, list[str]] = {}
    for pid, cls in sorted(patient_classes.items()):
        by_class.setdefault(cls, []).append(pid)
    test: list[str] = []
    for cls in test_classes:
        pids = by_class.get(cls, [])
        k = min(n_test_per_class, max(len(pids) - 1, 0))
        if k:
            test.extend(rng.choice(pids, size=k, replace=False).tolist())
    test_set = set(test)
    train = sorted(p for p in patient_classes if p not in test_set)
    return train, sorted(test_set)


def assign_folds(patient_ids: Sequence[str], n_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Deterministic patient -> fold map (round-robin over a seeded permutation)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    order = np.random.default_rng(seed).permutation(sorted(patient_ids))
    return {str(pid): i % n_folds for i, pid in enumerate(order)}


def fill_folds(
    datalist: MutableMapping[str, Any], n_folds: int = 5, seed: int = 0
) -> dict[str, int]:
    """Give every ``training`` entry without a ``fold`` one, by patient (in place).

    A patient whose training entries already carry a fold keeps it, and its entries without one get
    it too (the smallest, should they disagree). The other patients, in the seeded order of
    :func:`assign_folds`, each join the fold with the fewest patients (the lowest on a tie): on a
    datalist without any fold this is exactly :func:`assign_folds`, and converting more patients
    into a datalist later keeps the folds balanced without moving anyone. Entries of the
    ``validation`` and ``test`` sections are not touched.

    Args:
        datalist: a datalist dictionary (changed in place).
        n_folds: number of folds (>= 1).
        seed: seed of the patient order.

    Returns:
        ``patient_id -> fold`` of every training patient.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    training = datalist.get("training", [])
    fold_of: dict[str, int] = {}
    for e in training:
        if e.get("fold") is not None:
            pid = str(e["patient_id"])
            fold_of[pid] = min(fold_of.get(pid, e["fold"]), e["fold"])
    sizes = [0] * max(n_folds, *(f + 1 for f in fold_of.values()), 1)
    for f in fold_of.values():
        sizes[f] += 1
    new = {str(e["patient_id"]) for e in training} - set(fold_of)
    for pid in np.random.default_rng(seed).permutation(sorted(new)).tolist():
        k = min(range(n_folds), key=lambda i: (sizes[i], i))
        fold_of[pid] = k
        sizes[k] += 1
    for e in training:
        if e.get("fold") is None:
            e["fold"] = fold_of[str(e["patient_id"])]
    return fold_of
