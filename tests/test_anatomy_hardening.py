"""``metalung lung-mask`` hardening (issue 9, findings #2 and #13e).

* #2: an output (``--out``, ``--vessels``, ``--free-space``) that is, contains or lies inside the
  input (a file or a DICOM folder), or two outputs on one path, are refused before anything is
  written; the input stays byte-identical.
* #13e: an image without lungs (random HU noise, air only, water only) is refused with an error
  naming the image ("no lungs found: ..."); every real chest CT of the reference data, the
  synthetic chests and the phantom are accepted with unchanged masks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
from test_anatomy_synthetic import SPACING, _sitk_lps, synthetic_chest

from metalung_monai.anatomy import analyse_lungs, check_lung_mask, lung_mask, lung_mask_problems
from metalung_monai.commands.lung_mask import add_parser
from metalung_monai.errors import InputError


def lung_mask_cmd(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metalung")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lung-mask", *argv, "--no-progress"])
    return args.func(args)


def _tree(folder) -> dict[str, str]:
    """sha1 of every file under ``folder`` (relative names)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha1(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def chest_file(tmp_path_factory):
    hu, _ = synthetic_chest(seed=3)
    path = tmp_path_factory.mktemp("ct") / "chest.nii.gz"
    sitk.WriteImage(sitk.Cast(_sitk_lps(hu, SPACING, flip_xy=True), sitk.sitkInt16), str(path))
    return path


# ----------------------------------------------------------------------------- #2 output = input
@pytest.mark.parametrize("option", ["--out", "--vessels", "--free-space"])
def test_an_output_on_the_input_is_refused_and_the_input_kept(chest_file, tmp_path, option):
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(chest_file, ct)
    before = _tree(tmp_path)
    outputs = {"--out": str(tmp_path / "lungs.nii.gz"), option: str(ct)}
    argv = [str(ct)] + [a for k, v in outputs.items() for a in (k, v)]
    with pytest.raises(InputError) as e:
        lung_mask_cmd(argv)
    assert e.value.source == option and "is the input" in str(e.value)
    assert _tree(tmp_path) == before  # byte-identical, and nothing written


def test_an_output_through_a_link_to_the_input_is_refused(chest_file, tmp_path):
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(chest_file, ct)
    (tmp_path / "link.nii.gz").symlink_to(ct)
    before = _tree(tmp_path)
    with pytest.raises(InputError, match="--out"):
        lung_mask_cmd([str(ct), "--out", str(tmp_path / "link.nii.gz")])
    assert _tree(tmp_path) == before


def test_an_output_inside_a_dicom_folder_input_is_refused(real_data, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(real_data / "lungmask_slice", series)
    before = _tree(tmp_path)
    with pytest.raises(InputError, match="lies inside the input") as e:
        lung_mask_cmd([str(series), "--out", str(series / "lungs.nii.gz")])
    assert e.value.source == "--out"
    with pytest.raises(InputError, match="--free-space"):
        lung_mask_cmd(
            [
                str(series),
                "--out",
                str(tmp_path / "l.nii.gz"),
                "--free-space",
                str(series / "sub" / "free.nii.gz"),
            ]
        )
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "pair", [("--out", "--vessels"), ("--out", "--free-space"), ("--vessels", "--free-space")]
)
def test_two_outputs_on_one_path_are_refused(chest_file, tmp_path, pair):
    same = str(tmp_path / "same.nii.gz")
    argv = [str(chest_file), "--out", str(tmp_path / "lungs.nii.gz")]
    for opt in pair:
        argv += [opt, same]
    with pytest.raises(InputError) as e:
        lung_mask_cmd(argv)
    assert e.value.source == pair[1]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- #13e no lungs
def _noise_images():
    rng = np.random.default_rng(9)
    return {
        "uniform_-1024_3071": (
            rng.integers(-1024, 3072, (24, 96, 96)).astype(np.int16),
            (2.5, 0.8, 0.8),
        ),
        "uniform_-1000_1000": (
            rng.uniform(-1000, 1000, (40, 128, 128)).astype(np.float32),
            (2.5, 0.8, 0.8),
        ),
        "uniform_-1024_1500": (
            rng.integers(-1024, 1500, (12, 96, 128)).astype(np.int16),
            (2.5, 0.8, 0.8),
        ),
        "uniform_-1024_0": (
            rng.uniform(-1024, 0, (40, 128, 128)).astype(np.float32),
            (1.0, 1.0, 1.0),
        ),
        "normal_0_500": (rng.normal(0, 500, (40, 128, 128)).astype(np.float32), (2.5, 0.8, 0.8)),
        "uniform_2d": (rng.uniform(-1000, 1000, (512, 512)).astype(np.float32), (0.7, 0.7)),
        "air": (np.full((20, 64, 64), -1000, np.int16), (2.5, 1.0, 1.0)),
        "air_and_padding": (
            np.where(np.arange(64)[None, :, None] < 8, -2048, -1000)
            * np.ones((8, 64, 64), np.int16),
            (2.5, 1.0, 1.0),
        ),
        "water": (np.zeros((20, 64, 64), np.int16), (2.5, 1.0, 1.0)),
        "water_2d": (np.zeros((128, 128), np.int16), (1.0, 1.0)),
    }


@pytest.fixture(scope="module")
def no_lungs():
    """name -> (hu, spacing, lung_mask labels) of the images without lungs (masks computed once)."""
    return {
        k: (hu, sp, lung_mask(hu, sp, progress=False)) for k, (hu, sp) in _noise_images().items()
    }


@pytest.mark.parametrize("name", list(_noise_images()))
def test_images_without_lungs_are_refused(no_lungs, name):
    hu, sp, lab = no_lungs[name]
    problems = lung_mask_problems(hu, lab, sp)
    assert problems, (
        f"{name}: accepted as lungs ({int((lab == 1).sum())} + {int((lab == 2).sum())} voxels)"
    )
    with pytest.raises(InputError, match="no lungs found: ") as e:
        check_lung_mask(hu, lab, sp, source=f"{name}.nii.gz")
    assert e.value.source == f"{name}.nii.gz" and "\n" not in str(e.value)


def test_the_library_refuses_on_request_only(no_lungs):
    hu, sp, lab = no_lungs["uniform_-1024_1500"]
    with pytest.raises(InputError, match="no lungs found") as e:
        lung_mask(hu, sp, progress=False, require_lungs=True)
    assert e.value.source == "lung_mask(hu)"
    with pytest.raises(InputError, match="no lungs found"):
        analyse_lungs(hu, sp, require_lungs=True)
    assert np.array_equal(
        lung_mask(hu, sp, progress=False), lab
    )  # by default a mask is returned, as before


def test_the_reasons_name_what_is_missing(no_lungs):
    msg = {k: "; ".join(lung_mask_problems(hu, lab, sp)) for k, (hu, sp, lab) in no_lungs.items()}
    assert "no body" in msg["air"] and "no body" in msg["air_and_padding"]
    assert "no air inside the body" in msg["water"] and "no air inside the body" in msg["water_2d"]
    for k in (
        "uniform_-1024_3071",
        "uniform_-1000_1000",
        "uniform_-1024_1500",
        "normal_0_500",
        "uniform_2d",
    ):
        # scattered candidates, or (blocks of 2 x 2 voxels below 0.875 mm, issue 11) hardly any,
        # or candidates too dense for aerated lung (which of these is met first depends on the
        # noise and on scipy / scikit-image's labelling: each names what is missing)
        assert "scattered" in msg[k] or "at least 1 cm2" in msg[k] or "aerated lung" in msg[k], (
            k,
            msg[k],
        )
    m = msg["uniform_-1024_0"]  # since issue 11 half of a lung must lie 15 mm deep: hardly any
    assert ("body surface" in m and "of the body" in m) or "at least 1 cm2" in m, m


@pytest.mark.parametrize("name", ["uniform_-1024_1500", "air", "water"])
def test_the_command_refuses_an_image_without_lungs_and_writes_nothing(name, tmp_path):
    hu, sp = _noise_images()[name]
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(tuple(float(s) for s in sp[::-1]))
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(img, str(path))
    before = _tree(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="no lungs found") as e:
        lung_mask_cmd(
            [
                str(path),
                "--out",
                str(tmp_path / "lungs.nii.gz"),
                "--vessels",
                str(tmp_path / "v.nii.gz"),
            ]
        )
    assert e.value.source == str(path)
    assert _tree(tmp_path) == before
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_the_metalung_command_prints_one_line(tmp_path, capsys):
    from metalung_monai.cli import main

    hu, sp = _noise_images()["uniform_-1024_1500"]
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(tuple(float(s) for s in sp[::-1]))
    path = tmp_path / "noise.nii.gz"
    sitk.WriteImage(img, str(path))
    assert main(["lung-mask", str(path), "--out", str(tmp_path / "m.nii.gz"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"metalung lung-mask: error: {path}: no lungs found: "
    )
    assert not (tmp_path / "m.nii.gz").exists()


# ----------------------------------------------------------------------------- chests are accepted
def _accept(hu, sp, name, compare: bool = False):
    lab = lung_mask(hu, sp, progress=False)
    problems = lung_mask_problems(hu, lab, sp)
    assert not problems, f"{name}: {problems}"
    check_lung_mask(hu, lab, sp, source=name)
    if compare:  # the check changes no mask
        assert np.array_equal(lung_mask(hu, sp, progress=False, require_lungs=True), lab)
    return lab


@pytest.mark.slow
def test_synthetic_chests_are_accepted():
    from chest_factory import make_chest

    hu, _ = synthetic_chest(seed=3)
    _accept(hu, SPACING, "synthetic chest", compare=True)
    _accept(hu[30], SPACING[1:], "synthetic chest slice", compare=True)
    hu, _ = synthetic_chest(seed=0, joined=True)
    _accept(hu, SPACING, "joined lungs")
    for shape, sp in (
        ((12, 96, 128), (2.5, 0.8, 0.8)),
        ((96, 128), (1.0, 1.0)),
        ((24, 128, 160), (2.5, 1.0, 1.0)),
    ):
        c = make_chest(shape=shape, spacing=sp, seed=1)
        _accept(c.hu, c.spacing, f"make_chest {shape}")
    a = analyse_lungs(hu, SPACING, require_lungs=True)
    assert np.array_equal(a.lungs, lung_mask(hu, SPACING, progress=False))


def test_phantom_patients_are_accepted():
    from metalung_monai.phantom import generate_patient, sample_patient_params

    vol = generate_patient(sample_patient_params(0, 1, "LR1", size=128, slice_thickness=5.0))
    lab = _accept(vol.hu, vol.spacing, "phantom")
    lungs_z = np.flatnonzero(lab.any(axis=(1, 2)))
    for z in (
        lungs_z[len(lungs_z) // 4],
        lungs_z[len(lungs_z) // 2],
        lungs_z[3 * len(lungs_z) // 4],
    ):
        _accept(vol.hu[z], vol.spacing[1:], f"phantom slice {z}")


def _canonical(path):
    from metalung_monai.io import read_ct
    from metalung_monai.utils.orientation import sitk_to_canonical

    arr, sp = sitk_to_canonical(read_ct(path, progress=False).image)
    return (arr[0], sp[1:]) if arr.shape[0] == 1 else (arr, sp)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_chest_ct_is_accepted(real_data):
    for rel in (
        "lungmask_slice/0.dcm",
        "lungmask_slice/1.dcm",
        "metalung_example/1-141.dcm",
        "pyradiomics_lung1/lung1_image.nrrd",
    ):
        hu, sp = _canonical(real_data / rel)
        _accept(hu, sp, rel, compare=hu.ndim == 2)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(real_data / "dcmqi_ge_3slice" / f"0{i}.dcm") for i in (1, 2, 3)])
    from metalung_monai.utils.orientation import sitk_to_canonical

    hu, sp = sitk_to_canonical(reader.Execute())
    _accept(hu, sp, "dcmqi_ge_3slice")
    for k in range(3):
        _accept(hu[k], sp[1:], f"dcmqi_ge_3slice slice {k}")


@pytest.mark.slow
@pytest.mark.real_data
def test_real_chest_series_is_accepted(real_data):
    hu, sp = _canonical(real_data / "cptac_chest_series")
    _accept(hu[20:60], sp, "cptac_chest_series slices 20-59")
    # lung bases beside the upper abdomen (slice 3: 2 cm2 of lung; slice 0 lies below the lungs:
    # its "10 cm2 of lung" were colon gas, issue 11) to the upper lobes
    for z in (3, 5, 10, 40, 70):
        _accept(hu[z], sp[1:], f"cptac_chest_series slice {z}")


def test_a_series_without_rescale_tags_needs_rescale(chest_file, tmp_path):
    """DICOM without RescaleSlope/Intercept is refused (naming --rescale), and --rescale reads it."""
    import pydicom

    from metalung_monai.io.dicom_write import write_dicom_series

    files = write_dicom_series(
        sitk.ReadImage(str(chest_file)),
        tmp_path / "series",
        patient_id="P1",
        rescale_intercept=-1024,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(f)
    with pytest.raises(InputError, match="--rescale"):
        lung_mask_cmd([str(tmp_path / "series"), "--out", str(tmp_path / "lungs.nii.gz")])
    assert not (tmp_path / "lungs.nii.gz").exists()
    assert (
        lung_mask_cmd(
            [
                str(tmp_path / "series"),
                "--out",
                str(tmp_path / "lungs.nii.gz"),
                "--rescale",
                "1",
                "-1024",
            ]
        )
        == 0
    )
    expected = lung_mask(*_canonical(chest_file))
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lungs.nii.gz")))
    assert got.max() == 2 and int((got > 0).sum()) == int((expected > 0).sum())
    with pytest.raises(InputError, match="--rescale"):
        lung_mask_cmd(
            [str(tmp_path / "series"), "--out", str(tmp_path / "l2.nii.gz"), "--rescale", "0", "0"]
        )
