"""The three MONAI bundles: Model Zoo layout, metadata, declarative configs (stacked preset and
arm files, command-line overrides of a transform), network I/O, export, training, evaluation,
inference and two-process (gloo) training, on a tiny phantom cohort."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bundle_helpers import ARMS, BUNDLES, NAMES, TINY, bundle_cmd, run, stack


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return small_cohort


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_evaluate_infer_on_a_tiny_cohort(name, cohort, tmp_path):
    root = BUNDLES / name
    common = [
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--datalist",
        str(cohort / "datalist_small.json"),
        "--preset_overrides",
        TINY,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run(
        bundle_cmd("run", "--config_file", stack("train", "quick", "augment_metalung"), *common),
        root,
    )
    assert (tmp_path / "models" / "model.pt").is_file() and (
        tmp_path / "models" / "model_final.pt"
    ).is_file()
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2 and len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    assert 0.0 <= hist["data_share"] <= 1.0
    run(bundle_cmd("run", "--config_file", stack("train", "quick", "evaluate"), *common), root)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["slices"]["n_images"] > 0 and set(summary["patient_dice_3d"])
    for table in ("slices.csv", "volumes.csv", "per_class.md", "predictions.npz"):
        assert (tmp_path / "eval" / table).is_file()
    pred_dir = tmp_path / "pred"
    run(
        bundle_cmd(
            "run",
            "--config_file",
            stack("inference", "quick"),
            "--bundle_root",
            str(root),
            "--dataset_dir",
            str(cohort),
            "--datalist",
            str(cohort / "datalist_small.json"),
            "--preset_overrides",
            TINY,
            "--ckpt_dir",
            str(tmp_path / "models"),
            "--output_dir",
            str(pred_dir),
        ),
        root,
    )
    test = json.loads((cohort / "datalist_small.json").read_text())["test"]
    out = sorted(pred_dir.glob("*.nii.gz"))
    assert len(out) == len(test)
    ref = sitk.ReadImage(str(cohort / test[0]["image"]))
    pred = sitk.ReadImage(str(out[0]))
    assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
    assert np.allclose(pred.GetDirection(), ref.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}


def test_pretrained_override_loads_local_weights(cohort, tmp_path):
    from monai.bundle import ConfigParser

    root = BUNDLES / "unet_lung_tumor"
    parser = ConfigParser()
    parser.read_config(root / "configs" / "train.json")
    parser.update({"bundle_root": str(root), "dataset_dir": str(cohort)})
    net = parser.get_parsed_content("network_def")
    for p in net.parameters():
        torch.nn.init.constant_(p, 0.125)
    path = tmp_path / "weights.pt"
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    parser = ConfigParser()
    parser.read_config(root / "configs" / "train.json")
    parser.update(
        {
            "bundle_root": str(root),
            "dataset_dir": str(cohort),
            "pretrained": str(path),
            "device": "cpu",
        }
    )
    loaded = parser.get_parsed_content("network")
    assert all(torch.all(p == 0.125) for p in loaded.parameters())
    parser["pretrained"] = str(tmp_path / "missing.pt")
    with pytest.raises(Exception) as exc:
        parser.get_parsed_content("network", lazy=False)
    chain, e = [], exc.value
    while e is not None:  # MONAI wraps the error raised inside a config expression
        chain.append(str(e))
        e = e.__cause__
    assert any("missing.pt: pretrained weights file does not exist" in m for m in chain), chain


@pytest.mark.slow
def test_two_processes_train_one_epoch_and_write_one_checkpoint(cohort, tmp_path):
    root = BUNDLES / "unet_lung_tumor"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        stack("train", "quick", "augment_none", "multi_gpu_train"),
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--preset_overrides",
        TINY,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    res = run(cmd, root)
    log = res.stdout + res.stderr
    assert "[rank1]" not in log or "Error" not in log
    ckpts = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert ckpts == ["model.pt", "model_final.pt"]  # written once, by rank 0
    state = torch.load(
        tmp_path / "models" / "model_final.pt", map_location="cpu", weights_only=True
    )
    assert not any(k.startswith("module.") for k in state)  # unwrapped from DistributedDataParallel
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2


@pytest.mark.slow
def test_3d_patch_training_and_evaluation(cohort, tmp_path):
    """Whole volumes / 3D patches (not only the thesis' tumour slices) with one override."""
    root = BUNDLES / "unet_lung_tumor"
    tiny3d = TINY[:-1] + ", 'crop_3d': (48, 48, 16), 'unet_channels': (8, 16, 32, 64)}"
    common = [
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(cohort),
        "--datalist",
        str(cohort / "datalist_small.json"),
        "--preset_overrides",
        tiny3d,
        "--spatial_dims",
        "3",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run(
        bundle_cmd("run", "--config_file", stack("train", "quick", "augment_metalung"), *common),
        root,
    )
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2 and hist["train_samples"] >= 1
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(v.ndim == 5 for v in state.values())  # 3D convolutions
    run(bundle_cmd("run", "--config_file", stack("train", "quick", "evaluate"), *common), root)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["volumes"]["n_images"] == 1


# --------------------------------------------------------------------------- declarative configs
TINY_SETTINGS = {
    "epochs": 1,
    "epoch_length": 2,
    "val_interval": 1,
    "batch_size": 2,
    "num_workers": 0,
    "crop": 64,
    "eval_roi": 128,
    "sw_batch_size": 4,
}


def parser_of(name: str, *files: str, **overrides):
    """A ``ConfigParser`` of bundle ``name`` stacking ``configs/<file>.json`` (no run)."""
    from monai.bundle import ConfigParser

    root = BUNDLES / name
    p = ConfigParser()
    p.read_config([str(root / "configs" / f"{f}.json") for f in files])
    p.update({"bundle_root": str(root), **overrides})
    return p


def describe(compose) -> list[tuple]:
    """Each transform of a ``Compose``: its class and its plain parameters (probabilities, keys,
    sizes), so that two pipelines built two ways can be compared."""
    out = []
    for t in compose.transforms:
        plain = {
            k: v
            for k, v in vars(t).items()
            if isinstance(v, (int, float, str, bool, tuple, type(None))) and k != "R"
        }
        out.append((type(t).__name__, sorted(plain.items())))
    return out


def messages(e: BaseException) -> list[str]:
    """The messages of an error and of its causes (MONAI wraps errors raised in expressions)."""
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__
    return out


def workflow(name: str, files: list[str], workflow_type: str, **overrides) -> None:
    """Run a bundle in this process, as ``python -m monai.bundle run`` does."""
    from monai.bundle import ConfigWorkflow

    root = BUNDLES / name
    wf = ConfigWorkflow(
        config_file=[str(root / "configs" / f) for f in files],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()


@pytest.mark.parametrize("name", NAMES)
def test_presets_live_in_the_bundles_preset_files(name):
    from metalung_monai.training import PRESETS, bundle_settings, read_preset

    for preset in ("quick", "full", "patches"):
        values = read_preset(BUNDLES / name, preset)
        assert values and all(PRESETS[preset][k] == v for k, v in values.items())
        expected = bundle_settings(values, {}, preset)
        # stacked preset file, and the --preset shortcut reading the same file: one truth
        stacked = parser_of(name, "train", preset).get_parsed_content("settings")
        shortcut = parser_of(name, "train", preset=preset).get_parsed_content("settings")
        assert stacked == shortcut == expected
    # a preset setting overridden on the command line is checked like any other
    p = parser_of(name, "train", "quick", **{"preset_settings#val_interval": 0})
    with pytest.raises(Exception) as exc:
        p.get_parsed_content("settings")
    assert any("preset setting 'val_interval': must be from 1" in m for m in messages(exc.value))


def test_presets_cover_every_setting_and_the_bundles_agree(tmp_path):
    import shutil

    from metalung_monai.errors import InputError
    from metalung_monai.training import PRESETS, SETTINGS
    from metalung_monai.training.presets import load_presets

    for name in ("quick", "full", "patches"):
        assert set(PRESETS[name]) == set(SETTINGS)
    for name in ("unet_lung_tumor", "deeplabv3_lung_tumor"):
        shutil.copytree(BUNDLES / name / "configs", tmp_path / name / "configs")
    assert load_presets(tmp_path)["quick"]["epochs"] == PRESETS["quick"]["epochs"]
    path = tmp_path / "deeplabv3_lung_tumor" / "configs" / "quick.json"
    data = json.loads(path.read_text())
    data["preset_settings"]["epochs"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="setting 'epochs'.*one preset, one value"):
        load_presets(tmp_path)


def test_bundle_configs_name_the_stacked_files():
    from metalung_monai.errors import InputError
    from metalung_monai.training import ARMS, bundle_configs

    for name in NAMES:
        root = BUNDLES / name
        for arm in ARMS:
            assert bundle_configs(root, "train", arm, "full") == [
                "train.json",
                "full.json",
                f"augment_{arm}.json",
            ]
        assert bundle_configs(root, "evaluate", preset="quick") == [
            "train.json",
            "quick.json",
            "evaluate.json",
        ]
        assert bundle_configs(root, "infer") == ["inference.json", "quick.json"]
        assert sorted(p.name for p in (root / "configs").glob("augment_*.json")) == sorted(
            f"augment_{arm}.json" for arm in ARMS
        )
    with pytest.raises(InputError, match="unknown augmentation arm 'flip'"):
        bundle_configs(BUNDLES / NAMES[0], "train", "flip")
    with pytest.raises(InputError, match="no tiny.json"):
        bundle_configs(BUNDLES / NAMES[0], "train", "none", "tiny")
    with pytest.raises(InputError, match="needs an augmentation arm"):
        bundle_configs(BUNDLES / NAMES[0], "train")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_augment_shortcut_builds_what_the_stacked_arm_file_declares(name, spatial_dims):
    """``--augment monai`` on train.json alone reads configs/augment_monai.json: the same
    transforms, in the same order, with the same parameters as stacking the file."""
    for arm in ("none", "metalung", "monai"):
        stacked = parser_of(name, "train", "quick", f"augment_{arm}", spatial_dims=spatial_dims)
        shortcut = parser_of(name, "train", augment=arm, spatial_dims=spatial_dims)
        a = stacked.get_parsed_content("train#preprocessing")
        b = shortcut.get_parsed_content("train#preprocessing")
        assert describe(a) == describe(b)
        ea, eb = (p.get_parsed_content("train#expansion") for p in (stacked, shortcut))
        assert (ea is None) == (eb is None) == (arm != "metalung" or spatial_dims == 3)
        kinds = [t for t, _ in describe(a)]
        if arm == "monai":
            assert kinds.count("RandFlipd") == spatial_dims and "RandAffined" in kinds
        if arm == "metalung":
            assert ("MetaLungd" in kinds) == (spatial_dims == 3)
        assert kinds[-4:] == [
            "SpatialPadd",
            "RandCropByPosNegLabeld",
            "RandSpatialCropd",
            "EnsureTyped",
        ]


def test_dataset_dir_is_required_and_never_relative_to_the_bundle(cohort):
    for name in NAMES:
        for files in (["train"], ["inference"]):
            text = "".join((BUNDLES / name / "configs" / f"{f}.json").read_text() for f in files)
            assert "/../" not in text
            with pytest.raises(Exception) as exc:
                parser_of(name, *files).get_parsed_content("datalist")
            chain = messages(exc.value)
            assert any("dataset_dir: not set: run with --dataset_dir" in m for m in chain), chain
    p = parser_of(NAMES[0], "train", dataset_dir=str(cohort))
    assert p.get_parsed_content("datalist") == str(cohort / "datalist.json")


@pytest.mark.slow
def test_a_transform_parameter_overridden_on_the_command_line_takes_effect(cohort, tmp_path):
    """``--train#expansion#copies 2``: MetaLung's offline expansion makes two variants per
    operation; the parsed transform has the new value and the run trains on the larger set."""
    name = "unet_lung_tumor"
    root = BUNDLES / name
    files = ("train", "quick", "augment_metalung")
    p = parser_of(name, *files, dataset_dir=str(cohort), **{"train#expansion#copies": 2})
    assert p.get_parsed_content("train#expansion").copies == 2
    n_slices = len(p.get_parsed_content("train#samples"))
    # the same override on a MONAI arm's transform
    q = parser_of(name, "train", "quick", "augment_monai", **{"train#augmentation#3#prob": 0.3})
    (affine,) = [
        t
        for t in q.get_parsed_content("train#preprocessing").transforms
        if type(t).__name__ == "RandAffined"
    ]
    assert affine.prob == 0.3
    res = run(
        bundle_cmd(
            "run",
            "--config_file",
            stack(*files),
            "--bundle_root",
            str(root),
            "--dataset_dir",
            str(cohort),
            "--preset_overrides",
            TINY,
            "--train#expansion#copies",
            "2",
            "--ckpt_dir",
            str(tmp_path / "models"),
            "--output_dir",
            str(tmp_path / "eval"),
        ),
        root,
    )
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    # six operations, one variant each by default (at most 7 x the slices); two each now
    assert hist["train_samples"] > 7 * n_slices
    assert "train metalung seed 0: 100%" in res.stderr  # the run's progress bar, on stderr


@pytest.mark.slow
@pytest.mark.parametrize("arm", ARMS)
def test_each_arm_file_trains_one_tiny_epoch(arm, cohort, tmp_path):
    from metalung_monai.training import bundle_configs

    name = "unet_lung_tumor"
    workflow(
        name,
        bundle_configs(BUNDLES / name, "train", arm, "quick"),
        "train",
        dataset_dir=str(cohort),
        preset_overrides=TINY_SETTINGS,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        progress=False,
    )
    hist = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert hist["iterations"] == 2 and all(np.isfinite(hist["loss"]))
    n = len(parser_of(name, "train", dataset_dir=str(cohort)).get_parsed_content("train#samples"))
    assert (hist["train_samples"] > n) == (arm == "metalung")
    assert (tmp_path / "models" / "model_final.pt").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_the_training_loader_draws_one_stream_for_the_whole_run(name, cohort):
    """``sampler`` ``stream`` (the presets'): the loader's sampler yields every sample of the run
    (epochs x epoch_length x batch size) once, so ignite never restarts it between passes;
    ``epoch``: torch's shuffled pass per iterator."""
    from metalung_monai.training import preset

    s = preset("quick")
    prefix = "maskrcnn_" if name.startswith("maskrcnn") else ""
    want = s[f"{prefix}epochs"] * s["epoch_length"] * s[f"{prefix}batch_size"]
    dl = parser_of(name, "train", "quick", dataset_dir=str(cohort)).get_parsed_content(
        "train#dataloader"
    )
    assert isinstance(dl.sampler, torch.utils.data.RandomSampler)
    assert len(dl.sampler) == want and len(dl) * dl.batch_size >= want
    old = parser_of(
        name, "train", "quick", dataset_dir=str(cohort), preset_overrides={"sampler": "epoch"}
    ).get_parsed_content("train#dataloader")
    assert len(old.sampler) == len(old.dataset) < want
