"""Training presets: ``quick`` (2 CPU cores, minutes), ``full`` (thesis scale, one GPU) and
``patches`` (small real patches such as the 48-pixel MSD ones, 2 CPU cores, under a minute a run).

The presets' values live in the bundles, as Model Zoo override files:
``bundles/<bundle>/configs/quick.json`` and ``full.json`` (``{"preset": ..., "preset_settings":
{...}}``), stacked on ``train.json`` / ``inference.json``. Each bundle's file holds the settings
that bundle uses; :data:`PRESETS` is their union, read from those files (a setting two bundles
share must have the same value in both: :func:`load_presets` refuses files that disagree). This
module holds no second copy of a value: it types and ranges every setting (:data:`SETTINGS`,
:func:`check_setting`) and resolves a preset with overrides (:func:`preset`, and
:func:`bundle_settings` inside a bundle).

Every arm of an experiment uses the same preset: same number of iterations, batch size, crop
size, optimiser and seeds, so augmentations are compared at equal compute. Why some values are
what they are:

* ``window`` (-1000, 600) HU -> [0, 1] keeps calcification (> 200 HU) apart from tumour;
* ``val_fold``: the training patients of this fold validate (best checkpoint);
* ``pos_neg`` (1, 1): crop centres on tumour vs elsewhere; ``eval_roi``: the whole-slice inference
  window (larger slices are tiled); ``pixel_mm``: evaluation and inference resample in-plane to
  this pixel size (mm) when set;
* ``quick``: 128-pixel training patches (3D: 96 x 96 x 16), 24 epochs of 25 iterations (600
  iterations whatever the dataset size);
* ``quick`` Mask R-CNN, from scratch: whole slices, not patches (trained on 96-pixel crops it scored
  0.92 on tumour crops and 0.18 on the same slices whole: the context must match inference), a
  slim FPN and box/mask heads (64 channels instead of 256, a 256-wide box MLP instead of 1,024:
  12.5 M parameters instead of 30.9 M, 31-37 ms per 256-pixel slice instead of 88-105), AdamW
  one-cycle and half-positive RoI sampling; 20 epochs of 25 iterations of 2 slices, about 0.2 s
  each on 2 cores. After 500-600 iterations from scratch the detections' scores are low (median
  best score on a tumour of a training slice 0.26): torchvision's customary 0.5 discarded every
  detection (DICE 0 on every validation and test slice), so ``maskrcnn_score_threshold`` 0.2 was
  chosen on the validation fold;
* ``patches``: ``quick`` sized for 48 x 48 patches (the MSD lung-cancer patches at 2 mm): crops
  and inference window 48 pixels, 8 epochs of 20 iterations (160 iterations of 16 patches, 28-45 s
  per U-Net or DeepLabV3 run on 2 cores), validation on fold 1, so a grid of 2 models x 4 arms
  x 3 folds x 3 seeds fits in 90 minutes of CPU;
* ``lesion_banks`` (name -> folder, empty by default) and ``insert_prob`` (0.5): the lesion
  banks the insertion arms (``copypaste``, ``vqvae``, ``dcgan``, ``diffusion``, ``mixed``) draw
  from and the probability of an insertion per sample; ``real`` is the bank of real lesions
  (``metalung lesion-bank`` of the training patients), the others generated ones; a generated
  bank may be a list of folders, one generator per cross-validation fold: each run takes the
  first whose generator saw its training patients only;
* ``sampler`` ``stream``: the training loader draws one stream of shuffled passes for the whole
  run instead of one pass per iterator (``epoch``), so a small training set does not restart the
  loader every few iterations (:func:`~metalung_monai.training.workflow.train_sampler`; on one
  process: ``multi_gpu_train.json`` keeps its ``DistributedSampler``);
* ``full``: 20,000 iterations (200 x 100); ``num_workers`` 12, measured on one H100 with 16 CPU
  cores (U-Net, 256 crops, AMP): 4 loader workers left the GPU waiting 43 % of the loop's time,
  12 workers 14 %.

Every setting is typed and ranged in one place (:data:`SETTINGS`, checked by :func:`preset` and
:func:`bundle_settings`), so an override from ``metalung experiment --set``, ``metalung evaluate
--pixel-mm``, a bundle's ``--preset_overrides`` or ``--preset_settings#KEY`` is refused up front
with a :class:`SettingError` naming the setting, instead of failing (or silently doing something
else) deep inside a training run.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError

__all__ = [
    "BUNDLES_DIR",
    "PRESETS",
    "SETTINGS",
    "SettingError",
    "bundle_settings",
    "check_setting",
    "load_presets",
    "preset",
    "read_preset",
]

#: the repository's ``bundles/`` (beside the package in a source checkout): the presets' values
BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
#: the presets every bundle provides (``configs/<name>.json``)
PRESET_NAMES = ("quick", "full", "patches")


class SettingError(InputError):
    """A preset setting (``--set KEY=VALUE``, ``--pixel-mm``, ``preset_overrides``) that cannot be used.

    Args:
        setting: the setting's name (``"epochs"``).
        problem: what is wrong, in words a user can act on.
        source: what to name in the message (default ``"preset setting 'epochs'"``); the command
            line names its option instead (``"--set epochs"``, ``"--pixel-mm"``).
    """

    def __init__(self, setting: str, problem: str, source: str | None = None) -> None:
        self.setting = setting
        super().__init__(source or f"preset setting '{setting}'", problem)

    def __reduce__(self):
        return (type(self), (self.setting, self.problem, self.source))

    def renamed(self, source: str) -> SettingError:
        """The same error naming ``source`` (a command-line option) instead."""
        return SettingError(self.setting, self.problem, source)


# --------------------------------------------------------------------------- the checks
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    # Python numbers only (numpy's float64 is one): settings are written to JSON manifests
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, hi: int, multiple: int = 1) -> Callable[[object], str | None]:
    def check(v):
        if not _is_int(v):
            return f"expected a whole number from {lo} to {hi}, got {v!r}"
        if not lo <= v <= hi:
            return f"must be from {lo} to {hi}, got {v}"
        if v % multiple:
            return f"must be a multiple of {multiple} (the networks halve the size several times), got {v}"
        return None

    return check


def _float(
    lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> Callable[[object], str | None]:
    def check(v):
        if not _is_number(v):
            return f"expected a number, got {v!r}"
        x = float(v)
        if not math.isfinite(x):
            return f"must be a finite number, got {v!r}"
        if x < lo or x > hi or (lo_open and x == lo) or (hi_open and x == hi):
            return f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, got {v!r}"
        return None

    return check


def _bool(v) -> str | None:
    return None if isinstance(v, bool) else f"expected True or False, got {v!r}"


def _seq(
    item: Callable[[object], str | None], n: int | None = None, min_n: int = 1, max_n: int = 16
):
    def check(v):
        if (
            isinstance(v, (str, bytes, dict))
            or not hasattr(v, "__len__")
            or not hasattr(v, "__iter__")
        ):
            return f"expected a list such as (a, b, ...), got {v!r}"
        if n is not None and len(v) != n:
            return f"expected {n} values, got {len(v)}: {v!r}"
        if n is None and not min_n <= len(v) <= max_n:
            return f"expected {min_n} to {max_n} values, got {len(v)}: {v!r}"
        for x in v:
            problem = item(x)
            if problem:
                return f"{problem} (in {v!r})"
        return None

    return check


def _choice(*values: str) -> Callable[[object], str | None]:
    def check(v):
        return None if v in values else f"expected one of {', '.join(map(repr, values))}, got {v!r}"

    return check


def _window(v) -> str | None:
    problem = _seq(_float(-4096.0, 65535.0), n=2)(v)
    if problem:
        return problem
    if not float(v[0]) < float(v[1]):
        return f"expected (low, high) HU with low < high, got {v!r}"
    return None


def _pos_neg(v) -> str | None:
    problem = _seq(_float(0.0, 1000.0), n=2)(v)
    if problem:
        return problem
    if float(v[0]) + float(v[1]) <= 0:
        return f"expected (tumour, elsewhere) crop weights, not both 0, got {v!r}"
    return None


def _ops(v) -> str | None:
    from ..transforms import METALUNG_OPS

    problem = _seq(
        lambda x: None if isinstance(x, str) else f"expected an operation name, got {x!r}"
    )(v)
    if problem:
        return problem
    bad = [x for x in v if x not in METALUNG_OPS]
    if bad:
        return f"unknown operation(s) {bad}; choose from {', '.join(METALUNG_OPS)}"
    if len(set(v)) != len(v):
        return f"an operation is listed twice: {v!r}"
    return None


def _backbone(v) -> str | None:
    from ..networks.maskrcnn import SUPPORTED_BACKBONES

    return (
        None
        if v in SUPPORTED_BACKBONES
        else f"unknown backbone {v!r}; choose from {', '.join(SUPPORTED_BACKBONES)}"
    )


def _pixel_mm(v) -> str | None:
    if v is None:
        return None
    if _float(0.1, 10.0)(v) is None:
        return None
    return f"expected the pixel size in mm to resample to, from 0.1 to 10 (e.g. 1.4), got {v!r}"


def _lesion_banks(v) -> str | None:
    if not isinstance(v, dict):
        return f"expected a dictionary such as {{'real': 'PATH', 'dcgan': 'PATH'}}, got {v!r}"
    for name, path in v.items():
        paths = path if isinstance(path, (list, tuple)) else [path]
        if (
            not isinstance(name, str)
            or not name
            or not paths
            or not all(isinstance(p, str) and p for p in paths)
        ):
            return (
                "expected bank names and folder paths (or lists of them: one generator per "
                f"fold) as strings, got {name!r}: {path!r}"
            )
    return None


_SIZE = _int(16, 4096, multiple=16)

#: every setting of a preset and its check (a function returning the problem, or None when fine)
SETTINGS: dict[str, Callable[[object], str | None]] = {
    "window": _window,
    "val_fold": _int(0, 1000),
    "pos_neg": _pos_neg,
    "lr": _float(0.0, 10.0, lo_open=True),
    "weight_decay": _float(0.0, 10.0),
    "metalung_ops": _ops,
    "metalung_copies": _int(1, 100),
    "eval_roi": _SIZE,
    "pixel_mm": _pixel_mm,
    "crop": _SIZE,
    "crop_3d": _seq(_SIZE, n=3),
    "batch_size": _int(1, 4096),
    "epochs": _int(1, 1_000_000),
    "epoch_length": _int(1, 10_000_000),
    "val_interval": _int(1, 1_000_000),
    "num_workers": _int(0, 256),
    "sampler": _choice("stream", "epoch"),
    "amp": _bool,
    "unet_channels": _seq(_int(1, 4096), min_n=2, max_n=8),
    "unet_strides": _seq(_int(1, 4), min_n=1, max_n=7),
    "deeplab_channels": _seq(_int(1, 4096), min_n=2, max_n=8),  # output stride 8 needs two stages
    "deeplab_aspp_channels": _int(1, 4096),
    "deeplab_aspp_rates": _seq(_int(1, 256), min_n=1, max_n=8),
    "maskrcnn_backbone": _backbone,
    "maskrcnn_fpn_channels": _int(1, 4096),
    "maskrcnn_representation_size": _int(1, 65536),
    "maskrcnn_crop": _int(32, 4096),
    "maskrcnn_pos_neg": _pos_neg,
    "maskrcnn_batch_size": _int(1, 4096),
    "maskrcnn_epochs": _int(1, 1_000_000),
    "maskrcnn_lr": _float(0.0, 10.0, lo_open=True),
    "maskrcnn_score_threshold": _float(0.0, 1.0, hi_open=True),
    "sw_batch_size": _int(1, 4096),
    "lesion_banks": _lesion_banks,
    "insert_prob": _float(0.0, 1.0),
}


def check_setting(key: str, value, source: str | None = None) -> None:
    """Raise :class:`SettingError` unless ``value`` is a valid value of setting ``key``.

    Args:
        key: a setting of :data:`SETTINGS`.
        value: the value to check (not converted: ``"4"`` is not the number 4).
        source: what the error names (default ``"preset setting '<key>'"``).
    """
    if key not in SETTINGS:
        close = sorted(k for k in SETTINGS if key and (key in k or k in key))
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise SettingError(
            key, f"unknown setting{hint}; settings are {', '.join(SETTINGS)}", source
        )
    problem = SETTINGS[key](value)
    if problem:
        raise SettingError(key, problem, source)


def _check_together(s: dict, changed: set[str]) -> None:
    """Checks that involve two settings (named after the one the user changed).

    A check whose settings are not all in ``s`` is skipped: a bundle's settings hold only what that
    bundle uses (the Mask R-CNN bundle has no ``unet_strides``)."""

    def culprit(*keys):
        return next((k for k in keys if k in changed), keys[0])

    def has(*keys):
        return all(k in s for k in keys)

    if has("val_interval", "epochs") and s["val_interval"] > s["epochs"]:
        k = culprit("val_interval", "epochs")
        raise SettingError(
            k,
            f"val_interval {s['val_interval']} exceeds epochs {s['epochs']}: the model would never "
            "be validated, so no best checkpoint (model.pt) would be saved",
        )
    if not has("unet_strides", "unet_channels"):
        return
    if len(s["unet_strides"]) != len(s["unet_channels"]) - 1:
        k = culprit("unet_strides", "unet_channels")
        raise SettingError(
            k,
            f"unet_strides needs one value fewer than unet_channels, got {len(s['unet_strides'])} "
            f"strides for {len(s['unet_channels'])} channels",
        )
    down = math.prod(int(x) for x in s["unet_strides"])
    for key in ("crop", "eval_roi", "crop_3d"):
        if key not in s:
            continue
        sizes = list(s[key]) if key == "crop_3d" else [s[key]]
        if any(int(x) % down for x in sizes):
            k = culprit(key, "unet_strides")
            raise SettingError(
                k,
                f"{key} {s[key]!r} must be a multiple of {down}, the U-Net's total stride "
                f"(unet_strides {tuple(s['unet_strides'])})",
            )


def _typed(value):
    """A JSON value as the settings hold it: lists become tuples (``(-1000.0, 600.0)``)."""
    return tuple(_typed(v) for v in value) if isinstance(value, list) else value


def read_preset(bundle_root: str | os.PathLike, name: str) -> dict:
    """The ``preset_settings`` of a bundle's preset file ``<bundle_root>/configs/<name>.json``.

    Lists are returned as tuples; nothing is checked here (:func:`bundle_settings` does).

    Raises:
        InputError: an unknown preset (no such file), or a file without a ``preset_settings``
            dictionary.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError("preset", f"expected a preset name such as 'quick', got {name!r}")
    path = Path(bundle_root) / "configs" / f"{name}.json"
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.json") if p.stem in PRESET_NAMES)
        raise InputError(
            "preset", f"unknown preset {name!r}: no {path} (this bundle has: {', '.join(have)})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"cannot be read as JSON ({e})") from e
    values = data.get("preset_settings") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise InputError(path, "has no 'preset_settings' dictionary")
    return {k: _typed(v) for k, v in values.items()}


def load_presets(bundles_dir: str | os.PathLike = BUNDLES_DIR) -> dict[str, dict]:
    """Every preset: the union of the bundles' preset files (``<bundle>/configs/<name>.json``).

    Raises:
        InputError: two bundles give one setting different values (one preset, one value), or a
            preset file is missing or unreadable.
    """
    out: dict[str, dict] = {}
    # the segmentation bundles only (bundle_run.MODELS, ``<model>_lung_tumor``): the generative
    # bundles (``*_lesion_synth``) have presets of their own, without these settings
    bundles = sorted(
        p.parents[1] for p in Path(bundles_dir).glob("*_lung_tumor/configs/train.json")
    )
    for name in PRESET_NAMES:
        merged: dict = {}
        origin: dict[str, Path] = {}
        for b in bundles:
            for key, value in read_preset(b, name).items():
                if key in merged and merged[key] != value:
                    raise InputError(
                        b / "configs" / f"{name}.json",
                        f"setting '{key}' is {value!r} here but {merged[key]!r} in "
                        f"{origin[key] / 'configs' / f'{name}.json'}: one preset, one value",
                    )
                merged.setdefault(key, value)
                origin.setdefault(key, b)
        if merged:
            out[name] = merged
    return out


#: every preset (``quick``, ``full``), read from the bundles' preset files: setting -> value
PRESETS: dict[str, dict] = load_presets() if BUNDLES_DIR.is_dir() else {}


def _resolve(base: dict, name: str, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in out.items():
        if key not in overrides:
            check_setting(key, value)
    for key, value in overrides.items():
        check_setting(key, value)
    out.update(overrides)
    _check_together(out, set(overrides))
    out["name"] = name
    return out


def preset(name: str, **overrides) -> dict:
    """A copy of preset ``name`` (``"quick"`` or ``"full"``) with ``overrides`` applied.

    Raises:
        InputError: an unknown preset name.
        SettingError: an unknown setting, or a value of the wrong type or out of range (see
            :data:`SETTINGS`), naming the setting.
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise InputError("preset", f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return _resolve(PRESETS[name], name, overrides)


def bundle_settings(preset_settings: dict, overrides: dict | None = None, name: str = "") -> dict:
    """A bundle's settings: its preset file's ``preset_settings`` with ``preset_overrides`` applied.

    Every value is checked (:data:`SETTINGS`), including those of the preset file and those
    overridden on the command line (``--preset_settings#epochs 2``); lists become tuples.

    Raises:
        SettingError: an unknown setting, or a value of the wrong type or out of range.
    """
    if not isinstance(preset_settings, dict):
        raise InputError("preset_settings", f"expected a dictionary, got {preset_settings!r}")
    if not isinstance(overrides or {}, dict):
        raise InputError("preset_overrides", f"expected a dictionary, got {overrides!r}")
    base = {k: _typed(v) for k, v in preset_settings.items()}
    return _resolve(base, name, {k: _typed(v) for k, v in (overrides or {}).items()})
