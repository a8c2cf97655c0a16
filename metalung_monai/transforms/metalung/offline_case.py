"""One case of the offline MetaLung expansion: load it, make its variants, write them.

:func:`expand_case` is the job that ``metalung augment``
(:func:`~metalung_monai.transforms.metalung.offline.expand_datalist`, the resumable driver) runs
for each training case, in its process or in a worker: the case is loaded the MONAI way
(``LoadImaged``, ITK reader, channel first, int16 kept), expanded with
:class:`~.dictionary.MetaLungd` in ``"expand"`` mode seeded by
:func:`~metalung_monai.utils.runner.case_seed` of ``(seed, case_id)``, and each variant is
written as a NIfTI case on the grid of its source (``images/``, ``masks/``) one at a time; the
case's record (``records/<case_id>.json``, with the tumour heat maps in ``.npz``) is written last
and marks it finished.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.transforms import LoadImaged

from ...anatomy import lung_rads_from_mask
from ...anatomy.balance import case_facts
from ...errors import InputError
from ...utils.atomic import atomic_path, write_image_atomic
from ...utils.paths import child_path, safe_name
from ...utils.runner import case_seed, mark_done
from .array import _Canonical, _np, metalung_records
from .dictionary import MetaLungd

__all__ = ["HEATMAP_GRID", "expand_case", "tumor_heat", "variant_stem"]

#: size of the tumour heat maps (axial projection) kept per case for ``heatmap.png``
HEATMAP_GRID = 128


def tumor_heat(mask_canonical: np.ndarray, grid: int = HEATMAP_GRID) -> tuple[np.ndarray, int, int]:
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
    """``path`` relative to ``start`` (a datalist entry's path relative to its datalist's folder)."""
    return os.path.relpath(os.path.abspath(path), start)


def variant_stem(case_id: str, op: str, k: int) -> str:
    """File stem of variant ``k`` of operation ``op`` of a case (``P0001__mirror_0``).

    ``case_id`` is already a safe name; a stem that would be too long is shortened with a hash.
    """
    return safe_name(f"{case_id}__{op}_{k}")


def _load(entry: dict):
    """Image, mask (zeros when the case has none) and lung labels as MONAI channel-first tensors."""
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


def _why_not(record: dict) -> str:
    """The reason an operation was not applied: the record's, else its components' (distinct)."""
    if record.get("reason"):
        return str(record["reason"])
    reasons = [c["reason"] for c in record.get("components", []) if c.get("reason")]
    return "; ".join(dict.fromkeys(reasons)) or "not applied (no reason recorded)"


def _planned_variants(d: dict, lung_key, plan: dict, seed: int, case_id: str, dropped: list):
    """``--balance``: the input, then ``plan[op]`` variants of each planned operation.

    One :class:`MetaLungd` per operation (``copies=plan[op]``), seeded by ``(seed, "case/op")``, so
    that a case's variants do not depend on the other operations' counts; the records of the
    variants they dropped are appended to ``dropped``.
    """
    first = True
    for op, n in plan.items():
        if n <= 0:
            continue
        t = MetaLungd(
            keys=("image", "mask"),
            lung_key=lung_key,
            ops=(op,),
            mode="expand",
            copies=n,
            include_original=first,
            drop_unapplied=True,
        )
        t.set_random_state(case_seed(seed, f"{case_id}/{op}"))
        yield from t.iter_expand(d)
        dropped.extend(t.dropped)
        first = False
    if first:  # nothing planned: the input only (binarised and stamped as MetaLungd gives it)
        yield next(
            MetaLungd(keys=("image", "mask"), lung_key=lung_key, mode="expand").iter_expand(d)
        )


def _facts(view: _Canonical, sample: dict, op: str, lung_key):
    """:func:`~metalung_monai.anatomy.balance.case_facts` of a sample (lung labels moved with it;
    a mirror keeps their values, so its sides are swapped)."""
    lungs = view.view(sample[lung_key])[0] if lung_key is not None else None
    return case_facts(view.view(sample["mask"])[0], view.spacing, lungs, mirrored=op == "mirror")


def expand_case(entry: dict, case_id: str, out_dir: str, cfg: dict) -> dict:
    """Expand one case; returns its record (also written to ``records/<case_id>.json``).

    ``case_id`` is a safe file name (see :func:`~.offline._case_ids`). The variants are made and written
    one at a time: memory holds the case and one variant, whatever ``copies``.
    """
    out = Path(out_dir)
    images, masks, rec_dir = out / "images", out / "masks", out / "records"
    d = _load(entry)
    lung_key = "lung" if "lung" in d else None
    plan = cfg.get("plan")  # --balance: operation -> variants of this case (None: all, as without)
    if plan is None:
        t = MetaLungd(
            keys=("image", "mask"),
            lung_key=lung_key,
            ops=cfg["ops"],
            mode="expand",
            copies=cfg["copies"],
            include_original=True,
            drop_unapplied=True,
        )
        t.set_random_state(case_seed(cfg["seed"], case_id))
        variants = t.iter_expand(d)
    else:
        t, dropped = None, []
        variants = _planned_variants(d, lung_key, plan, cfg["seed"], case_id, dropped)
    del d
    original = next(variants)
    view = _Canonical(original["image"])
    heat_in, r_in, l_in = tumor_heat(view.view(original["mask"])[0])
    balance = None
    if cfg.get("balance"):
        facts = _facts(view, original, "original", lung_key)
        balance = {
            "mode": cfg["balance"],
            "category": facts.category(cfg["balance"]),
            "side": facts.side,
            "lung_rads": facts.lung_rads,
            "position": facts.position,
            "plan": plan,
            "variants": [],
        }
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
        vid = variant_stem(case_id, op, k)
        img_path = child_path(images, vid, ".nii.gz", source=f"case_id {case_id!r}")
        mask_path = child_path(masks, vid, ".nii.gz", source=f"case_id {case_id!r}")
        _write_like(v["image"], entry["image"], img_path, np.int16)
        _write_like(v["mask"], entry["image"], mask_path, np.uint8)
        mask_c = view.view(v["mask"])[0]
        h, right, left = tumor_heat(mask_c)
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
        if balance is not None:
            facts = _facts(view, v, op, lung_key)
            balance["variants"].append(
                {
                    "case_id": vid,
                    "op": op,
                    "category": facts.category(cfg["balance"]),
                    "side": facts.side,
                    "lung_rads": facts.lung_rads,
                    "position": facts.position,
                }
            )
        del v, mask_c  # the next variant is made only now: one variant in memory at a time
    if t is not None:  # MetaLungd sets its list of dropped records when the expansion starts
        dropped = t.dropped
    for op in cfg["ops"]:
        expected = (1 if op == "mirror" else cfg["copies"]) if plan is None else plan.get(op, 0)
        missing = expected - done_ops.count(op)
        if missing > 0:  # why, from the records of the variants MetaLungd dropped
            reasons = [_why_not(r) for r in dropped if r.get("op") == op]
            skipped.append({"op": op, "count": missing, "reasons": reasons})
    with atomic_path(child_path(rec_dir, case_id, ".npz")) as tmp:
        np.savez_compressed(tmp, heat_in=heat_in, heat_out=heat_out)
    record = {
        "case_id": case_id,
        "config": cfg["key"],
        "variants": entries,
        "skipped": skipped,
        "lungs": {"in": [r_in, l_in], "out": [r_out, l_out]},
    }
    if balance is not None:
        record["balance"] = balance
    if "case_id" in entry and entry["case_id"] != case_id:
        record["case_id_in_datalist"] = str(
            entry["case_id"]
        )  # the id as the source datalist wrote it
    mark_done(child_path(rec_dir, case_id, ".json"), record)
    return record


#: the British spelling, kept for code written before the public API settled on "tumor"
tumour_heat = tumor_heat
