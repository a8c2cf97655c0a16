"""Training glue: slices in radiological display, arms, the bundles' pipelines, weights, progress,
the experiment runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from metalung_monai.errors import InputError
from metalung_monai.training import (
    ARMS,
    Arm,
    TrainingProgress,
    bundle_parser,
    load_case,
    load_pretrained,
    register_arm,
    slice_samples,
)
from metalung_monai.transforms import metalung_records
from metalung_monai.utils.orientation import canonical_axes

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


UNET = Path(__file__).resolve().parents[1] / "bundles" / "unet_lung_tumor"


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return small_cohort


def train_parser(cohort, arm, seed=0, bundle=UNET, **overrides):
    """The unet bundle's training config for ``arm`` (train.json + quick.json + the arm's file)."""
    return bundle_parser(
        bundle,
        "train",
        arm,
        "quick",
        dataset_dir=str(cohort),
        preset_overrides=TINY,
        seed=seed,
        **overrides,
    )


def test_slices_are_canonical_whatever_the_file_orientation(tmp_path):
    rng = np.random.default_rng(0)
    canon = rng.integers(-1000, 200, size=(5, 12, 16)).astype(np.int16)  # (z, y, x), LPS
    mask = np.zeros_like(canon, dtype=np.uint8)
    mask[2, 3:5, 10:12] = 1  # patient's left
    # store x reversed (index towards patient right, direction -x): the same patient, another layout
    paths = {}
    for key, arr in (("image", canon), ("mask", mask)):
        im = sitk.GetImageFromArray(np.ascontiguousarray(arr[:, :, ::-1]))
        im.SetSpacing((0.7, 0.8, 2.0))
        im.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
        im.SetOrigin(((arr.shape[2] - 1) * 0.7, 0.0, 0.0))
        paths[key] = tmp_path / f"{key}.nii.gz"
        sitk.WriteImage(im, str(paths[key]))
    entry = {
        "image": str(paths["image"]),
        "mask": str(paths["mask"]),
        "patient_id": "P",
        "lung_rads": "LR3",
    }
    case = load_case(entry, lungs=False)
    assert np.array_equal(case.hu, canon) and np.allclose(case.spacing, (2.0, 0.8, 0.7))
    samples = slice_samples([entry])
    assert [s["slice_index"] for s in samples] == [2]
    s = samples[0]
    assert (
        np.array_equal(s["image"][0].numpy(), canon[2]) and s["label"][0].numpy()[3:5, 10:12].all()
    )
    # the slice's affine tells MetaLung where left is: the tumour is in the patient's left half
    ax = canonical_axes(s["image"].affine.numpy(), 2, "RAS")
    assert ax.perm == (0, 1) and ax.flip == (False, False)
    assert (s["patient_id"], s["lung_rads"]) == ("P", "LR3")


@pytest.mark.slow
def test_metalung_arm_expands_offline_and_reproducibly(cohort):
    a = train_parser(cohort, "metalung", seed=3)
    b = train_parser(cohort, "metalung", seed=3)
    none = train_parser(cohort, "none", seed=3)
    n_original = len(a.get_parsed_content("train#samples"))
    train_a, train_b = a.get_parsed_content("train#data"), b.get_parsed_content("train#data")
    assert len(none.get_parsed_content("train#data")) == n_original
    assert len(train_a) >= 5 * n_original  # thesis: 708 -> 4,865 (x6.9)
    ops = {metalung_records(s["image"])[-1]["op"] for s in train_a[n_original:]}
    assert ops == {
        "mirror",
        "relocate",
        "rotate_image",
        "rotate_tumor",
        "noise_image",
        "noise_tumor",
    }
    for x, y in zip(train_a, train_b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    c = train_parser(cohort, "metalung", seed=4).get_parsed_content("train#data")
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(train_a, c))
    val = a.get_parsed_content("validate#data")
    assert val and not {s["patient_id"] for s in train_a} & {s["patient_id"] for s in val}


def test_adding_an_arm_is_one_file_and_one_registration(cohort, tmp_path):
    bundle = tmp_path / "unet_lung_tumor"
    shutil.copytree(UNET / "configs", bundle / "configs")
    mirror_only = json.loads((UNET / "configs" / "augment_metalung.json").read_text())
    mirror_only["augment"] = "mirrored"
    mirror_only["train#expansion"]["ops"] = ["mirror"]
    (bundle / "configs" / "augment_mirrored.json").write_text(json.dumps(mirror_only))
    with pytest.raises(InputError, match="unknown augmentation arm 'mirrored'"):
        train_parser(cohort, "mirrored", bundle=bundle)
    register_arm(Arm("mirrored", "every tumour slice and its mirror image"))
    try:
        p = train_parser(cohort, "mirrored", bundle=bundle)
        n = len(p.get_parsed_content("train#samples"))
        data = p.get_parsed_content("train#data")
        assert n < len(data) <= 2 * n
        assert {metalung_records(s["image"])[-1]["op"] for s in data[n:]} == {"mirror"}
    finally:
        ARMS.pop("mirrored")


@pytest.mark.parametrize(
    "bundle", ["unet_lung_tumor", "deeplabv3_lung_tumor", "maskrcnn_lung_tumor"]
)
def test_combined_arm_is_metalung_then_the_generic_pipeline(bundle):
    configs = UNET.parent / bundle / "configs"
    both = json.loads((configs / "augment_metalung+monai.json").read_text())
    meta = json.loads((configs / "augment_metalung.json").read_text())
    generic = json.loads((configs / "augment_monai.json").read_text())
    assert both["augment"] == "metalung+monai" and "metalung+monai" in ARMS
    for slot in ("train#expansion", "train#hu_augmentation"):
        assert both[slot] == meta[slot]  # HU-exact, on HU
    assert both["train#augmentation"] == generic["train#augmentation"]  # after the window
    with pytest.raises(InputError, match="safe file name"):
        register_arm(Arm("metalung+../x", "not a name"))


@pytest.mark.parametrize("arm", ["none", "metalung", "monai", "metalung+monai"])
def test_training_transforms_give_binary_patches(cohort, arm):
    p = train_parser(cohort, arm)
    tf = p.get_parsed_content("train#preprocessing")
    tf.set_random_state(0)
    out = tf(p.get_parsed_content("train#samples")[0])
    out = out[0] if isinstance(out, list) else out
    assert out["image"].shape == (1, 64, 64) and out["label"].shape == (1, 64, 64)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert "lung" not in out


def test_progress_bar_counts_every_iteration_of_the_run_on_stderr(capsys):
    from ignite.engine import Engine

    engine = Engine(lambda e, batch: {"loss": torch.tensor(0.5)})
    TrainingProgress(desc="run", mininterval=0.0).attach(engine)
    engine.run(range(3), max_epochs=2)
    err = capsys.readouterr().err
    assert "run: 100%" in err and "6/6" in err and "loss=0.5000" in err
    quiet = Engine(lambda e, batch: None)
    TrainingProgress(enabled=False).attach(quiet)
    TrainingProgress(enabled="false").attach(quiet)  # --progress false on a command line
    quiet.run(range(3), max_epochs=1)
    assert capsys.readouterr().err == ""


def test_load_pretrained(tmp_path):
    net = torch.nn.Linear(3, 2)
    assert load_pretrained(net, None) is net
    with pytest.raises(InputError, match="does not exist"):
        load_pretrained(net, tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(InputError, match="cannot be read"):
        load_pretrained(net, tmp_path / "bad.pt")
    torch.save({"weight": torch.zeros(5, 5)}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="do not fit"):
        load_pretrained(net, tmp_path / "wrong.pt")
    other = torch.nn.Linear(3, 2)
    torch.save(
        {"network": {"module." + k: v for k, v in other.state_dict().items()}}, tmp_path / "ok.pt"
    )
    assert torch.equal(load_pretrained(net, tmp_path / "ok.pt").weight, other.weight)


@pytest.mark.slow
def test_experiment_end_to_end_resume_and_refusal(cohort, tmp_path, capsys):
    from metalung_monai.cli import main

    out = tmp_path / "exp"
    args = [
        "experiment",
        "--datalist",
        str(cohort / "datalist_small.json"),
        "--models",
        "unet",
        "--augment",
        "none,metalung",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    args += sum((["--set", f"{k}={v!r}"] for k, v in TINY.items()), [])
    assert main(args) == 0
    text = (out / "results.md").read_text()
    assert (
        "Table 7" in text
        and "Table 8" in text
        and "| unet | none |" in text
        and "| unet | metalung |" in text
    )
    assert "MetaLung" in text and "on dice" in text and "## unet: paired comparisons" in text
    assert "± nan" not in text and (out / "paired_unet.csv").is_file()  # one seed: means alone
    assert "2 runs; compute time" in text
    for name in (
        "table7_unet.csv",
        "table8_unet.md",
        "overlays_unet.png",
        "curves_unet.png",
        "forest_unet.png",
        "all_slices.csv",
    ):
        assert (out / name).is_file()
    done = out / "runs" / "unet" / "metalung" / "seed0" / "done.json"
    rec = json.loads(done.read_text())
    assert rec["train_samples"] > 5 and rec["iterations"] == 2
    stamp = done.stat().st_mtime_ns
    assert main(args) == 0  # finished runs are reused
    assert done.stat().st_mtime_ns == stamp
    other_model = args + ["--set", "maskrcnn_epochs=3"]
    assert main(other_model) == 0  # another model's setting: U-Net runs reused
    assert done.stat().st_mtime_ns == stamp
    changed = [a if a != "epoch_length=2" else "epoch_length=3" for a in args]
    assert main(changed) == 1  # another configuration: refused
    assert "unet runs of another configuration" in capsys.readouterr().err
    assert done.stat().st_mtime_ns == stamp  # and nothing deleted
    # a trained checkpoint scored on any datalist
    ckpt = out / "runs" / "unet" / "none" / "seed0" / "models" / "model.pt"
    assert (
        main(
            [
                "evaluate",
                str(ckpt),
                "--model",
                "unet",
                "--datalist",
                str(cohort / "datalist_small.json"),
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    assert "tumour slices" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["slices"]["n_images"] > 0
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "missing.pt"),
                "--datalist",
                str(cohort / "datalist.json"),
                "--out",
                str(tmp_path / "ev2"),
            ]
        )
        == 1
    )
