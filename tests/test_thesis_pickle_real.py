"""The path a user with the thesis' data takes, on real tumours: thesis-format pickles ->
``metalung convert`` -> ``metalung experiment``.

The pickles are built from the 130 real MSD Task06 patches of ``../shared/data/real/
msd_lung_patches`` (13 patients; skipped without the shared data) in the published format of
``lung_cancer_train.pkl`` / ``lung_cancer_test.pkl`` (:mod:`metalung_monai.io.thesis_pickle`):
one row per slice, ``hu_array_old`` (the slice, float64 HU as ``pixel_array * slope +
intercept`` gives it), ``hu_array`` (the thesis' lung-only slice; a 48 x 48 patch holds no whole
lung to cut out, so it is the same patch), ``mask`` ({0, 255}), ``label1`` (the thesis' Lung-RADS
spellings "1", "2", "3", "4A", "4B", from the mask's longest diameter at 2 mm pixels) and
``patient_id``; the test patients go to the ``*_test.pkl`` file, as in the thesis.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from metalung_monai import cli
from metalung_monai.anatomy.lung_rads import lung_rads_from_mask
from metalung_monai.io.datalist import load_datalist

#: the thesis' spelling of each class in ``label1``
LABEL1 = {"LR1": "1", "LR2": "2", "LR3": "3", "LR4A": "4A", "LR4B": "4B"}
#: a short experiment on 48 x 48 patches: two iterations of one batch of 2 (every step runs)
TINY = {
    "epochs": 1,
    "epoch_length": 2,
    "val_interval": 1,
    "batch_size": 2,
    "num_workers": 0,
    "crop": 48,
    "eval_roi": 48,
    "sw_batch_size": 4,
}


def _thesis_pickles(src, out) -> tuple[dict, set]:
    """``out/lung_cancer_train.pkl`` and ``out/lung_cancer_test.pkl`` from the MSD patches;
    returns ``pickle name -> [(patient, hu, mask, class) of each row]`` and the test patients."""
    table = list(csv.DictReader(open(src / "patches.csv", newline="")))
    patients = sorted({r["patient"] for r in table})
    test = set(patients[1::5])  # 3 of the 13 patients
    rows: dict[str, list] = {"lung_cancer_train.pkl": [], "lung_cancer_test.pkl": []}
    for r in table:
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "images" / f"{r['case']}.nii.gz")))[0]
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "masks" / f"{r['case']}.nii.gz")))[0]
        name = f"lung_cancer_{'test' if r['patient'] in test else 'train'}.pkl"
        rows[name].append((r["patient"], hu, m, lung_rads_from_mask(m, (2.0, 2.0))))
    for name, rs in rows.items():
        frame = [
            {
                "hu_array": hu.astype(np.float64),
                "hu_array_old": hu.astype(np.float64),
                "mask": (m * 255).astype(np.uint8),
                "label1": LABEL1[cls],
                "patient_id": pid,
            }
            for pid, hu, m, cls in rs
        ]
        pd.DataFrame(frame).to_pickle(out / name)
    return rows, test


@pytest.mark.slow
def test_thesis_pickles_of_real_tumours_convert_and_train(real_data, tmp_path, capsys):
    src = real_data / "msd_lung_patches"
    inp = tmp_path / "thesis"
    inp.mkdir()
    cases, test = _thesis_pickles(src, inp)
    ds = tmp_path / "ds"
    argv = ["convert", inp / "lung_cancer_train.pkl", inp / "lung_cancer_test.pkl"]
    argv += ["--out", ds, "--pixel-spacing", "2", "2", "--no-progress"]
    assert cli.main([str(a) for a in argv]) == 0
    assert "(training: 100, test: 30)" in capsys.readouterr().out
    dl = load_datalist(ds / "datalist.json")
    assert {e["patient_id"] for e in dl["test"]} == test
    assert not {e["patient_id"] for e in dl["training"]} & test
    # every row is its patch: exact HU, the mask as {0, 1}, the class of label1, 2 mm pixels
    for e in dl["training"] + dl["test"]:
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / e["image"])))
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / e["mask"])))
        pid, ref_hu, ref_m, cls = cases[Path(e["source"]).name][e["source_row"]]
        assert e["patient_id"] == pid
        assert hu.dtype == np.int16 and np.array_equal(hu, ref_hu)
        assert m.dtype == np.uint8 and np.array_equal(m, ref_m)
        assert e["lung_rads"] == cls and e["spacing"] == [2.0, 2.0] and e["shape"] == [48, 48]
    # training patients get patient-level folds: what experiment validates on
    folds = {}
    for e in dl["training"]:
        assert folds.setdefault(e["patient_id"], e["fold"]) == e["fold"]
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    # a short experiment on the converted folder: trains, validates, tests
    exp = tmp_path / "exp"
    argv = ["experiment", "--datalist", ds / "datalist.json", "--models", "unet"]
    argv += ["--augment", "none", "--seeds", "1", "--out", exp, "--no-progress"]
    argv += sum((["--set", f"{k}={v!r}"] for k, v in TINY.items()), [])
    assert cli.main([str(a) for a in argv]) == 0, capsys.readouterr().err
    text = (exp / "results.md").read_text()
    assert "| unet | none |" in text and "Table 7" in text
    done = json.loads((exp / "runs" / "unet" / "none" / "seed0" / "done.json").read_text())
    assert done["iterations"] == 2
    tumour = [cases[Path(e["source"]).name][e["source_row"]][2].any() for e in dl["training"]]
    n_train = sum(t and e["fold"] != 0 for t, e in zip(tumour, dl["training"]))
    assert done["train_samples"] == n_train  # the tumour patches outside the validation fold 0
