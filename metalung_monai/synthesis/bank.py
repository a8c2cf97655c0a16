"""The lesion bank: one folder format for real and generated lung lesions (issue 12).

A bank is a folder (the format agreed in ``docs/synthesis.md``, "Bank format")::

    BANK/
      bank.npz        the arrays (np.savez_compressed), written atomically
      lesions.csv     one row per lesion (the table)
      bank.json       provenance: what made it, from which data, which patients, counts
      overview.png    picture grid by Lung-RADS class (written by the extraction, optional here)

Arrays of ``bank.npz`` (HU as int16 integers, masks as uint8 in {0, 1}):

* 2D lesions, model size S x S: ``image2d`` int16 (N2, S, S), ``mask2d`` / ``lung2d`` uint8.
* 3D lesions, model size D x S3 x S3: ``image3d`` int16 (N3, D, S3, S3), ``mask3d`` /
  ``lung3d`` uint8 (optional when the table holds no 3D row).
* native-resolution windows, ragged and flat-concatenated, one per lesion of either kind:
  ``native_image`` int16 (total,), ``native_mask`` / ``native_lung`` uint8 (total,),
  ``native_shape`` int32 (n, 3) as (z, y, x) with z = 1 for 2D, ``native_offset`` int64 (n,).
  A row's ``native_index`` points into them; ``-1`` means "no native window" (a generated lesion
  that exists only at model size). The native arrays are optional when no row has one.

The table (``lesions.csv``) has one row per lesion; ``kind`` (``2d`` / ``3d``) and ``index`` (row
in the arrays of that kind) tie it to the arrays. :data:`COLUMNS` lists every column in the
order written; :data:`REQUIRED_COLUMNS` are the ones :func:`read_bank` insists on (a generated
bank may leave out the measurements that only make sense for real lesions, e.g. ``spacing_z``).

Example::

    bank = read_bank("outputs/bank")
    train = bank.select("2d", subset="train")
    image, mask, lung = train.patches("2d")         # (N, S, S) int16 HU, uint8, uint8
    hu, m, lung, spacing = bank.native(0)           # native window of the first lesion
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..utils.atomic import atomic_path, write_json_atomic

__all__ = [
    "BANK_FORMAT",
    "BANK_VERSION",
    "ARRAYS_2D",
    "ARRAYS_3D",
    "NATIVE_ARRAYS",
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "LUNG_RADS_CLASSES",
    "LESION_TYPES",
    "LesionBank",
    "pack_native",
    "empty_arrays",
    "bank_counts",
    "validate_bank",
    "read_bank",
    "write_bank",
]

#: ``bank.json["format"]`` and ``["version"]`` of the folders this module writes
BANK_FORMAT = "metalung-lesion-bank"
BANK_VERSION = 1

#: image, mask, lung arrays of each kind, in that order
ARRAYS_2D = ("image2d", "mask2d", "lung2d")
ARRAYS_3D = ("image3d", "mask3d", "lung3d")
NATIVE_ARRAYS = ("native_image", "native_mask", "native_lung", "native_shape", "native_offset")
_KIND_ARRAYS = {"2d": ARRAYS_2D, "3d": ARRAYS_3D}

#: every column of ``lesions.csv``, in the order written (extra columns follow, sorted)
COLUMNS = (
    "lesion_id",
    "kind",
    "index",
    "native_index",
    "source",
    "generator",
    "condition",
    "case_id",
    "patient_id",
    "section",
    "subset",
    "slice_index",
    "z0",
    "z1",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "spacing_z",
    "spacing_y",
    "spacing_x",
    "context_mm",
    "longest_diameter_mm",
    "lung_rads",
    "type",
    "hu_mean",
    "hu_median",
    "hu_p5",
    "hu_p95",
    "n_voxels",
    "area_mm2",
    "volume_mm3",
    "scale",
    "model_size",
    "touches_edge",
)

#: columns :func:`read_bank` requires
REQUIRED_COLUMNS = (
    "lesion_id",
    "kind",
    "index",
    "native_index",
    "source",
    "generator",
    "case_id",
    "patient_id",
    "subset",
    "lung_rads",
    "type",
    "model_size",
)

#: columns read as text (never as numbers or NaN: an empty ``generator`` stays ``""``)
_TEXT_COLUMNS = (
    "lesion_id",
    "kind",
    "source",
    "generator",
    "case_id",
    "patient_id",
    "section",
    "subset",
    "lung_rads",
    "type",
)
_INT_COLUMNS = ("index", "native_index", "slice_index", "z0", "z1", "n_voxels", "model_size")

LUNG_RADS_CLASSES = ("LR2", "LR3", "LR4A", "LR4B")
LESION_TYPES = ("solid", "part-solid", "ground-glass")


def _is_mask_dtype(a: np.ndarray) -> bool:
    return a.dtype == np.uint8 or a.dtype == np.bool_


# --------------------------------------------------------------------------- the bank
@dataclass
class LesionBank:
    """A lesion bank in memory: the arrays of ``bank.npz``, the table, the provenance.

    Attributes:
        arrays: name -> array (see the module docstring for names, shapes, dtypes).
        table: one row per lesion (:data:`COLUMNS`), ``kind`` + ``index`` address the arrays.
        meta: the content of ``bank.json`` (a JSON object).
    """

    arrays: dict[str, np.ndarray]
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    def select(
        self,
        kind: str | None = "2d",
        subset: str | None = None,
        source: str | None = None,
        patients: Collection[str] | None = None,
    ) -> LesionBank:
        """The rows of one ``kind`` (``None``: both), ``subset`` and ``source`` (and of the
        ``patients`` given, by ``patient_id``) as a new bank.

        The arrays are copied for the rows kept and re-indexed (``index`` and ``native_index``
        count from 0 in table order), so the result is a complete bank: it can be written with
        :func:`write_bank` and ``patches`` / ``native`` work on it. ``meta`` is copied, with
        ``selection`` recording the filter.
        """
        t = self.table
        keep = np.ones(len(t), dtype=bool)
        for col, value in (("kind", kind), ("subset", subset), ("source", source)):
            if value is not None:
                keep &= (t[col] == value).to_numpy()
        if patients is not None:
            keep &= t["patient_id"].astype(str).isin({str(p) for p in patients}).to_numpy()
        sub = t.loc[keep].reset_index(drop=True).copy()
        arrays: dict[str, np.ndarray] = {}
        for k, names in _KIND_ARRAYS.items():
            rows = (sub["kind"] == k).to_numpy()
            idx = sub.loc[rows, "index"].to_numpy(dtype=np.int64)
            for name in names:
                if name in self.arrays:
                    arrays[name] = np.ascontiguousarray(self.arrays[name][idx])
            sub.loc[rows, "index"] = np.arange(int(rows.sum()), dtype=np.int64)
        ni = sub["native_index"].to_numpy(dtype=np.int64)
        has = ni >= 0
        if "native_image" in self.arrays:
            windows = [self._native_arrays(int(i)) for i in ni[has]]
            arrays.update(pack_native(windows))
        new_ni = np.full(len(sub), -1, dtype=np.int64)
        new_ni[has] = np.arange(int(has.sum()))
        sub["native_index"] = new_ni
        meta = json.loads(json.dumps(self.meta))
        meta["selection"] = {"kind": kind, "subset": subset, "source": source}
        if patients is not None:
            meta["selection"]["patients"] = sorted(str(p) for p in patients)
        return LesionBank(arrays=arrays, table=sub, meta=meta)

    def patches(self, kind: str = "2d") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-size ``(image, mask, lung)`` of the table's rows of ``kind``, in table order.

        Shapes (N, S, S) for ``"2d"``, (N, D, S3, S3) for ``"3d"``; image int16 HU, masks uint8.
        """
        if kind not in _KIND_ARRAYS:
            raise InputError("kind", f"must be '2d' or '3d', got {kind!r}")
        idx = self.table.loc[self.table["kind"] == kind, "index"].to_numpy(dtype=np.int64)
        names = _KIND_ARRAYS[kind]
        if any(n not in self.arrays for n in names):
            if len(idx):
                raise InputError("bank.npz", f"no {kind} arrays ({', '.join(names)})")
            return tuple(np.zeros((0, 0, 0), dtype=d) for d in (np.int16, np.uint8, np.uint8))
        return tuple(self.arrays[n][idx] for n in names)  # type: ignore[return-value]

    def _native_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = tuple(int(s) for s in self.arrays["native_shape"][i])
        off = int(self.arrays["native_offset"][i])
        n = int(np.prod(shape))
        return tuple(
            self.arrays[name][off : off + n].reshape(shape)
            for name in ("native_image", "native_mask", "native_lung")
        )  # type: ignore[return-value]

    def native(self, row: int | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """The native-resolution window of one lesion: ``(image, mask, lung, spacing)``.

        Args:
            row: the position of the lesion in the table (an ``int``) or its ``lesion_id``.

        Returns:
            ``image`` int16 HU, ``mask`` and ``lung`` uint8, shaped (y, x) for a 2D lesion and
            (z, y, x) for a 3D one; ``spacing`` in mm in the same axis order (from the
            ``spacing_*`` columns; NaN where the table lacks them).

        Raises:
            InputError: unknown row or lesion id, or a lesion without a native window.
        """
        t = self.table
        if isinstance(row, str):
            pos = np.flatnonzero((t["lesion_id"] == row).to_numpy())
            if not len(pos):
                raise InputError("lesion_id", f"no lesion {row!r} in the bank")
            pos = int(pos[0])
        else:
            pos = int(row)
            if not 0 <= pos < len(t):
                raise InputError("row", f"{pos} is outside the table (0..{len(t) - 1})")
        r = t.iloc[pos]
        ni = int(r["native_index"])
        if ni < 0 or "native_image" not in self.arrays:
            raise InputError(str(r["lesion_id"]), "this lesion has no native-resolution window")
        image, mask, lung = self._native_arrays(ni)
        spacing = tuple(float(r.get(c, np.nan)) for c in ("spacing_z", "spacing_y", "spacing_x"))
        if r["kind"] == "2d":
            return image[0], mask[0], lung[0], spacing[1:]
        return image, mask, lung, spacing


# --------------------------------------------------------------------------- helpers
def pack_native(
    windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Flat-concatenate native windows ``(image, mask, lung)`` into the five native arrays.

    Each window is (z, y, x) or (y, x) (stored as z = 1); image integer HU, masks {0, 1}.
    Returns ``native_image`` int16, ``native_mask`` / ``native_lung`` uint8, ``native_shape``
    int32 (n, 3), ``native_offset`` int64 (n,), window ``i`` at ``native_offset[i]``.
    """
    shapes = np.zeros((len(windows), 3), dtype=np.int32)
    for i, (img, _, _) in enumerate(windows):
        s = img.shape if img.ndim == 3 else (1, *img.shape)
        shapes[i] = s
    sizes = shapes.astype(np.int64).prod(axis=1)
    offsets = np.zeros(len(windows), dtype=np.int64)
    if len(windows):
        offsets[1:] = np.cumsum(sizes)[:-1]

    def cat(j: int, dtype) -> np.ndarray:
        if not windows:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.asarray(w[j]).ravel() for w in windows]).astype(dtype)

    return {
        "native_image": cat(0, np.int16),
        "native_mask": cat(1, np.uint8),
        "native_lung": cat(2, np.uint8),
        "native_shape": shapes,
        "native_offset": offsets,
    }


def empty_arrays(size: int, shape3d: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a bank without lesions: 2D at ``size``, 3D at ``shape3d`` (D, S3, S3)."""
    out = {
        "image2d": np.zeros((0, size, size), np.int16),
        "mask2d": np.zeros((0, size, size), np.uint8),
        "lung2d": np.zeros((0, size, size), np.uint8),
    }
    if shape3d is not None:
        out["image3d"] = np.zeros((0, *shape3d), np.int16)
        out["mask3d"] = np.zeros((0, *shape3d), np.uint8)
        out["lung3d"] = np.zeros((0, *shape3d), np.uint8)
    out.update(pack_native([]))
    return out


def bank_counts(table: pd.DataFrame) -> dict[str, Any]:
    """Counts per kind, and per kind x Lung-RADS class / type / subset (for ``bank.json``)."""
    out: dict[str, Any] = {"lesions": int(len(table))}
    for kind in ("2d", "3d"):
        t = table[table["kind"] == kind]
        out[kind] = {
            "lesions": int(len(t)),
            "lung_rads": {
                str(k): int(v) for k, v in t["lung_rads"].value_counts().sort_index().items()
            },
            "type": {str(k): int(v) for k, v in t["type"].value_counts().sort_index().items()},
            "subset": {str(k): int(v) for k, v in t["subset"].value_counts().sort_index().items()},
        }
    out["patients"] = int(table["patient_id"].nunique()) if len(table) else 0
    return out


# --------------------------------------------------------------------------- validation
def validate_bank(bank: LesionBank, source: str | os.PathLike = "bank") -> None:
    """Check that the arrays, the table and each other agree; raise :class:`InputError` if not.

    Checked: required columns; unique ``lesion_id``; ``kind`` in ``2d``/``3d``; the arrays of
    each kind present when rows of it exist, with one leading length and consistent shapes;
    images of an integer dtype (integer HU) fitting int16, masks uint8/bool in {0, 1}; every
    ``index`` inside its arrays; ``native_index`` -1 or inside the native arrays, whose shapes
    and offsets fit the flat arrays.
    """
    src = os.fspath(source)
    t = bank.table
    a = bank.arrays
    missing = [c for c in REQUIRED_COLUMNS if c not in t.columns]
    if missing:
        raise InputError(f"{src}/lesions.csv", f"missing column(s) {', '.join(missing)}")
    if t["lesion_id"].duplicated().any():
        dup = t.loc[t["lesion_id"].duplicated(), "lesion_id"].iloc[0]
        raise InputError(f"{src}/lesions.csv", f"lesion_id {dup!r} occurs more than once")
    bad_kind = sorted(set(t["kind"]) - set(_KIND_ARRAYS))
    if bad_kind:
        raise InputError(f"{src}/lesions.csv", f"kind must be '2d' or '3d', found {bad_kind}")
    npz = f"{src}/bank.npz"
    for kind, names in _KIND_ARRAYS.items():
        rows = t[t["kind"] == kind]
        present = [n for n in names if n in a]
        if not present and kind == "3d" and not len(rows):
            continue
        if len(present) < len(names):
            miss = [n for n in names if n not in a]
            raise InputError(npz, f"missing array(s) {', '.join(miss)}")
        ndim = 3 if kind == "2d" else 4
        shapes = {n: a[n].shape for n in names}
        if len(set(shapes.values())) != 1 or a[names[0]].ndim != ndim:
            raise InputError(npz, f"{kind} arrays must share one {ndim}-D shape, got {shapes}")
        _check_image(a[names[0]], f"{npz}:{names[0]}")
        for n in names[1:]:
            _check_mask(a[n], f"{npz}:{n}")
        idx = rows["index"].to_numpy()
        n_arr = a[names[0]].shape[0]
        if len(idx) and (idx.min() < 0 or idx.max() >= n_arr):
            raise InputError(
                f"{src}/lesions.csv",
                f"{kind} index outside 0..{n_arr - 1} (the {names[0]} array has {n_arr} rows)",
            )
    ni = t["native_index"].to_numpy()
    if (ni >= 0).any() or "native_image" in a:
        miss = [n for n in NATIVE_ARRAYS if n not in a]
        if miss:
            raise InputError(npz, f"missing array(s) {', '.join(miss)}")
        _check_image(a["native_image"], f"{npz}:native_image")
        for n in ("native_mask", "native_lung"):
            _check_mask(a[n], f"{npz}:{n}")
        total = a["native_image"].shape
        if (
            a["native_image"].ndim != 1
            or a["native_mask"].shape != total
            or (a["native_lung"].shape != total)
        ):
            raise InputError(npz, "native_image/mask/lung must be flat arrays of one length")
        shp, off = a["native_shape"], a["native_offset"]
        if shp.ndim != 2 or shp.shape[1:] != (3,) or off.shape != (shp.shape[0],):
            raise InputError(npz, "native_shape must be (n, 3) and native_offset (n,)")
        ends = off.astype(np.int64) + shp.astype(np.int64).prod(axis=1)
        if len(off) and ((shp < 1).any() or off.min() < 0 or ends.max() > total[0]):
            raise InputError(npz, "native_shape/native_offset point outside the native arrays")
        if len(ni) and (ni.min() < -1 or ni.max() >= shp.shape[0]):
            raise InputError(
                f"{src}/lesions.csv",
                f"native_index outside -1..{shp.shape[0] - 1} (native windows: {shp.shape[0]})",
            )


def _check_image(arr: np.ndarray, where: str) -> None:
    if not np.issubdtype(arr.dtype, np.integer):
        frac = ""
        if np.issubdtype(arr.dtype, np.floating) and arr.size:
            finite = np.isfinite(arr)
            if not finite.all():
                frac = " and NaN/inf values"
            elif np.any(arr != np.round(arr)):
                frac = " and fractional values"
        raise InputError(
            where, f"HU must be integers (int16), got dtype {arr.dtype}{frac}; round them first"
        )
    if arr.size and (arr.min() < -32768 or arr.max() > 32767):
        raise InputError(where, "HU outside the int16 range")


def _check_mask(arr: np.ndarray, where: str) -> None:
    if not _is_mask_dtype(arr):
        raise InputError(where, f"masks must be uint8 in {{0, 1}}, got dtype {arr.dtype}")
    if arr.size and arr.max() > 1:
        raise InputError(where, f"masks must hold only 0 and 1, found {int(arr.max())}")


# --------------------------------------------------------------------------- read / write
def read_bank(path: str | os.PathLike) -> LesionBank:
    """Read a bank folder (``bank.npz``, ``lesions.csv``, ``bank.json``) and validate it.

    Raises:
        InputError: naming the file and the problem: a missing or unreadable file, a missing
            array or column, shapes that disagree with the table, non-integer HU, masks that are
            not {0, 1} (see :func:`validate_bank`).
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "not a lesion bank folder (no such folder)")
    files = {n: root / n for n in ("bank.npz", "lesions.csv", "bank.json")}
    for name, p in files.items():
        if not p.is_file():
            raise InputError(p, f"missing: a lesion bank needs {name}")
    try:
        meta = json.loads(files["bank.json"].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(files["bank.json"], f"unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict):
        raise InputError(files["bank.json"], "not a JSON object")
    try:
        with np.load(files["bank.npz"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(files["bank.npz"], f"unreadable ({type(e).__name__}: {e})") from e
    table = _read_table(files["lesions.csv"])
    bank = LesionBank(arrays=arrays, table=table, meta=meta)
    validate_bank(bank, root)
    return bank


def _read_table(path: Path) -> pd.DataFrame:
    try:
        head = pd.read_csv(path, nrows=0).columns
        dtypes = {c: str for c in _TEXT_COLUMNS if c in head}
        t = pd.read_csv(
            path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={c: ["", "nan", "NaN"] for c in head if c not in _TEXT_COLUMNS},
        )
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise InputError(path, f"unreadable ({type(e).__name__}: {e})") from e
    for c in _INT_COLUMNS:
        if c in t.columns:
            col = t[c]
            if col.isna().any() or not np.all(np.asarray(col, dtype=float) % 1 == 0):
                raise InputError(path, f"column {c!r} must hold integers")
            t[c] = col.astype(np.int64)
    if "touches_edge" in t.columns:
        t["touches_edge"] = t["touches_edge"].astype(str).str.lower().isin(["true", "1"])
    return t


def write_bank(bank: LesionBank, out_dir: str | os.PathLike) -> Path:
    """Write ``bank`` to ``out_dir`` atomically (each file whole or not at all); returns the folder.

    ``bank.npz`` (compressed), ``lesions.csv`` (the :data:`COLUMNS` first, extra columns after,
    sorted) and ``bank.json`` (``meta`` with ``format``, ``version`` and ``counts`` refreshed
    from the table). The bank is validated first (:func:`validate_bank`): nothing is written
    for an inconsistent bank. ``bank.json`` is written last, so a folder with a ``bank.json``
    of the current run has its other two files.
    """
    out = Path(out_dir)
    validate_bank(bank, out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **bank.arrays)
    with atomic_path(out / "bank.npz") as tmp:
        tmp.write_bytes(buf.getvalue())
    cols = [c for c in COLUMNS if c in bank.table.columns]
    cols += sorted(c for c in bank.table.columns if c not in COLUMNS)
    text = bank.table[cols].to_csv(index=False, lineterminator="\n")
    with atomic_path(out / "lesions.csv") as tmp:
        tmp.write_text(text, encoding="utf-8")
    meta = dict(bank.meta)
    meta["format"] = BANK_FORMAT
    meta["version"] = BANK_VERSION
    meta["counts"] = bank_counts(bank.table)
    write_json_atomic(meta, out / "bank.json")
    return out
