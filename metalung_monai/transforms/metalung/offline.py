"""Offline MetaLung expansion of a datalist (``metalung augment DATALIST --out DIR``).

Every training case is loaded the MONAI way (``LoadImaged``, ITK reader, channel first, int16
kept), expanded with :class:`~.dictionary.MetaLungd` in ``"expand"`` mode, and each variant is
written as a new NIfTI case on the grid of its source case (``images/``, ``masks/``). The new
``datalist.json`` lists the original cases (paths pointing back to their files, not copied),
then the variants; each variant entry has ``image``, ``mask``, ``source_case`` and an
``augmentation`` record: the operation's name and its parameters as applied. Test and
validation sections are carried over unchanged (never augmented).

Robustness:

* Streaming: one case in memory per worker; memory stays flat however large the datalist.
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
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DatalistError, InputError
from ...io.datalist import datalist_entries, load_datalist, write_datalist
from ...utils.atomic import atomic_path, write_image_atomic, write_json_atomic
from .array import _Canonical, _np, metalung_records
from .dictionary import METALUNG_OPS, MetaLungd

__all__ = ["expand_datalist", "HEATMAP_GRID", "tumour_heat", "add_parser", "run"]

log = logging.getLogger(__name__)

HEATMAP_GRID = 128
MANIFEST = ".augment-manifest.json"


def _case_seed(seed: int, case_id: str) -> int:
    digest = int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)
    return int(np.random.SeedSequence([int(seed), digest]).generate_state(1)[0])


def tumour_heat(mask_canonical: np.ndarray, grid: int = HEATMAP_GRID) -> tuple[np.ndarray, int, int]:
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


def _load(entry: dict):
    """Image, mask (zeros when the case has none) and lung labels as MONAI channel-first tensors."""
    import torch
    from monai.transforms import LoadImaged

    keys = ["image"] + (["mask"] if entry.get("mask") else []) + (["lung"] if entry.get("lung_mask") else [])
    data = {"image": entry["image"]}
    if entry.get("mask"):
        data["mask"] = entry["mask"]
    if entry.get("lung_mask"):
        data["lung"] = entry["lung_mask"]
    try:
        d = LoadImaged(keys=keys, reader="ITKReader", image_only=True, ensure_channel_first=True, dtype=None)(data)
    except Exception as e:  # MONAI wraps reader errors in RuntimeError/ValueError
        raise InputError(entry["image"], f"cannot be loaded by MONAI ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if "mask" not in d:
        d["mask"] = d["image"].clone().zero_().to(dtype=torch.uint8)
    if tuple(d["mask"].shape) != tuple(d["image"].shape):
        raise InputError(entry.get("mask") or entry["image"], f"mask shape {tuple(d['mask'].shape)} does not match image {tuple(d['image'].shape)}")
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
    """Expand one case; returns its record (also written to ``records/<case_id>.json``)."""
    from ...anatomy import lung_rads_from_mask

    out = Path(out_dir)
    d = _load(entry)
    lung_key = "lung" if "lung" in d else None
    t = MetaLungd(keys=("image", "mask"), lung_key=lung_key, ops=cfg["ops"], mode="expand", copies=cfg["copies"],
                  include_original=True, drop_unapplied=True)
    t.set_random_state(_case_seed(cfg["seed"], case_id))
    variants = t(d)
    original = variants[0]
    view = _Canonical(original["image"])
    heat_in, r_in, l_in = tumour_heat(view.view(original["mask"])[0])
    heat_out, r_out, l_out = heat_in.copy(), r_in, l_in
    entries, skipped = [], []
    counters: dict[str, int] = {}
    done_ops = []
    for v in variants[1:]:
        rec = metalung_records(v["image"])[-1]
        op = rec["op"]
        k = counters.get(op, 0)
        counters[op] = k + 1
        done_ops.append(op)
        vid = f"{case_id}__{op}_{k}"
        img_path, mask_path = out / "images" / f"{vid}.nii.gz", out / "masks" / f"{vid}.nii.gz"
        _write_like(v["image"], entry["image"], img_path, np.int16)
        _write_like(v["mask"], entry["image"], mask_path, np.uint8)
        mask_c = view.view(v["mask"])[0]
        h, r, l = tumour_heat(mask_c)
        heat_out += h
        r_out += r
        l_out += l
        spacing = view.spacing
        e = {k2: v2 for k2, v2 in entry.items() if k2 not in ("image", "mask", "lung_mask", "augmentation", "source_case")}
        e.update({
            "image": _rel(img_path, out), "mask": _rel(mask_path, out), "case_id": vid, "source_case": case_id,
            "lung_rads": lung_rads_from_mask(mask_c, spacing), "split": "train",
            "augmentation": {"op": op, "params": {k2: v2 for k2, v2 in rec.items() if k2 != "op"}},
        })
        entries.append(e)
    for op in cfg["ops"]:
        expected = 1 if op == "mirror" else cfg["copies"]
        missing = expected - done_ops.count(op)
        if missing > 0:
            skipped.append({"op": op, "count": missing})
    with atomic_path(out / "records" / f"{case_id}.npz") as tmp:
        np.savez_compressed(tmp, heat_in=heat_in, heat_out=heat_out)
    record = {"case_id": case_id, "config": cfg["key"], "variants": entries, "skipped": skipped,
              "lungs": {"in": [r_in, l_in], "out": [r_out, l_out]}}
    write_json_atomic(record, out / "records" / f"{case_id}.json")
    return record


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("monai").setLevel(logging.ERROR)


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
        out_dir: output folder (created).
        ops: operations, names from :data:`~.dictionary.METALUNG_OPS`.
        copies: variants per random operation and case (mirror: always one).
        seed: base seed; case ``c`` uses ``SeedSequence([seed, hash(c)])``.
        workers: processes (1 = in this process).
        overwrite: replace a folder made with other settings.
        progress: tqdm progress bar.

    Returns:
        Path of the new ``datalist.json``.

    Raises:
        DatalistError: bad datalist, or ``out_dir`` holds an expansion with other settings.
        InputError: a case cannot be read (names the file).
    """
    src = Path(datalist).resolve()
    out = Path(out_dir).resolve()
    ops = tuple(ops)
    bad = [o for o in ops if o not in METALUNG_OPS]
    if bad or not ops:
        raise InputError("--ops", f"unknown operation(s) {bad or '(none)'}; choose from {', '.join(METALUNG_OPS)}")
    if copies < 1:
        raise InputError("--copies", f"must be >= 1, got {copies}")
    raw = load_datalist(src)
    train = datalist_entries(src, "training")
    if not train:
        raise DatalistError(src, "no 'training' cases to augment")
    source_hash = hashlib.sha1(src.read_bytes()).hexdigest()[:16]
    cfg = {"ops": list(ops), "copies": int(copies), "seed": int(seed), "source": source_hash}
    cfg["key"] = _config_key(cfg)
    manifest = out / MANIFEST
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("key") != cfg["key"]:
            if not overwrite:
                raise DatalistError(out, f"holds an expansion made with other settings ({old}); "
                                         "use another --out or --overwrite")
            for sub in ("images", "masks", "records"):
                shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("images", "masks", "records"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_json_atomic({**cfg, "datalist": str(src)}, manifest)

    ids: dict[str, dict] = {}
    for i, e in enumerate(train):
        cid = str(e.get("case_id") or Path(e["image"]).name.split(".")[0])
        if cid in ids:
            cid = f"{cid}_{i}"
        ids[cid] = e
    records: dict[str, dict] = {}
    pending = []
    for cid, e in ids.items():
        rec_path = out / "records" / f"{cid}.json"
        if rec_path.exists():
            rec = json.loads(rec_path.read_text())
            if rec.get("config") == cfg["key"] and (out / "records" / f"{cid}.npz").exists():
                records[cid] = rec
                continue
        pending.append(cid)
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), initial=len(records), desc="metalung augment", unit="case")
    try:
        if workers <= 1:
            for cid in pending:
                records[cid] = _expand_case(ids[cid], cid, str(out), cfg)
                if bar:
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
                futs = {pool.submit(_expand_case, ids[cid], cid, str(out), cfg): cid for cid in pending}
                for fut in as_completed(futs):
                    records[futs[fut]] = fut.result()
                    if bar:
                        bar.update(1)
    finally:
        if bar:
            bar.close()
    log.info("expanded %d cases in %.1f s", len(pending), time.time() - t0)

    def rebase(entry: dict) -> dict:
        e = dict(entry)
        for key in ("image", "mask", "lung_mask"):
            if e.get(key):
                e[key] = _rel(e[key], out)
        return e

    new_train = [rebase(ids[cid]) for cid in ids]
    for cid in ids:
        new_train.extend(records[cid]["variants"])
    new = {k: v for k, v in raw.items() if k not in ("training", "validation", "test")}
    new["name"] = f"{raw.get('name', src.stem)} + MetaLung"
    new["description"] = (f"MetaLung offline expansion of {src} (ops {', '.join(ops)}, copies {copies}, seed {seed})")
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
        with np.load(out / "records" / f"{cid}.npz") as z:
            heat_in += z["heat_in"]
            heat_out += z["heat_out"]
        lr_in += records[cid]["lungs"]["in"]
        lr_out += records[cid]["lungs"]["out"]
    n_in = len(ids)
    n_out = n_in + sum(len(records[c]["variants"]) for c in ids)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, heat, lr, title, n in ((axes[0], heat_in, lr_in, "input", n_in), (axes[1], heat_out, lr_out, "after MetaLung", n_out)):
        total = max(lr.sum(), 1)
        im = ax.imshow(np.log1p(heat), cmap="inferno", extent=(0, 1, 1, 0))
        ax.axvline(0.5, color="w", lw=0.6, ls="--")
        ax.set_title(f"{title}: {n} cases\nright lung {lr[0] / total:.0%} | left lung {lr[1] / total:.0%} of tumour voxels")
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
    p.add_argument("datalist", metavar="DATALIST", help="source datalist.json (e.g. from 'metalung phantom' or 'convert')")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--ops", default=",".join(METALUNG_OPS),
                   help=f"comma-separated operations (default: all six: {','.join(METALUNG_OPS)})")
    p.add_argument("--copies", type=int, default=1, help="variants per random operation and case (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an expansion made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    t0 = time.time()
    path = expand_datalist(args.datalist, args.out, ops=ops, copies=args.copies, seed=args.seed,
                           workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
    dl = load_datalist(path)
    n_var = sum(1 for e in dl["training"] if e.get("augmentation"))
    n_orig = len(dl["training"]) - n_var
    print(f"metalung augment: {n_orig} training cases -> {n_orig + n_var} ({n_var} variants, "
          f"x{(n_orig + n_var) / max(n_orig, 1):.2f}) in {time.time() - t0:.1f} s; "
          f"datalist {path}; heatmap {Path(path).with_name('heatmap.png')}")
    return 0
