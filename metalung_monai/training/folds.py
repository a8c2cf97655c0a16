"""Patient-grouped K-fold cross-validation for a datalist without a held-out test section.

``metalung experiment --folds K`` splits the datalist's patients (all sections) into ``K`` folds;
fold ``f`` is the test set of one sub-experiment, which trains on the other folds and chooses its
checkpoint on the patients of fold ``(f + 1) mod K`` (validation patients come from the training
folds, never from the test fold). Every patient is therefore tested exactly once per seed, and no
patient is ever in two roles of one sub-experiment.

The assignment is a seeded permutation of the sorted patient ids, dealt round robin, so it is
reproducible and the folds differ in size by at most one patient. Each fold's datalist is written
into the experiment folder (``fold<f>/datalist.json``), with the original datalist's file paths
made absolute, so that the sub-experiment reads the same images without copying them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..evaluation import markdown_table, write_table
from ..evaluation.report import format_mean_sd
from ..io.datalist import PATH_KEYS, load_datalist
from ..io.datalist import assign_folds as datalist_folds
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.runner import fingerprint
from .experiment import run_experiment
from .experiment_folder import DONE, MANIFEST, run_rel
from .results import (
    PAIRED_METHOD,
    paired_section,
    pretrained_lines,
    run_frames,
    table5_frame,
    table6_lines,
)

__all__ = [
    "FOLD_SECTIONS",
    "FOLDS_MANIFEST",
    "assign_folds",
    "fold_datalists",
    "run_cross_validation",
]

#: the datalist sections whose cases are pooled and re-split
FOLD_SECTIONS = ("training", "validation", "test")


def assign_folds(patients: Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """Fold (``0 .. k-1``) of every patient: a seeded permutation of the sorted ids, round robin
    (:func:`metalung_monai.io.datalist.assign_folds`, checked for cross-validation).

    Raises:
        InputError: ``k`` < 2 or more folds than patients.
    """
    ids = sorted({str(p) for p in patients})
    if k < 2:
        raise InputError("--folds", f"expected at least 2 folds, got {k}")
    if k > len(ids):
        raise InputError(
            "--folds", f"{k} folds but only {len(ids)} patients: every fold needs a test patient"
        )
    return datalist_folds(ids, k, seed)


def fold_datalists(
    datalist: str | os.PathLike, k: int, out_dir: str | os.PathLike, seed: int = 0
) -> list[tuple[Path, int]]:
    """Write the ``k`` fold datalists under ``out_dir`` and return ``[(path, val_fold), ...]``.

    Fold ``f``'s datalist holds the other folds' cases in ``training`` (each with ``"fold"``: its
    patient's fold, the validation fold being ``(f + 1) % k``) and fold ``f``'s cases in ``test``.

    Raises:
        InputError: a case without ``patient_id``, or too few patients for ``k`` folds.
    """
    src = Path(datalist).resolve()
    data = load_datalist(src)
    base = src.parent
    cases = []
    for section in FOLD_SECTIONS:
        for i, e in enumerate(data.get(section) or []):
            if not e.get("patient_id"):
                raise InputError(
                    src,
                    f"{section}[{i}] has no 'patient_id': folds are made of patients (give every "
                    "case its patient id, e.g. with `metalung convert --manifest`)",
                )
            entry = dict(e)
            for key in PATH_KEYS:
                if entry.get(key):
                    entry[key] = str((base / entry[key]).resolve())
            cases.append(entry)
    fold_of = assign_folds([c["patient_id"] for c in cases], k, seed)
    header = {key: v for key, v in data.items() if key not in FOLD_SECTIONS}
    written = []
    for f in range(k):
        val_fold = (f + 1) % k
        training = [
            {**c, "split": "train", "fold": fold_of[str(c["patient_id"])]}
            for c in cases
            if fold_of[str(c["patient_id"])] != f
        ]
        test = [
            {**c, "split": "test", "fold": None}
            for c in cases
            if fold_of[str(c["patient_id"])] == f
        ]
        doc = {
            **header,
            "description": (
                f"{header.get('description', src.name)}; cross-validation fold {f} of {k} "
                f"(test: fold {f}, validation: fold {val_fold}, seed {seed})"
            ),
            "training": training,
            "test": test,
        }
        path = Path(out_dir) / f"fold{f}" / "datalist.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(doc, path, indent=1)
        written.append((path, val_fold))
    return written


#: the cross-validation's manifest in its folder
FOLDS_MANIFEST = "folds.json"
_METRICS = ("dice", "iou", "precision", "recall")


def run_cross_validation(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int,
    models: Sequence[str] = ("unet",),
    arms: Sequence[str] = ("none", "metalung", "monai"),
    seeds: int | Sequence[int] = 3,
    preset_overrides: dict | None = None,
    fold_seed: int = 0,
    overwrite: bool = False,
    records: str | os.PathLike | None = None,
    **kwargs,
) -> Path:
    """``k`` sub-experiments (:func:`.experiment.run_experiment`), one per test fold, then the
    pooled ``results.md``; returns its path.

    Layout: ``out_dir/folds.json`` (the split: patients per fold), ``out_dir/fold<f>/datalist.json``
    and ``out_dir/fold<f>/experiment/`` (a complete experiment folder, resumable as any: a killed
    cross-validation rerun with the same arguments redoes only unfinished runs). ``results.md``
    pools the test slices of all folds, so each seed's figure covers every patient once.

    Args:
        datalist: a datalist whose cases (all sections) carry ``patient_id``.
        out_dir: output folder (new, empty, or a cross-validation folder of the same split).
        k: number of folds (2 .. number of patients).
        models, arms, seeds, preset_overrides, overwrite, kwargs: as ``run_experiment``; the
            validation fold of each sub-experiment is set by the split (``val_fold``).
        fold_seed: seed of the patient permutation.
        records: as ``run_experiment``'s, one sub-folder ``fold<f>`` per fold.
    """
    src = Path(datalist).resolve()
    if not src.is_file():
        raise InputError(src, "datalist file does not exist")
    out = Path(out_dir).resolve()
    manifest_path = out / FOLDS_MANIFEST
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    if out.is_dir() and not manifest_path.is_file() and any(out.iterdir()):
        raise InputError(
            "--out",
            f"{out} is not empty and is not a cross-validation folder (no {FOLDS_MANIFEST})",
        )
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    out.mkdir(parents=True, exist_ok=True)
    # the split is written to a scratch folder first and compared with the folder's own
    scratch = out / ".folds-new"
    written = fold_datalists(src, k, scratch, fold_seed)
    split = {
        "datalist": str(src),
        "k": k,
        "fold_seed": fold_seed,
        "folds": [
            sorted({str(e["patient_id"]) for e in load_datalist(p)["test"]}) for p, _ in written
        ],
    }
    split["key"] = fingerprint(split)
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("key") != split["key"] and not overwrite:
            shutil.rmtree(scratch)
            raise InputError(
                out,
                "holds a cross-validation of another split (datalist, --folds or fold seed); "
                "use another --out or --overwrite",
            )
    folds = []
    for f, (tmp, val_fold) in enumerate(written):
        final = out / f"fold{f}" / "datalist.json"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        folds.append((final, val_fold))
    shutil.rmtree(scratch)
    write_json_atomic(split, manifest_path)
    for f, (dl, val_fold) in enumerate(folds):
        run_experiment(
            dl,
            out / f"fold{f}" / "experiment",
            models=models,
            arms=arms,
            seeds=seed_list,
            preset_overrides={**(preset_overrides or {}), "val_fold": val_fold},
            overwrite=overwrite,
            records=Path(records) / f"fold{f}" if records is not None else None,
            **kwargs,
        )
    slices = []
    for f in range(k):
        frame = run_frames(out / f"fold{f}" / "experiment", models, arms, seed_list)[0]
        frame["fold"] = f
        slices.append(frame)
    pooled = pd.concat(slices, ignore_index=True)
    pooled = pooled[pooled["level"] == "slice"] if "level" in pooled else pooled
    write_text = pooled.to_csv(index=False)
    with atomic_path(out / "cv_slices.csv") as tmp:
        Path(tmp).write_text(write_text)
    manifest = json.loads((out / "fold0" / "experiment" / MANIFEST).read_text())
    return _write_cv_results(
        out,
        pooled,
        models,
        arms,
        seed_list,
        k,
        split,
        manifest.get("pretrained"),
        (preset_overrides or {}).get("lesion_banks"),
    )


def _fold_samples(out: Path, k: int, model: str, arm: str, seed: int) -> list[int]:
    """Training samples of ``arm``'s run of ``seed`` in each fold (its ``done.json``); ``[]``
    when a fold's record lacks them."""
    counts = []
    for f in range(k):
        done = out / f"fold{f}" / "experiment" / run_rel(model, arm, seed) / DONE
        try:
            counts.append(int(json.loads(done.read_text())["train_samples"]))
        except (OSError, KeyError, TypeError, ValueError):
            return []
    return counts


def _write_cv_results(
    out: Path,
    pooled,
    models,
    arms,
    seeds,
    k: int,
    split: dict,
    pretrained: dict | None = None,
    lesion_banks: dict | None = None,
) -> Path:
    lines = [
        f"# Cross-validation: {k} patient-grouped folds",
        "",
        f"Datalist `{split['datalist']}`; fold seed {split['fold_seed']}; every patient is "
        "tested once per seed (its fold's sub-experiment trains on the other folds and "
        "validates on the next fold). Each seed's figure is the mean over all test tumour "
        f"slices of the {k} folds; the table gives mean ± SD over seeds {list(seeds)}. "
        "Per-slice scores: `cv_slices.csv`; each fold's own report: "
        "`fold<f>/experiment/results.md`.",
        "",
        *pretrained_lines(pretrained),
    ]
    for m in models:
        lines += [
            f"## {m}",
            "",
            "| arm | slices | " + " | ".join(x.upper() for x in _METRICS) + " |",
            "|---|---|" + "---|" * len(_METRICS),
        ]
        for a in arms:
            rows = pooled[(pooled["model"] == m) & (pooled["arm"] == a)]
            per_seed = rows.groupby("seed")[list(_METRICS)].mean()
            n = int(len(rows) / max(len(seeds), 1))
            cells = [format_mean_sd(per_seed[x].tolist()) for x in _METRICS]
            lines.append(f"| {a} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        section, verdicts, paired = paired_section(out, m, arms, pooled[pooled["model"] == m])
        metrics = {
            a: {
                x: format_mean_sd(
                    pooled[(pooled["model"] == m) & (pooled["arm"] == a)]
                    .groupby("seed")[x]
                    .mean()
                    .tolist()
                )
                for x in _METRICS
            }
            for a in arms
        }
        samples = {a: _fold_samples(out, k, m, a, seeds[0]) for a in arms}
        t5 = table5_frame(
            m,
            arms,
            metrics,
            paired,
            samples={a: v for a, v in samples.items() if v},
            lesion_banks=lesion_banks,
        )
        write_table(t5, out / f"table5_{m}")
        lines += [
            f"### {m}: Table 5 (pooled test tumour slices; paired against none)",
            "",
            markdown_table(t5),
            "",
        ]
        lines += section + ([PAIRED_METHOD, "", *verdicts, ""] if verdicts else [])
    lines += table6_lines(lesion_banks)
    lines += ["## Folds", "", "| fold | test patients |", "|---|---|"]
    lines += [f"| {f} | {', '.join(p)} |" for f, p in enumerate(split["folds"])]
    path = out / "results.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return path
