"""Score a trained bundle model on any datalist, the thesis' way (``metalung evaluate``).

:func:`evaluate_checkpoint` runs the bundle's ``evaluate.json`` (on top of its ``train.json``) with
a given checkpoint on a datalist section and returns the summary (the command line,
:mod:`metalung_monai.commands.evaluate`, prints it): DICE, IoU, Precision, Recall per test
tumour slice (mean over slices), DICE per Lung-RADS class, per-patient 3D DICE and false
positives on calcified nodules. Tables go to the output folder (``slices``, ``volumes``,
``per_class`` as CSV and Markdown, ``summary.json``). Use it to see how a model trained on the
phantom carries over to real CT converted with ``metalung convert`` (``pixel_mm`` resamples such
scans to the training pixel size first). 2D cases (a converted DICOM slice, a thesis-pickle
case) are single axial slices and are evaluated as such.

Nothing runs before every input is checked (model, settings, datalist section, output folder,
checkpoint: :func:`check_checkpoint`), and a failed evaluation leaves no output behind.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from ..errors import InputError
from ..utils.paths import refuse_overlap
from .bundle_run import MODELS, default_bundles_dir, run_bundle
from .inputs import datalist_files, require_tumor, section_entries
from .presets import preset as get_preset
from .workflow import bundle_configs

__all__ = ["evaluate_checkpoint", "check_checkpoint"]

#: the outputs without which an evaluation did not finish
_OUTPUTS = ("summary.json", "slices.csv", "volumes.csv")


def _bundle_dir(bundle: str) -> Path:
    if bundle in MODELS:
        b = default_bundles_dir() / MODELS[bundle]
    else:
        b = Path(bundle)
    if not (b / "configs" / "evaluate.json").is_file():
        raise InputError(
            "--model",
            f"{bundle!r} is not a model ({', '.join(MODELS)}) nor a bundle folder with "
            "configs/evaluate.json",
        )
    return b


def _network(bundle_dir: Path, preset: str, overrides: dict):
    """The network the bundle builds (``network_def`` of its ``train.json``), on the CPU."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "train.json"))
    parser.update(
        {"bundle_root": str(bundle_dir), "preset": preset, "preset_overrides": dict(overrides)}
    )
    return parser.get_parsed_content("network_def")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


def check_checkpoint(
    checkpoint: str | os.PathLike,
    bundle_dir: Path,
    preset: str = "quick",
    preset_overrides: dict | None = None,
    model: str | None = None,
) -> None:
    """Raise :class:`InputError` naming ``checkpoint`` unless the bundle's network can load it.

    Read as the bundle's ``CheckpointLoader`` reads it (``weights_only=True``: nothing but tensors
    is ever unpickled, so a malicious file cannot run code), then compared with the network the
    bundle builds for this preset: the same tensor names and shapes, finite values.
    """
    p = Path(checkpoint)
    what = model or bundle_dir.name
    if not p.is_file():
        raise InputError(p, "checkpoint file does not exist")
    size = p.stat().st_size
    if size == 0:
        raise InputError(p, "checkpoint file is empty (0 bytes)")
    with open(p, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one message, never torch's advice
        if isinstance(e, pickle.UnpicklingError):
            problem = (
                "is not a PyTorch checkpoint of weights: it holds Python objects other than tensors, or is not "
                "a torch.save file at all (refused: loading such objects could run code)"
            )
        elif is_zip:
            problem = "is a damaged or truncated PyTorch checkpoint (its archive cannot be read)"
        else:
            problem = f"is not a PyTorch checkpoint ({type(e).__name__}: {_first_line(e) or 'unreadable'})"
        if "weights_only" in problem:  # never pass on torch's advice to unpickle anything
            problem = "is not a PyTorch checkpoint of weights"
        raise InputError(p, problem) from None
    # what MONAI's CheckpointLoader does with load_dict {"model": network}
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not state:
        kind = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise InputError(
            p, f"holds {kind}, not the weights of a network (a state_dict: tensor names to tensors)"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InputError(
            p,
            f"holds {len(not_tensors)} entries that are not tensors (e.g. {str(not_tensors[0])[:80]!r}); "
            "not the weights of a network",
        )
    expected = _network(bundle_dir, preset, preset_overrides or {}).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of its {len(expected)} tensors missing (e.g. {missing[0]})"
            )
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} instead of "
                f"{tuple(expected[k].shape)})"
            )
        raise InputError(
            p,
            f"does not fit the {what} network of the '{preset}' preset: {'; '.join(parts)}. Was it "
            "trained with another --model or --preset?",
        )
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise InputError(
            p,
            f"holds NaN or infinite weights (in {len(bad)} of its tensors, e.g. {bad[0]}): the training "
            "diverged",
        )


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def evaluate_checkpoint(
    bundle: str,
    checkpoint: str,
    datalist: str,
    out_dir: str,
    section: str = "test",
    preset: str = "quick",
    preset_overrides: dict | None = None,
    verbose: bool = False,
) -> dict:
    """Evaluate ``checkpoint`` with ``bundle`` (a model name or a bundle folder); return the summary.

    Everything is checked before anything runs: the model, the settings, the datalist section (at
    least one case with a tumour), the output folder (not, in, or around an input: the datalist,
    its files, the checkpoint, the bundle) and the checkpoint (it must fit the bundle's network).
    The tables are written into a temporary folder beside ``out_dir`` and moved there at the end,
    so a failed evaluation leaves nothing behind (not even an empty ``out_dir``).

    Raises:
        InputError: naming the file or setting at fault (settings: a ``SettingError`` naming it).
    """
    b = _bundle_dir(bundle)
    overrides = dict(preset_overrides or {})
    get_preset(preset, **overrides)  # typed and ranged settings (pixel_mm included)
    dl = Path(datalist)
    if not dl.is_file():
        raise InputError(dl, "datalist file does not exist")
    entries = section_entries(dl, section, "to evaluate (choose it with --section)")
    require_tumor(dl, entries, f"its '{section}' section", "to score the model")
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint file does not exist")
    out = Path(os.path.abspath(out_dir))
    refuse_overlap(out, [*datalist_files(dl), ckpt, b], "--out")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} is a file, not a folder")
    check_checkpoint(ckpt, b, preset, overrides, model=bundle if bundle in MODELS else None)

    created = _missing_dirs(out.parent)
    tmp = out.parent / f".{out.name}.evaluate-{os.getpid()}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        run_bundle(
            b,
            bundle_configs(b, "evaluate", preset=preset),
            "infer",
            verbose=verbose,
            dataset_dir=str(dl.resolve().parent),
            datalist=str(dl.resolve()),
            eval_datalist=str(dl.resolve()),
            eval_section=section,
            preset_overrides=overrides,
            ckpt_dir=str(ckpt.resolve().parent),
            output_dir=str(tmp),
            **{"validate#handlers#0#load_path": str(ckpt.resolve())},
        )
        missing = [f for f in _OUTPUTS if not (tmp / f).is_file()]
        if missing:
            raise InputError(
                dl, f"the evaluation of its '{section}' section wrote no {', '.join(missing)}"
            )
        summary = json.loads((tmp / "summary.json").read_text())
        if (
            out.is_dir()
        ):  # an earlier evaluation's folder: its tables are replaced, other files kept
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
            tmp.rmdir()
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # the folders made for --out, deepest first (only when still empty)
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return summary
