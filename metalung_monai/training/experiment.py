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
* paired comparisons of the arms (``paired_<model>``: per-patient differences, bootstrap 95 %
  interval over patients, Wilcoxon p), on which every arm-vs-arm verdict rests;
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

This module is the resumable driver over the grid; the folder layout is in
:mod:`.experiment_folder`, running a bundle in :mod:`.bundle_run`, the tables in :mod:`.results`,
the figures in :mod:`.experiment_figures`, the command line in
:mod:`metalung_monai.commands.experiment`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..errors import InputError, MetaLungError
from ..utils.atomic import write_json_atomic
from ..utils.paths import refuse_overlap, safe_name
from ..utils.runner import (
    Manifest,
    completed,
    file_fingerprint,
    fingerprint,
    mark_done,
    remove_stale_partials,
)
from ..utils.runner import progress as progress_bar
from .arms import ARMS, arm_config
from .bundle_run import MODELS, default_bundles_dir, run_bundle
from .data import split_entries
from .experiment_folder import (
    DONE,
    MANIFEST,
    RUN_OUTPUTS,
    RUN_RECORD,
    clear_run,
    owned_runs,
    record_conflicts,
    restore_record,
    run_rel,
    save_record,
)
from .inputs import datalist_files, require_tumor, section_entries
from .presets import SettingError
from .presets import preset as get_preset
from .results import write_results
from .workflow import bundle_configs

__all__ = [
    "MODELS",
    "run_experiment",
    "run_bundle",
    "write_results",
    "default_bundles_dir",
    "check_inputs",
    "datalist_files",
    "section_entries",
]


#: preset settings that belong to one model only (prefix -> model); the rest is shared
_MODEL_SETTINGS = {"unet_": "unet", "deeplab_": "deeplabv3", "maskrcnn_": "maskrcnn"}


def _model_key(datalist_sha: str, preset: str, settings: dict, bundles: Path, model: str) -> str:
    """Fingerprint of one model's runs (:func:`_model_config`)."""
    return fingerprint(_model_config(datalist_sha, preset, settings, bundles, model), default=str)


def _model_config(
    datalist_sha: str, preset: str, settings: dict, bundles: Path, model: str
) -> dict:
    """What one model's runs are keyed by: everything that can change them, nothing that cannot.

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
        "bundle": {  # an arm's own file keys its runs only (_run_key): arms can be added later
            c.name: file_fingerprint(c, length=12)
            for c in sorted((bundles / MODELS[model] / "configs").glob("*.json"))
            if not c.name.startswith("augment_")
        },
        "lesion_banks": {  # the banks' content, not only their paths (a list: each one's)
            name: [_folder_fingerprint(Path(p)) for p in path]
            if isinstance(path, (list, tuple))
            else _folder_fingerprint(Path(path))
            for name, path in sorted((settings.get("lesion_banks") or {}).items())
        },
    }
    return json.loads(json.dumps(cfg, default=str))  # as it is stored and compared


#: in a records folder: each model's :func:`_model_config`, the parts of its runs' keys
RECORDS_CONFIG = "records.json"


def _read_records_config(rec_dir: Path) -> dict:
    try:
        stored = json.loads((rec_dir / RECORDS_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    models = stored.get("models") if isinstance(stored, dict) else None
    return models if isinstance(models, dict) else {}


def _records_differ(rec_dir: Path, configs: dict) -> str:
    """Which parts of the configuration differ from the one the records were made with."""
    stored = _read_records_config(rec_dir)
    diffs = [
        f"{m}: {', '.join(_differences(stored[m], c)[:6])}"
        for m, c in configs.items()
        if m in stored and _differences(stored[m], c)
    ]
    return (
        "differs in " + "; ".join(diffs)
        if diffs
        else "datalist, preset, bundle, lesion banks or code version"
    )


def _flat(d: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _differences(old: dict, new: dict) -> list[str]:
    """The dotted names of the settings that differ between two :func:`_model_config` dicts."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


#: the files a lesion bank is read from (``synthesis.read_bank``): what its content is
_BANK_FILES = ("bank.npz", "lesions.csv", "bank.json")


def _without_timings(obj: object) -> object:
    """``obj`` without the wall times a bank's ``bank.json`` records (keys ``seconds...``)."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if not str(k).startswith("seconds")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _folder_fingerprint(folder: Path) -> str | None:
    """Fingerprint of a lesion bank's content (``None`` when the folder does not exist: the arm's
    bundle run then reports the missing bank).

    A bank (a folder with ``bank.json``): the files it is read from, ``bank.json`` without its wall
    times, so that a bank made again identically keeps its key (its picture, its per-case cache
    and its manifest are bookkeeping). Any other folder: every file in it.
    """
    if not folder.is_dir():
        return None
    if (folder / "bank.json").is_file():
        try:
            meta = _without_timings(json.loads((folder / "bank.json").read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = file_fingerprint(folder / "bank.json", length=12)  # read_bank will say why
        return fingerprint(
            {
                n: meta if n == "bank.json" else file_fingerprint(folder / n, length=12)
                for n in _BANK_FILES
                if (folder / n).is_file()
            },
            default=str,
        )
    return fingerprint(
        {
            str(f.relative_to(folder)): file_fingerprint(f, length=12)
            for f in sorted(folder.rglob("*"))
            if f.is_file()
        }
    )


def _run_key(model_key: str, bundles: Path, model: str, arm: str) -> str:
    """Key of one run: its model's key and its arm's override file (editing one arm's file redoes
    that arm's runs only)."""
    arm_file = bundles / MODELS[model] / "configs" / arm_config(arm)
    sha = file_fingerprint(arm_file, length=12) if arm_file.is_file() else None
    return fingerprint({"model": model_key, "arm": arm, "arm_file": sha})


def _fingerprint(
    datalist: Path,
    preset: str,
    settings: dict,
    overrides: dict,
    bundles: Path,
    models: Sequence[str],
    pretrained: dict[str, Path] | None = None,
) -> dict:
    sha = file_fingerprint(datalist, length=12)
    keys = {m: _model_key(sha, preset, settings, bundles, m) for m in models}
    init = {m: file_fingerprint(p, length=12) for m, p in (pretrained or {}).items()}
    for m, w in init.items():  # other initial weights, other runs
        keys[m] = fingerprint({"key": keys[m], "pretrained": w})
    out = {
        "datalist": sha,
        "preset": preset,
        "preset_overrides": overrides,
        "metalung_monai": __version__,
        "keys": keys,
    }
    if init:
        out["pretrained"] = {m: {"path": str(pretrained[m]), "sha": w} for m, w in init.items()}
    return out


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
    progress: bool = False,
    status: Callable[[str], None] = lambda step: None,
    pretrained: Path | None = None,
    records: Path | None = None,
) -> dict:
    """Train and evaluate one run (or reuse it when done with ``key``, or restore it from
    ``records``); return its record.

    ``status`` is told the step under way (``"training"``, ``"evaluating"``, ``"done before"``,
    ``"restored"``), for the bar over runs; ``progress`` shows the training's own bar of
    iterations. With ``records``, a finished run's record is also kept there.
    """
    run_dir = out / rel
    done = run_dir / DONE
    rec = completed(done, key, outputs=RUN_RECORD)  # the results suffice: weights may be gone
    if rec is not None:
        status("done before")
        if records is not None and completed(records / rel / DONE, key, RUN_RECORD) is None:
            save_record(out, rel, records)
        return rec
    if records is not None:
        rec = restore_record(records, out, rel, key)
        if rec is not None:
            status("restored")
            return rec
    if run_dir.exists():  # killed or from another configuration: start the run again
        clear_run(out, rel)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    common = dict(
        dataset_dir=str(datalist.parent),
        datalist=str(datalist),
        preset_overrides=overrides,
        ckpt_dir=str(run_dir / "models"),
        output_dir=str(run_dir / "eval"),
        progress=progress,  # the bundle's bar of training iterations (below the bar over runs)
        verbose=verbose,
    )
    t0 = time.perf_counter()
    status("training")
    # the stacked config files are the truth: train.json + <preset>.json + augment_<arm>.json
    init = {"pretrained": str(pretrained)} if pretrained else {}  # fine-tuning from these weights
    run_bundle(
        bundle, bundle_configs(bundle, "train", arm, preset), "train", seed=seed, **common, **init
    )
    t_train = time.perf_counter() - t0
    status("evaluating")
    run_bundle(
        bundle,
        bundle_configs(bundle, "evaluate", arm, preset),
        "infer",
        augment=arm,
        seed=seed,
        **common,
    )
    wall = time.perf_counter() - t0
    missing = [f for f in RUN_OUTPUTS if not (run_dir / f).is_file()]
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
    mark_done(done, rec)
    if records is not None:
        save_record(out, rel, records)
    return rec


def check_pretrained(
    pretrained: dict | None, models: Sequence[str], bundles: Path, preset: str, overrides: dict
) -> dict[str, Path]:
    """The ``pretrained`` weights per model, checked before any work: a model of this experiment,
    an existing file whose tensors fit that bundle's network for this preset.

    Raises:
        InputError: a model not in ``models``, a missing file, or weights of another network
            (naming the file and the first tensors that differ).
    """
    from .evaluate import check_checkpoint

    out: dict[str, Path] = {}
    for m, path in (pretrained or {}).items():
        if m not in models:
            raise InputError(
                "--pretrained", f"model '{m}' is not run in this experiment ({', '.join(models)})"
            )
        p = Path(path).resolve()
        if not p.is_file():
            raise InputError(p, "pretrained weights file does not exist")
        check_checkpoint(p, bundles / MODELS[m], preset, overrides, model=m)
        out[m] = p
    return out


def check_inputs(
    datalist: Path, out: Path, settings: dict, models: Sequence[str], bundles: Path
) -> None:
    """Check everything an experiment needs before any work; raise :class:`InputError` naming it.

    * settings that only some models use (Mask R-CNN validates every ``val_interval`` of its own
      ``maskrcnn_epochs``);
    * the datalist: training cases outside and inside the validation fold with a tumour (training,
      and choosing the best checkpoint), test cases with a tumour (the scores);
    * ``out``: not a file, not an input, not a non-empty folder of something else.
    """
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
    require_tumor(
        datalist, train, f"its training section outside the validation fold {k}", "to train"
    )
    require_tumor(datalist, val, f"the validation fold {k}", "to choose the best checkpoint")
    require_tumor(
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
    pretrained: dict[str, str | os.PathLike] | None = None,
    records: str | os.PathLike | None = None,
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
        progress: a bar over the runs (which model / arm / seed is under way, and its step) and,
            below it, each training run's bar of iterations with its ETA (the bundles'
            ``progress`` key).
        verbose: show the bundles' training logs.
        pretrained: model -> local weights file (a ``model.pt`` of the same bundle and preset
            widths, e.g. trained on the synthetic cohort): every run of that model starts from
            these weights instead of a random initialisation (fine-tuning). The file's content is
            part of the runs' fingerprint.
        records: a folder that keeps a copy of each finished run's results (``done.json``, the
            evaluation tables and history, about 30 kB a run; not the weights nor the predictions)
            and from which the runs missing in ``out_dir`` are restored (same key only). A folder
            in a repository keeps a grid that takes several sessions on machines that keep only
            what is committed. Records of another configuration for these runs are refused
            unless ``overwrite`` (then replaced as the runs finish).
    """
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
    init = check_pretrained(pretrained, models, bundles, preset, overrides)
    cfg = _fingerprint(dl, preset, settings, overrides, bundles, models, init)
    manifest = Manifest(out, MANIFEST, what="experiment", hint="use another --out")
    keys = dict(cfg["keys"])
    grid = [(m, a, s) for m in models for s in seed_list for a in arms]
    rels = {g: run_rel(*g) for g in grid}
    owned: set[str] = set()
    changed: list[str] = []
    old = manifest.read(required=("keys",))
    if old is not None:
        owned = owned_runs(out, old)
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
    rec_dir = Path(records).resolve() if records is not None else None
    if rec_dir is not None:
        refuse_overlap(rec_dir, [out, dl, bundles], "--records")
        if rec_dir.exists() and not rec_dir.is_dir():
            raise InputError("--records", f"{rec_dir} is a file, not a folder")
        other = record_conflicts(
            rec_dir, {rels[g]: _run_key(keys[g[0]], bundles, g[0], g[1]) for g in grid}
        )
        configs = {m: _model_config(cfg["datalist"], preset, settings, bundles, m) for m in models}
        if other and not overwrite:
            raise InputError(
                "--records",
                f"{rec_dir / other[0]} (and {len(other) - 1} more) holds the record of a run of "
                f"another configuration ({_records_differ(rec_dir, configs)}); use another "
                "--records folder or --overwrite to replace them",
            )
    foreign = [r for r in rels.values() if (out / r).exists() and r not in owned]
    if foreign:
        raise InputError(
            "--out",
            f"{out / foreign[0]} exists but was not written by this experiment; move it away "
            "or use another --out",
        )
    # checks done: from here on the folder is written
    # --overwrite: only the files of this model's runs, as the manifest lists them
    for m in changed:
        for r in sorted(owned):
            if r.startswith(f"runs/{safe_name(m)}/"):
                clear_run(out, r)
    out.mkdir(parents=True, exist_ok=True)
    manifest.write(
        {
            **cfg,
            "keys": keys,
            "models": list(models),
            "arms": list(arms),
            "seeds": seed_list,
            "runs": sorted(owned | set(rels.values())),
        }
    )
    # what a killed run left half-written: done records, the manifest, results.md
    remove_stale_partials(out, ("", *rels.values()))
    if rec_dir is not None:  # what the records' keys are made of: a later conflict names the change
        stored = _read_records_config(rec_dir)
        write_json_atomic({"models": {**stored, **configs}}, rec_dir / RECORDS_CONFIG)

    finished = []
    with progress_bar(total=len(grid), desc="experiment", unit="run", enabled=progress) as bar:
        for m, a, s in grid:
            rec = _run_one(
                bundles / MODELS[m],
                dl,
                out,
                rels[(m, a, s)],
                a,
                s,
                preset,
                overrides,
                _run_key(keys[m], bundles, m, a),
                verbose,
                progress,
                status=lambda step, run=f"{m} / {a} / seed {s}": bar.set_postfix_str(
                    f"{run}: {step}"
                ),
                pretrained=init.get(m),
                records=rec_dir,
            )
            finished.append({"model": m, **rec})
            bar.update(1)
    return write_results(
        out,
        dl,
        models,
        arms,
        seed_list,
        finished,
        preset,
        cfg.get("pretrained"),
        settings.get("lesion_banks"),
    )
