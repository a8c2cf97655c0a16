"""``metalung lung-mask``: outputs on the image's grid, summary line, typed errors, no partial files."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import SimpleITK as sitk
from test_anatomy_synthetic import SPACING, _sitk_lps, synthetic_chest

from metalung_monai.anatomy import analyse_lungs, lung_mask, lung_mask_image
from metalung_monai.commands.lung_mask import add_parser, run
from metalung_monai.errors import InputError, UnsupportedFormatError
from metalung_monai.utils.orientation import sitk_to_canonical


def lung_mask_cmd(argv: list[str]) -> int:
    """Parse ``metalung lung-mask`` arguments with this module's own parser and run them."""
    parser = argparse.ArgumentParser(prog="metalung")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lung-mask", *argv])
    assert args.func is run
    return args.func(args)


@pytest.fixture(scope="module")
def chest_nifti(tmp_path_factory):
    hu, truth = synthetic_chest(seed=3)
    img = sitk.Cast(_sitk_lps(hu, SPACING, flip_xy=True), sitk.sitkInt16)  # stored RAS-like
    path = tmp_path_factory.mktemp("ct") / "chest.nii.gz"
    sitk.WriteImage(img, str(path))
    return path, hu, truth


def test_writes_labels_vessels_and_free_space(chest_nifti, tmp_path, capsys):
    path, hu, truth = chest_nifti
    out, ves, free = (
        tmp_path / "lungs.nii.gz",
        tmp_path / "sub" / "vessels.nii.gz",
        tmp_path / "free.nii.gz",
    )
    rc = lung_mask_cmd(
        [
            str(path),
            "--out",
            str(out),
            "--vessels",
            str(ves),
            "--free-space",
            str(free),
            "--min-distance",
            "4",
            "--no-progress",
        ]
    )
    assert rc == 0
    img = sitk.ReadImage(str(path))
    lab_img = sitk.ReadImage(str(out))
    assert lab_img.GetPixelID() == sitk.sitkUInt8
    for o in (lab_img, sitk.ReadImage(str(ves)), sitk.ReadImage(str(free))):
        assert o.GetSize() == img.GetSize()
        assert np.allclose(o.GetDirection(), img.GetDirection()) and np.allclose(
            o.GetOrigin(), img.GetOrigin()
        )
        assert np.allclose(o.GetSpacing(), img.GetSpacing())
    lab, _ = sitk_to_canonical(lab_img)
    expect = analyse_lungs(hu, SPACING)
    assert np.array_equal(lab, expect.lungs)
    assert np.array_equal(sitk_to_canonical(sitk.ReadImage(str(ves)))[0] > 0, expect.vessels)
    assert np.array_equal(
        sitk_to_canonical(sitk.ReadImage(str(free)))[0] > 0, expect.free_space(4.0)
    )
    # the right lung (label 1) is the patient's right although the file stores x reversed
    assert (lab[truth["lung_r"]] == 1).mean() > 0.99
    line = capsys.readouterr().out.strip().splitlines()[-1]
    nr, nl = expect.right_voxels, expect.left_voxels
    assert line.startswith("lung-mask: ")
    assert f"right lung {nr} voxels ({nr * 2.5 / 1000:.1f} ml)" in line
    assert f"left lung {nl} voxels ({nl * 2.5 / 1000:.1f} ml)" in line
    assert not list(tmp_path.rglob(".*partial*"))


def test_free_space_without_min_distance_is_the_distance_map(chest_nifti, tmp_path):
    path, hu, truth = chest_nifti
    free = tmp_path / "free.nrrd"
    assert lung_mask_cmd([str(path), "-o", str(tmp_path / "l.nii"), "--free-space", str(free)]) == 0
    d_img = sitk.ReadImage(str(free))
    assert d_img.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(
        sitk_to_canonical(d_img)[0], analyse_lungs(hu, SPACING).free_distance
    )


def test_bad_arguments_raise_and_write_nothing(chest_nifti, tmp_path):
    path, hu, truth = chest_nifti
    out = tmp_path / "lungs.nii.gz"
    with pytest.raises(UnsupportedFormatError, match="--out"):
        lung_mask_cmd([str(path), "--out", str(tmp_path / "lungs.png")])
    with pytest.raises(InputError, match="--min-distance"):
        lung_mask_cmd([str(path), "--out", str(out), "--min-distance", "3"])
    with pytest.raises(InputError, match="--min-distance"):
        lung_mask_cmd(
            [
                str(path),
                "--out",
                str(out),
                "--free-space",
                str(tmp_path / "f.nii.gz"),
                "--min-distance",
                "-1",
            ]
        )
    with pytest.raises(InputError, match="does not exist"):
        lung_mask_cmd([str(tmp_path / "missing.nii.gz"), "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_dicom_slice_input(real_data, tmp_path, capsys):
    src = real_data / "lungmask_slice" / "0.dcm"
    out = tmp_path / "lungs.nii.gz"
    assert lung_mask_cmd([str(src), "--out", str(out)]) == 0
    got = sitk.ReadImage(str(out))
    expect = lung_mask_image(sitk.ReadImage(str(src)))
    assert np.array_equal(
        sitk.GetArrayFromImage(got).squeeze(), sitk.GetArrayFromImage(expect).squeeze()
    )
    arr, sp = sitk_to_canonical(sitk.ReadImage(str(src)))
    lab = lung_mask(arr[0], sp[1:])
    line = capsys.readouterr().out
    assert f"right lung {int((lab == 1).sum())} voxels" in line and "cm2" in line


@pytest.mark.slow
def test_through_the_metalung_command(chest_nifti, tmp_path, capsys):
    from metalung_monai.cli import main

    path, hu, truth = chest_nifti
    assert main(["lung-mask", str(path), "--out", str(tmp_path / "m.nii.gz")]) == 0
    assert main(["lung-mask", str(path), "--out", str(tmp_path / "m.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("metalung lung-mask: error: ") and "m.png" in err[-1]
