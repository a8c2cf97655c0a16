"""``experiment`` and ``evaluate`` against careless and hostile inputs (issue 9: #1, #3, #7, #9, #10, #11, #13f).

Every refusal is one line on stderr naming the file or option, before any work, and leaves no
output behind. The data are tiny synthetic 2D slices (``chest_factory``), the same slices stored as
3D volumes of one slice, and an untrained checkpoint of the bundle's U-Net; one experiment trains
two iterations on the 2D slices (the whole grid machinery, end to end).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from chest_factory import make_chest

from metalung_monai import cli
from metalung_monai.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "epochs": 1,
    "epoch_length": 2,
    "val_interval": 1,
    "batch_size": 2,
    "num_workers": 0,
    "crop": 64,
    "eval_roi": 128,
    "sw_batch_size": 4,
}
SETS = sum((["--set", f"{k}={v!r}"] for k, v in TINY.items()), [])
NP = ["--no-progress"]


class _Shell:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _write(arr: np.ndarray, path: Path, spacing) -> None:
    img = sitk.GetImageFromArray(
        arr
    )  # canonical (y, x) / (z, y, x) with the identity direction (LPS)
    img.SetSpacing(tuple(spacing))
    sitk.WriteImage(img, str(path), useCompression=True)


def _datalist(entries_train, entries_test, **extra) -> dict:
    dl = {
        "name": "t",
        "version": 1,
        "modality": "CT",
        "labels": {"0": "background", "1": "tumour"},
        "training": entries_train,
        **extra,
    }
    if entries_test is not None:
        dl["test"] = entries_test
    return dl


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """Four 2D tumour slices (folds 0, 1, 1 and one test case), as 2D files and as 3D one-slice volumes."""
    root = tmp_path_factory.mktemp("hardening")
    for sub in ("images2d", "masks2d", "images3d", "masks3d"):
        (root / sub).mkdir()
    cases = []
    for k in range(4):
        c = make_chest(shape=(96, 128), tumours=(("left" if k % 2 else "right", 7.0),), seed=20 + k)
        name = f"C{k}"
        _write(c.hu, root / "images2d" / f"{name}.nii.gz", (0.8, 0.8))
        _write(c.mask, root / "masks2d" / f"{name}.nii.gz", (0.8, 0.8))
        _write(c.hu[None], root / "images3d" / f"{name}.nii.gz", (0.8, 0.8, 2.5))
        _write(c.mask[None], root / "masks3d" / f"{name}.nii.gz", (0.8, 0.8, 2.5))
        cases.append(name)

    def entries(dim, names, folds=None):
        return [
            {
                "image": f"images{dim}/{n}.nii.gz",
                "mask": f"masks{dim}/{n}.nii.gz",
                "patient_id": f"P{n}",
                "case_id": n,
                "lung_rads": "LR3",
                **({"fold": folds[i]} if folds else {}),
            }
            for i, n in enumerate(names)
        ]

    for dim in ("2d", "3d"):
        (root / f"dl{dim}.json").write_text(
            json.dumps(_datalist(entries(dim, cases[:3], [0, 1, 1]), entries(dim, cases[3:])))
        )
    train = entries("2d", cases[:3], [0, 1, 1])
    (root / "no_test.json").write_text(json.dumps(_datalist(train, None)))
    (root / "empty_test.json").write_text(json.dumps(_datalist(train, [])))
    (root / "no_folds.json").write_text(
        json.dumps(_datalist(entries("2d", cases[:3]), entries("2d", cases[3:])))
    )
    (root / "val_fold_only.json").write_text(
        json.dumps(_datalist(entries("2d", cases[:3], [0, 0, 0]), entries("2d", cases[3:])))
    )
    no_tumour = [dict(e, mask=None) for e in train]
    (root / "no_tumour.json").write_text(json.dumps(_datalist(no_tumour, entries("2d", cases[3:]))))
    test_no_mask = [dict(e, mask=None) for e in entries("2d", cases[3:])]
    (root / "test_no_mask.json").write_text(json.dumps(_datalist(train, test_no_mask)))
    # an untrained checkpoint of the bundle's U-Net (quick preset): fits, so every check is reached
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "unet_lung_tumor" / "configs" / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / "unet_lung_tumor")})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "unet.pt")
    return root


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def _one_line(err: str, cmd: str, culprit: str) -> str:
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err!r}"
    assert lines[0].startswith(f"metalung {cmd}: error: "), lines[0]
    assert culprit in lines[0], f"{culprit!r} not named in {lines[0]!r}"
    return lines[0]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- #7 and #10: settings
def test_every_preset_setting_is_typed_and_ranged():
    from metalung_monai.training import PRESETS, preset

    for name in PRESETS:  # the presets themselves pass, unchanged
        assert {k: v for k, v in preset(name).items() if k != "name"} == PRESETS[name]
    assert preset("quick", **TINY)["crop"] == 64
    bad = {
        "foo": 1,
        "epochs": 0,
        "batch_size": 0,
        "lr": float("nan"),
        "weight_decay": -1.0,
        "epoch_length": 2.5,
        "crop": 100,
        "eval_roi": -4,
        "window": (600, -1000),
        "pos_neg": (0, 0),
        "amp": 1,
        "num_workers": True,
        "metalung_ops": ("mirror", "bogus"),
        "unet_channels": (8,),
        "maskrcnn_backbone": "vgg",
        "maskrcnn_score_threshold": 1.0,
        "pixel_mm": 0.0,
        "val_fold": -1,
        "crop_3d": (96, 96),
    }
    for key, value in bad.items():
        with pytest.raises(InputError, match=f"'{key}'"):
            preset("quick", **{key: value})
    for value in (0, -1.0, float("nan"), float("inf"), 1000.0, "1.4"):
        with pytest.raises(InputError, match="pixel_mm"):
            preset("quick", pixel_mm=value)
    assert preset("quick", pixel_mm=1.4)["pixel_mm"] == 1.4
    with pytest.raises(InputError, match="val_interval"):  # never validated: no best checkpoint
        preset("quick", val_interval=30)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1000"])
def test_evaluate_refuses_a_pixel_size_that_is_not_one(ws, tmp_path, capsys, value):
    out = tmp_path / "ev"
    rc, err = _cli(
        [
            "evaluate",
            ws / "unet.pt",
            "--datalist",
            ws / "dl3d.json",
            f"--pixel-mm={value}",
            "--out",
            out,
        ],
        capsys,
    )
    assert rc == 1
    _one_line(err, "evaluate", "--pixel-mm")
    assert not out.exists()


@pytest.mark.parametrize(
    "setting",
    [
        "foo=1",
        "epochs=0",
        "batch_size=0",
        "lr=nan",
        "window=(1,)",
        "val_interval=2",
        "crop=-4",
        "epochs=1e12",
    ],
)
def test_experiment_refuses_a_bad_setting_before_any_work(ws, tmp_path, capsys, setting):
    out = tmp_path / "exp"
    rc, err = _cli(
        [
            "experiment",
            "--datalist",
            ws / "dl2d.json",
            "--augment",
            "none",
            "--seeds",
            "1",
            "--out",
            out,
            *SETS,
            "--set",
            setting,
            *NP,
        ],
        capsys,
    )
    assert rc == 1
    _one_line(err, "experiment", f"--set {setting.split('=')[0]}")
    assert not out.exists()


def test_the_commands_name_every_model_and_read_settings_as_literals():
    from metalung_monai.commands.experiment import MODEL_NAMES, parse_set
    from metalung_monai.training.bundle_run import MODELS

    assert MODEL_NAMES == tuple(MODELS)  # the light command module spells the registry's names
    from metalung_monai.commands.experiment import PRESET_NAMES as CLI_PRESETS
    from metalung_monai.training.presets import PRESET_NAMES

    assert CLI_PRESETS == PRESET_NAMES
    assert parse_set(["epochs=4", "lr=1e-3", "window=(-1000, 400)", "amp=False", "x= adam "]) == {
        "epochs": 4,
        "lr": 0.001,
        "window": (-1000, 400),
        "amp": False,
        "x": "adam",
    }
    with pytest.raises(InputError, match="--set: expected KEY=VALUE, got 'epochs'"):
        parse_set(["epochs"])


# --------------------------------------------------------------------------- #10: checkpoints
def _bad_checkpoints(ws: Path, d: Path) -> dict[str, Path]:
    (d / "garbage.pt").write_bytes(b"not a checkpoint at all")
    (d / "empty.pt").write_bytes(b"")
    with open(d / "malicious_pickle.pt", "wb") as fh:
        pickle.dump(_Shell(d / "pwned"), fh)
    torch.save({"model": _Shell(d / "pwned")}, d / "malicious_zip.pt")
    data = (ws / "unet.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(torch.zeros(3), d / "tensor.pt")
    state = torch.load(ws / "unet.pt", weights_only=True)
    state[next(iter(state))].view(-1)[0] = float("nan")
    torch.save(state, d / "nan_weights.pt")
    return {p.stem: p for p in d.glob("*.pt")}


@pytest.mark.parametrize(
    "name",
    [
        "garbage",
        "empty",
        "malicious_pickle",
        "malicious_zip",
        "truncated",
        "tensor",
        "nan_weights",
        "unet_for_deeplabv3",
        "unet_for_maskrcnn",
    ],
)
def test_evaluate_refuses_a_checkpoint_that_cannot_be_loaded(ws, tmp_path, capsys, name):
    files = _bad_checkpoints(ws, tmp_path)
    model = "unet"
    ckpt = files.get(name)
    if name.startswith("unet_for_"):
        model, ckpt = name.split("_for_")[1], ws / "unet.pt"
    out = tmp_path / "ev"
    rc, err = _cli(
        ["evaluate", ckpt, "--model", model, "--datalist", ws / "dl3d.json", "--out", out], capsys
    )
    assert rc == 1
    line = _one_line(err, "evaluate", ckpt.name)
    assert "weights_only" not in err and "weights_only=False" not in line
    assert not out.exists() and not (tmp_path / "pwned").exists()
    if name.startswith("unet_for_"):
        assert f"does not fit the {model} network" in line


# --------------------------------------------------------------------------- #11: datalists
@pytest.mark.parametrize(
    "datalist, problem",
    [
        ("no_test.json", "no 'test' section"),
        ("empty_test.json", "'test' section is empty"),
        ("no_tumour.json", "none with a tumour mask"),
        ("no_folds.json", "have no 'fold'"),
        ("val_fold_only.json", "every training case is in the validation fold"),
        ("test_no_mask.json", "no case of its 'test' section has a tumour"),
    ],
)
def test_experiment_checks_the_datalist_before_training(ws, tmp_path, capsys, datalist, problem):
    out = tmp_path / "exp"
    rc, err = _cli(
        [
            "experiment",
            "--datalist",
            ws / datalist,
            "--augment",
            "none",
            "--seeds",
            "1",
            "--out",
            out,
            *SETS,
            *NP,
        ],
        capsys,
    )
    assert rc == 1
    assert problem in _one_line(err, "experiment", datalist)
    assert not out.exists()  # nothing trained, nothing marked done


@pytest.mark.parametrize(
    "datalist, section",
    [("no_test.json", "test"), ("test_no_mask.json", "test"), ("dl2d.json", "validation")],
)
def test_evaluate_checks_the_section_before_running(ws, tmp_path, capsys, datalist, section):
    out = tmp_path / "a" / "ev"
    rc, err = _cli(
        [
            "evaluate",
            ws / "unet.pt",
            "--datalist",
            ws / datalist,
            "--section",
            section,
            "--out",
            out,
        ],
        capsys,
    )
    assert rc == 1
    _one_line(err, "evaluate", datalist)
    assert not (tmp_path / "a").exists()


def test_a_run_is_marked_done_only_when_its_outputs_exist(ws, tmp_path, monkeypatch):
    from metalung_monai.errors import MetaLungError
    from metalung_monai.training import experiment

    def train_only(
        bundle, configs, workflow_type, verbose=False, **kw
    ):  # the evaluation writes nothing
        if workflow_type == "train":
            Path(kw["ckpt_dir"]).mkdir(parents=True, exist_ok=True)
            torch.save({}, Path(kw["ckpt_dir"]) / "model.pt")
            Path(kw["output_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(kw["output_dir"]) / "history.json").write_text('{"iterations": 2}')

    monkeypatch.setattr(experiment, "run_bundle", train_only)
    out = tmp_path / "exp"
    with pytest.raises(MetaLungError, match="not marked done"):
        experiment.run_experiment(
            ws / "dl2d.json", out, arms=["none"], seeds=1, preset_overrides=TINY, progress=False
        )
    assert not (out / "runs" / "unet" / "none" / "seed0" / "done.json").exists()


# --------------------------------------------------------------------------- #3: outputs never touch inputs
def test_outputs_that_overlap_an_input_are_refused(ws, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ws, data)
    before = _digest(data)
    dl = data / "dl2d.json"
    cases = [
        ["experiment", "--datalist", dl, "--out", data],  # contains the datalist
        [
            "experiment",
            "--datalist",
            dl,
            "--out",
            data / "images2d" / "C0.nii.gz",
        ],  # is a listed image
        ["experiment", "--datalist", dl, "--out", REPO / "bundles" / "x"],  # inside the bundles
        ["evaluate", data / "unet.pt", "--datalist", dl, "--out", data],  # contains the checkpoint
        [
            "evaluate",
            data / "unet.pt",
            "--datalist",
            dl,
            "--out",
            data / "unet.pt",
        ],  # is the checkpoint
        [
            "evaluate",
            data / "unet.pt",
            "--datalist",
            dl,
            "--out",
            data / "masks2d",
        ],  # contains a mask
    ]
    for argv in cases:
        extra = ["--augment", "none", "--seeds", "1", *SETS, *NP] if argv[0] == "experiment" else []
        rc, err = _cli(argv + extra, capsys)
        assert rc == 1, argv
        _one_line(err, argv[0], "--out")
    assert _digest(data) == before
    assert not (REPO / "bundles" / "x").exists()
    # an existing folder of something else is not taken over
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    rc, err = _cli(
        [
            "experiment",
            "--datalist",
            dl,
            "--augment",
            "none",
            "--seeds",
            "1",
            "--out",
            tmp_path / "mine",
            *SETS,
            *NP,
        ],
        capsys,
    )
    assert rc == 1 and "not an experiment folder" in _one_line(err, "experiment", "--out")


def test_overwrite_deletes_only_what_the_experiment_wrote(ws, tmp_path, monkeypatch):
    from metalung_monai.training import experiment

    calls = []

    def fake_bundle(
        bundle, configs, workflow_type, verbose=False, **kw
    ):  # every output of a run, instantly
        calls.append(workflow_type)
        models, ev = Path(kw["ckpt_dir"]), Path(kw["output_dir"])
        models.mkdir(parents=True, exist_ok=True)
        ev.mkdir(parents=True, exist_ok=True)
        for f in (
            "models/model.pt",
            "models/model_final.pt",
            "eval/history.json",
            "eval/slices.csv",
            "eval/volumes.csv",
            "eval/summary.json",
            "eval/predictions.npz",
        ):
            (models.parent / f).write_text("{}")

    monkeypatch.setattr(experiment, "run_bundle", fake_bundle)
    monkeypatch.setattr(experiment, "write_results", lambda out, *a, **k: out / "results.md")
    out = tmp_path / "exp"
    run = out / "runs" / "unet" / "none" / "seed0"
    kw = dict(arms=["none"], seeds=1, progress=False)
    experiment.run_experiment(ws / "dl2d.json", out, preset_overrides=TINY, **kw)
    assert (run / "done.json").is_file() and calls == ["train", "infer"]
    mine = [
        out / "notes.txt",
        out / "runs" / "notes.txt",
        out / "runs" / "unet" / "notes.txt",
        run / "notes.txt",
    ]
    for p in mine:
        p.write_text("mine")
    changed = dict(TINY, epoch_length=3)
    with pytest.raises(InputError, match="another configuration"):
        experiment.run_experiment(ws / "dl2d.json", out, preset_overrides=changed, **kw)
    experiment.run_experiment(ws / "dl2d.json", out, preset_overrides=changed, overwrite=True, **kw)
    assert calls == ["train", "infer"] * 2  # the run was redone
    assert all(p.read_text() == "mine" for p in mine)  # and nothing else was deleted
    # a run folder the experiment did not write is refused, not deleted
    foreign = out / "runs" / "unet" / "monai" / "seed0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by this experiment"):
        experiment.run_experiment(
            ws / "dl2d.json", out, preset_overrides=changed, **dict(kw, arms=["none", "monai"])
        )
    assert (foreign / "notes.txt").read_text() == "mine"


class _RecordingBar:
    """The bar over an experiment's runs, recording what it is told into ``steps`` (``last``: only
    each step's name, after the run's)."""

    def __init__(self, steps: list, last: bool = False):
        self.steps, self.last = steps, last

    def set_postfix_str(self, s):
        self.steps.append(s.split(": ")[-1] if self.last else s)

    def update(self, n=1):
        if not self.last:
            self.steps.append(f"+{n}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_resume_redoes_damaged_records_and_clears_killed_writes(ws, tmp_path, monkeypatch):
    import subprocess

    from metalung_monai.training import experiment

    calls, steps = [], []

    def fake_bundle(bundle, configs, workflow_type, verbose=False, **kw):
        calls.append((workflow_type, kw["progress"]))
        run = Path(kw["ckpt_dir"]).parent
        for f in experiment.RUN_OUTPUTS:
            (run / f).parent.mkdir(parents=True, exist_ok=True)
            (run / f).write_text("{}")

    monkeypatch.setattr(experiment, "run_bundle", fake_bundle)
    monkeypatch.setattr(experiment, "write_results", lambda out, *a, **k: out / "results.md")
    monkeypatch.setattr(experiment, "progress_bar", lambda **kw: _RecordingBar(steps))
    out = tmp_path / "exp"
    run = out / "runs" / "unet" / "none" / "seed0"
    kw = dict(arms=["none"], seeds=1, preset_overrides=TINY, progress=False)
    experiment.run_experiment(ws / "dl2d.json", out, **kw)
    # the bundle is told --no-progress; the bar names the run and its step
    assert calls == [("train", False), ("infer", False)]
    assert steps == ["unet / none / seed 0: training", "unet / none / seed 0: evaluating", "+1"]
    experiment.run_experiment(ws / "dl2d.json", out, **kw)
    assert len(calls) == 2 and steps[-2:] == ["unet / none / seed 0: done before", "+1"]
    # a damaged completion record is not a finished run; a killed write's temporary file goes
    (run / "done.json").write_text("[]")
    gone = subprocess.Popen(["true"])
    gone.wait()
    partials = [
        out / f".results.partial-{gone.pid}-0123abcd.md",
        run / f".done.partial-{gone.pid}-0123abcd.json",
    ]
    for p in partials:
        p.write_text("half")
    experiment.run_experiment(ws / "dl2d.json", out, **kw)
    assert len(calls) == 4 and (run / "done.json").is_file()
    assert not any(p.exists() for p in partials)
    # a tampered manifest is refused, naming it
    (out / "experiment.json").write_text('{"keys": ["unet"]}')
    with pytest.raises(InputError, match=r"experiment\.json: not an? experiment manifest"):
        experiment.run_experiment(ws / "dl2d.json", out, **kw)


# --------------------------------------------------------------------------- #13f: failed evaluations
def test_a_failed_evaluation_leaves_nothing_behind(ws, tmp_path, monkeypatch, capsys):
    from metalung_monai.training import evaluate

    def crash(bundle, configs, workflow_type, verbose=False, **kw):
        (Path(kw["output_dir"]) / "metrics.csv").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "run_bundle", crash)
    out = tmp_path / "a" / "b" / "ev"
    rc, err = _cli(
        ["evaluate", ws / "unet.pt", "--datalist", ws / "dl3d.json", "--out", out], capsys
    )
    assert rc == 1 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []
    # into an existing folder: its files are kept as they were
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "summary.json").write_text("old")
    rc, err = _cli(
        ["evaluate", ws / "unet.pt", "--datalist", ws / "dl3d.json", "--out", tmp_path / "ev"],
        capsys,
    )
    assert rc == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ev"]
    assert [p.name for p in (tmp_path / "ev").iterdir()] == ["summary.json"]


# --------------------------------------------------------------------------- JSON and names from data
def test_history_writes_a_diverged_loss_as_null(tmp_path):
    from types import SimpleNamespace

    from metalung_monai.evaluation import training_curves
    from metalung_monai.training import TrainingHistory
    from metalung_monai.training.experiment_figures import smooth

    validator = SimpleNamespace(
        state=SimpleNamespace(metrics={}, epoch=0, key_metric_name="val_mean_dice")
    )
    h = TrainingHistory(str(tmp_path / "history.json"), validator=validator, train_samples=4)
    engine = SimpleNamespace(state=SimpleNamespace(iteration=0, epoch=0, output=None))
    h._started(engine)
    for it, (loss, dice) in enumerate(
        [(0.9, float("nan")), (float("nan"), 0.25), (float("inf"), float("inf"))], 1
    ):
        engine.state.iteration, engine.state.epoch, engine.state.output = (
            it,
            it,
            [{"loss": torch.tensor(loss)}],
        )
        validator.state.epoch, validator.state.metrics = it, {"val_mean_dice": dice}
        h._iteration(engine)
        h._epoch(engine)
    h._completed(engine)

    def strict(c):
        raise ValueError(c)

    hist = json.loads((tmp_path / "history.json").read_text(), parse_constant=strict)
    assert hist["loss"] == [pytest.approx(0.9), None, None] and hist["val_dice"] == [
        None,
        0.25,
        None,
    ]
    assert hist["best_val_dice"] == 0.25
    training_curves(
        {
            "none": {
                "loss": [smooth(hist["loss"])],
                "val_dice": [hist["val_dice"]],
                "val_dice_x": hist["val_iteration"],
            }
        },
        tmp_path / "curves.png",
    )
    assert (tmp_path / "curves.png").is_file()


def test_prediction_archives_are_named_safely_whatever_the_case_id(tmp_path):
    from monai.data import MetaTensor

    from metalung_monai.training import SegmentationReport
    from metalung_monai.training.report import load_predictions
    from metalung_monai.utils.paths import is_safe_name

    truth = np.zeros((1, 16, 16, 3), np.float32)
    truth[0, 4:8, 4:8, 1] = 1
    hostile = "../../evil/x"
    item = {
        "hu": MetaTensor(torch.full((1, 16, 16, 3), -800.0)),
        "patient_id": "P",
        "case_id": hostile,
        "lung_rads": "LR3",
    }
    out = {"pred": torch.from_numpy(truth), "label": torch.from_numpy(truth)}

    class Engine:
        class state:
            output = [out]
            batch = [item]

    rep = SegmentationReport(str(tmp_path / "eval"), compute_lungs=False)
    rep._reset(Engine)
    rep._collect(Engine)
    rep._write(Engine)
    names = zipfile.ZipFile(tmp_path / "eval" / "predictions.npz").namelist()
    assert len(names) == 6 and all(
        is_safe_name(n[:-4].split("__")[0]) for n in names if n != "__case_ids__.npy"
    )
    assert not any("/" in n or "\\" in n or ".." in n for n in names), names
    preds = load_predictions(tmp_path / "eval" / "predictions.npz")
    assert list(preds) == [hostile] and int(preds[hostile][1]["truth"].sum()) == 16
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [
            "per_class.csv",
            "per_class.md",
            "predictions.npz",
            "slices.csv",
            "slices.md",
            "summary.json",
            "volumes.csv",
            "volumes.md",
        ]
    )


def test_arm_names_become_paths_so_they_must_be_safe():
    from metalung_monai.training import ARMS, Arm, register_arm

    for name in ("../../x", "a/b", ""):
        with pytest.raises(InputError, match="not a safe file name"):
            register_arm(Arm(name, "hostile"))
        assert name not in ARMS


# --------------------------------------------------------------------------- #9: 2D datalists
@pytest.fixture(scope="module")
def trained2d(ws, tmp_path_factory):
    """An experiment trained (2 iterations) and scored on 2D slices; its U-Net checkpoint."""
    out = tmp_path_factory.mktemp("exp2d") / "exp"
    rc = cli.main(
        [
            str(a)
            for a in [
                "experiment",
                "--datalist",
                ws / "dl2d.json",
                "--augment",
                "none",
                "--seeds",
                "1",
                "--out",
                out,
                *SETS,
                *NP,
            ]
        ]
    )
    assert rc == 0
    return out


@pytest.mark.slow
def test_2d_datalists_train_and_evaluate(ws, trained2d, tmp_path, capsys):
    text = (trained2d / "results.md").read_text()
    assert "| unet | none |" in text
    ckpt = trained2d / "runs" / "unet" / "none" / "seed0" / "models" / "model.pt"
    hist = json.loads((ckpt.parents[1] / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2
    summaries, preds = {}, {}
    for dim in ("2d", "3d"):  # a 2D slice is evaluated exactly as the same slice stored as a volume
        rc, err = _cli(
            ["evaluate", ckpt, "--datalist", ws / f"dl{dim}.json", "--out", tmp_path / dim], capsys
        )
        assert rc == 0, err
        summaries[dim] = json.loads((tmp_path / dim / "summary.json").read_text())
        from metalung_monai.training.report import load_predictions

        preds[dim] = load_predictions(tmp_path / dim / "predictions.npz")["C3"][0]
    assert summaries["2d"] == summaries["3d"]
    assert (
        summaries["2d"]["slices"]["n_images"] == 1 and summaries["2d"]["volumes"]["n_images"] == 1
    )
    chest = make_chest(shape=(96, 128), tumours=(("left", 7.0),), seed=23)
    assert np.array_equal(
        preds["2d"]["truth"], chest.mask > 0
    )  # scored in place, canonical display
    assert np.array_equal(preds["2d"]["pred"], preds["3d"]["pred"])
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no temporary folder left
    # the bundle's inference writes a 2D prediction on the 2D slice's grid
    from metalung_monai.training.experiment import run_bundle

    run_bundle(
        REPO / "bundles" / "unet_lung_tumor",
        ["inference.json"],
        "infer",
        dataset_dir=str(ws),
        datalist=str(ws / "dl2d.json"),
        ckpt_dir=str(ckpt.parent),
        output_dir=str(tmp_path / "pred"),
    )
    (pred,) = (tmp_path / "pred").glob("*.nii.gz")
    ref = sitk.ReadImage(str(ws / "images2d" / "C3.nii.gz"))
    img = sitk.ReadImage(str(pred))
    assert img.GetSize() == ref.GetSize() == (128, 96) and img.GetOrigin() == ref.GetOrigin()
    assert np.array_equal(sitk.GetArrayFromImage(img) > 0, preds["2d"]["pred"])


@pytest.mark.slow
@pytest.mark.real_data
def test_a_converted_dicom_slice_evaluates(real_data, trained2d, tmp_path, capsys):
    from metalung_monai.io.convert import convert

    ex = real_data / "metalung_example"
    convert(
        [str(ex / "1-141.dcm")],
        tmp_path / "ds",
        mask=[str(ex / "IM140.png")],
        split="test",
        progress=False,
    )
    ckpt = trained2d / "runs" / "unet" / "none" / "seed0" / "models" / "model.pt"
    for extra in ([], ["--pixel-mm", "1.4"]):
        out = tmp_path / f"ev{len(extra)}"
        rc, err = _cli(
            [
                "evaluate",
                ckpt,
                "--datalist",
                tmp_path / "ds" / "datalist.json",
                "--out",
                out,
                *extra,
            ],
            capsys,
        )
        assert rc == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["slices"]["n_images"] == 1
    from metalung_monai.training.report import load_predictions

    (case,) = load_predictions(tmp_path / "ev0" / "predictions.npz").values()
    truth = case[0]["truth"]
    rows, cols = np.nonzero(truth)
    assert truth.sum() == 164 and (rows.min(), rows.max(), cols.min(), cols.max()) == (
        189,
        204,
        417,
        430,
    )


def test_records_keep_a_grid_whose_output_folder_was_lost(ws, tmp_path, monkeypatch):
    """--records: every finished run's results (no weights) are copied out, restored into a new
    output folder without training, added to as the grid grows, and refused or replaced when they
    belong to another configuration."""
    from metalung_monai.training import experiment

    calls, steps = [], []

    def fake_bundle(bundle, configs, workflow_type, verbose=False, **kw):
        run = Path(kw["ckpt_dir"]).parent
        calls.append((workflow_type, run.relative_to(run.parents[3]).as_posix()))
        for f in experiment.RUN_OUTPUTS:
            (run / f).parent.mkdir(parents=True, exist_ok=True)
            (run / f).write_text(json.dumps({"run": f"{run.parent.name}/{f}", "call": len(calls)}))

    monkeypatch.setattr(experiment, "run_bundle", fake_bundle)
    monkeypatch.setattr(experiment, "write_results", lambda out, *a, **k: out / "results.md")
    monkeypatch.setattr(experiment, "progress_bar", lambda **kw: _RecordingBar(steps, last=True))
    rec = tmp_path / "repo" / "records"
    kw = dict(seeds=1, preset_overrides=TINY, progress=False, records=rec)
    first = tmp_path / "session1"
    experiment.run_experiment(ws / "dl2d.json", first, arms=["none", "monai"], **kw)
    assert len(calls) == 4
    runs = ["runs/unet/none/seed0", "runs/unet/monai/seed0"]
    for r in runs:  # the record: done.json and the results, byte for byte; no weights
        kept = sorted(
            p.relative_to(rec / r).as_posix() for p in (rec / r).rglob("*") if p.is_file()
        )
        assert kept == sorted([*experiment.RUN_RECORD, "done.json"])
        for f in kept:
            assert (rec / r / f).read_bytes() == (first / r / f).read_bytes()
    # the next session: the outputs are gone, the records are not
    shutil.rmtree(first)
    second = tmp_path / "session2"
    steps.clear()
    experiment.run_experiment(ws / "dl2d.json", second, arms=["none", "monai"], **kw)
    assert len(calls) == 4 and steps == ["restored", "restored"]  # nothing trained
    for r in runs:
        assert (second / r / "eval" / "slices.csv").read_bytes() == (
            rec / r / "eval" / "slices.csv"
        ).read_bytes()
        assert not (second / r / "models").exists()
    # a restored run (no weights) is reused as done; a new arm trains and joins the records
    steps.clear()
    experiment.run_experiment(ws / "dl2d.json", second, arms=["none", "monai", "blur"], **kw)
    assert steps[:2] == ["done before", "done before"]
    assert [c[1] for c in calls[4:]] == ["runs/unet/blur/seed0"] * 2
    assert (rec / "runs/unet/blur/seed0/done.json").is_file()
    # a damaged or incomplete record is not restored: that run is trained again and re-recorded
    (rec / runs[0] / "done.json").write_text("[]")
    (rec / runs[1] / "eval" / "slices.csv").unlink()
    third = tmp_path / "session3"
    experiment.run_experiment(ws / "dl2d.json", third, arms=["none", "monai", "blur"], **kw)
    assert [c[1] for c in calls[6:]] == [runs[0], runs[0], runs[1], runs[1]]
    assert (rec / runs[1] / "eval" / "slices.csv").read_bytes() == (
        third / runs[1] / "eval" / "slices.csv"
    ).read_bytes()
    # records of another configuration are refused before any work, then replaced on overwrite
    changed = dict(kw, preset_overrides=dict(TINY, epoch_length=3))
    fourth = tmp_path / "session4"
    before = _digest(rec)
    with pytest.raises(InputError, match=r"--records.*another configuration.*epoch_length"):
        experiment.run_experiment(ws / "dl2d.json", fourth, arms=["none"], **changed)
    assert not fourth.exists() and _digest(rec) == before and len(calls) == 10
    experiment.run_experiment(ws / "dl2d.json", fourth, arms=["none"], overwrite=True, **changed)
    assert len(calls) == 12
    new = json.loads((rec / runs[0] / "done.json").read_text())
    assert new == json.loads((fourth / runs[0] / "done.json").read_text())
    # a records folder inside the output folder (or the reverse) is refused
    with pytest.raises(InputError, match="--records"):
        experiment.run_experiment(ws / "dl2d.json", rec / "out", arms=["none"], **changed)


def test_tumour_check_keeps_each_mask_alive_while_it_reads_it(tmp_path):
    """``has_tumor`` read a view of a temporary image: the buffer was freed under the view and
    the experiment crashed at random (segmentation fault) before any work. Read in a child
    process, many masks of several sizes, so a crash fails the test instead of the session."""
    import subprocess
    import sys
    import textwrap

    for k in range(8):
        a = np.zeros((40 + 10 * k, 256, 256), np.uint8)
        if k % 2 == 0:
            a[20 + k, 100:110, 100:110] = 1
        sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / f"m{k}.nii.gz"))
    code = textwrap.dedent(
        """
        import sys
        from metalung_monai.training.inputs import has_tumor
        masks = [{"mask": f"{sys.argv[1]}/m{k}.nii.gz"} for k in range(8)]
        print(sum(has_tumor(e) for _ in range(5) for e in masks))
        """
    )
    args = [sys.executable, "-c", code, str(tmp_path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-500:]}"
    assert r.stdout.strip() == "20"  # 4 of the 8 masks have a tumour, each read 5 times
