"""Glue between the bundles' JSON configs and the package: config stacks, data, weights.

The bundles (``bundles/*/configs/*.json``) spell out their transforms, inferers and handlers as
``_target_`` entries, Model Zoo style; what they call here is what a JSON file cannot say:

* :func:`bundle_configs` names the config files of one run, stacked (``train.json`` + preset file
  + arm file), and :func:`bundle_parser` reads such a stack in Python;
* :func:`datalist_file`, :func:`training_samples`, :func:`validation_samples` and
  :func:`volume_data` read a datalist into samples (2D tumour slices for the thesis' protocol,
  files of whole volumes for 3D patches, evaluation and inference);
* :func:`arm_slot` reads an arm's override file when a run names its arm with ``augment`` instead
  of stacking the file (a shortcut: the file is the truth either way);
* :func:`train_sampler`: the order of the training samples, one stream of shuffled passes for
  the whole run (no loader restart between passes);
* :class:`CropToLungsd` (evaluation on the lungs' bounding box) and :func:`load_pretrained`
  (local weights, no download, ever).

Orientation: volumes are brought to ``PLS`` (``Orientationd`` in the configs; MONAI/nibabel
axcodes: array axes towards posterior, the patient's left, superior), so that an axial slice
``[:, :, z]`` is exactly the canonical ``(y, x)`` slice the 2D networks were trained on
(radiological display). A 2D image (a converted DICOM slice, a thesis-pickle case) is one axial
slice: it is evaluated as a volume of one slice
(:class:`~metalung_monai.training.as_volume.AsVolumed`), and predictions are written back in 2D.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import CropForegroundd
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..errors import InputError
from .arms import arm_config
from .data import entries_of, slice_samples, split_entries, volume_samples

__all__ = [
    "STAGES",
    "bundle_configs",
    "bundle_parser",
    "arm_slot",
    "insertion_banks",
    "datalist_file",
    "training_samples",
    "validation_samples",
    "volume_data",
    "load_pretrained",
    "train_sampler",
    "CropToLungsd",
]

#: what ``@train#samples`` is when an arm's file is read by the ``--augment`` shortcut
_NO_SAMPLES = "<the --augment shortcut: no training samples>"
#: the slots of ``train.json`` an arm's override file fills (see :mod:`.arms`), with their empty value
ARM_SLOTS = {"expansion": None, "hu_augmentation": [], "augmentation": []}

#: what a run stacks on its main config (``bundle_configs``): ``{preset}`` and ``{arm}`` files
STAGES = {
    "train": ("train.json", "{preset}", "{arm}"),
    "multi_gpu_train": ("train.json", "{preset}", "{arm}", "multi_gpu_train.json"),
    "evaluate": ("train.json", "{preset}", "evaluate.json"),
    "infer": ("inference.json", "{preset}"),
}


def bundle_configs(
    bundle_dir: str | os.PathLike, stage: str, arm: str | None = None, preset: str = "quick"
) -> list[str]:
    """The config files of one run of a bundle, in stacking order (names inside ``configs/``).

    ``bundle_configs(b, "train", "metalung", "quick")`` is
    ``["train.json", "quick.json", "augment_metalung.json"]``: pass them (prefixed with
    ``configs/``) to ``python -m monai.bundle run --config_file "[...]"``. ``"evaluate"`` and
    ``"infer"`` need no arm (evaluation does not augment); ``"multi_gpu_train"`` adds
    ``multi_gpu_train.json``.

    Raises:
        InputError: an unknown stage, a training stage without an arm, an unknown arm, or a file
            the bundle does not have.
    """
    if stage not in STAGES:
        raise InputError("stage", f"unknown stage {stage!r} (choose from {', '.join(STAGES)})")
    if "{arm}" in STAGES[stage] and arm is None:
        raise InputError("augment", f"stage '{stage}' needs an augmentation arm")
    names = []
    for part in STAGES[stage]:
        if part == "{preset}":
            part = f"{preset}.json"
        elif part == "{arm}":
            part = arm_config(arm)
        names.append(part)
    configs = Path(bundle_dir) / "configs"
    for name in names:
        if not (configs / name).is_file():
            raise InputError(
                configs / name, f"the bundle has no {name} (needed for stage '{stage}')"
            )
    return names


def bundle_parser(
    bundle_dir: str | os.PathLike,
    stage: str = "train",
    arm: str | None = "none",
    preset: str = "quick",
    **overrides,
) -> ConfigParser:
    """A ``ConfigParser`` holding a bundle's stacked configs (:func:`bundle_configs`) and overrides.

    ``bundle_parser(b, "train", "monai", dataset_dir=...).get_parsed_content("train#preprocessing")``
    is the training ``Compose`` of the arm, as ``python -m monai.bundle run`` builds it.
    """
    stage_arm = arm if "{arm}" in STAGES.get(stage, ()) else None
    files = [
        str(Path(bundle_dir) / "configs" / c)
        for c in bundle_configs(bundle_dir, stage, stage_arm, preset)
    ]
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": str(bundle_dir), **overrides})
    return parser


def arm_slot(
    bundle_root: str | os.PathLike, augment: str, slot: str, settings: dict, spatial_dims: int
):
    """Slot ``slot`` of ``train.json`` (``expansion``, ``hu_augmentation``, ``augmentation``) as
    arm ``augment``'s override file ``configs/augment_<augment>.json`` fills it.

    ``train.json`` uses this when the arm is named (``--augment metalung``) rather than stacked;
    a stacked arm file replaces these expressions with its own entries. The file's entries may
    refer to ``@settings`` and ``@spatial_dims`` (given here); the objects are those the stacked
    file gives.

    Raises:
        InputError: an unknown arm or slot, or an arm the bundle has no file for.
    """
    if slot not in ARM_SLOTS:
        raise InputError("arm slot", f"unknown slot {slot!r} (choose from {', '.join(ARM_SLOTS)})")
    path = Path(bundle_root) / "configs" / arm_config(augment)
    if not path.is_file():
        raise InputError(path, f"the bundle has no override file for the arm '{augment}'")
    parser = ConfigParser(
        {
            # train.json's import the arm files use (``mt.insertion_banks``)
            "imports": ["$import metalung_monai.training as mt"],
            "settings": dict(settings),
            "spatial_dims": spatial_dims,
            # the shortcut cannot see the run's training samples: an arm that needs them says so
            "train": {**ARM_SLOTS, "samples": _NO_SAMPLES},
        }
    )
    for key, value in ConfigParser.load_config_file(path).items():
        parser[key] = value
    return parser.get_parsed_content(f"train#{slot}")


def insertion_banks(
    settings: dict, names: Sequence[str] | str, samples: Sequence[dict] | None = None
) -> dict:
    """The lesion banks an insertion arm draws from: ``{name: bank}`` of the setting
    ``lesion_banks`` (``--set lesion_banks={'real': PATH, 'dcgan': PATH}``).

    ``names`` lists the banks the arm needs (``["real"]`` for ``copypaste``), or is
    ``"generated"``: every bank but ``real`` (the ``mixed`` arm). With ``samples`` (the run's
    training samples), a bank of real lesions keeps only the lesions of those samples' patients:
    a lesion of a validation or test patient (a cross-validation's other folds) never enters
    training. Generated banks are returned as their folders (a generator's training data is its
    own bundle's business); :class:`~metalung_monai.transforms.RandInsertLesiond` reads them.

    Raises:
        InputError: a bank the arm needs is not in ``lesion_banks`` (or, for ``"generated"``,
            no generated bank is), naming the setting and what to give; a real bank with no
            lesion of the training patients.
    """
    if isinstance(samples, str) and samples == _NO_SAMPLES:
        raise InputError(
            "augment",
            "an insertion arm keeps only the training patients' lesions, which the --augment "
            "shortcut cannot see: stack the arm's file instead, --config_file "
            "\"['configs/train.json','configs/quick.json','configs/augment_<arm>.json']\" "
            "(as metalung experiment does)",
        )
    banks = dict(settings.get("lesion_banks") or {})
    if names == "generated":
        chosen = {k: v for k, v in banks.items() if k != "real"}
        if not chosen:
            raise InputError(
                "lesion_banks",
                "this arm inserts generated lesions: give at least one generated bank, e.g. "
                "--set lesion_banks={'dcgan': 'outputs/synth/cohort/dcgan/generated'} "
                f"(given: {sorted(banks) or 'none'})",
            )
    else:
        missing = [n for n in names if n not in banks]
        if missing:
            raise InputError(
                "lesion_banks",
                f"this arm inserts lesions of the bank(s) {missing}: give them, e.g. --set "
                f"lesion_banks={{'{missing[0]}': PATH}} (given: {sorted(banks) or 'none'})",
            )
        chosen = {n: banks[n] for n in names}
    listed = [n for n, v in chosen.items() if isinstance(v, (list, tuple))]
    if listed and samples is None:
        raise InputError(
            "lesion_banks",
            f"bank(s) {listed} are lists, chosen per run by its training patients: give the "
            "run's training samples (as the insertion arms' files do)",
        )
    if samples is None:
        return chosen
    from ..synthesis.bank import read_bank

    patients = {str(s["patient_id"]) for s in samples}
    out: dict = {}
    for name, path in chosen.items():
        if isinstance(path, (list, tuple)):
            out[name] = fold_generated_bank(name, path, patients)
            continue
        bank = read_bank(path)
        t = bank.table
        if "source" in t.columns and (t["source"] == "generated").all():
            out[name] = path
            continue
        kept = bank.select(kind=None, patients=patients)
        kept.meta["path"] = os.fspath(path)
        if len(kept) == 0:
            raise InputError(
                path,
                f"bank '{name}' holds no lesion of the {len(patients)} training patients of this "
                "run (build it from the same datalist: metalung lesion-bank DATALIST)",
            )
        out[name] = kept
    return out


def generator_patients(bank) -> set[str] | None:
    """The patients whose lesions trained the generator of a generated bank: the ``train``
    lesions of the real bank its ``bank.json`` names (``real_bank``), which the generators'
    bundles train on; ``None`` for a bank of real lesions or one that names no real bank.

    Raises:
        InputError: the real bank it names cannot be read.
    """
    from ..synthesis.bank import read_bank

    t = bank.table
    if not ("source" in t.columns and (t["source"] == "generated").all()):
        return None
    real = bank.meta.get("real_bank")
    if not real:
        return None
    rt = read_bank(real).table
    if "subset" in rt.columns:
        rt = rt[rt["subset"] == "train"]
    return {str(p) for p in rt["patient_id"]}


def fold_generated_bank(name: str, paths: Sequence[str], patients: set[str]) -> str:
    """The first of ``paths`` (generated banks) whose generator was trained on lesions of
    ``patients`` only (:func:`generator_patients`): one generator per cross-validation fold,
    each run taking the one that never saw its validation or test patients.

    Raises:
        InputError: a path is not a generated bank, or none of them is honest for this run
            (naming each one's patients outside the run's training patients).
    """
    from ..synthesis.bank import read_bank

    seen = []
    for path in paths:
        trained = generator_patients(read_bank(path))
        if trained is None:
            raise InputError(
                f"lesion_banks['{name}']",
                f"{path} is not a generated bank naming its real bank: a list of banks is for "
                "one generator per fold (a real bank is filtered by patient instead)",
            )
        if trained <= patients:
            return os.fspath(path)
        seen.append(f"{path}: {sorted(trained - patients)}")
    raise InputError(
        f"lesion_banks['{name}']",
        f"no generator of the list was trained on this run's {len(patients)} training patients "
        "only (patients outside them: " + "; ".join(seen) + "); train one per fold from "
        "`metalung lesion-bank FOLD_DATALIST --val-fold V`",
    )


def train_sampler(
    dataset: Sequence, sampler: str, num_samples: int, seed: int
) -> torch.utils.data.Sampler | None:
    """The training loader's sampler (``sampler`` setting), seeded by the run's ``seed``.

    ``"stream"``: every sample the run will draw (``num_samples``: epochs x epoch_length x batch
    size) in one stream of whole shuffled passes over ``dataset`` (each pass a fresh permutation,
    the last one cut short), so the loader is iterated once for the whole run. A run's epochs are
    ``epoch_length`` iterations whatever the dataset's size (the presets' equal-compute rule), so
    with ``"epoch"`` (torch's ``shuffle=True``: one pass per loader iterator) a small training set
    (56 slices: a pass of 3.5 batches of 16) makes ignite restart the loader every 4 iterations,
    and each restart waits for its worker to build a first batch from scratch and ends the pass
    with a short batch (8 samples). Measured with ``scripts/bench_loader.py`` (see docs).

    Returns:
        a :class:`torch.utils.data.RandomSampler` for ``"stream"`` (give the loader
        ``shuffle=False``), ``None`` for ``"epoch"`` (give it ``shuffle=True``).

    Raises:
        InputError: an unknown ``sampler``, or an empty dataset.
    """
    if sampler == "epoch":
        return None
    if sampler != "stream":
        raise InputError("sampler", f"expected 'stream' or 'epoch', got {sampler!r}")
    if len(dataset) == 0:
        raise InputError("train#dataset", "no training samples")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return torch.utils.data.RandomSampler(
        dataset, replacement=False, num_samples=int(num_samples), generator=g
    )


def datalist_file(dataset_dir: str | os.PathLike | None) -> str:
    """``<dataset_dir>/datalist.json``: the default datalist of a bundle.

    Raises:
        InputError: ``dataset_dir`` is not set or is not a folder.
    """
    if dataset_dir in (None, ""):
        raise InputError(
            "dataset_dir",
            "not set: run with --dataset_dir /path/to/cohort (a folder holding the datalist.json "
            "written by `metalung phantom` or `metalung convert`), or --datalist /path/to/datalist.json",
        )
    d = Path(dataset_dir)
    if not d.is_dir():
        raise InputError(d, "dataset_dir is not a folder")
    return str(d / "datalist.json")


def _check_mode(train_mode: str, spatial_dims: int) -> None:
    if train_mode not in ("slices", "patches"):
        raise InputError("train_mode", f"must be 'slices' or 'patches', got '{train_mode}'")
    if (train_mode == "slices") != (spatial_dims == 2):
        raise InputError(
            "train_mode",
            f"'{train_mode}' needs spatial_dims {2 if train_mode == 'slices' else 3}, "
            f"got {spatial_dims}",
        )


def _samples(entries: list[dict], train_mode: str) -> list[dict]:
    return slice_samples(entries) if train_mode == "slices" else volume_samples(entries)


def training_samples(
    datalist: str | os.PathLike,
    val_fold: int | None,
    train_mode: str = "slices",
    spatial_dims: int = 2,
) -> list[dict]:
    """The training samples of a datalist (its ``training`` section outside fold ``val_fold``).

    ``"slices"`` (``spatial_dims`` 2): the tumour slices of every case, in memory (the thesis'
    protocol); ``"patches"`` (3): the files of every case with a mask, for ``LoadImaged``.

    Raises:
        InputError: an inconsistent mode, no training case left outside the validation fold, or
            no sample with a tumour.
    """
    _check_mode(train_mode, spatial_dims)
    train_e, _ = split_entries(entries_of(datalist, "training"), val_fold)
    if not train_e:
        raise InputError(datalist, "no training cases left after setting the validation fold aside")
    out = _samples(train_e, train_mode)
    if not out:
        raise InputError(datalist, "no training samples with a tumour")
    return out


def validation_samples(
    datalist: str | os.PathLike, val_fold: int | None, train_mode: str = "slices"
) -> list[dict]:
    """The validation samples: the training section's cases of fold ``val_fold`` (none when None).

    Raises:
        InputError: ``val_fold`` is set but its cases hold no tumour (the validator would fail
            after the first epoch).
    """
    _, val_e = split_entries(entries_of(datalist, "training"), val_fold)
    out = _samples(val_e, train_mode)
    if not out and val_fold is not None:
        raise InputError(
            datalist,
            f"no validation samples with a tumour in the validation fold {val_fold} "
            f"(training cases with that 'fold': {len(val_e)})",
        )
    return out


def volume_data(datalist: str | os.PathLike, section: str = "test") -> list[dict]:
    """Whole-volume samples of a datalist section (files), with their metadata."""
    out = []
    for e in entries_of(datalist, section):
        s = {
            "image": e["image"],
            "patient_id": str(e["patient_id"]),
            "case_id": str(e.get("case_id") or Path(e["image"]).name.split(".")[0]),
            "lung_rads": str(e.get("lung_rads") or "LR1"),
        }
        if e.get("mask"):
            s["label"] = e["mask"]
        if e.get("lung_mask"):
            s["lung"] = e["lung_mask"]
        out.append(s)
    return out


class CropToLungsd:
    """Crop every key to the bounding box of the lungs (``lung`` key) plus ``margin`` voxels.

    Evaluation only looks where tumours can be: the slices and the in-plane region that hold
    lung (faster, and false positives are counted inside the chest). A sample without a ``lung``
    key is returned unchanged (then the whole volume is evaluated).

    Args:
        keys: keys to crop (``image``, ``label``, ``lung``; missing ones are skipped).
        margin: voxels added on every side of the lungs' bounding box.
    """

    def __init__(self, keys: Sequence[str], margin: int = 4) -> None:
        self.keys = tuple(keys)
        self.margin = int(margin)

    def __call__(self, data: dict) -> dict:
        if "lung" not in data:
            return data
        crop = CropForegroundd(
            keys=self.keys,
            source_key="lung",
            margin=self.margin,
            allow_smaller=True,
            allow_missing_keys=True,
        )
        return crop(data)


def load_pretrained(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Load local weights into ``network`` when ``path`` is given; return the network.

    Accepts a plain ``state_dict``, a checkpoint dict holding one under ``model``/``network``/
    ``state_dict``, and weights saved from ``DistributedDataParallel`` (``module.`` prefix).
    Nothing is ever downloaded.

    Raises:
        InputError: the file does not exist, cannot be read, or does not fit the network.
    """
    if path in (None, "", "None", "none"):
        return network
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "pretrained weights file does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise InputError(p, f"cannot be read as PyTorch weights ({type(e).__name__}: {e})") from e
    for key in ("model", "network", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    consume_prefix_in_state_dict_if_present(state, "module.")
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(p, f"weights do not fit the network: {str(e).splitlines()[0]}") from e
    return network
