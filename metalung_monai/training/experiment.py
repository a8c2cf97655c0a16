"""The experiment: every model x augmentation arm x seed on one datalist, one command.

``metalung experiment --models unet,deeplabv3,maskrcnn --augment none,metalung,monai --preset quick
--seeds 3 --out DIR`` trains each combination with its MONAI bundle (``bundles/<model>_lung_tumor``,
``train.json``), evaluates it on the test patients (``evaluate.json``: per tumour slice as in the
thesis, per patient in 3D, calcified false positives), and writes ``DIR/results.md``:

* Table 7 layout: DICE, IoU, Precision, Recall per model and arm (mean ± SD over seeds; each
  seed's value is the mean over the test tumour slices);
* Table 8 layout: DICE per Lung-RADS class;
* per-patient 3D DICE, false-positive components and those on calcified nodules;
* training samples, wall time and data-loading share per arm;
* ``overlays_<model>.png`` (predictions of each arm on test slices) and ``curves_<model>.png``.

Every arm gets the same preset: same iterations, batch size, crops, optimiser and seeds. Runs
live in ``DIR/runs/<model>/<arm>/seed<k>/``; a finished run (``done.json`` with its model's
fingerprint: datalist content, resolved preset, overrides, package version, that model's bundle
configs) is reused by a later call, an unfinished one (killed) is redone. A folder whose runs of a
model were made with another configuration is refused unless ``overwrite``, which redoes that
model's runs only; models can be added to a folder later (``--models unet`` first, then
``--models unet,deeplabv3`` reuses the U-Net runs).

Everything is checked before any work (:func:`check_inputs`): the settings, the datalist (a
training section with a tumour outside and inside the validation fold, a test section with a
tumour), and the output folder, which must be new, empty or an experiment folder, and must not be,
contain or lie inside an input (the datalist, the files it lists, the bundles). A run is marked
done only once every output it is summarised from exists. ``overwrite`` deletes only what the
experiment wrote: the files of the runs its manifest (``experiment.json``) lists.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError, MetaLungError
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.paths import refuse_overlap, remove_owned, safe_name
from .arms import ARMS

__all__ = [
    "MODELS",
    "run_experiment",
    "run_bundle",
    "default_bundles_dir",
    "check_inputs",
    "datalist_files",
    "section_entries",
    "add_parser",
    "run",
]

log = logging.getLogger(__name__)

#: model name -> bundle folder name
MODELS = {
    "unet": "unet_lung_tumor",
    "deeplabv3": "deeplabv3_lung_tumor",
    "maskrcnn": "maskrcnn_lung_tumor",
}
MANIFEST = "experiment.json"


def default_bundles_dir() -> Path:
    """The repository's ``bundles/`` (beside the package in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "bundles"


def _sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _ours(e: BaseException) -> BaseException | None:
    """The error raised on purpose (or by the system) inside a bundle, under MONAI's wrappers."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (MetaLungError, OSError, MemoryError)):
            return e
        e = e.__cause__ or e.__context__
    return None


def run_bundle(
    bundle_dir: Path, configs: Sequence[str], workflow_type: str, verbose: bool = False, **overrides
) -> None:
    """Run a bundle in this process (``ConfigWorkflow``: initialize, run, finalize).

    Quiet unless ``verbose``: the bundles' ``StatsHandler`` logs every iteration at INFO level, and
    MONAI and ignite log the traceback of a failure before raising it (the command line reports the
    failure once). An error raised on purpose inside the bundle (:class:`InputError` from a config
    expression, an ``OSError``) is raised as itself, not wrapped in MONAI's ``RuntimeError``.
    """
    from monai.bundle import ConfigWorkflow

    if not verbose:
        logging.disable(logging.ERROR)
    try:
        wf = ConfigWorkflow(
            config_file=[str(bundle_dir / "configs" / c) for c in configs],
            meta_file=str(bundle_dir / "configs" / "metadata.json"),
            logging_file=str(bundle_dir / "configs" / "logging.conf") if verbose else False,
            workflow_type=workflow_type,
            bundle_root=str(bundle_dir),
            **overrides,
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        del wf
    except Exception as e:
        ours = _ours(e)
        if ours is not None and ours is not e:
            raise ours from e
        raise
    finally:
        logging.disable(logging.NOTSET)
        # Shut the finished run's DataLoader iterators down here, in the parent: left to the garbage
        # collector they can be finalised inside the next run's forked workers ("can only test a child
        # process" tracebacks).
        gc.collect()


#: preset settings that belong to one model only (prefix -> model); the rest is shared
_MODEL_SETTINGS = {"unet_": "unet", "deeplab_": "deeplabv3", "maskrcnn_": "maskrcnn"}


def _model_key(datalist_sha: str, preset: str, settings: dict, bundles: Path, model: str) -> str:
    """Fingerprint of one model's runs: everything that can change them, nothing that cannot.

    The datalist's content, the resolved preset with its overrides (shared settings plus this
    model's own, so changing another model's settings keeps these runs), the package version and
    this model's bundle configs.
    """

    def owner(key: str) -> str | None:
        return next((m for prefix, m in _MODEL_SETTINGS.items() if key.startswith(prefix)), None)

    own = {k: v for k, v in settings.items() if owner(k) in (None, model)}
    cfg = {
        "datalist": datalist_sha,
        "preset": preset,
        "settings": own,
        "metalung_monai": __version__,
        "bundle": {
            c.name: _sha(c) for c in sorted((bundles / MODELS[model] / "configs").glob("*.json"))
        },
    }
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(
    datalist: Path,
    preset: str,
    settings: dict,
    overrides: dict,
    bundles: Path,
    models: Sequence[str],
) -> dict:
    sha = _sha(datalist)
    return {
        "datalist": sha,
        "preset": preset,
        "preset_overrides": overrides,
        "metalung_monai": __version__,
        "keys": {m: _model_key(sha, preset, settings, bundles, m) for m in models},
    }


#: what a run writes inside its folder (all of it, and nothing else, is deleted when it is redone)
_RUN_PARTS = ("models", "eval")
_DONE = "done.json"
#: outputs a finished run is summarised from (``done.json`` is written only once they all exist)
_RUN_OUTPUTS = (
    "models/model.pt",
    "eval/history.json",
    "eval/slices.csv",
    "eval/volumes.csv",
    "eval/summary.json",
    "eval/predictions.npz",
)


def _run_rel(model: str, arm: str, seed: int) -> str:
    """A run's folder relative to the experiment folder (names checked: they become paths)."""
    return "/".join(("runs", safe_name(model), safe_name(arm), f"seed{int(seed)}"))


def _run_files(out: Path, rel: str) -> list[str]:
    """The files a run wrote (relative to ``out``): its ``models/``, ``eval/`` and ``done.json``."""
    run_dir = out / rel
    files = [f"{rel}/{_DONE}"]
    for part in _RUN_PARTS:
        d = run_dir / part
        if d.is_dir():
            files += [
                p.relative_to(out).as_posix()
                for p in sorted(d.rglob("*"))
                if p.is_file() or p.is_symlink()
            ]
    return files


def _clear_run(out: Path, rel: str) -> None:
    remove_owned(out, _run_files(out, rel))


def _run_one(
    bundle: Path,
    datalist: Path,
    out: Path,
    rel: str,
    arm: str,
    seed: int,
    preset: str,
    overrides: dict,
    key: str,
    verbose: bool,
) -> dict:
    run_dir = out / rel
    done = run_dir / _DONE
    if done.exists():
        try:
            rec = json.loads(done.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = {}
        if rec.get("key") == key and all((run_dir / f).is_file() for f in _RUN_OUTPUTS):
            return rec
    if run_dir.exists():  # killed or from another configuration: start the run again
        _clear_run(out, rel)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    common = dict(
        dataset_dir=str(datalist.parent),
        datalist=str(datalist),
        preset=preset,
        preset_overrides=overrides,
        ckpt_dir=str(run_dir / "models"),
        output_dir=str(run_dir / "eval"),
        verbose=verbose,
    )
    t0 = time.perf_counter()
    run_bundle(bundle, ["train.json"], "train", augment=arm, seed=seed, **common)
    t_train = time.perf_counter() - t0
    run_bundle(bundle, ["train.json", "evaluate.json"], "infer", augment=arm, seed=seed, **common)
    wall = time.perf_counter() - t0
    missing = [f for f in _RUN_OUTPUTS if not (run_dir / f).is_file()]
    if missing:  # never mark a run done that did not finish
        raise MetaLungError(
            f"{run_dir}: the run ended without writing {', '.join(missing)}; it is not marked done "
            "(rerun the command to redo it, with -v to see the bundle's log)"
        )
    hist = json.loads((run_dir / "eval" / "history.json").read_text())
    rec = {
        "key": key,
        "arm": arm,
        "seed": seed,
        "train_s": round(t_train, 1),
        "wall_s": round(wall, 1),
        "train_samples": hist.get("train_samples"),
        "data_share": hist.get("data_share"),
        "iterations": hist.get("iterations"),
        "best_val_dice": hist.get("best_val_dice"),
    }
    write_json_atomic(rec, done)
    return rec


# --------------------------------------------------------------------------- checks before any work
def section_entries(datalist: Path, section: str, what: str) -> list[dict]:
    """The entries of ``section`` (absolute paths, files checked); raise unless there are some.

    Args:
        datalist: the datalist file.
        section: ``training``, ``validation`` or ``test``.
        what: what the section is needed for (for the message).
    """
    from ..io.datalist import SECTIONS, datalist_entries, load_datalist

    data = load_datalist(datalist)
    present = ", ".join(f"{k} ({len(data[k])})" for k in SECTIONS if data.get(k)) or "none"
    if section not in data:
        raise InputError(
            datalist, f"has no '{section}' section, needed {what} (sections with cases: {present})"
        )
    entries = datalist_entries(datalist, section)
    if not entries:
        raise InputError(
            datalist,
            f"its '{section}' section is empty, needed {what} (sections with cases: {present})",
        )
    return entries


def _has_tumour(entry: dict) -> bool:
    import SimpleITK as sitk

    if not entry.get("mask"):
        return False
    try:
        arr = sitk.GetArrayViewFromImage(sitk.ReadImage(str(entry["mask"])))
    except RuntimeError as e:
        raise InputError(
            entry["mask"], f"cannot be read as a mask ({str(e).strip().splitlines()[-1][:200]})"
        ) from None
    return bool(np.any(arr))


def _require_tumour(datalist: Path, entries: list[dict], where: str, what: str) -> None:
    """Raise unless one of ``entries`` has a mask with a tumour voxel (reads masks until one has)."""
    if not any(_has_tumour(e) for e in entries):
        n_masks = sum(bool(e.get("mask")) for e in entries)
        masks = f"{n_masks} with a mask, all empty" if n_masks else "none with a tumour mask"
        raise InputError(
            datalist,
            f"no case of {where} has a tumour ({len(entries)} cases, {masks}), needed {what}",
        )


def datalist_files(datalist: Path) -> list[Path]:
    """The datalist and every file it lists (all sections), for :func:`refuse_overlap`."""
    from ..io.datalist import PATH_KEYS, SECTIONS, load_datalist

    data = load_datalist(datalist)
    base = datalist.resolve().parent
    files = [datalist]
    for section in SECTIONS:
        for e in data.get(section) or []:
            files += [base / e[k] for k in PATH_KEYS if e.get(k)]
    return files


def check_inputs(
    datalist: Path, out: Path, settings: dict, models: Sequence[str], bundles: Path
) -> None:
    """Everything an experiment needs, checked before any work; raise :class:`InputError` naming the culprit.

    * settings that only some models use (Mask R-CNN validates every ``val_interval`` of its own
      ``maskrcnn_epochs``);
    * the datalist: training cases outside and inside the validation fold with a tumour (training,
      and choosing the best checkpoint), test cases with a tumour (the scores);
    * ``out``: not a file, not an input, not a non-empty folder of something else.
    """
    from .data import split_entries
    from .presets import SettingError

    if "maskrcnn" in models and settings["val_interval"] > settings["maskrcnn_epochs"]:
        raise SettingError(
            "val_interval",
            f"val_interval {settings['val_interval']} exceeds maskrcnn_epochs "
            f"{settings['maskrcnn_epochs']}: Mask R-CNN would never be validated",
        )
    training = section_entries(datalist, "training", "to train and validate")
    k = settings["val_fold"]
    train, val = split_entries(training, k)
    folds = sorted({str(e["fold"]) for e in training if e.get("fold") is not None})
    if not val:
        have = (
            f"folds of its training cases: {', '.join(folds)}"
            if folds
            else "its training cases have no 'fold'"
        )
        raise InputError(
            datalist,
            f"no training case is in the validation fold {k} ({have}); give the training cases "
            "a 'fold' (the validation patients) or choose another fold with --set val_fold=N",
        )
    if not train:
        raise InputError(
            datalist,
            f"every training case is in the validation fold {k}; nothing is left to train on",
        )
    _require_tumour(
        datalist, train, f"its training section outside the validation fold {k}", "to train"
    )
    _require_tumour(datalist, val, f"the validation fold {k}", "to choose the best checkpoint")
    _require_tumour(
        datalist,
        section_entries(datalist, "test", "to score the models"),
        "its 'test' section",
        "to score the models",
    )
    refuse_overlap(out, [*datalist_files(datalist), bundles], "--out")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise InputError(
            "--out",
            f"{out} is not empty and is not an experiment folder (no {MANIFEST}); choose a new "
            "or empty folder",
        )


def _owned_runs(out: Path, manifest: dict) -> set[str]:
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


def run_experiment(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    models: Sequence[str] = ("unet",),
    arms: Sequence[str] = ("none", "metalung", "monai"),
    preset: str = "quick",
    seeds: int | Sequence[int] = 3,
    preset_overrides: dict | None = None,
    bundles_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = False,
) -> Path:
    """Run the grid (see the module docstring) and return the path of ``results.md``.

    Args:
        datalist: the datalist (training section: train + validation fold; test section: test).
        out_dir: output folder.
        models: names from :data:`MODELS`.
        arms: augmentation arms (:data:`metalung_monai.training.ARMS`).
        preset: ``quick`` or ``full``.
        seeds: number of seeds (0, 1, ...) or the seeds themselves.
        preset_overrides: changes to the preset (e.g. ``{"epochs": 2}``), the same for every run.
        bundles_dir: folder of the bundles (default: the repository's ``bundles/``).
        overwrite: replace an experiment folder made with another configuration.
        progress: progress bar over runs.
        verbose: show the bundles' training logs.
    """
    from .presets import preset as get_preset

    dl = Path(datalist).resolve()
    out = Path(out_dir).resolve()
    bundles = Path(bundles_dir).resolve() if bundles_dir else default_bundles_dir()
    if not dl.is_file():
        raise InputError(dl, "datalist file does not exist")
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise InputError("--models", f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    missing = [m for m in models if not (bundles / MODELS[m] / "configs" / "train.json").is_file()]
    if missing:
        raise InputError(
            bundles, f"no bundle for {missing} (expected {[MODELS[m] for m in missing]})"
        )
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise InputError("--augment", f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
    if isinstance(seeds, int) and not 1 <= seeds <= 1000:
        raise InputError("--seeds", f"expected 1 to 1000 seeds, got {seeds}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise InputError("--seeds", "at least one seed")
    overrides = dict(preset_overrides or {})
    settings = get_preset(preset, **overrides)  # validates the overrides
    check_inputs(dl, out, settings, models, bundles)
    cfg = _fingerprint(dl, preset, settings, overrides, bundles, models)
    manifest = out / MANIFEST
    keys = dict(cfg["keys"])
    grid = [(m, a, s) for m in models for s in seed_list for a in arms]
    rels = {g: _run_rel(*g) for g in grid}
    owned: set[str] = set()
    changed: list[str] = []
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(
                manifest, f"not a valid experiment manifest ({e}); use another --out"
            ) from None
        if not isinstance(old, dict):
            raise InputError(manifest, "not a valid experiment manifest; use another --out")
        owned = _owned_runs(out, old)
        old_keys = old.get("keys", {})
        changed = (
            [m for m in models if m in old_keys and old_keys[m] != keys[m]]
            if "keys" in old
            else list(models)
        )
        if changed and not overwrite:
            raise InputError(
                out,
                f"holds {', '.join(changed)} runs of another configuration (datalist, preset, "
                "bundle or code version); use another --out or --overwrite",
            )
        if "keys" in old:  # models of this folder not run this time keep their runs and keys
            keys = {**{m: k for m, k in old_keys.items() if m not in models}, **keys}
    foreign = [r for r in rels.values() if (out / r).exists() and r not in owned]
    if foreign:
        raise InputError(
            "--out",
            f"{out / foreign[0]} exists but was not written by this experiment; move it away "
            "or use another --out",
        )
    # checks done: from here on the folder is written
    for (
        m
    ) in changed:  # --overwrite: only the files of this model's runs, as the manifest lists them
        for r in sorted(owned):
            if r.startswith(f"runs/{safe_name(m)}/"):
                _clear_run(out, r)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        {
            **cfg,
            "keys": keys,
            "models": list(models),
            "arms": list(arms),
            "seeds": seed_list,
            "runs": sorted(owned | set(rels.values())),
        },
        manifest,
    )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid), desc="experiment", unit="run")
    records = []
    try:
        for m, a, s in grid:
            if bar:
                bar.set_postfix_str(f"{m} / {a} / seed {s}")
            rec = _run_one(
                bundles / MODELS[m],
                dl,
                out,
                rels[(m, a, s)],
                a,
                s,
                preset,
                overrides,
                keys[m],
                verbose,
            )
            records.append({"model": m, **rec})
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    return write_results(out, dl, models, arms, seed_list, records, preset)


# --------------------------------------------------------------------------- results
def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _frames(out: Path, models, arms, seeds):
    import pandas as pd

    slices, volumes, hist = [], [], {}
    for m in models:
        for a in arms:
            for s in seeds:
                ev = out / _run_rel(m, a, s) / "eval"
                for name, acc in (("slices.csv", slices), ("volumes.csv", volumes)):
                    df = pd.read_csv(ev / name)
                    df["model"], df["arm"], df["seed"] = m, a, s
                    acc.append(df)
                hist[(m, a, s)] = json.loads((ev / "history.json").read_text())
    return pd.concat(slices, ignore_index=True), pd.concat(volumes, ignore_index=True), hist


def write_results(out: Path, datalist: Path, models, arms, seeds, records, preset: str) -> Path:
    """Aggregate the runs into ``results.md``, CSV tables and figures."""
    from ..evaluation import (
        arm_table,
        class_arm_table,
        format_mean_sd,
        markdown_table,
        mean_sd,
        write_table,
    )

    slices, volumes, hist = _frames(out, models, arms, seeds)
    write_table(slices, out / "all_slices")
    write_table(volumes, out / "all_volumes")
    lines = [
        f"# MetaLung experiment ({preset} preset)",
        "",
        f"Datalist `{datalist}`; models {', '.join(models)}; arms {', '.join(arms)}; seeds {seeds}. "
        "Every arm: same preset (iterations, batch size, crops, optimiser) and seeds. Test set: the datalist's "
        "test patients; metrics per test tumour slice (pixel-wise on the whole slice, mean over slices; "
        "conventions in docs/evaluation.md), mean ± SD over seeds.",
        "",
        f"{len(records)} runs; compute time, the sum of the runs' wall times (training + evaluation): "
        f"{sum(r['wall_s'] for r in records) / 60:.1f} min (per model: "
        + ", ".join(
            f"{m} {sum(r['wall_s'] for r in records if r['model'] == m) / 60:.1f} min"
            for m in models
        )
        + f"); torch threads {_torch_threads()}.",
        "",
    ]
    verdicts = []
    for m in models:
        sm = slices[slices["model"] == m]
        vm = volumes[volumes["model"] == m]
        t7 = arm_table(sm)
        t7.insert(0, "model", m)
        write_table(t7, out / f"table7_{m}")
        lines += [
            f"## {m}: Table 7 (DICE, IoU, Precision, Recall per test tumour slice)",
            "",
            markdown_table(t7),
            "",
        ]
        t8 = class_arm_table(sm)
        write_table(t8, out / f"table8_{m}")
        lines += [f"## {m}: Table 8 (DICE per Lung-RADS class)", "", markdown_table(t8), ""]
        rows = []
        for a in arms:
            recs = [r for r in records if r["model"] == m and r["arm"] == a]
            va = vm[vm["arm"] == a]
            pdice = [va[va["seed"] == s]["dice"].mean() for s in seeds]
            cfp = [va[va["seed"] == s]["calcified_fp_components"].sum() for s in seeds]
            fpc = [va[va["seed"] == s]["fp_components"].sum() for s in seeds]
            rows.append(
                {
                    "arm": a,
                    "training samples": str(recs[0]["train_samples"]) if recs else "n/a",
                    "patient 3D DICE": format_mean_sd(pdice),
                    "FP components (test volumes)": format_mean_sd(fpc, ".1f"),
                    "of them on calcified nodules": format_mean_sd(cfp, ".1f"),
                    "wall time per run (s)": format_mean_sd([r["wall_s"] for r in recs], ".0f"),
                    "data-loading share": format_mean_sd(
                        [r["data_share"] or 0.0 for r in recs], ".3f"
                    ),
                }
            )
        import pandas as pd

        extra = pd.DataFrame.from_records(rows)
        write_table(extra, out / f"runs_{m}")
        lines += [f"## {m}: per patient (3D), false positives, cost", "", markdown_table(extra), ""]
        # verdict: MetaLung vs the others on DICE and Precision (means over seeds)
        if "metalung" in arms:
            per_seed = {a: [sm[(sm["arm"] == a) & (sm["seed"] == s)] for s in seeds] for a in arms}
            stats = {
                a: {k: mean_sd([df[k].mean() for df in per_seed[a]]) for k in ("dice", "precision")}
                for a in arms
            }
            for other in [a for a in arms if a != "metalung"]:
                for k in ("dice", "precision"):
                    (mu_m, sd_m), (mu_o, sd_o) = stats["metalung"][k], stats[other][k]
                    better = mu_m > mu_o
                    # a difference smaller than the larger seed-to-seed SD is not a result
                    spread = max((v for v in (sd_m, sd_o) if not math.isnan(v)), default=math.nan)
                    if math.isnan(mu_m) or math.isnan(mu_o):
                        note = "undefined: an arm predicted no tumour pixel on any test slice"
                    elif math.isnan(spread):
                        note = "one seed: no spread to judge it by"
                    elif abs(mu_m - mu_o) > spread:
                        note = "difference larger than the seed spread"
                    else:
                        note = "within the seed spread"
                    verdicts.append(
                        f"- {m}: MetaLung {'beat' if better else 'did not beat'} `{other}` on {k} "
                        f"({mu_m:.3f} ± {sd_m:.3f} vs {mu_o:.3f} ± {sd_o:.3f}; {note})"
                    )
        _figures(out, m, arms, seeds, datalist, hist)
        lines += [
            f"![predictions of each arm]({'overlays_' + m + '.png'})",
            "",
            f"![training curves]({'curves_' + m + '.png'})",
            "",
        ]
    if verdicts:
        lines += ["## MetaLung against the other arms (mean over seeds)", ""] + verdicts + [""]
    text = "\n".join(lines)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out / "results.md"


def _figures(out: Path, model: str, arms, seeds, datalist: Path, hist: dict) -> None:
    from ..evaluation import overlay_grid, training_curves
    from ..io.datalist import datalist_entries
    from .report import load_predictions

    curves = {}
    for a in arms:
        runs = [hist[(model, a, s)] for s in seeds]
        curves[a] = {
            "loss": [_smooth(r["loss"]) for r in runs],
            "val_dice": [r["val_dice"] for r in runs],
            "val_dice_x": runs[0]["val_iteration"],
        }
        curves[a]["loss_x"] = list(range(1, len(curves[a]["loss"][0]) + 1))
    training_curves(curves, out / f"curves_{model}.png", xlabel="iteration")
    preds = {
        a: load_predictions(out / _run_rel(model, a, seeds[0]) / "eval" / "predictions.npz")
        for a in arms
    }
    # the case ids of the evaluation (volume_data): the entry's case_id or its image's name
    entries = {
        str(e.get("case_id") or Path(e["image"]).name.split(".")[0]): e
        for e in datalist_entries(datalist, "test")
    }
    rows = []
    for cid, z in _pick_slices(preds[arms[0]], entries):
        first = preds[arms[0]][cid][z]
        row = {
            "image": first["hu"],
            "truth": first["truth"],
            "preds": {a: preds[a][cid][z]["pred"] for a in arms if z in preds[a].get(cid, {})},
            "title": f"{entries[cid]['patient_id']} {entries[cid].get('lung_rads')} z={z}",
        }
        if first["lungs"] is not None:
            row["lungs"] = first["lungs"]
        rows.append(row)
    if rows:
        overlay_grid(rows, out / f"overlays_{model}.png", window=(-1000.0, 400.0))


def _pick_slices(pred: dict, entries: dict, per_class: int = 1) -> list[tuple[str, int]]:
    """One test slice per Lung-RADS class (the middle tumour slice of the first patient)."""
    chosen, seen = [], set()
    for cid in sorted(pred):
        cls = entries.get(cid, {}).get("lung_rads")
        if cls in seen or cid not in entries:
            continue
        zs = sorted(pred[cid])
        if zs:
            chosen.append((cid, zs[len(zs) // 2]))
            seen.add(cls)
    return sorted(chosen, key=lambda c: str(entries[c[0]].get("lung_rads")))


def _smooth(values, k: int = 10) -> list[float]:
    v = np.asarray(values, dtype=float)
    if len(v) < k:
        return v.tolist()
    return np.convolve(v, np.ones(k) / k, mode="valid").tolist()


# --------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="train and evaluate every model x augmentation arm x seed; write results.md",
        description="Run the MONAI bundles for every combination of models and augmentation arms, with the same "
        "preset and seeds, evaluate on the test patients and write DIR/results.md (the thesis' Tables 7 "
        "and 8, per-patient DICE, calcified false positives, cost), figures and CSV tables. Resumable.",
    )
    p.add_argument(
        "--datalist",
        default=None,
        metavar="JSON",
        help="datalist to use (default: outputs/cohort/datalist.json of the main job)",
    )
    p.add_argument(
        "--models", default="unet", help=f"comma-separated, from {','.join(MODELS)} (default unet)"
    )
    p.add_argument(
        "--augment",
        default="none,metalung,monai",
        help="comma-separated arms (default none,metalung,monai)",
    )
    p.add_argument(
        "--preset",
        default="quick",
        choices=("quick", "full"),
        help="training preset (default quick)",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting, e.g. --set epochs=4 (repeatable)",
    )
    p.add_argument(
        "--bundles", default=None, metavar="DIR", help="bundles folder (default: the repository's)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an experiment made with another configuration",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_set(items) -> dict:
    import ast

    out = {}
    for item in items:
        if "=" not in item:
            raise InputError("--set", f"expected KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return out


def run(args) -> int:
    from .presets import SettingError

    datalist = args.datalist or str(Path.cwd() / "outputs" / "cohort" / "datalist.json")
    t0 = time.perf_counter()
    try:
        path = run_experiment(
            datalist,
            args.out,
            models=[m.strip() for m in args.models.split(",") if m.strip()],
            arms=[a.strip() for a in args.augment.split(",") if a.strip()],
            preset=args.preset,
            seeds=args.seeds,
            preset_overrides=_parse_set(args.set),
            bundles_dir=args.bundles,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            verbose=bool(getattr(args, "verbose", False)),
        )
    except SettingError as e:  # name the option the user typed
        raise e.renamed(f"--set {e.setting}") from e
    print(f"metalung experiment: results in {path} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0
