"""Names from data never choose where a file goes; outputs never touch inputs (issue 9, #1-#3)."""

from __future__ import annotations

import pytest

from metalung_monai.errors import InputError
from metalung_monai.utils.paths import (
    MAX_NAME_LENGTH,
    check_free_space,
    child_path,
    is_safe_name,
    refuse_overlap,
    remove_owned,
    safe_name,
)

#: names a datalist, a DICOM header or a pickle row may carry; shared with the command-line suite
HOSTILE_NAMES = [
    "../../x",
    "/abs/dir/evil",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    "...",
    ".hidden",
    "x" * 5000,
    "nul\x00byte",
    "new\nline",
    "CON",
    "con.nii",
    "-rf",
    "~",
    "~root",
    "$(touch pwned)",
    "P 001",
    "é",
    "..\\..\\win",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_safe_name_of_a_hostile_name_is_one_component_inside_the_folder(name, tmp_path):
    s = safe_name(name)
    assert is_safe_name(s), s
    assert len(s) <= MAX_NAME_LENGTH
    assert "/" not in s and "\\" not in s and "\x00" not in s and not s.startswith(".")
    p = child_path(tmp_path, s, ".nii.gz")
    assert p.resolve().parent == tmp_path.resolve()


def test_safe_names_are_kept_and_hostile_ones_never_collide():
    for ok in ("P0001", "LIDC-IDRI-0001_slice", "case.1", "a_b-c"):
        assert safe_name(ok) == ok
    outs = [safe_name(n) for n in HOSTILE_NAMES]
    assert len(set(outs)) == len(outs)
    # a hostile name never takes the name of an ordinary one it resembles
    assert safe_name("../../x") != "x" and safe_name("/abs/dir/evil") != "abs_dir_evil"
    assert safe_name("../../x") == safe_name("../../x")  # deterministic
    assert safe_name("a/b", disambiguate=False) == "a_b"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", "", ".x", "x" * 500])
def test_child_path_refuses_names_that_could_leave_the_folder(name, tmp_path):
    with pytest.raises(InputError, match="not a safe file name"):
        child_path(tmp_path, name, ".json", source="datalist.json")


def test_refuse_overlap_is_contains_and_inside(tmp_path):
    src = tmp_path / "cohort"
    (src / "images").mkdir(parents=True)
    dl = src / "datalist.json"
    dl.write_text("{}")
    img = src / "images" / "P1.nii.gz"
    img.write_bytes(b"x")
    with pytest.raises(InputError, match="is the input"):
        refuse_overlap(img, [img], "--out")
    with pytest.raises(InputError, match="contains the input"):
        refuse_overlap(src, [dl, img], "--out")
    with pytest.raises(InputError, match="contains the input"):
        refuse_overlap(tmp_path, [img], "--out")
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap(src / "images" / "out", [src / "images"], "--out")
    # a symbolic link to the input is the input
    link = tmp_path / "link.nii.gz"
    link.symlink_to(img)
    with pytest.raises(InputError, match="is the input"):
        refuse_overlap(link, [img])
    with pytest.raises(InputError) as e:
        refuse_overlap(str(src) + "/./", [dl], "--out")
    assert e.value.source == "--out"
    refuse_overlap(tmp_path / "aug", [dl, img, src / "images"])  # apart: accepted
    refuse_overlap(tmp_path / "cohort2", [src])  # a sibling whose name starts alike


def test_remove_owned_deletes_only_listed_files_inside_the_folder(tmp_path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    mine = out / "images" / "a.nii.gz"
    mine.write_bytes(b"1")
    theirs = out / "images" / "b.nii.gz"
    theirs.write_bytes(b"2")
    notes = out / "notes.txt"
    notes.write_text("keep")
    outside = tmp_path / "victim.txt"
    outside.write_text("keep")
    n = remove_owned(
        out, ["images/a.nii.gz", "../victim.txt", str(outside), "images/missing.nii.gz", ""]
    )
    assert n == 1
    assert not mine.exists() and theirs.exists() and notes.exists() and outside.exists()
    link = out / "images" / "link.nii.gz"  # a listed link goes, its target stays
    link.symlink_to(theirs)
    assert remove_owned(out, ["images/link.nii.gz"]) == 1
    assert not link.is_symlink() and theirs.exists()
    remove_owned(out, ["images/b.nii.gz"])
    assert not (out / "images").exists() and notes.exists()  # folder left empty is removed


def test_check_free_space_refuses_what_cannot_fit(tmp_path):
    check_free_space(tmp_path / "not" / "yet", 1000, "the cohort")
    with pytest.raises(InputError, match=r"--patients: the cohort needs about .* free"):
        check_free_space(tmp_path / "not" / "yet", 1e18, "the cohort", option="--patients")
    assert not (tmp_path / "not").exists()
