"""Thesis pickles: the unpickling allow-list, label normalisation, conversion with patient split."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from metalung_monai.errors import GeometryMismatchError, InputError, MaskError, UnsafePickleError
from metalung_monai.io import load_datalist
from metalung_monai.io.thesis_pickle import (
    ALLOWED_GLOBALS,
    convert_thesis_pickle,
    find_patient_column,
    normalize_lung_rads,
    safe_load_pickle,
    split_of_pickle,
)


class _Shell:
    """Pickles as a call to os.system (resolved as posix.system) that creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, protocol):
    witness = tmp_path / "PWNED"
    path = tmp_path / "lung_cancer_train.pkl"
    path.write_bytes(pickle.dumps({"rows": [1, 2], "payload": _Shell(witness)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"lung_cancer_train.pkl: .*'posix.system'") as ei:
        safe_load_pickle(path)
    assert ei.value.source == str(path)
    assert not witness.exists()
    # control: the same payload really runs with plain pickle (so the test means something)
    pickle.loads(path.read_bytes())
    assert witness.exists()


@pytest.mark.parametrize(
    "func,args,name",
    [
        (builtins.eval, ("1+1",), "builtins.eval"),
        (builtins.exec, ("x=1",), "builtins.exec"),
        (builtins.getattr, (1, "real"), "builtins.getattr"),
        (builtins.__import__, ("os",), "builtins.__import__"),
        (subprocess.call, (["true"],), "subprocess.call"),
    ],
)
def test_forbidden_globals(tmp_path, func, args, name):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(_Reduce(func, args)))
    with pytest.raises(UnsafePickleError, match=f"'{name}'"):
        safe_load_pickle(path)
    assert name not in ALLOWED_GLOBALS


def test_malicious_object_inside_a_dataframe(tmp_path):
    witness = tmp_path / "PWNED"
    df = pd.DataFrame({"patient_id": ["a"], "label1": ["2"], "evil": [_Shell(witness)]})
    df.to_pickle(tmp_path / "t.pkl")
    with pytest.raises(UnsafePickleError, match="posix.system"):
        safe_load_pickle(tmp_path / "t.pkl")
    assert not witness.exists()


def _thesis_frame(rng, patients, labels, rows_per_patient=2, size=32, pid_column="patient_id"):
    rows = []
    for pid, lab in zip(patients, labels):
        for r in range(rows_per_patient):
            full = rng.integers(-1024, 400, size=(size, size)).astype(np.float64)
            lung = np.where(np.arange(size)[None, :] < size // 2, full, -1024.0)
            mask = np.zeros((size, size), np.uint8)
            mask[5 + r : 9 + r, 6:10] = 255 if r % 2 else 1
            rows.append(
                {
                    pid_column: pid,
                    "hu_array": lung,
                    "hu_array_old": full,
                    "mask": mask,
                    "label1": lab,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("protocol", [2, 5])
def test_genuine_dataframe_loads(tmp_path, rng, protocol):
    df = _thesis_frame(rng, ["P1", "P2"], ["4A", 3])
    df["when"] = pd.to_datetime(["2020-01-01"] * len(df))
    df["cat"] = pd.Categorical(["a", "b"] * (len(df) // 2))
    for comp in (None, "gzip"):
        path = tmp_path / f"lung_cancer_train_{protocol}_{comp}.pkl"
        df.to_pickle(path, protocol=protocol, compression=comp)
        out = safe_load_pickle(path)
        assert isinstance(out, pd.DataFrame) and list(out.columns) == list(df.columns)
        for col in ("hu_array", "hu_array_old", "mask"):
            assert all(
                np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(out[col], df[col])
            )
        assert out["label1"].tolist() == ["4A", "4A", 3, 3]


def test_not_a_pickle_and_missing_file(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(InputError, match="bad.pkl: not a readable pickle"):
        safe_load_pickle(bad)
    with pytest.raises(InputError, match="none.pkl: pickle file does not exist"):
        safe_load_pickle(tmp_path / "none.pkl")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2", "LR2"),
        ("3", "LR3"),
        ("4A", "LR4A"),
        ("4b", "LR4B"),
        ("LR2", "LR2"),
        ("lr4a", "LR4A"),
        ("Lung-RADS 4A", "LR4A"),
        ("Lung-RADS 4B", "LR4B"),
        ("lung_rads 3", "LR3"),
        (2, "LR2"),
        (3.0, "LR3"),
        (np.int64(2), "LR2"),
        ("1", "LR1"),
        (" 4A ", "LR4A"),
    ],
)
def test_normalize_lung_rads(value, expected):
    assert normalize_lung_rads(value) == expected


@pytest.mark.parametrize(
    "value", ["4", "5", "4C", "2A", "LR", "", None, float("nan"), 2.5, True, "benign"]
)
def test_normalize_lung_rads_rejects(value):
    with pytest.raises(InputError, match=r"train.pkl#row3: unknown Lung-RADS label"):
        normalize_lung_rads(value, "train.pkl#row3")


def test_patient_column_names():
    assert find_patient_column(["hu_array", "Patient ID", "mask"]) == "Patient ID"
    assert find_patient_column(["name", "id"]) == "name"
    assert find_patient_column(["ID", "x"]) == "ID"
    with pytest.raises(
        InputError, match=r"no patient identifier column .* columns found: hu_array, mask, label1"
    ):
        find_patient_column(["hu_array", "mask", "label1"], "t.pkl")


def test_split_of_pickle():
    assert split_of_pickle("lung_cancer_train.pkl") == "train"
    assert split_of_pickle("lung_cancer_test.pkl") == "test"
    assert split_of_pickle("lung_cancer_val.pkl") == "validation"


def test_convert_thesis_pickles(tmp_path, rng):
    train = _thesis_frame(
        rng, ["P1", "P2", "P3"], ["2", "LR3", "Lung-RADS 4A"], pid_column="patient"
    )
    test = _thesis_frame(rng, ["P9"], ["4B"], pid_column="patient")
    train.to_pickle(tmp_path / "lung_cancer_train.pkl")
    test.to_pickle(tmp_path / "lung_cancer_test.pkl")
    out = tmp_path / "out"
    path = convert_thesis_pickle(
        [tmp_path / "lung_cancer_train.pkl", tmp_path / "lung_cancer_test.pkl"], out
    )
    dl = load_datalist(path)
    assert len(dl["training"]) == 6 and len(dl["test"]) == 2
    assert {e["patient_id"] for e in dl["training"]} == {"P1", "P2", "P3"}
    assert {e["lung_rads"] for e in dl["training"]} == {"LR2", "LR3", "LR4A"}
    assert {e["lung_rads"] for e in dl["test"]} == {"LR4B"}
    e0 = dl["training"][0]
    assert e0["split"] == "train" and e0["spacing"] == [0.7, 0.7] and e0["shape"] == [32, 32]
    img = sitk.ReadImage(str(out / e0["image"]))
    msk = sitk.ReadImage(str(out / e0["mask"]))
    assert img.GetPixelID() == sitk.sitkInt16 and msk.GetPixelID() == sitk.sitkUInt8
    assert img.GetSpacing() == pytest.approx((0.7, 0.7))
    assert np.array_equal(sitk.GetArrayFromImage(img), train["hu_array_old"][0].astype(np.int16))
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(out / e["mask"]))) for e in dl["training"]]
    assert all(set(np.unique(m)) == {0, 1} and m.sum() == 16 for m in masks)  # {0,255} rows too
    # lung-only column, converted again into the same folder: entries replaced, not duplicated
    convert_thesis_pickle(
        tmp_path / "lung_cancer_train.pkl", out, image_column="hu_array", spacing=(0.6, 0.8)
    )
    dl2 = json.loads(path.read_text())
    assert len(dl2["training"]) == 6 and len(dl2["test"]) == 2
    e0 = next(e for e in dl2["training"] if e["case_id"] == dl["training"][0]["case_id"])
    assert e0["spacing"] == [0.8, 0.6]  # canonical (y, x)
    img = sitk.ReadImage(str(out / e0["image"]))
    assert np.array_equal(sitk.GetArrayFromImage(img), train["hu_array"][0].astype(np.int16))
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{e['case_id']}.nii.gz" for e in dl2["training"] + dl2["test"]
    )


def test_patient_in_train_and_test_is_refused(tmp_path, rng):
    _thesis_frame(rng, ["P1", "P2"], ["2", "3"]).to_pickle(tmp_path / "lung_cancer_train.pkl")
    _thesis_frame(rng, ["P2"], ["3"]).to_pickle(tmp_path / "lung_cancer_test.pkl")
    out = tmp_path / "out"
    with pytest.raises(
        InputError,
        match=r"lung_cancer_test.pkl: patient 'P2' is in lung_cancer_train.pkl \(train\)",
    ):
        convert_thesis_pickle(
            [tmp_path / "lung_cancer_train.pkl", tmp_path / "lung_cancer_test.pkl"], out
        )
    assert not out.exists()


def test_bad_rows_leave_no_output(tmp_path, rng):
    out = tmp_path / "out"
    df = _thesis_frame(rng, ["P1", "P2"], ["2", "4X"])
    df.to_pickle(tmp_path / "a_train.pkl")
    with pytest.raises(InputError, match=r"a_train.pkl#row2: unknown Lung-RADS label '4X'"):
        convert_thesis_pickle(tmp_path / "a_train.pkl", out)
    df = _thesis_frame(rng, ["P1", "P2"], ["2", "3"])
    df.at[3, "mask"] = np.full((32, 32), 2, np.uint8)
    df.to_pickle(tmp_path / "b_train.pkl")
    with pytest.raises(MaskError, match=r"b_train.pkl#row3: not a binary mask: values found 2"):
        convert_thesis_pickle(tmp_path / "b_train.pkl", out)
    df = _thesis_frame(rng, ["P1"], ["2"])
    df.at[1, "hu_array_old"] = np.where(np.eye(32) > 0, np.nan, 0.0)
    df.to_pickle(tmp_path / "c_train.pkl")
    with pytest.raises(InputError, match=r"c_train.pkl#row1: 32 NaN"):
        convert_thesis_pickle(tmp_path / "c_train.pkl", out)
    df = _thesis_frame(rng, ["P1"], ["2"])
    df.at[0, "mask"] = np.zeros((16, 32), np.uint8)
    df.to_pickle(tmp_path / "d_train.pkl")
    with pytest.raises(GeometryMismatchError, match=r"d_train.pkl#row0: mask shape \(16, 32\)"):
        convert_thesis_pickle(tmp_path / "d_train.pkl", out)
    df = _thesis_frame(rng, ["P1"], ["2"]).drop(columns=["patient_id"])
    df.to_pickle(tmp_path / "e_train.pkl")
    with pytest.raises(InputError, match=r"e_train.pkl: no patient identifier column"):
        convert_thesis_pickle(tmp_path / "e_train.pkl", out)
    df.drop(columns=["mask"]).assign(id=1).to_pickle(tmp_path / "f_train.pkl")
    with pytest.raises(InputError, match=r"f_train.pkl: missing column\(s\) mask; columns found"):
        convert_thesis_pickle(tmp_path / "f_train.pkl", out)
    assert not out.exists()
