"""Offline MetaLung expansion of a datalist: the resumable driver (``metalung augment``).

:func:`expand_datalist` runs :func:`~.offline_case.expand_case` for every training case (one job
of :func:`metalung_monai.utils.runner.run_pool` each): the case is loaded the MONAI way
(``LoadImaged``, ITK reader, channel first, int16 kept), expanded with
:class:`~.dictionary.MetaLungd` in ``"expand"`` mode, and each variant is written as a new NIfTI
case on the grid of its source case (``images/``, ``masks/``). The new
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
figure 36: mirror and relocation balance the left and right lungs). With ``balance`` (``--balance
lung`` / ``lung-rads``) each tumour case gets the subset of its variants that
:func:`~metalung_monai.anatomy.balance.plan_expansion` chooses, and ``balance.csv`` /
``balance.png`` show the shares before and after (``docs/metalung.md``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...anatomy.balance import (
    balance_figure,
    balance_table,
    check_mode,
    entry_facts,
    plan_expansion,
)
from ...errors import DatalistError, InputError
from ...io.datalist import PATH_KEYS, SECTIONS, datalist_entries, load_datalist, write_datalist
from ...utils.atomic import PARTIAL_NAME, atomic_path, save_figure_atomic
from ...utils.paths import (
    check_free_space,
    child_path,
    format_bytes,
    is_safe_name,
    refuse_overlap,
    remove_empty_folders,
    remove_owned,
    safe_name,
)
from ...utils.runner import (
    Manifest,
    completed,
    file_fingerprint,
    fingerprint,
    init_torch_worker,
    run_pool,
    stale_partials,
)
from ...utils.runner import (
    progress as progress_bar,
)
from .dictionary import METALUNG_OPS
from .offline_case import HEATMAP_GRID, _rel, expand_case, variant_stem

__all__ = ["expand_datalist", "MANIFEST", "MAX_COPIES", "MAX_WORKERS"]

log = logging.getLogger(__name__)

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
#: what ``--balance`` adds at the top of ``--out``: the before / after table and picture
_BALANCE_FILES = ("balance.csv", "balance.png")
_SUBDIRS = ("images", "masks", "records")


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


def _dead_partials(out: Path, cases: Sequence[str], ops: Sequence[str], copies: int) -> list[str]:
    """``.partial`` leftovers (relative to ``out``) of this expansion's own files whose writer is dead.

    A killed write leaves its temporary file (see :func:`~metalung_monai.utils.atomic.atomic_path`);
    the rerun removes it. A file whose writing process is still alive (a concurrent run) is kept.
    """
    owned = _owned_files(
        out, {"cases": list(cases), "ops": list(ops), "copies": copies}, read_records=False
    )
    return stale_partials(out, owned)


def _owned_files(out: Path, manifest: dict, read_records: bool = True) -> list[str]:
    """Files (relative to ``out``) that the ``augment`` run described by ``manifest`` wrote there.

    Its fixed outputs and manifest; for each of its cases (the manifest's ``cases``, else the
    records found) the record pair and the variant files its records list; and the variant files
    (or ``.partial`` leftovers of a killed write) whose names that run gives its cases, so an
    unfinished case's files go too. Nothing else: other files in ``out`` are not touched.
    """
    owned: set[str] = {MANIFEST, *_TOP_FILES, *(_BALANCE_FILES if manifest.get("balance") else ())}
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
                variant_stem(cid, op, k)
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
    except OSError:  # something else is in there: leave the folder
        return
    remove_empty_folders(out, created)


def expand_datalist(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    ops: Sequence[str] = METALUNG_OPS,
    copies: int = 1,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    balance: str | None = None,
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
        balance: None (default: every case gets every variant), ``"lung"`` or ``"lung-rads"``:
            each tumour case gets the subset of those variants that
            :func:`~metalung_monai.anatomy.balance.plan_expansion` chooses so that the expanded
            set approaches equal left / right lung shares, or a uniform mix of the Lung-RADS
            classes present; cases without tumour are expanded as without. Writes
            ``balance.csv`` (before / after table) and ``balance.png``; the plan is in the
            manifest and each case's record (``"balance"``: its category, plan and the measured
            category of every variant).

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
    if balance is not None:
        check_mode(balance)
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
    source_hash = file_fingerprint(src)
    cfg = {"ops": list(ops), "copies": copies, "seed": seed, "source": source_hash}
    if balance is not None:
        cfg["balance"] = balance
    cfg["key"] = fingerprint(cfg)
    ids = _case_ids(train)
    try:  # every entry is copied into the new datalist (originals, variants): it must be strict JSON
        json.dumps(raw, allow_nan=False)
    except ValueError as e:
        raise DatalistError(
            src, "holds NaN or infinity (not valid JSON for most readers); fix the entry"
        ) from e

    # the folder: ours (resume, or --overwrite a run with other settings) or new; nothing written yet
    manifest = Manifest(
        out, MANIFEST, what="augment", hint="remove the folder or choose another --out"
    )
    stale: list[str] = []  # files of a previous expansion that --overwrite replaces
    old = manifest.read()
    if old is not None:
        if old.get("key") != cfg["key"]:
            if not overwrite:
                shown = {
                    k: old.get(k)
                    for k in ("ops", "copies", "seed", "balance", "datalist")
                    if k in old
                }
                raise DatalistError(
                    out,
                    f"holds an expansion made with other settings ({shown}); use another --out, "
                    "or --overwrite to replace that expansion (only its own files are deleted)",
                )
            stale = _owned_files(out, old)
    else:
        tops = _TOP_FILES + (_BALANCE_FILES if balance is not None else ())
        foreign = [n for n in tops if (out / n).exists()]
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
            rec = completed(  # a damaged record or one of other settings: the case is redone
                child_path(out / "records", cid, ".json"),
                cfg["key"],
                key_field="config",
                outputs=[child_path(out / "records", cid, ".npz")],
            )
            if rec is not None:
                records[cid] = rec
            else:
                pending.append(cid)
    else:
        pending = list(ids)
    _check_cases({c: ids[c] for c in pending})
    plans: dict[str, dict | None] = {}
    if balance is not None:  # every case's category (finished ones too): the plan needs them all
        facts = {cid: entry_facts(e) for cid, e in ids.items()}
        plan = plan_expansion([facts[c].category(balance) for c in ids], balance, ops, copies)
        plans = dict(zip(ids, plan.plans))
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
        n = manifest.remove_owned(stale)
        log.info("--overwrite: removed %d files of the previous expansion in %s", n, out)
    for sub in _SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest.write(
        {**cfg, "datalist": str(src), "cases": list(ids)}
        if balance is None
        else {**cfg, "datalist": str(src), "cases": list(ids), "target": plan.target, "plan": plans}
    )
    leftovers = _dead_partials(out, list(ids), ops, copies)
    if leftovers:
        log.info("removing %d temporary files of a killed run", remove_owned(out, leftovers))
    t0 = time.time()
    bar = progress_bar(
        total=len(ids), initial=len(records), desc="metalung augment", unit="case", enabled=progress
    )

    def finished(cid: str, record: dict) -> None:
        records[cid] = record
        bar.update(1)

    try:
        run_pool(
            expand_case,
            (
                (
                    cid,
                    (
                        ids[cid],
                        cid,
                        str(out),
                        cfg if plans.get(cid) is None else {**cfg, "plan": plans[cid]},
                    ),
                )
                for cid in pending
            ),
            workers,
            on_result=finished,
            initializer=init_torch_worker,
        )
    except BaseException:
        if created is not None:
            _remove_if_unfinished(out, created, list(ids), ops, copies)
        raise
    finally:
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
    if balance is not None:
        _balance_outputs(out, ids, records, balance, plan.target)
    return path


def _balance_outputs(out: Path, ids: dict, records: dict, mode: str, target: dict) -> None:
    """``balance.csv`` and ``balance.png``: cases per category before and after (measured on the
    variants written, from the records), and the tumour centroids before and after."""
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    pos_in, pos_out = [], []
    for cid in ids:
        bal = records[cid]["balance"]
        for i, item in enumerate([bal, *bal["variants"]]):
            cat = item["category"]
            if cat is not None:
                after[cat] = after.get(cat, 0) + 1
                if i == 0:
                    before[cat] = before.get(cat, 0) + 1
            pos = tuple(item["position"]) if item["position"] is not None else None
            pos_out.append(pos)
            if i == 0:
                pos_in.append(pos)
    table = balance_table(before, after, target, mode)
    with atomic_path(out / "balance.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    balance_figure(out / "balance.png", pos_in, pos_out, table, mode)


def _heatmap_figure(out: Path, ids: dict, records: dict) -> Path:
    """``heatmap.png``: tumour location before and after expansion, with right/left shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
