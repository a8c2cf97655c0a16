"""Offline MetaLung expansion of a datalist (``metalung augment DATALIST --out DIR``).

Every training case is loaded the MONAI way (``LoadImaged``, ITK reader, channel first, int16
kept), expanded with :class:`~.dictionary.MetaLungd` in ``"expand"`` mode, and each variant is
written as a new NIfTI case on the grid of its source case (``images/``, ``masks/``). The new
``datalist.json`` lists the original cases (paths pointing back to their files, not copied),
then the variants; each variant entry has ``image``, ``mask``, ``source_case`` and an
``augmentation`` record: the operation's name and its parameters as applied. Test and
validation sections are carried over unchanged (never augmented).

Robustness:

* Names from data are not paths: a case id (or, without one, the image's file name) becomes a
  file name through :func:`~metalung_monai.utils.paths.safe_name` (a safe id such as ``P0001``
  is kept; ``"../../x"``, ``"/abs/evil"``, ``"a/b"``, control characters or a 5,000-character id
  become a sanitised name with a hash, so two ids never share files), and every file is placed
  with :func:`~metalung_monai.utils.paths.child_path`, which refuses anything outside ``--out``.
  The new datalist lists each case under that name (``case_id``; variants' ``source_case``).
* Inputs are never outputs: an ``--out`` that is, contains or lies inside the datalist or any
  image / mask / lung mask it lists is refused before anything is written. A folder holding a
  ``datalist.json`` or ``heatmap.png`` that ``augment`` did not write (no manifest) is refused too.
* ``--overwrite`` deletes only what ``augment`` wrote there: the files its manifest's cases and
  records name (variant images and masks, records, ``datalist.json``, ``heatmap.png``); anything
  else in the folder (the user's notes, another tool's ``images/``) stays.
* Streaming: one case in memory per worker, and its variants are made and written one at a time
  (:meth:`~.dictionary.MetaLungd.iter_expand`), so memory stays flat however large the datalist
  or ``copies``. A request whose output would not fit on the disk (estimated from the source
  files' sizes times the number of variants) or asks for more than :data:`MAX_COPIES` copies is
  refused up front, before anything is written.
* Resumable: a case is finished when its record ``records/<case_id>.json`` exists; it is
  written (atomically) after all the case's files. A rerun after a kill skips finished cases and
  redoes the unfinished one; every file is written atomically, so no half-written NIfTI exists,
  and the datalist is rebuilt from the records, so no case is duplicated.
* Reproducible: each case's random state comes from ``(seed, case_id)`` only, so results do not
  depend on ``workers`` or on where a run was interrupted.
* A folder made with other settings (ops, copies, seed, source) is refused unless ``overwrite``.

Also writes ``heatmap.png``: where the tumours are (axial projection, radiological display) in
the input and in the expanded set, with the share of tumour voxels in each lung (the thesis'
figure 36: mirror and relocation balance the left and right lungs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ...errors import DatalistError, InputError
from ...io.datalist import PATH_KEYS, SECTIONS, datalist_entries, load_datalist, write_datalist
from ...utils.atomic import (
    PARTIAL_NAME,
    atomic_path,
    stale_partial,
    write_image_atomic,
    write_json_atomic,
)
from ...utils.paths import (
    check_free_space,
    child_path,
    format_bytes,
    is_safe_name,
    refuse_overlap,
    remove_owned,
    safe_name,
)
from .array import _Canonical, _np, metalung_records
from .dictionary import METALUNG_OPS, MetaLungd

__all__ = [
    "expand_datalist",
    "HEATMAP_GRID",
    "MAX_COPIES",
    "MAX_WORKERS",
    "tumour_heat",
    "add_parser",
    "run",
]

log = logging.getLogger(__name__)

HEATMAP_GRID = 128
MANIFEST = ".augment-manifest.json"
#: most variants per random operation and case: far beyond any useful augmentation (the thesis
#: used 1); larger requests are mistakes that would fill the disk and the datalist
MAX_COPIES = 1000
#: most worker processes
MAX_WORKERS = 256
#: bytes per variant for its datalist entry and record, added to the image estimate
_ENTRY_BYTES = 2048
#: files of its own that ``augment`` writes at the top of ``--out``
_TOP_FILES = ("datalist.json", "heatmap.png")
_SUBDIRS = ("images", "masks", "records")


def _case_seed(seed: int, case_id: str) -> int:
    digest = int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)
    return int(np.random.SeedSequence([int(seed), digest]).generate_state(1)[0])


def tumour_heat(
    mask_canonical: np.ndarray, grid: int = HEATMAP_GRID
) -> tuple[np.ndarray, int, int]:
    """Axial projection of a canonical tumour mask onto a ``grid x grid`` map of voxel counts.

    Args:
        mask_canonical: canonical ``(y, x)`` or ``(z, y, x)`` mask (nonzero = tumour).
        grid: size of the map; positions are relative to the image extent.

    Returns:
        ``(heat, right, left)``: counts per cell (rows = posterior, columns = patient left) and
        the tumour voxels in the patient's right (``x`` below the image centre) and left half.
    """
    m = np.asarray(mask_canonical) != 0
    pts = np.argwhere(m)
    heat = np.zeros((grid, grid), np.float64)
    if len(pts) == 0:
        return heat, 0, 0
    h, w = m.shape[-2:]
    ys = (pts[:, -2] + 0.5) / h
    xs = (pts[:, -1] + 0.5) / w
    heat, _, _ = np.histogram2d(ys, xs, bins=grid, range=((0, 1), (0, 1)))
    left = int((pts[:, -1] >= w / 2.0).sum())
    return heat, len(pts) - left, left


def _rel(path: str | os.PathLike, start: Path) -> str:
    return os.path.relpath(os.path.abspath(path), start)


def _config_key(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _variant_stem(case_id: str, op: str, k: int) -> str:
    """File stem of variant ``k`` of operation ``op`` of a case (``P0001__mirror_0``).

    ``case_id`` is already a safe name; a stem that would be too long is shortened with a hash.
    """
    return safe_name(f"{case_id}__{op}_{k}")


def _case_ids(train: list[dict]) -> dict[str, dict]:
    """Safe, unique file-name ids of the training cases (in datalist order) -> their entries.

    The id is the entry's ``case_id`` (else the image's file name up to the first dot) through
    :func:`safe_name`; a repeated id gets ``_<index>`` (then more, until it is unique).
    """
    ids: dict[str, dict] = {}
    for i, e in enumerate(train):
        raw = str(e.get("case_id") or Path(e["image"]).name.split(".")[0])
        cid = safe_name(raw)
        if cid in ids:
            cid = safe_name(f"{cid}_{i}")
            while cid in ids:
                cid = safe_name(f"{cid}_{i}")
        ids[cid] = e
    return ids


def _inputs_of(src: Path, raw: dict) -> list[str]:
    """The datalist file and every image / mask / lung mask it lists (any section), as absolute paths."""
    base = src.parent
    files = [str(src)]
    for section in SECTIONS:
        for entry in raw.get(section, []) or []:
            for key in PATH_KEYS:
                if entry.get(key):
                    files.append(str(base / entry[key]))
    return files


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path,
            f"unreadable augment manifest ({type(e).__name__}); remove the folder or choose "
            "another --out",
        ) from e
    if not isinstance(data, dict):
        raise InputError(path, "not an augment manifest (not a JSON object)")
    return data


def _dead_partials(out: Path, cases: Sequence[str], ops: Sequence[str], copies: int) -> list[str]:
    """``.partial`` leftovers (relative to ``out``) of this expansion's own files whose writer is dead.

    A killed write leaves its temporary file (see :func:`~metalung_monai.utils.atomic.atomic_path`);
    the rerun removes it. A file whose writing process is still alive (a concurrent run) is kept.
    """
    owned = _owned_files(
        out, {"cases": list(cases), "ops": list(ops), "copies": copies}, read_records=False
    )
    return [rel for rel in owned if stale_partial(Path(rel).name)]


def _owned_files(out: Path, manifest: dict, read_records: bool = True) -> list[str]:
    """Files (relative to ``out``) that the ``augment`` run described by ``manifest`` wrote there.

    Its fixed outputs and manifest; for each of its cases (the manifest's ``cases``, else the
    records found) the record pair and the variant files its records list; and the variant files
    (or ``.partial`` leftovers of a killed write) whose names that run gives its cases, so an
    unfinished case's files go too. Nothing else: other files in ``out`` are not touched.
    """
    owned: set[str] = {MANIFEST, *_TOP_FILES}
    rec_dir = out / "records"
    cases = [
        c for c in manifest.get("cases", []) if is_safe_name(c)
    ]  # a tampered manifest names nothing else
    if not cases and rec_dir.is_dir():
        cases = sorted(
            {
                p.name[: -len(".json")]
                for p in rec_dir.glob("*.json")
                if is_safe_name(p.name[: -len(".json")])
            }
        )
    ops = [o for o in manifest.get("ops", METALUNG_OPS) if o in METALUNG_OPS]
    copies = manifest.get("copies", 1)
    copies = int(copies) if isinstance(copies, int) and 0 < copies <= MAX_COPIES else 1
    case_set = set(cases)
    op_pattern = re.compile(
        rf"^(?P<cid>.+)__(?P<op>{'|'.join(map(re.escape, ops or METALUNG_OPS))})_(?P<k>\d+)$"
    )
    long_stems: set[str] = set()  # variants whose stem had to be shortened (cannot be parsed back)
    for cid in cases:
        owned.update({f"records/{cid}.json", f"records/{cid}.npz"})
        if not is_safe_name(f"{cid}__rotate_image_{copies}"):
            long_stems.update(
                _variant_stem(cid, op, k)
                for op in ops
                for k in range(1 if op == "mirror" else copies)
            )
        rec_path = rec_dir / f"{cid}.json"
        try:
            rec = (
                json.loads(rec_path.read_text(encoding="utf-8"))
                if read_records and rec_path.is_file()
                else {}
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            rec = {}
        for v in rec.get("variants", []) if isinstance(rec, dict) else []:
            for key in ("image", "mask"):
                rel = v.get(key) if isinstance(v, dict) else None
                parts = rel.split("/") if isinstance(rel, str) else []
                if (
                    len(parts) == 2
                    and parts[0] in ("images", "masks")
                    and parts[1].endswith(".nii.gz")
                    and is_safe_name(parts[1][: -len(".nii.gz")])
                ):
                    owned.add(rel)

    def ours(stem: str) -> bool:
        if stem in long_stems:
            return True
        m = op_pattern.match(stem)
        return (
            bool(m)
            and m["cid"] in case_set
            and int(m["k"]) < (1 if m["op"] == "mirror" else copies)
        )

    for sub in ("images", "masks"):
        folder = out / sub
        if not folder.is_dir():
            continue
        for f in os.listdir(folder):
            part = PARTIAL_NAME.fullmatch(f)
            stem = (
                part["stem"] if part else (f[: -len(".nii.gz")] if f.endswith(".nii.gz") else None)
            )
            if stem is not None and ours(stem):
                owned.add(f"{sub}/{f}")
    if rec_dir.is_dir():
        for f in os.listdir(rec_dir):
            part = PARTIAL_NAME.fullmatch(f)
            if part and part["stem"] in case_set:
                owned.add(f"records/{f}")
    return sorted(owned)


def _check_cases(ids: dict[str, dict]) -> None:
    """Refuse, before anything is written, a case whose files cannot be used.

    Reads only the headers: every image, mask and lung mask must be readable, 2D or 3D, and the
    mask and lung mask must have the image's size (a mask of another shape is refused naming it).
    """
    import SimpleITK as sitk

    def header(path: str) -> tuple[int, ...]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next(
                (ln for ln in reversed(lines) if "rror" in ln or "annot" in ln),
                lines[-1] if lines else "",
            )
            raise InputError(path, f"cannot be read as an image ({why[:200]})") from e
        return tuple(reader.GetSize())

    for cid, e in ids.items():
        size = header(e["image"])
        if len(size) not in (2, 3):
            raise InputError(
                e["image"], f"expected a 2D or 3D image, got {len(size)} dimensions {size}"
            )
        for key in ("mask", "lung_mask"):
            if e.get(key):
                other = header(e[key])
                if other != size:
                    raise InputError(
                        e[key],
                        f"{key} size {other} does not match the image's {size} "
                        f"({e['image']}; case {cid})",
                    )


def _estimate_bytes(entries: list[dict], ops: Sequence[str], copies: int) -> tuple[int, int]:
    """``(variants, bytes)``: an upper estimate of what expanding ``entries`` writes.

    Each variant is counted at the size of its source image and mask files (NIfTI, compressed)
    plus its datalist entry and record.
    """
    per_case = sum(1 if op == "mirror" else copies for op in ops)
    total = 0
    for e in entries:
        size = 0
        for key in ("image", "mask"):
            if e.get(key):
                try:
                    size += os.path.getsize(e[key])
                except OSError:
                    pass
        total += per_case * (size + _ENTRY_BYTES)
    return per_case * len(entries), total


def _load(entry: dict):
    """Image, mask (zeros when the case has none) and lung labels as MONAI channel-first tensors."""
    import torch
    from monai.transforms import LoadImaged

    keys = (
        ["image"]
        + (["mask"] if entry.get("mask") else [])
        + (["lung"] if entry.get("lung_mask") else [])
    )
    data = {"image": entry["image"]}
    if entry.get("mask"):
        data["mask"] = entry["mask"]
    if entry.get("lung_mask"):
        data["lung"] = entry["lung_mask"]
    try:
        d = LoadImaged(
            keys=keys, reader="ITKReader", image_only=True, ensure_channel_first=True, dtype=None
        )(data)
    except Exception as e:  # MONAI wraps reader errors in RuntimeError/ValueError
        raise InputError(
            entry["image"],
            f"cannot be loaded by MONAI ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
        ) from e
    if "mask" not in d:
        d["mask"] = d["image"].clone().zero_().to(dtype=torch.uint8)
    if tuple(d["mask"].shape) != tuple(d["image"].shape):
        raise InputError(
            entry.get("mask") or entry["image"],
            f"mask shape {tuple(d['mask'].shape)} does not match image {tuple(d['image'].shape)}",
        )
    return d


def _write_like(tensor, reference: str, path: Path, dtype) -> None:
    """Write a channel-first MONAI tensor (ITK reader layout) on the grid of ``reference``."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    arr = np.transpose(_np(tensor)[0])  # ITK reader reverses sitk's order
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.astype(dtype)))
    img.SetSpacing(reader.GetSpacing())
    img.SetOrigin(reader.GetOrigin())
    img.SetDirection(reader.GetDirection())
    write_image_atomic(img, path)


def _expand_case(entry: dict, case_id: str, out_dir: str, cfg: dict) -> dict:
    """Expand one case; returns its record (also written to ``records/<case_id>.json``).

    ``case_id`` is a safe file name (see :func:`_case_ids`). The variants are made and written
    one at a time: memory holds the case and one variant, whatever ``copies``.
    """
    from ...anatomy import lung_rads_from_mask

    out = Path(out_dir)
    images, masks, rec_dir = out / "images", out / "masks", out / "records"
    d = _load(entry)
    lung_key = "lung" if "lung" in d else None
    t = MetaLungd(
        keys=("image", "mask"),
        lung_key=lung_key,
        ops=cfg["ops"],
        mode="expand",
        copies=cfg["copies"],
        include_original=True,
        drop_unapplied=True,
    )
    t.set_random_state(_case_seed(cfg["seed"], case_id))
    variants = t.iter_expand(d)
    del d
    original = next(variants)
    view = _Canonical(original["image"])
    heat_in, r_in, l_in = tumour_heat(view.view(original["mask"])[0])
    heat_out, r_out, l_out = heat_in.copy(), r_in, l_in
    entries, skipped = [], []
    counters: dict[str, int] = {}
    done_ops = []
    for v in variants:
        rec = metalung_records(v["image"])[-1]
        op = rec["op"]
        k = counters.get(op, 0)
        counters[op] = k + 1
        done_ops.append(op)
        vid = _variant_stem(case_id, op, k)
        img_path = child_path(images, vid, ".nii.gz", source=f"case_id {case_id!r}")
        mask_path = child_path(masks, vid, ".nii.gz", source=f"case_id {case_id!r}")
        _write_like(v["image"], entry["image"], img_path, np.int16)
        _write_like(v["mask"], entry["image"], mask_path, np.uint8)
        mask_c = view.view(v["mask"])[0]
        h, right, left = tumour_heat(mask_c)
        heat_out += h
        r_out += right
        l_out += left
        spacing = view.spacing
        e = {
            k2: v2
            for k2, v2 in entry.items()
            if k2 not in ("image", "mask", "lung_mask", "augmentation", "source_case")
        }
        e.update(
            {
                "image": _rel(img_path, out),
                "mask": _rel(mask_path, out),
                "case_id": vid,
                "source_case": case_id,
                "lung_rads": lung_rads_from_mask(mask_c, spacing),
                "split": "train",
                "augmentation": {
                    "op": op,
                    "params": {k2: v2 for k2, v2 in rec.items() if k2 != "op"},
                },
            }
        )
        entries.append(e)
        del v, mask_c  # the next variant is made only now: one variant in memory at a time
    for op in cfg["ops"]:
        expected = 1 if op == "mirror" else cfg["copies"]
        missing = expected - done_ops.count(op)
        if missing > 0:
            skipped.append({"op": op, "count": missing})
    with atomic_path(child_path(rec_dir, case_id, ".npz")) as tmp:
        np.savez_compressed(tmp, heat_in=heat_in, heat_out=heat_out)
    record = {
        "case_id": case_id,
        "config": cfg["key"],
        "variants": entries,
        "skipped": skipped,
        "lungs": {"in": [r_in, l_in], "out": [r_out, l_out]},
    }
    if "case_id" in entry and entry["case_id"] != case_id:
        record["case_id_in_datalist"] = str(
            entry["case_id"]
        )  # the id as the source datalist wrote it
    write_json_atomic(record, child_path(rec_dir, case_id, ".json"))
    return record


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("monai").setLevel(logging.ERROR)


def _expand_pending(
    ids: dict, pending: list[str], records: dict, out: Path, cfg: dict, workers: int, bar
) -> None:
    """Expand the ``pending`` cases (in this process or ``workers`` processes) into ``records``."""
    if workers <= 1:
        for cid in pending:
            records[cid] = _expand_case(ids[cid], cid, str(out), cfg)
            if bar:
                bar.update(1)
    elif pending:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(pending)), initializer=_worker_init
        ) as pool:
            futs = {pool.submit(_expand_case, ids[cid], cid, str(out), cfg): cid for cid in pending}
            for fut in as_completed(futs):
                records[futs[fut]] = fut.result()
                if bar:
                    bar.update(1)


def _remove_if_unfinished(
    out: Path, created: Path, cases: list[str], ops: Sequence[str], copies: int
) -> None:
    """After a failed run that created ``out`` (and the folders up to ``created``): remove what it
    wrote when no case finished, so that a refused case leaves nothing behind.

    A finished case (its record written) is kept, so that a rerun resumes from it.
    """
    rec_dir = out / "records"
    if rec_dir.is_dir() and any(
        f.endswith(".json") and not f.startswith(".") for f in os.listdir(rec_dir)
    ):
        return
    remove_owned(
        out,
        _owned_files(out, {"cases": cases, "ops": list(ops), "copies": copies}, read_records=False),
    )
    try:
        for sub in _SUBDIRS:
            if (out / sub).is_dir():
                (out / sub).rmdir()
        folder = out
        while True:
            folder.rmdir()
            if folder == created:
                break
            folder = folder.parent
    except OSError:  # something else is in there: leave the folder
        pass


def expand_datalist(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    ops: Sequence[str] = METALUNG_OPS,
    copies: int = 1,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write MetaLung variants of every training case and a new datalist (see the module docstring).

    Args:
        datalist: the source datalist JSON.
        out_dir: output folder (created). It must not be, contain or lie inside the datalist or any
            file the datalist lists.
        ops: operations, names from :data:`~.dictionary.METALUNG_OPS` (each at most once).
        copies: variants per random operation and case (mirror: always one); at most
            :data:`MAX_COPIES`.
        seed: base seed (>= 0); case ``c`` uses ``SeedSequence([seed, hash(c)])``.
        workers: processes (1 = in this process; at most :data:`MAX_WORKERS`).
        overwrite: replace a folder made with other settings (deleting only the files that
            expansion wrote there).
        progress: tqdm progress bar.

    Returns:
        Path of the new ``datalist.json``.

    Raises:
        DatalistError: bad datalist, or ``out_dir`` holds an expansion with other settings.
        InputError: a bad option (names it), an ``out_dir`` that overlaps an input or holds files
            ``augment`` did not write, an output that would not fit on the disk, or a case that
            cannot be read (names the file). All but the last are raised before anything is written.
    """
    ops = tuple(ops)
    bad = [o for o in ops if o not in METALUNG_OPS]
    if bad or not ops:
        raise InputError(
            "--ops",
            f"unknown operation(s) {bad or '(none)'}; choose from {', '.join(METALUNG_OPS)}",
        )
    twice = sorted({o for o in ops if ops.count(o) > 1})
    if twice:
        raise InputError(
            "--ops", f"lists {', '.join(twice)} more than once; use --copies for more variants"
        )
    if isinstance(copies, bool) or int(copies) != copies or copies < 1:
        raise InputError("--copies", f"must be a whole number >= 1, got {copies}")
    if copies > MAX_COPIES:
        raise InputError(
            "--copies",
            f"{copies} variants per operation and case is more than the {MAX_COPIES} allowed "
            "(the thesis used 1; each copy is a full image on disk)",
        )
    if int(seed) != seed or seed < 0:
        raise InputError("--seed", f"must be a whole number >= 0, got {seed}")
    if int(workers) != workers or not 1 <= workers <= MAX_WORKERS:
        raise InputError(
            "--workers", f"must be a whole number from 1 to {MAX_WORKERS}, got {workers}"
        )
    copies, seed, workers = int(copies), int(seed), int(workers)
    src = Path(datalist).resolve()
    out = Path(out_dir).resolve()
    raw = load_datalist(src)
    train = datalist_entries(src, "training")
    if not train:
        raise DatalistError(src, "no 'training' cases to augment")
    refuse_overlap(out, _inputs_of(src, raw), "--out")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    source_hash = hashlib.sha1(src.read_bytes()).hexdigest()[:16]
    cfg = {"ops": list(ops), "copies": copies, "seed": seed, "source": source_hash}
    cfg["key"] = _config_key(cfg)
    ids = _case_ids(train)
    try:  # every entry is copied into the new datalist (originals, variants): it must be strict JSON
        json.dumps(raw, allow_nan=False)
    except ValueError as e:
        raise DatalistError(
            src, "holds NaN or infinity (not valid JSON for most readers); fix the entry"
        ) from e

    # the folder: ours (resume, or --overwrite a run with other settings) or new; nothing written yet
    manifest = out / MANIFEST
    stale: list[str] = []  # files of a previous expansion that --overwrite replaces
    if manifest.exists():
        old = _read_manifest(manifest)
        if old.get("key") != cfg["key"]:
            if not overwrite:
                shown = {k: old.get(k) for k in ("ops", "copies", "seed", "datalist") if k in old}
                raise DatalistError(
                    out,
                    f"holds an expansion made with other settings ({shown}); use another --out, "
                    "or --overwrite to replace that expansion (only its own files are deleted)",
                )
            stale = _owned_files(out, old)
    else:
        foreign = [n for n in _TOP_FILES if (out / n).exists()]
        if foreign:
            raise InputError(
                "--out",
                f"{out} holds {', '.join(foreign)} that 'metalung augment' did not write (no "
                f"{MANIFEST}); choose a new or empty folder",
            )

    records: dict[str, dict] = {}
    pending = []
    if not stale:  # resume: finished cases (record written last) are kept
        for cid in ids:
            rec_path = child_path(out / "records", cid, ".json")
            if rec_path.is_file() and child_path(out / "records", cid, ".npz").is_file():
                try:
                    rec = json.loads(rec_path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    rec = {}  # damaged: the case is redone
                if isinstance(rec, dict) and rec.get("config") == cfg["key"]:
                    records[cid] = rec
                    continue
            pending.append(cid)
    else:
        pending = list(ids)
    _check_cases({c: ids[c] for c in pending})
    n_var, needed = _estimate_bytes([ids[c] for c in pending], ops, copies)
    reclaimed = sum((out / rel).stat().st_size for rel in stale if (out / rel).is_file())
    check_free_space(
        out,
        needed - reclaimed,
        f"{n_var:,} variants ({len(pending)} cases x {n_var // max(len(pending), 1):,}) of "
        f"about {format_bytes(needed / max(n_var, 1))} each",
        option="--copies" if copies > 1 else "--out",
    )

    # from here on the folder is written
    created = out  # the outermost folder this run creates (None: --out existed)
    while not created.parent.exists():
        created = created.parent
    created = None if out.exists() else created
    if stale:
        n = remove_owned(out, stale)
        log.info("--overwrite: removed %d files of the previous expansion in %s", n, out)
    for sub in _SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_json_atomic({**cfg, "datalist": str(src), "cases": list(ids)}, manifest)
    leftovers = _dead_partials(out, list(ids), ops, copies)
    if leftovers:
        log.info("removing %d temporary files of a killed run", remove_owned(out, leftovers))
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), initial=len(records), desc="metalung augment", unit="case")
    try:
        _expand_pending(ids, pending, records, out, cfg, workers, bar)
    except BaseException:
        if created is not None:
            _remove_if_unfinished(out, created, list(ids), ops, copies)
        raise
    finally:
        if bar:
            bar.close()
    log.info("expanded %d cases in %.1f s", len(pending), time.time() - t0)

    def rebase(entry: dict, cid: str | None = None) -> dict:
        e = dict(entry)
        for key in ("image", "mask", "lung_mask"):
            if e.get(key):
                e[key] = _rel(e[key], out)
        if cid is not None and "case_id" in e and e["case_id"] != cid:
            e["case_id"] = cid  # the safe, unique name its files and its variants' source_case use
        return e

    new_train = [rebase(ids[cid], cid) for cid in ids]
    for cid in ids:
        new_train.extend(records[cid]["variants"])
    new = {k: v for k, v in raw.items() if k not in ("training", "validation", "test")}
    new["name"] = f"{raw.get('name', src.stem)} + MetaLung"
    new["description"] = (
        f"MetaLung offline expansion of {src} (ops {', '.join(ops)}, copies {copies}, seed {seed})"
    )
    new["training"] = new_train
    for section in ("validation", "test"):
        if section in raw:
            new[section] = [rebase(e) for e in datalist_entries(src, section)]
    path = write_datalist(new, out / "datalist.json")
    _heatmap_figure(out, ids, records)
    return path


def _heatmap_figure(out: Path, ids: dict, records: dict) -> Path:
    """``heatmap.png``: tumour location before and after expansion, with right/left shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...utils.atomic import save_figure_atomic

    heat_in = np.zeros((HEATMAP_GRID, HEATMAP_GRID))
    heat_out = np.zeros_like(heat_in)
    lr_in = np.zeros(2)
    lr_out = np.zeros(2)
    for cid in ids:
        with np.load(child_path(out / "records", cid, ".npz")) as z:
            heat_in += z["heat_in"]
            heat_out += z["heat_out"]
        lr_in += records[cid]["lungs"]["in"]
        lr_out += records[cid]["lungs"]["out"]
    n_in = len(ids)
    n_out = n_in + sum(len(records[c]["variants"]) for c in ids)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, heat, lr, title, n in (
        (axes[0], heat_in, lr_in, "input", n_in),
        (axes[1], heat_out, lr_out, "after MetaLung", n_out),
    ):
        total = max(lr.sum(), 1)
        im = ax.imshow(np.log1p(heat), cmap="inferno", extent=(0, 1, 1, 0))
        ax.axvline(0.5, color="w", lw=0.6, ls="--")
        ax.set_title(
            f"{title}: {n} cases\nright lung {lr[0] / total:.0%} | left lung {lr[1] / total:.0%} of tumour voxels"
        )
        ax.set_xlabel("patient right  <-  x  ->  patient left")
        ax.set_ylabel("anterior  <-  y  ->  posterior")
        fig.colorbar(im, ax=ax, fraction=0.046, label="log(1 + tumour voxels)")
    fig.suptitle("Tumour locations, axial projection (radiological display)")
    fig.tight_layout()
    path = save_figure_atomic(fig, out / "heatmap.png", dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "augment",
        help="offline MetaLung expansion of a datalist's training cases",
        description="Write MetaLung variants (new NIfTI cases) of every training case of DATALIST and a new "
        "datalist (originals + variants with their augmentation records) in --out; resumable.",
    )
    p.add_argument(
        "datalist",
        metavar="DATALIST",
        help="source datalist.json (e.g. from 'metalung phantom' or 'convert')",
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="output folder (apart from the datalist and the files it lists)",
    )
    p.add_argument(
        "--ops",
        default=",".join(METALUNG_OPS),
        help=f"comma-separated operations (default: all six: {','.join(METALUNG_OPS)})",
    )
    p.add_argument(
        "--copies",
        type=int,
        default=1,
        help=f"variants per random operation and case (default 1, at most {MAX_COPIES})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an expansion made with other settings (deletes only the files it wrote)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    t0 = time.time()
    path = expand_datalist(
        args.datalist,
        args.out,
        ops=ops,
        copies=args.copies,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    dl = load_datalist(path)
    n_var = sum(1 for e in dl["training"] if e.get("augmentation"))
    n_orig = len(dl["training"]) - n_var
    print(
        f"metalung augment: {n_orig} training cases -> {n_orig + n_var} ({n_var} variants, "
        f"x{(n_orig + n_var) / max(n_orig, 1):.2f}) in {time.time() - t0:.1f} s; "
        f"datalist {path}; heatmap {Path(path).with_name('heatmap.png')}"
    )
    return 0
