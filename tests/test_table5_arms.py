"""The arms of Table 5 (issue 13): single MetaLung operations, blur, elastic, and the insertion
arms (copy-paste of real lesions, generated lesions, mixed), as the bundles' override files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, NAMES
from lesion_factory import make_bank, save_bank
from test_bundles import describe, messages, parser_of

from metalung_monai.errors import InputError
from metalung_monai.training import ARMS, insertion_banks, training_samples
from metalung_monai.training.presets import SettingError, preset
from metalung_monai.transforms.metalung.array import metalung_records

SINGLE_OPS = ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor")
INSERTION = ("copypaste", "vqvae", "dcgan", "diffusion", "mixed")


@pytest.fixture(scope="module")
def banks(tmp_path_factory, small_cohort):
    """A real bank whose lesions belong to the small cohort's training patients (an insertion
    arm keeps only those), and a generated one."""
    root = tmp_path_factory.mktemp("banks")
    dl = json.loads((small_cohort / "datalist.json").read_text())
    pats = sorted({str(e["patient_id"]) for e in dl["training"]})
    bank = make_bank(n=24, size=32, seed=0, context_mm=32.0)
    ids = sorted(bank.table["patient_id"].unique())
    bank.table["patient_id"] = bank.table["patient_id"].map(
        {p: pats[i % len(pats)] for i, p in enumerate(ids)}
    )
    real = save_bank(bank, root / "real")
    gen = save_bank(
        make_bank(n=12, size=32, seed=5, source="generated", context_mm=32.0), root / "g"
    )
    return {"real": real, "dcgan": gen, "vqvae": gen, "diffusion": gen}


def test_every_arm_has_one_file_the_same_in_every_bundle():
    for arm in ARMS:
        texts = {(BUNDLES / n / "configs" / f"augment_{arm}.json").read_text() for n in NAMES}
        assert len(texts) == 1, arm
    assert set(SINGLE_OPS + INSERTION + ("blur", "elastic")) <= set(ARMS)


@pytest.mark.parametrize(
    "arm", [a for a in ARMS if a not in ("none", "metalung", "monai", "metalung+monai")]
)
def test_new_arms_build_the_same_stacked_or_named(arm, banks, small_cohort):
    over = {
        "preset_overrides": {"lesion_banks": banks},
        "spatial_dims": 2,
        "dataset_dir": str(small_cohort),
    }
    stacked = parser_of(NAMES[0], "train", "quick", f"augment_{arm}", **over)
    named = parser_of(NAMES[0], "train", augment=arm, **over)
    a = stacked.get_parsed_content("train#preprocessing")
    if arm in INSERTION:  # the shortcut cannot filter the bank by the training patients: refused
        with pytest.raises(Exception) as e:
            named.get_parsed_content("train#preprocessing")
        assert any("stack the arm's file" in m for m in messages(e.value))
    else:
        assert describe(a) == describe(named.get_parsed_content("train#preprocessing"))
    kinds = [t for t, _ in describe(a)]
    ea = stacked.get_parsed_content("train#expansion")
    assert (ea is not None) == (arm in SINGLE_OPS + ("mixed",))
    if arm in SINGLE_OPS:
        assert tuple(ea.ops) == (arm,)
    assert ("RandInsertLesiond" in kinds) == (arm in INSERTION)
    assert ("RandGaussianSmoothd" in kinds) == (arm == "blur")
    assert ("Rand2DElasticd" in kinds) == (arm == "elastic")


def test_single_operation_arm_expands_with_that_operation_only(small_cohort):
    samples = training_samples(str(small_cohort / "datalist.json"), 0, "slices", 2)[:4]
    p = parser_of(NAMES[0], "train", "quick", "augment_mirror", spatial_dims=2)
    t = p.get_parsed_content("train#expansion")
    from metalung_monai.training.data import expand_samples

    out = expand_samples(samples, t, seed=0)
    assert len(out) == 2 * len(samples)
    for s, v in zip(samples, out[len(samples) :]):
        assert [r["op"] for r in metalung_records(v["image"])] == ["mirror"]
        assert torch.equal(v["image"], torch.flip(s["image"], dims=(-1,)))  # exact HU, mirrored


def test_copypaste_arm_inserts_real_lesions_into_free_lung_in_integer_hu(small_cohort, banks):
    samples = training_samples(str(small_cohort / "datalist.json"), 0, "slices", 2)[:6]
    over = {"lesion_banks": banks, "insert_prob": 1.0}
    p = parser_of(
        NAMES[0],
        "train",
        "quick",
        "augment_copypaste",
        preset_overrides=over,
        dataset_dir=str(small_cohort),
    )
    hu_aug = p.get_parsed_content("train#hu_augmentation")
    from monai.transforms import Compose

    t = Compose(hu_aug)
    t.set_random_state(0)
    applied = 0
    for s in samples:
        out = t(dict(s))
        assert "free_space" not in out
        img, lab = out["image"].numpy(), out["label"].numpy()
        before, old = s["image"].numpy(), s["label"].numpy()
        rec = metalung_records(out["image"])[-1]
        assert rec["op"] == "insert_lesion" and rec["bank"] == "real"
        assert np.array_equal(img, np.round(img))  # integer HU
        if not rec["applied"]:
            assert np.array_equal(img, before) and np.array_equal(lab, old)
            continue
        applied += 1
        changed = img != before
        (y0, y1), (x0, x1) = rec["box"]
        box = np.zeros_like(changed)
        box[..., y0:y1, x0:x1] = True
        assert not (changed & ~box).any()  # nothing changes outside the placed box
        new = (lab > 0) & (old == 0)
        assert new.sum() == rec["inserted_voxels"]  # the mask gains exactly the lesion
        assert (out["lung"].numpy()[new] > 0).all()  # inside the lungs
    assert applied >= 3


def test_insertion_arms_name_the_missing_bank(small_cohort):
    with pytest.raises(InputError, match=r"lesion_banks.*\['dcgan'\]"):
        insertion_banks({"lesion_banks": {"real": "x"}}, ["dcgan"])
    with pytest.raises(InputError, match="at least one generated bank"):
        insertion_banks({"lesion_banks": {"real": "x"}}, "generated")
    got = insertion_banks({"lesion_banks": {"real": "r", "dcgan": "d", "vqvae": "v"}}, "generated")
    assert got == {"dcgan": "d", "vqvae": "v"}
    with pytest.raises(SettingError, match="lesion_banks"):
        preset("quick", lesion_banks=["real"])
    with pytest.raises(SettingError, match="insert_prob"):
        preset("quick", insert_prob=1.5)
    p = parser_of(NAMES[0], "train", "quick", "augment_dcgan", dataset_dir=str(small_cohort))
    with pytest.raises(Exception) as e:
        p.get_parsed_content("train#hu_augmentation")
    assert any("lesion_banks" in m and "dcgan" in m for m in messages(e.value))


def test_real_banks_keep_only_the_training_patients_lesions(tmp_path):
    bank = make_bank(n=24, size=32, seed=0, n_patients=6, context_mm=32.0)
    real = save_bank(bank, tmp_path / "real")
    gen = save_bank(
        make_bank(n=6, size=32, seed=5, source="generated", context_mm=32.0), tmp_path / "g"
    )
    samples = [{"patient_id": "p001"}, {"patient_id": "p004"}, {"patient_id": "p004"}]
    got = insertion_banks(
        {"lesion_banks": {"real": real, "dcgan": gen}}, ["real", "dcgan"], samples
    )
    assert set(got["real"].table["patient_id"]) == {"p001", "p004"}
    assert len(got["real"]) == int(bank.table["patient_id"].isin(["p001", "p004"]).sum()) > 0
    assert got["dcgan"] == gen  # generated lesions have no patient: the folder as given
    with pytest.raises(InputError, match="no lesion of the 1 training patients"):
        insertion_banks({"lesion_banks": {"real": real}}, ["real"], [{"patient_id": "p999"}])


def test_an_arm_file_keys_its_own_runs_only(tmp_path):
    import shutil

    from metalung_monai.training.experiment import _model_key, _run_key

    shutil.copytree(BUNDLES / NAMES[0], tmp_path / NAMES[0])
    settings = preset("quick")
    before = _model_key("sha", "quick", settings, tmp_path, "unet")
    runs = {a: _run_key(before, tmp_path, "unet", a) for a in ("none", "mirror")}
    f = tmp_path / NAMES[0] / "configs" / "augment_mirror.json"
    f.write_text(f.read_text().replace('"prob": 0.5', '"prob": 0.4'))
    after = _model_key("sha", "quick", settings, tmp_path, "unet")
    assert after == before
    assert _run_key(after, tmp_path, "unet", "none") == runs["none"]
    assert _run_key(after, tmp_path, "unet", "mirror") != runs["mirror"]
    t = tmp_path / NAMES[0] / "configs" / "train.json"
    t.write_text(t.read_text() + " ")
    assert _model_key("sha", "quick", settings, tmp_path, "unet") != before


def test_a_list_of_generated_banks_gives_each_fold_the_generator_that_never_saw_its_patients(
    tmp_path,
):
    from metalung_monai.training.experiment import _model_key

    gens = []
    for f, pats in enumerate((["p001", "p002"], ["p003", "p004"])):
        real = make_bank(n=12, size=32, seed=f, n_patients=2, hold_fraction=0.0)
        real.table["patient_id"] = [pats[i % 2] for i in range(len(real.table))]
        real.table["subset"] = "train"
        real_path = save_bank(real, tmp_path / f"real{f}")
        gen = make_bank(n=6, size=32, seed=5 + f, source="generated", context_mm=32.0)
        gen.meta["real_bank"] = real_path
        gens.append(save_bank(gen, tmp_path / f"gen{f}"))
    settings = {"lesion_banks": {"vqvae": gens}}
    run = [{"patient_id": p} for p in ("p003", "p004", "p005")]
    assert insertion_banks(settings, ["vqvae"], run) == {"vqvae": gens[1]}
    assert (
        insertion_banks(settings, "generated", [{"patient_id": "p001"}, {"patient_id": "p002"}])[
            "vqvae"
        ]
        == gens[0]
    )
    with pytest.raises(InputError, match=r"p004"):  # a generator saw a test patient: refused
        insertion_banks(settings, ["vqvae"], [{"patient_id": "p003"}, {"patient_id": "p001"}])
    with pytest.raises(InputError, match="lists, chosen per run"):
        insertion_banks(settings, ["vqvae"], None)
    with pytest.raises(InputError, match="not a generated bank"):
        insertion_banks({"lesion_banks": {"vqvae": [str(tmp_path / "real0")]}}, ["vqvae"], run)
    # the list is checked as a setting and keys the runs by every member's content
    preset("quick", lesion_banks=settings["lesion_banks"])
    with pytest.raises(SettingError, match="lesion_banks"):
        preset("quick", lesion_banks={"vqvae": []})
    key = _model_key("sha", "quick", {"lesion_banks": {"vqvae": gens}}, BUNDLES, "unet")
    other = make_bank(n=6, size=32, seed=9, source="generated", context_mm=32.0)
    save_bank(other, tmp_path / "gen1b")
    swapped = [gens[0], str(tmp_path / "gen1b")]
    assert _model_key("sha", "quick", {"lesion_banks": {"vqvae": swapped}}, BUNDLES, "unet") != key


def test_the_arm_registry_names_the_banks_each_arm_file_inserts_from():
    import ast
    import re

    for name, arm in ARMS.items():
        text = (BUNDLES / NAMES[0] / "configs" / f"augment_{name}.json").read_text()
        found = re.findall(r"mt\.insertion_banks\(@settings, (.+?), @train#samples\)", text)
        want = None if not found else ast.literal_eval(found[0])
        assert (tuple(want) if isinstance(want, list) else want) == arm.banks, name


def test_a_bank_made_again_identically_keeps_the_runs_key(tmp_path):
    """The banks' content keys the runs; their wall times, picture and per-case cache do not."""

    from metalung_monai.training.experiment import _model_key

    bank = save_bank(make_bank(n=8, size=32, seed=0), tmp_path / "bank")
    settings = {"lesion_banks": {"real": bank}}
    key = _model_key("sha", "quick", settings, BUNDLES, "unet")
    meta_path = Path(bank) / "bank.json"
    meta = json.loads(meta_path.read_text())
    meta["seconds"] = 123.4  # made again: another wall time, another picture and cache
    meta_path.write_text(json.dumps(meta))
    (Path(bank) / "overview.png").write_bytes(b"another picture")
    (Path(bank) / "records").mkdir(exist_ok=True)
    (Path(bank) / "records" / "P1.json").write_text("{}")
    assert _model_key("sha", "quick", settings, BUNDLES, "unet") == key
    meta["context_mm"] = 48.0  # what the lesions are: another key
    meta_path.write_text(json.dumps(meta))
    changed = _model_key("sha", "quick", settings, BUNDLES, "unet")
    assert changed != key
    table = Path(bank) / "lesions.csv"
    table.write_text(table.read_text() + "\n")
    assert _model_key("sha", "quick", settings, BUNDLES, "unet") != changed
