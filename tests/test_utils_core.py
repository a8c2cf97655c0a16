"""Atomic writes, canonical orientation and the datalist schema."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from metalung_monai.errors import DatalistError, InputError
from metalung_monai.io.datalist import (
    assign_folds,
    datalist_entries,
    load_datalist,
    patient_split,
    write_datalist,
)
from metalung_monai.utils.atomic import (
    atomic_path,
    full_suffix,
    write_image_atomic,
    write_json_atomic,
)
from metalung_monai.utils.orientation import (
    canonical_axes,
    canonical_spacing,
    canonical_to_sitk,
    from_canonical,
    lr_axis,
    sitk_to_canonical,
    to_canonical,
)


# ---------------------------------------------------------------- atomic writes
def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2')  # half-written
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_image_write_keeps_double_extension(tmp_path):
    img = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    out = write_image_atomic(img, tmp_path / "case.nii.gz")
    assert full_suffix(out) == ".nii.gz"
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_input_error_names_source_and_survives_pickle():
    import pickle

    e = InputError("scan/IM1.dcm", "not a CT image")
    assert str(e) == "scan/IM1.dcm: not a CT image"
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.source, e2.problem) == ("scan/IM1.dcm", "not a CT image")


# ---------------------------------------------------------------- orientation
DIRECTIONS = [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS
    (0, 1, 0, 1, 0, 0, 0, 0, -1),  # permuted + flipped
    (1, 0, 0, 0, 0, -1, 0, 1, 0),  # coronal-stored
]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_canonical_layout_agrees_between_sitk_and_monai(tmp_path, direction):
    from monai.transforms import LoadImage

    rng = np.random.default_rng(0)
    arr = rng.integers(-1024, 1000, size=(5, 6, 7)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(direction)
    img.SetSpacing((0.5, 0.75, 2.0))
    canon, spacing = sitk_to_canonical(img)
    # a voxel's canonical index must follow its physical LPS position
    world = np.array(
        [
            img.TransformIndexToPhysicalPoint((i, j, k))
            for k in range(5)
            for j in range(6)
            for i in range(7)
        ]
    )
    order = np.lexsort((world[:, 0], world[:, 1], world[:, 2]))
    assert np.array_equal(canon.ravel(), arr.ravel()[order])
    assert sorted(spacing) == [0.5, 0.75, 2.0]
    back = canonical_to_sitk(canon, img)
    assert np.array_equal(sitk.GetArrayFromImage(back), arr)
    path = tmp_path / "o.nii.gz"
    sitk.WriteImage(img, str(path))
    for reader in ("ITKReader", "NibabelReader"):
        m = LoadImage(image_only=True, reader=reader)(str(path))
        ax = canonical_axes(m.affine.numpy(), 3, m.meta.get("space", "RAS"))
        assert np.array_equal(to_canonical(m.numpy(), ax), canon), reader
        assert np.allclose(canonical_spacing(m.affine.numpy(), ax), spacing, atol=1e-5)
        assert np.array_equal(from_canonical(to_canonical(m.numpy(), ax), ax), m.numpy())


def test_lr_axis_follows_affine():
    ras = np.diag([-0.7, -0.7, 2.0, 1.0])  # index increases towards patient left (RAS x negative)
    assert lr_axis(ras, 3, "RAS") == (0, 1)
    assert lr_axis(np.diag([0.7, 0.7, 2.0, 1.0]), 3, "RAS") == (0, -1)
    permuted = np.array([[0, 0.7, 0, 0], [0.7, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert lr_axis(permuted, 2, "LPS") == (1, 1)


# ---------------------------------------------------------------- datalist
def _entry(pid, cls, split="train"):
    return {
        "image": f"images/{pid}.nii.gz",
        "mask": f"masks/{pid}.nii.gz",
        "patient_id": pid,
        "lung_rads": cls,
        "split": split,
    }


def test_datalist_round_trip_and_monai_compatibility(tmp_path):
    from monai.data import load_decathlon_datalist

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for pid in ("P1", "P2"):
        (tmp_path / "images" / f"{pid}.nii.gz").write_bytes(b"x")
        (tmp_path / "masks" / f"{pid}.nii.gz").write_bytes(b"x")
    dl = {"name": "t", "training": [_entry("P1", "LR3")], "test": [_entry("P2", "LR4B", "test")]}
    path = write_datalist(dl, tmp_path / "datalist.json")
    assert load_datalist(path) == dl
    ours = datalist_entries(path, ("training", "test"))
    assert [e["image"] for e in ours] == [
        str(tmp_path / "images" / "P1.nii.gz"),
        str(tmp_path / "images" / "P2.nii.gz"),
    ]
    monai_train = load_decathlon_datalist(
        str(path), data_list_key="training", base_dir=str(tmp_path)
    )
    assert os.path.samefile(monai_train[0]["image"], ours[0]["image"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"training": [{"image": "a.nii.gz"}]}, "'patient_id' is a required property"),
        (
            {"training": [{"image": "a", "patient_id": "P", "lung_rads": "LR9"}]},
            "training/0/lung_rads",
        ),
        ({"name": "no sections"}, "schema violation"),
        (
            {"training": [_entry("P1", "LR2")], "test": [_entry("P1", "LR2", "test")]},
            "both 'training' and 'test'",
        ),
    ],
)
def test_datalist_errors_name_file_and_field(tmp_path, bad, message):
    path = tmp_path / "dl.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DatalistError) as exc:
        load_datalist(path)
    assert str(path) in str(exc.value) and message in str(exc.value)
    with pytest.raises(DatalistError):
        write_datalist(bad, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_datalist_missing_file_is_reported(tmp_path):
    path = write_datalist({"training": [_entry("P1", "LR2")]}, tmp_path / "dl.json")
    with pytest.raises(DatalistError, match=r"training\[0\]\.image: file .* does not exist"):
        datalist_entries(path)


def test_patient_split_holds_out_per_class_without_leakage():
    classes = {f"P{i:02d}": ("LR1", "LR2", "LR3", "LR4A", "LR4B")[i % 5] for i in range(45)}
    train, test = patient_split(classes, n_test_per_class=4, seed=3)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(classes)
    held = [classes[p] for p in test]
    assert {c: held.count(c) for c in set(held)} == {"LR2": 4, "LR3": 4, "LR4A": 4, "LR4B": 4}
    assert patient_split(classes, seed=3) == (train, test)
    assert patient_split(classes, seed=4) != (train, test)
    folds = assign_folds(train, 5, seed=0)
    assert set(folds) == set(train) and set(folds.values()) == set(range(5))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"training": [{"image": "a.nii.gz", "patient_id": "P1", "spacing": [NaN, 1.0]}]}',
            "holds NaN",
        ),
        (
            b'{"training": [{"image": "a.nii.gz", "patient_id": "P1", "spacing": [Infinity, 1.0]}]}',
            "holds Infinity",
        ),
        (b"\xff\xfe\x00garbage", "not a JSON text file"),
    ],
)
def test_datalist_with_nan_or_binary_content_is_refused(tmp_path, content, message):
    """Python's json reads NaN / Infinity, other readers do not; a binary file is not a datalist."""
    from metalung_monai.errors import DatalistError
    from metalung_monai.io.datalist import load_datalist

    p = tmp_path / "datalist.json"
    p.write_bytes(content)
    with pytest.raises(DatalistError, match=message) as e:
        load_datalist(p)
    assert e.value.source == str(p)


def test_stale_partial_recognises_only_dead_writers(tmp_path):
    """The leftovers of a killed atomic write are stale; a live writer's (this process) are not."""
    import subprocess
    import sys

    from metalung_monai.utils.atomic import atomic_path, stale_partial

    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert stale_partial(tmp.name) is None  # the writer (this process) is alive
        live = tmp.name
        tmp.write_bytes(b"x")
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    m = stale_partial(live.replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    assert m is not None and m["stem"] == "case" and m["suffix"] == ".nii.gz"
    assert (
        stale_partial("case.nii.gz") is None
        and stale_partial(".case.partial-x-1234abcd.json") is None
    )
