"""Every command against a shared list of hostile or careless inputs (issue 9).

One table, one workspace: bad paths, hostile names, truncated and corrupted files of each format,
NaN / infinity in data, headers and options, output = input, absurd sizes. Each row runs the
command line in this process (``metalung_monai.cli.main``, the same code as the ``metalung``
entry point; ``tests/test_cli_contract.py`` checks a real process) and asserts the contract:

* **refused** rows: a non-zero exit status (1, or 2 for usage errors), exactly one line on stderr
  that starts with ``metalung <command>: error:`` and names the culprit (the file or option), no
  traceback, and no output left behind (a ``--out`` that did not exist still does not);
* **contained** rows (hostile names, which may be sanitised instead of refused): whatever the exit
  status, every file written lies inside ``--out`` and has a safe name;
* every row: no file appears, changes or disappears anywhere in the workspace outside ``--out``,
  and every input is byte-identical afterwards.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from chest_factory import make_chest
from test_utils_paths import HOSTILE_NAMES

from metalung_monai import cli

# --------------------------------------------------------------------------- the workspace


class Workspace:
    """Inputs under ``root/in``; each row writes to its own ``root/out/<row>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inp = root / "in"
        self.inp.mkdir(parents=True)

    def __call__(self, name: str) -> str:
        return str(self.inp / name)

    def out(self, row: str) -> str:
        return str(self.root / "out" / row)


def _write_volume(arr_zyx: np.ndarray, path: Path, spacing=(0.8, 0.8, 2.5)) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing(spacing[: arr_zyx.ndim])
    sitk.WriteImage(img, str(path), useCompression=str(path).endswith(".gz"))


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _nifti_float(path: Path, arr: np.ndarray, pixdim=(0.8, 0.8, 2.5)) -> None:
    """A float32 NIfTI of ``arr`` (z, y, x); ``pixdim`` is written into the header bytes as given
    (NaN and 0 included: nibabel itself refuses to build such an affine)."""
    import struct

    import nibabel as nib

    img = nib.Nifti1Image(arr.astype(np.float32).transpose(2, 1, 0), np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header.set_sform(None, code=0)  # the voxel size then comes from pixdim (qform) only
    img.header["vox_offset"] = 352
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    raw = bytearray(img.header.binaryblock + b"\0" * 4 + np.asarray(img.dataobj).tobytes(order="F"))
    raw[80:92] = struct.pack("<3f", *pixdim)  # pixdim[1..3]
    data = bytes(raw)
    path.write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


class _Shell:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    import pandas as pd
    import SimpleITK as sitk
    import torch

    from metalung_monai.anatomy import lung_rads_from_mask_image
    from metalung_monai.io.convert import convert
    from metalung_monai.io.dicom_write import write_dicom_series

    w = Workspace(tmp_path_factory.mktemp("hostile"))
    (w.root / "out").mkdir()  # each row writes to its own out/<row>
    inp = w.inp
    chest = make_chest(
        shape=(12, 96, 128), tumours=(("left", 7.0),), seed=3, spacing=(2.5, 0.8, 0.8)
    )
    _write_volume(chest.hu, inp / "ct.nii.gz")
    _write_volume(chest.mask, inp / "mask.nii.gz")
    _write_volume(chest.hu, inp / "ct.nii")
    _write_volume(chest.hu, inp / "ct.nrrd")
    _write_volume(chest.hu, inp / "ct.mha")
    _write_volume(chest.mask[:, :90], inp / "mask_other_shape.nii.gz")
    # truncated and corrupted files of each format
    _truncate(inp / "ct.nii.gz", inp / "half.nii.gz")
    flipped = bytearray((inp / "ct.nii.gz").read_bytes())
    for k in range(len(flipped) // 2, len(flipped) // 2 + 64):
        flipped[k] ^= 0xFF
    (inp / "flipped.nii.gz").write_bytes(bytes(flipped))
    _truncate(inp / "ct.nii", inp / "trunc.nii")
    _truncate(inp / "ct.nrrd", inp / "trunc.nrrd")
    _truncate(inp / "ct.mha", inp / "trunc.mha")
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm", ".pkl", ".pt", ".json"):
        (inp / f"garbage{ext}").write_bytes(np.random.default_rng(0).bytes(3000))
        (inp / f"empty{ext}").write_bytes(b"")
    (inp / "fake_gzip.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 50))
    # NaN and infinity in data and in headers
    arr = chest.hu.astype(np.float32)
    nan = arr.copy()
    nan[3, 40:44, 50:54] = np.nan
    _nifti_float(inp / "nan.nii.gz", nan)
    inf = arr.copy()
    inf[3, 40:44, 50:54] = np.inf
    _nifti_float(inp / "inf.nii.gz", inf)
    ninf = arr.copy()
    ninf[0, 0, 0] = -np.inf
    _nifti_float(inp / "minus_inf.nii.gz", ninf)
    _nifti_float(inp / "nan_spacing.nii.gz", arr, pixdim=(float("nan"), 0.8, 2.5))
    _nifti_float(inp / "zero_spacing.nii.gz", arr, pixdim=(0.0, 0.8, 2.5))
    _nifti_float(
        inp / "noise.nii.gz", np.random.default_rng(1).integers(-1024, 1500, size=(12, 96, 128))
    )
    # DICOM: a good series, one with a truncated last slice, one without rescale tags
    ct = sitk.ReadImage(str(inp / "ct.nii.gz"))
    files = write_dicom_series(ct, inp / "series", patient_id="P1", shuffle_names=False)
    (inp / "series_trunc").mkdir()
    for f in files:
        (inp / "series_trunc" / f.name).write_bytes(f.read_bytes())
    last = inp / "series_trunc" / files[-1].name
    _truncate(last, last, 0.6)
    import pydicom

    (inp / "series_norescale").mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope
        del ds.RescaleIntercept
        ds.save_as(inp / "series_norescale" / f.name)
    _truncate(files[0], inp / "trunc.dcm", 0.5)
    hostile = write_dicom_series(
        ct, inp / "series_hostile_pid", patient_id="../../evil_pid", shuffle_names=False
    )
    assert hostile
    # thesis pickles: empty, malicious, truncated, hostile patient ids
    pd.DataFrame({"patient_id": [], "hu_array_old": [], "mask": [], "label1": []}).to_pickle(
        inp / "empty_rows.pkl"
    )
    with open(inp / "malicious.pkl", "wb") as fh:
        pickle.dump(_Shell(w.root / "pwned"), fh)
    rows = []
    for pid in ["../../evil", "/abs/evil", "a/b", "x" * 3000]:
        full = chest.hu[6].astype(np.float64)
        m = chest.mask[6].copy()
        rows.append(
            {"patient_id": pid, "hu_array_old": full, "hu_array": full, "mask": m, "label1": "4A"}
        )
    pd.DataFrame(rows).to_pickle(inp / "hostile_train.pkl")
    good = inp / "hostile_train.pkl"
    _truncate(good, inp / "trunc.pkl")
    # a small converted dataset (3 training patients, 1 test) for augment / experiment / evaluate
    data = inp / "data"
    vols = []
    for k in range(4):
        c = make_chest(
            shape=(6, 96, 128),
            tumours=(("left" if k % 2 else "right", 6.0),),
            seed=10 + k,
            spacing=(2.5, 0.8, 0.8),
        )
        _write_volume(c.hu, inp / f"v{k}.nii.gz")
        _write_volume(c.mask, inp / f"v{k}_mask.nii.gz")
        vols.append(k)
    convert(
        [str(inp / f"v{k}.nii.gz") for k in range(3)],
        data,
        mask=[str(inp / f"v{k}_mask.nii.gz") for k in range(3)],
        split="train",
        progress=False,
        lung_rads_of_mask=lung_rads_from_mask_image,
    )
    convert(
        [str(inp / "v3.nii.gz")],
        data,
        mask=[str(inp / "v3_mask.nii.gz")],
        split="test",
        progress=False,
        lung_rads_of_mask=lung_rads_from_mask_image,
    )
    dl = json.loads((data / "datalist.json").read_text())
    for i, e in enumerate(dl["training"]):
        e["fold"] = i % 2
    (data / "datalist.json").write_text(json.dumps(dl, indent=1))
    # datalists derived from it (written next to it, so their relative paths still work)
    no_test = {k: v for k, v in dl.items() if k != "test"}
    (data / "no_test.json").write_text(json.dumps(no_test))
    empty_test = dict(dl, test=[])
    (data / "empty_test.json").write_text(json.dumps(empty_test))
    names = copy.deepcopy(dl)
    base = names["training"][0]
    names["training"] = []
    for name in HOSTILE_NAMES + [str(w.root / "evil_abs"), "../../../../evil_rel"]:
        e = dict(base, case_id=name)
        names["training"].append(e)
    (data / "hostile_ids.json").write_text(json.dumps(names))
    broken = dict(dl)
    broken["training"] = [dict(dl["training"][0], image="../half.nii.gz")]
    (data / "truncated_image.json").write_text(json.dumps(broken))
    other = dict(dl)
    other["training"] = [dict(dl["training"][0], mask="../mask_other_shape.nii.gz")]
    (data / "mask_shape.json").write_text(json.dumps(other))
    (data / "cut.json").write_text((data / "datalist.json").read_text()[:200])
    nan_dl = json.loads((data / "datalist.json").read_text())
    nan_dl["training"][0]["spacing"] = [float("nan"), 0.8, 0.8]
    (data / "nan_spacing.json").write_text(json.dumps(nan_dl))
    # checkpoints
    from monai.bundle import ConfigParser

    repo = Path(__file__).resolve().parents[1]
    parser = (
        ConfigParser()
    )  # the bundle's own U-Net (quick preset): weights that fit the unet model
    parser.read_config(str(repo / "bundles" / "unet_lung_tumor" / "configs" / "train.json"))
    parser.update({"bundle_root": str(repo / "bundles" / "unet_lung_tumor")})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), inp / "unet.pt")
    with open(inp / "malicious.pt", "wb") as fh:
        pickle.dump(_Shell(w.root / "pwned_ckpt"), fh)
    _truncate(inp / "unet.pt", inp / "trunc.pt")
    return w


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    id: str
    argv: Callable[[Workspace, str], list[str]]
    culprit: str | None = None  # substring the error line must hold (a file name or an option)
    status: int = 1  # 1 (error) or 2 (usage); None = any (contained rows)
    contained: bool = False  # hostile names: may succeed; nothing may leave --out


def _r(id, argv, culprit=None, status=1):
    return Row(id, argv, culprit, status)


NP = ["--no-progress"]


def _convert_file(id, name):
    """``convert`` of one bad input file: refused, and the error names the file."""
    return _r(f"convert-{id}", lambda w, o: ["convert", w(name), "--out", o, *NP], name)


ROWS: list[Row] = [
    # ---- phantom: absurd and impossible sizes, output over an input
    _r(
        "phantom-patients-huge",
        lambda w, o: ["phantom", "--out", o, "--patients", "100000000", *NP],
        "--patients",
    ),
    _r(
        "phantom-patients-zero",
        lambda w, o: ["phantom", "--out", o, "--patients", "0", *NP],
        "--patients",
    ),
    _r(
        "phantom-patients-negative",
        lambda w, o: ["phantom", "--out", o, "--patients", "-5", *NP],
        "--patients",
    ),
    _r(
        "phantom-size-64",
        lambda w, o: ["phantom", "--out", o, "--patients", "4", "--size", "64", *NP],
        "--size",
    ),
    _r(
        "phantom-size-huge",
        lambda w, o: ["phantom", "--out", o, "--patients", "4", "--size", "200000", *NP],
        "--size",
    ),
    _r(
        "phantom-thickness-nan",
        lambda w, o: ["phantom", "--out", o, "--slice-thickness", "nan", "nan", *NP],
        "--slice-thickness",
    ),
    _r(
        "phantom-thickness-inf",
        lambda w, o: ["phantom", "--out", o, "--slice-thickness", "2", "inf", *NP],
        "--slice-thickness",
    ),
    _r(
        "phantom-thickness-negative",
        lambda w, o: ["phantom", "--out", o, "--slice-thickness", "-1", "2", *NP],
        "--slice-thickness",
    ),
    _r(
        "phantom-workers-zero",
        lambda w, o: ["phantom", "--out", o, "--workers", "0", *NP],
        "--workers",
    ),
    _r(
        "phantom-out-is-a-file",
        lambda w, o: ["phantom", "--out", w("ct.nii.gz"), "--patients", "4", *NP],
        "ct.nii.gz",
    ),
    _r(
        "phantom-patients-not-a-number",
        lambda w, o: ["phantom", "--out", o, "--patients", "many"],
        "--patients",
        2,
    ),
    # ---- convert: missing, truncated, corrupted, NaN / inf, bad options, output over input
    _convert_file("missing", "nothing.nii.gz"),
    _convert_file("half-gz", "half.nii.gz"),
    _convert_file("flipped-gz", "flipped.nii.gz"),
    _convert_file("truncated-nii", "trunc.nii"),
    _convert_file("truncated-nrrd", "trunc.nrrd"),
    _convert_file("truncated-mha", "trunc.mha"),
    _convert_file("truncated-dcm", "trunc.dcm"),
    _convert_file("truncated-pkl", "trunc.pkl"),
    _convert_file("fake-gzip", "fake_gzip.nii.gz"),
    *[
        _convert_file(f"{kind}{ext}", f"{kind}{ext}")
        for kind in ("garbage", "empty")
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm", ".pkl")
    ],
    _convert_file("nan-voxels", "nan.nii.gz"),
    _convert_file("inf-voxels", "inf.nii.gz"),
    _convert_file("minus-inf-voxel", "minus_inf.nii.gz"),
    _convert_file("nan-voxel-size", "nan_spacing.nii.gz"),
    _convert_file("zero-voxel-size", "zero_spacing.nii.gz"),
    _convert_file("truncated-series-slice", "series_trunc"),
    _convert_file("series-without-rescale", "series_norescale"),
    _convert_file("empty-pickle", "empty_rows.pkl"),
    _convert_file("malicious-pickle", "malicious.pkl"),
    *[
        _r(
            f"convert-pixel-spacing-{v}",
            (
                lambda v: (
                    lambda w, o: [
                        "convert",
                        w("hostile_train.pkl"),
                        "--out",
                        o,
                        "--pixel-spacing",
                        v,
                        v,
                        *NP,
                    ]
                )
            )(v),
            "--pixel-spacing",
        )
        for v in ("nan", "inf", "0", "-0.7", "1e9")
    ],
    _r(
        "convert-mask-garbage",
        lambda w, o: ["convert", w("ct.nii.gz"), "--mask", w("garbage.nii.gz"), "--out", o, *NP],
        "garbage.nii.gz",
    ),
    _r(
        "convert-mask-other-shape",
        lambda w, o: [
            "convert",
            w("ct.nii.gz"),
            "--mask",
            w("mask_other_shape.nii.gz"),
            "--out",
            o,
            *NP,
        ],
        "mask_other_shape.nii.gz",
    ),
    _r(
        "convert-mask-truncated",
        lambda w, o: ["convert", w("ct.nii.gz"), "--mask", w("half.nii.gz"), "--out", o, *NP],
        "half.nii.gz",
    ),
    _r(
        "convert-out-contains-input",
        lambda w, o: ["convert", w("ct.nii.gz"), "--out", str(w.inp), *NP],
        "--out",
    ),
    _r(
        "convert-out-inside-series",
        lambda w, o: ["convert", w("series"), "--out", w("series/converted"), *NP],
        "--out",
    ),
    _r(
        "convert-out-is-the-mask",
        lambda w, o: [
            "convert",
            w("ct.nii.gz"),
            "--mask",
            w("mask.nii.gz"),
            "--out",
            w("mask.nii.gz"),
            *NP,
        ],
        "--out",
    ),
    Row(
        "convert-hostile-patient-id",
        lambda w, o: ["convert", w("ct.nii.gz"), "--patient-id", "../../evil", "--out", o, *NP],
        contained=True,
    ),
    Row(
        "convert-hostile-dicom-patient-id",
        lambda w, o: ["convert", w("series_hostile_pid"), "--out", o, *NP],
        contained=True,
    ),
    Row(
        "convert-hostile-pickle-rows",
        lambda w, o: ["convert", w("hostile_train.pkl"), "--out", o, *NP],
        contained=True,
    ),
    # ---- lung-mask: output over input, outputs over each other, no lungs, corrupted input
    _r(
        "lung-mask-out-is-input",
        lambda w, o: ["lung-mask", w("ct.nii.gz"), "--out", w("ct.nii.gz"), *NP],
        "--out",
    ),
    _r(
        "lung-mask-vessels-is-input",
        lambda w, o: [
            "lung-mask",
            w("ct.nii.gz"),
            "--out",
            o + ".nii.gz",
            "--vessels",
            w("ct.nii.gz"),
            *NP,
        ],
        "--vessels",
    ),
    _r(
        "lung-mask-free-space-is-input",
        lambda w, o: [
            "lung-mask",
            w("ct.nii.gz"),
            "--out",
            o + ".nii.gz",
            "--free-space",
            w("ct.nii.gz"),
            *NP,
        ],
        "--free-space",
    ),
    _r(
        "lung-mask-two-outputs-one-path",
        lambda w, o: [
            "lung-mask",
            w("ct.nii.gz"),
            "--out",
            o + ".nii.gz",
            "--vessels",
            o + ".nii.gz",
            *NP,
        ],
        "--vessels",
    ),
    _r(
        "lung-mask-out-inside-series",
        lambda w, o: ["lung-mask", w("series"), "--out", w("series/lungs.nii.gz"), *NP],
        "--out",
    ),
    _r(
        "lung-mask-random-noise",
        lambda w, o: ["lung-mask", w("noise.nii.gz"), "--out", o + ".nii.gz", *NP],
        "noise.nii.gz",
    ),
    _r(
        "lung-mask-half-gz",
        lambda w, o: ["lung-mask", w("half.nii.gz"), "--out", o + ".nii.gz", *NP],
        "half.nii.gz",
    ),
    _r(
        "lung-mask-inf-voxels",
        lambda w, o: ["lung-mask", w("inf.nii.gz"), "--out", o + ".nii.gz", *NP],
        "inf.nii.gz",
    ),
    _r(
        "lung-mask-bad-suffix",
        lambda w, o: ["lung-mask", w("ct.nii.gz"), "--out", o + ".txt", *NP],
        ".txt",
    ),
    _r(
        "lung-mask-min-distance-nan",
        lambda w, o: [
            "lung-mask",
            w("ct.nii.gz"),
            "--out",
            o + ".nii.gz",
            "--free-space",
            o + "_free.nii.gz",
            "--min-distance",
            "nan",
            *NP,
        ],
        "--min-distance",
    ),
    # ---- augment: output over the source, absurd requests, bad datalists and cases
    _r(
        "augment-out-is-datalist-folder",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", w("data"), *NP],
        "--out",
    ),
    _r(
        "augment-out-is-datalist-folder-overwrite",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", w("data"), "--overwrite", *NP],
        "--out",
    ),
    _r(
        "augment-out-contains-inputs",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", str(w.inp), *NP],
        "--out",
    ),
    _r(
        "augment-out-is-the-datalist",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", w("data/datalist.json"), *NP],
        "--out",
    ),
    _r(
        "augment-copies-huge",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", o, "--copies", "1000000", *NP],
        "--copies",
    ),
    _r(
        "augment-copies-zero",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", o, "--copies", "0", *NP],
        "--copies",
    ),
    _r(
        "augment-workers-zero",
        lambda w, o: ["augment", w("data/datalist.json"), "--out", o, "--workers", "0", *NP],
        "--workers",
    ),
    _r(
        "augment-unknown-op",
        lambda w, o: [
            "augment",
            w("data/datalist.json"),
            "--out",
            o,
            "--ops",
            "mirror,explode",
            *NP,
        ],
        "--ops",
    ),
    _r(
        "augment-missing-datalist",
        lambda w, o: ["augment", w("data/none.json"), "--out", o, *NP],
        "none.json",
    ),
    _r(
        "augment-cut-datalist",
        lambda w, o: ["augment", w("data/cut.json"), "--out", o, *NP],
        "cut.json",
    ),
    _r(
        "augment-garbage-datalist",
        lambda w, o: ["augment", w("garbage.json"), "--out", o, *NP],
        "garbage.json",
    ),
    _r(
        "augment-empty-datalist",
        lambda w, o: ["augment", w("empty.json"), "--out", o, *NP],
        "empty.json",
    ),
    _r(
        "augment-nan-in-datalist",
        lambda w, o: ["augment", w("data/nan_spacing.json"), "--out", o, *NP],
        "nan_spacing.json",
    ),
    _r(
        "augment-truncated-image",
        lambda w, o: ["augment", w("data/truncated_image.json"), "--out", o, *NP],
        "half.nii.gz",
    ),
    _r(
        "augment-mask-other-shape",
        lambda w, o: ["augment", w("data/mask_shape.json"), "--out", o, *NP],
        "mask_other_shape.nii.gz",
    ),
    Row(
        "augment-hostile-case-ids",
        lambda w, o: ["augment", w("data/hostile_ids.json"), "--out", o, "--ops", "mirror", *NP],
        contained=True,
    ),
    # ---- experiment: bad datalists and settings are refused before any training
    _r(
        "experiment-no-test-section",
        lambda w, o: [
            "experiment",
            "--datalist",
            w("data/no_test.json"),
            "--out",
            o,
            "--seeds",
            "1",
            *NP,
        ],
        "no_test.json",
    ),
    _r(
        "experiment-empty-test-section",
        lambda w, o: [
            "experiment",
            "--datalist",
            w("data/empty_test.json"),
            "--out",
            o,
            "--seeds",
            "1",
            *NP,
        ],
        "empty_test.json",
    ),
    _r(
        "experiment-missing-datalist",
        lambda w, o: ["experiment", "--datalist", w("data/none.json"), "--out", o, *NP],
        "none.json",
    ),
    *[
        _r(
            f"experiment-set-{s.replace('=', '-')}",
            (
                lambda s: (
                    lambda w, o: [
                        "experiment",
                        "--datalist",
                        w("data/datalist.json"),
                        "--out",
                        o,
                        "--set",
                        s,
                        *NP,
                    ]
                )
            )(s),
            "--set",
        )
        for s in (
            "foo=1",
            "epochs=0",
            "batch_size=0",
            "lr=nan",
            "epochs=1e12",
            "crop=-4",
            "epochs",
            "window=(1,)",
        )
    ],
    _r(
        "experiment-seeds-zero",
        lambda w, o: [
            "experiment",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
            "--seeds",
            "0",
            *NP,
        ],
        "--seeds",
    ),
    _r(
        "experiment-unknown-model",
        lambda w, o: [
            "experiment",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
            "--models",
            "unet,resnet",
            *NP,
        ],
        "--models",
    ),
    _r(
        "experiment-unknown-arm",
        lambda w, o: [
            "experiment",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
            "--augment",
            "none,magic",
            *NP,
        ],
        "--augment",
    ),
    _r(
        "experiment-out-contains-datalist",
        lambda w, o: ["experiment", "--datalist", w("data/datalist.json"), "--out", w("data"), *NP],
        "--out",
    ),
    # ---- evaluate: bad checkpoints and options are refused before anything runs
    *[
        _r(
            f"evaluate-{name}-checkpoint",
            (
                lambda f: (
                    lambda w, o: [
                        "evaluate",
                        w(f),
                        "--datalist",
                        w("data/datalist.json"),
                        "--out",
                        o,
                    ]
                )
            )(f),
            f,
        )
        for name, f in (
            ("garbage", "garbage.pt"),
            ("empty", "empty.pt"),
            ("malicious", "malicious.pt"),
            ("truncated", "trunc.pt"),
            ("missing", "none.pt"),
        )
    ],
    _r(
        "evaluate-unet-weights-for-deeplabv3",
        lambda w, o: [
            "evaluate",
            w("unet.pt"),
            "--model",
            "deeplabv3",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
        ],
        "unet.pt",
    ),
    _r(
        "evaluate-unet-weights-for-maskrcnn",
        lambda w, o: [
            "evaluate",
            w("unet.pt"),
            "--model",
            "maskrcnn",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
        ],
        "unet.pt",
    ),
    *[
        _r(
            f"evaluate-pixel-mm-{v}",
            (
                lambda v: (
                    lambda w, o: [
                        "evaluate",
                        w("unet.pt"),
                        "--datalist",
                        w("data/datalist.json"),
                        "--out",
                        o,
                        f"--pixel-mm={v}",
                    ]
                )
            )(v),
            "--pixel-mm",
        )
        for v in ("0", "-1", "nan", "inf")
    ],
    _r(
        "evaluate-no-test-section",
        lambda w, o: ["evaluate", w("unet.pt"), "--datalist", w("data/no_test.json"), "--out", o],
        "no_test.json",
    ),
    _r(
        "evaluate-out-contains-checkpoint",
        lambda w, o: [
            "evaluate",
            w("unet.pt"),
            "--datalist",
            w("data/datalist.json"),
            "--out",
            str(w.inp),
        ],
        "--out",
    ),
    _r(
        "evaluate-unknown-model",
        lambda w, o: [
            "evaluate",
            w("unet.pt"),
            "--model",
            "resnet",
            "--datalist",
            w("data/datalist.json"),
            "--out",
            o,
        ],
        "resnet",
    ),
]


def _snapshot(root: Path, skip: Path | None) -> dict[str, str]:
    """sha1 of every file under ``root`` except those under ``skip`` (the row's --out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for f in filenames:
            p = d / f
            if skip is not None and str(p).startswith(str(skip)):  # lung-mask outputs: <out>.nii.gz
                continue
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
        for sub in list(dirnames):
            if skip is None or (d / sub) != skip:
                out.setdefault(str((d / sub).relative_to(root)) + "/", "dir")
    return out


def test_the_suite_is_large_and_covers_every_command():
    assert len(ROWS) >= 100
    ids = [r.id for r in ROWS]
    assert len(set(ids)) == len(ids)
    for cmd in ("phantom", "convert", "lung-mask", "augment", "experiment", "evaluate"):
        assert sum(i.startswith(cmd) for i in ids) >= 5, cmd


#: rows over ~2 s (they run a real augmentation / plan a huge cohort): ``-m "not slow"`` skips them
SLOW_ROWS = ("augment-hostile-case-ids", "phantom-patients-huge")


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] * (r.id in SLOW_ROWS)) for r in ROWS]
)
def test_hostile_input(row: Row, ws: Workspace, capsys):
    out = Path(ws.out(row.id))
    before = _snapshot(ws.root, out)
    argv = row.argv(ws, str(out))
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        status = e.code
    err = capsys.readouterr().err
    after = _snapshot(ws.root, out)
    assert "Traceback" not in err, err
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files changed outside --out: {changed[:10]}"
    assert not (ws.root / "pwned").exists() and not (ws.root / "pwned_ckpt").exists()
    if row.contained:
        written = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
        for p in written:
            assert out.resolve() in p.resolve().parents
            assert re.fullmatch(r"\.?[A-Za-z0-9][A-Za-z0-9._-]*", p.name) and len(p.name) <= 255, (
                p.name
            )
        if status != 0:
            assert err.count("\n") == 1 and err.startswith(f"metalung {argv[0]}: error:"), err
        return
    assert status == row.status, f"exit status {status}, stderr: {err!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err!r}"
    assert lines[0].startswith(f"metalung {argv[0]}: error:"), lines[0]
    assert row.culprit in lines[0], f"the error does not name {row.culprit!r}: {lines[0]!r}"
    assert not out.exists() and not Path(str(out) + ".nii.gz").exists(), (
        "a refused run left output behind"
    )
