"""Patient-grouped K-fold cross-validation (``metalung experiment --folds K``, issue 11).

Six tiny synthetic 2D tumour slices of six patients, in a datalist without a test section: the
split puts every patient in exactly one test fold, validation patients come from the training
folds, and one end-to-end run (two iterations per fold) pools every patient's test slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
from chest_factory import make_chest

from metalung_monai import cli
from metalung_monai.errors import InputError
from metalung_monai.training.folds import assign_folds, fold_datalists, run_cross_validation

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


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folds")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    entries = []
    for k in range(6):
        c = make_chest(shape=(96, 128), tumours=(("left" if k % 2 else "right", 7.0),), seed=40 + k)
        for arr, sub in ((c.hu, "images"), (c.mask, "masks")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((0.8, 0.8))
            sitk.WriteImage(img, str(root / sub / f"C{k}.nii.gz"))
        entries.append(
            {
                "image": f"images/C{k}.nii.gz",
                "mask": f"masks/C{k}.nii.gz",
                "patient_id": f"P{k}",
                "case_id": f"C{k}",
                "lung_rads": "LR3",
            }
        )
    dl = {"name": "t", "version": 1, "modality": "CT", "labels": {"0": "bg", "1": "tumour"}}
    (root / "dl.json").write_text(json.dumps({**dl, "training": entries}))
    no_id = [dict(e) for e in entries]
    del no_id[2]["patient_id"]
    (root / "no_id.json").write_text(json.dumps({**dl, "training": no_id}))
    return root


def test_assign_folds_is_seeded_balanced_and_refuses_impossible_k():
    ids = [f"P{k}" for k in range(10)]
    a, b = assign_folds(ids, 3, seed=0), assign_folds(list(reversed(ids)), 3, seed=0)
    assert a == b  # the order of the input does not matter
    sizes = sorted(pd.Series(a).value_counts().tolist())
    assert sizes == [3, 3, 4] and set(a) == set(ids)
    assert assign_folds(ids, 3, seed=1) != a
    with pytest.raises(InputError, match="at least 2 folds"):
        assign_folds(ids, 1)
    with pytest.raises(InputError, match="only 10 patients"):
        assign_folds(ids, 11)


def test_every_patient_is_tested_once_and_validation_comes_from_training_folds(six, tmp_path):
    written = fold_datalists(six / "dl.json", 3, tmp_path)
    tested = []
    for f, (path, val_fold) in enumerate(written):
        doc = json.loads(path.read_text())
        test = {e["patient_id"] for e in doc["test"]}
        train = {e["patient_id"] for e in doc["training"] if e["fold"] != val_fold}
        val = {e["patient_id"] for e in doc["training"] if e["fold"] == val_fold}
        assert test and train and val and val_fold != f
        assert not (test & train) and not (test & val) and not (train & val)
        # the paths are absolute and point at the original files
        assert all(
            Path(e["image"]).is_file() and Path(e["image"]).is_absolute() for e in doc["test"]
        )
        tested += sorted(test)
    assert sorted(tested) == [f"P{k}" for k in range(6)]
    with pytest.raises(InputError, match="patient_id"):
        fold_datalists(six / "no_id.json", 3, tmp_path / "x")


@pytest.mark.slow
def test_cross_validation_runs_pools_and_resumes(six, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    kw = dict(arms=["none"], seeds=1, preset_overrides=TINY, progress=False)
    path = run_cross_validation(six / "dl.json", out, 3, **kw)
    text = path.read_text()
    assert "3 patient-grouped folds" in text and "± nan" not in text
    slices = pd.read_csv(out / "cv_slices.csv")
    assert sorted(slices["patient_id"].unique()) == [f"P{k}" for k in range(6)]
    assert slices.groupby("patient_id")["fold"].nunique().eq(1).all()  # one fold per patient
    # a second call with the same split trains nothing again
    import metalung_monai.training.experiment as experiment

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(experiment, "run_bundle", no_training)
    assert run_cross_validation(six / "dl.json", out, 3, **kw).read_text() == text
    # --records: the finished runs are recorded per fold (no weights), and a new folder is rebuilt
    # from them without training, to the same pooled results
    rec = tmp_path / "records"
    assert run_cross_validation(six / "dl.json", out, 3, records=rec, **kw).read_text() == text
    kept = sorted(p.relative_to(rec).as_posix() for p in rec.rglob("done.json"))
    assert kept == [f"fold{f}/runs/unet/none/seed0/done.json" for f in range(3)]
    assert not list(rec.rglob("*.pt"))
    fresh = run_cross_validation(six / "dl.json", tmp_path / "cv2", 3, records=rec, **kw)
    assert fresh.read_text() == text and not list((tmp_path / "cv2").rglob("*.pt"))
    # the records keep no predictions (megabytes a run): the overlay figure is left out, said so
    assert not list(rec.rglob("predictions.npz"))
    fold0 = "fold0/experiment/results.md"
    assert "![predictions of each arm]" in (out / fold0).read_text()
    assert "![predictions" not in (tmp_path / "cv2" / fold0).read_text()
    with pytest.raises(InputError, match="another split"):
        run_cross_validation(six / "dl.json", out, 2, **kw)


def test_folds_option_reaches_the_command_line(six, tmp_path, capsys):
    rc = cli.main(
        ["experiment", "--datalist", str(six / "dl.json"), "--folds", "1", "--out", str(tmp_path)]
    )
    assert rc != 0 and "at least 2 folds" in capsys.readouterr().err


def _weights(cv: Path, fold: int) -> dict:
    """The state dict of fold ``fold``'s U-Net ``none`` seed 0 run of cross-validation ``cv``."""
    import torch

    run = cv / f"fold{fold}" / "experiment" / "runs" / "unet" / "none" / "seed0"
    state = torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)
    return state.get("model", state)


@pytest.mark.slow
def test_fine_tuning_starts_every_run_from_the_given_weights(six, tmp_path):
    """``pretrained``: each fold's runs load the weights (a learning rate of 1e-12 leaves them
    where they started), the weights' content is part of the fingerprint, results say so."""
    import torch

    kw = dict(arms=["none"], seeds=1, progress=False)
    run_cross_validation(six / "dl.json", tmp_path / "a", 3, preset_overrides=TINY, **kw)
    weights = tmp_path / "a" / "fold0" / "experiment" / "runs" / "unet" / "none" / "seed0"
    weights = weights / "models" / "model.pt"
    start = _weights(tmp_path / "a", 0)
    convs = [k for k, v in start.items() if k.endswith(".weight") and v.ndim == 4]
    still = {**TINY, "lr": 1e-12}
    out = tmp_path / "ft"
    path = run_cross_validation(
        six / "dl.json", out, 3, preset_overrides=still, pretrained={"unet": weights}, **kw
    )
    assert f"from `{weights.resolve()}`" in path.read_text()
    for f in (0, 1, 2):
        end = _weights(out, f)
        assert convs and all(torch.allclose(start[k], end[k], atol=1e-6) for k in convs)
    # the same runs from scratch differ: the initial weights are not a no-op
    scratch = tmp_path / "scratch"
    run_cross_validation(six / "dl.json", scratch, 3, preset_overrides=still, **kw)
    other = _weights(scratch, 0)
    assert not all(torch.allclose(start[k], other[k], atol=1e-6) for k in convs)
    keys = json.loads((out / "fold0" / "experiment" / "experiment.json").read_text())["keys"]
    plain = json.loads((scratch / "fold0" / "experiment" / "experiment.json").read_text())["keys"]
    assert keys["unet"] != plain["unet"]


def test_pretrained_weights_are_checked_before_any_work(six, tmp_path):
    import torch

    from metalung_monai.commands.experiment import parse_pretrained

    assert parse_pretrained(["unet=a/model.pt"]) == {"unet": "a/model.pt"}
    for bad, msg in (
        (["unet"], "expected MODEL=PATH"),
        (["vnet=x.pt"], "unknown model 'vnet'"),
        (["unet=a.pt", "unet=b.pt"], "given twice"),
    ):
        with pytest.raises(InputError, match=msg):
            parse_pretrained(bad)
    kw = dict(arms=["none"], seeds=1, preset_overrides=TINY, progress=False)
    with pytest.raises(InputError, match="does not exist"):
        run_cross_validation(
            six / "dl.json", tmp_path / "x", 3, pretrained={"unet": tmp_path / "no.pt"}, **kw
        )
    with pytest.raises(InputError, match="not run in this experiment"):
        run_cross_validation(
            six / "dl.json", tmp_path / "y", 3, pretrained={"deeplabv3": __file__}, **kw
        )
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, wrong)
    with pytest.raises(InputError, match="does not fit the unet network"):
        run_cross_validation(six / "dl.json", tmp_path / "z", 3, pretrained={"unet": wrong}, **kw)
    assert not (tmp_path / "z" / "fold0" / "experiment" / "runs").exists()  # nothing trained
