"""Issue 9 hardening of `metalung augment` and the MetaLung transforms.

#1 names from data never choose where a file goes; #3 an output never overlaps an input and
--overwrite deletes only what augment wrote; #12 absurd requests are refused up front and the
variants are streamed (flat memory); #13c a mask of another shape is refused naming its key;
#13d one mask convention ({0, 1} in the mask's dtype) for every operation; and a real SIGKILL of
a real `metalung augment` process, then a resume that equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from chest_factory import as_dict, make_chest
from killing import sigkill_when

from metalung_monai.cli import main
from metalung_monai.errors import InputError
from metalung_monai.io.datalist import datalist_entries, load_datalist
from metalung_monai.transforms import (
    METALUNG_OPS,
    MetaLungd,
    MirrorLRd,
    RandMirrorLRd,
    RandRelocateTumor,
    RandRelocateTumord,
    RandRotateImaged,
    RandRotateTumor,
    RandRotateTumord,
    RandTumorNoise,
    RandTumorNoised,
)
from metalung_monai.transforms.metalung.offline import MANIFEST, expand_datalist
from metalung_monai.utils.paths import is_safe_name

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers
def _tiny_volume(folder: Path, shape=(10, 40, 48), seed=0) -> tuple[Path, Path]:
    """A small int16 CT (air, body, lungs) and a uint8 tumour mask {0, 1} written as NIfTI."""
    folder.mkdir(parents=True, exist_ok=True)
    c = make_chest(shape=shape, tumours=(("left", 4.0),), seed=seed, n_vessels=3)
    paths = []
    for name, arr in (("img", c.hu), ("mask", c.mask)):
        im = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        im.SetSpacing((1.0, 1.0, 2.5))
        p = folder / f"{name}.nii.gz"
        sitk.WriteImage(im, str(p), useCompression=True)
        paths.append(p)
    return paths[0], paths[1]


def _datalist(folder: Path, case_ids: list, name="dl.json", **extra) -> Path:
    """A datalist in ``folder`` whose training cases all use ``folder``'s img/mask files."""
    entries = []
    for i, cid in enumerate(case_ids):
        e = {"image": "img.nii.gz", "mask": "mask.nii.gz", "patient_id": f"P{i:04d}", **extra}
        if cid is not None:
            e["case_id"] = cid
        entries.append(e)
    path = folder / name
    path.write_text(json.dumps({"name": "tiny", "training": entries}))
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    _tiny_volume(folder)
    return folder


# --------------------------------------------------------------------------- #1 path traversal
HOSTILE_IDS = [
    "P0001",  # safe: keeps its file names
    "a_b",  # safe, and what "a/b" sanitises to
    "a/b",
    "a\\b",
    "..",
    "",
    "../../escaped",
    "x" * 5000,
    "x" * 5001,
    "nul\x00id",
    "new\nline",
    "CON",  # a reserved device name on Windows
]


@pytest.mark.slow
def test_hostile_case_ids_write_only_inside_out_and_never_collide(tiny, tmp_path, capsys):
    root = tmp_path / "root"
    data = root / "data"
    data.mkdir(parents=True)
    for f in ("img.nii.gz", "mask.nii.gz"):
        (data / f).write_bytes((tiny / f).read_bytes())
    ids = HOSTILE_IDS + [str(root / "abs_evil")]  # an absolute path, inside our tree
    dl = _datalist(data, ids)
    out = root / "deep" / "er" / "out"
    before = set(_tree(root))
    rc = main(
        ["augment", str(dl), "--out", str(out), "--ops", "mirror,noise_tumor", "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    after = set(_tree(root))
    outside = {p for p in after - before if not (root / p).resolve().is_relative_to(out.resolve())}
    assert not outside, outside
    new = load_datalist(out / "datalist.json")
    originals = [e for e in new["training"] if not e.get("augmentation")]
    variants = [e for e in new["training"] if e.get("augmentation")]
    assert len(originals) == len(ids) and len(variants) == 2 * len(
        ids
    )  # every case: its own 2 variants
    images = [v["image"] for v in variants]
    assert len(set(images)) == len(images)  # no two cases share a file
    for v in variants:
        assert v["image"].startswith("images/") and v["mask"].startswith("masks/")
        assert (
            is_safe_name(v["case_id"])
            and (out / v["image"]).is_file()
            and (out / v["mask"]).is_file()
        )
    # every original is listed under its safe name, and its variants point to it
    names = [e["case_id"] for e in originals if "case_id" in e]
    assert len(set(names)) == len(names) and all(is_safe_name(n) for n in names)
    assert {v["source_case"] for v in variants} == set(names)
    assert len({e["case_id"] for e in new["training"]}) == len(new["training"])
    for f in out.rglob("*"):  # every name written is a plain safe name
        assert re.fullmatch(r"\.?[A-Za-z0-9][A-Za-z0-9._-]*", f.name) and len(f.name) <= 255, f.name
    # safe ids keep their file names
    assert (out / "images" / "P0001__mirror_0.nii.gz").is_file()
    assert (out / "masks" / "a_b__noise_tumor_0.nii.gz").is_file()
    assert (out / "records" / "P0001.json").is_file()


def test_case_ids_are_safe_unique_and_keep_safe_names():
    from metalung_monai.transforms.metalung.offline import _case_ids

    entries = [
        {"image": "/d/img.nii.gz", "case_id": c} for c in HOSTILE_IDS + ["a/b", "P0001", "P0001_1"]
    ]
    entries.append({"image": "/d/../../evil name.nii.gz"})  # no case id: the file name
    ids = _case_ids(entries)
    assert len(ids) == len(entries)  # nothing lost to a collision
    assert all(is_safe_name(c) for c in ids)
    assert list(ids)[:2] == ["P0001", "a_b"]
    assert "P0001_13" in ids and "P0001_1" in ids  # repeats made unique


# --------------------------------------------------------------------------- #3 destroyed inputs
def test_out_overlapping_an_input_is_refused_before_anything_is_written(tiny, tmp_path, capsys):
    data = tmp_path / "cohort"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for sub, f in (("images", "img.nii.gz"), ("masks", "mask.nii.gz")):
        (data / sub / f).write_bytes((tiny / f).read_bytes())
    dl = data / "datalist.json"
    dl.write_text(
        json.dumps(
            {
                "training": [
                    {
                        "image": "images/img.nii.gz",
                        "mask": "masks/mask.nii.gz",
                        "patient_id": "P1",
                        "case_id": "P1",
                    }
                ]
            }
        )
    )
    before = _tree(tmp_path)
    for out, flags in (
        (data, []),
        (data, ["--overwrite"]),
        (data / "images", []),
        (data / "images" / "img.nii.gz", []),
        (data / "images" / "img.nii.gz" / "x", []),
        (dl, []),
        (tmp_path, []),
    ):
        rc = main(
            ["augment", str(dl), "--out", str(out), "--ops", "mirror", "--no-progress", *flags]
        )
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 1 and "--out" in line and ("input" in line), line
        assert _tree(tmp_path) == before  # nothing written, nothing lost


@pytest.mark.slow
def test_overwrite_deletes_only_what_augment_wrote(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for f in ("img.nii.gz", "mask.nii.gz"):
        (data / f).write_bytes((tiny / f).read_bytes())
    dl = _datalist(data, ["C1", "C2"])
    out = tmp_path / "out"
    expand_datalist(dl, out, ops=["mirror", "noise_tumor"], copies=2, seed=0, progress=False)
    first = set(_tree(out))
    assert "images/C1__noise_tumor_1.nii.gz" in first
    # the user's files, another tool's image, and a killed write of ours
    (out / "notes.txt").write_text("mine")
    (out / "images" / "scan.nii.gz").write_bytes(b"someone else's")
    (out / "images" / "C1__mirror_0-note.txt").write_text("also mine")
    (out / "images" / ".C2__noise_tumor_5.partial-12-deadbeef.nii.gz").write_bytes(
        b"half"
    )  # ours? k=5 >= copies
    (out / "masks" / ".C2__noise_tumor_1.partial-12-deadbeef.nii.gz").write_bytes(b"half")  # ours
    # other settings: refused without --overwrite, nothing touched
    snapshot = _tree(out)
    rc = main(
        [
            "augment",
            str(dl),
            "--out",
            str(out),
            "--ops",
            "mirror,noise_tumor",
            "--copies",
            "1",
            "--no-progress",
        ]
    )
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1 and "other settings" in line and "--overwrite" in line
    assert _tree(out) == snapshot
    rc = main(
        [
            "augment",
            str(dl),
            "--out",
            str(out),
            "--ops",
            "mirror,noise_tumor",
            "--copies",
            "1",
            "--no-progress",
            "--overwrite",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    after = _tree(out)
    assert after["notes.txt"] == b"mine" and after["images/scan.nii.gz"] == b"someone else's"
    assert after["images/C1__mirror_0-note.txt"] == b"also mine"
    assert ".C2__noise_tumor_5.partial-12-deadbeef.nii.gz" in os.listdir(
        out / "images"
    )  # not a name we give
    assert not (out / "masks" / ".C2__noise_tumor_1.partial-12-deadbeef.nii.gz").exists()
    assert not (out / "images" / "C1__noise_tumor_1.nii.gz").exists()  # the old run's copy 1: gone
    listed = {
        v[k]
        for v in load_datalist(out / "datalist.json")["training"]
        if v.get("augmentation")
        for k in ("image", "mask")
    }
    ours = {
        p
        for p in after
        if p.startswith(("images/", "masks/"))
        and p.endswith(".nii.gz")
        and "__" in p
        and not Path(p).name.startswith(".")
    }
    assert ours == listed  # no stale variant is left


def test_a_tampered_manifest_or_record_cannot_widen_what_overwrite_deletes(tmp_path):
    from metalung_monai.transforms.metalung.offline import _owned_files
    from metalung_monai.utils.paths import remove_owned

    out = tmp_path / "out"
    (out / "records").mkdir(parents=True)
    (out / "images").mkdir()
    (tmp_path / "victim.json").write_text("theirs")
    (out / "notes.json").write_text("mine")
    (out / "records" / "C1.json").write_text(
        json.dumps(
            {
                "variants": [
                    {"image": "images/../notes.json", "mask": "../victim.json"},
                    {"image": "/abs/x.nii.gz"},
                ]
            }
        )
    )
    owned = _owned_files(
        out, {"cases": ["../notes", "../../victim", "C1", 7], "ops": ["mirror"], "copies": 1}
    )
    assert owned == sorted(
        [MANIFEST, "datalist.json", "heatmap.png", "records/C1.json", "records/C1.npz"]
    )
    remove_owned(out, owned)
    assert (out / "notes.json").read_text() == "mine" and (
        tmp_path / "victim.json"
    ).read_text() == "theirs"


def test_out_holding_files_augment_did_not_write_is_refused(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for f in ("img.nii.gz", "mask.nii.gz"):
        (data / f).write_bytes((tiny / f).read_bytes())
    dl = _datalist(data, ["C1"])
    out = tmp_path / "other"
    out.mkdir()
    (out / "datalist.json").write_text('{"training": []}')
    for flags in ([], ["--overwrite"]):
        rc = main(
            ["augment", str(dl), "--out", str(out), "--ops", "mirror", "--no-progress", *flags]
        )
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 1 and "--out" in line and "did not write" in line
    assert (
        os.listdir(out) == ["datalist.json"]
        and (out / "datalist.json").read_text() == '{"training": []}'
    )


def test_a_case_that_cannot_be_used_is_refused_before_anything_is_written(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for f in ("img.nii.gz", "mask.nii.gz"):
        (data / f).write_bytes((tiny / f).read_bytes())
    small = sitk.GetImageFromArray(np.zeros((10, 20, 48), np.uint8))
    sitk.WriteImage(small, str(data / "mask_other_shape.nii.gz"))
    (data / "not_an_image.nii.gz").write_bytes(b"\x1f\x8b garbage")
    good = {"image": "img.nii.gz", "mask": "mask.nii.gz", "patient_id": "P1", "case_id": "C1"}
    for bad, culprit in (
        ({"mask": "mask_other_shape.nii.gz"}, "mask_other_shape.nii.gz"),
        ({"lung_mask": "mask_other_shape.nii.gz"}, "mask_other_shape.nii.gz"),
        ({"image": "not_an_image.nii.gz"}, "not_an_image.nii.gz"),
    ):
        dl = data / "dl.json"
        dl.write_text(
            json.dumps({"training": [good, dict(good, patient_id="P2", case_id="C2", **bad)]})
        )
        out = tmp_path / "new" / "out"
        rc = main(["augment", str(dl), "--out", str(out), "--ops", "mirror", "--no-progress"])
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 1 and culprit in line, line
        assert not (tmp_path / "new").exists()  # nothing written, not even --out
    nan = data / "nan.json"  # copied into the new datalist: NaN is not JSON
    nan.write_text(json.dumps({"training": [dict(good, spacing=[float("nan"), 1.0, 1.0])]}))
    rc = main(
        [
            "augment",
            str(nan),
            "--out",
            str(tmp_path / "new" / "out"),
            "--ops",
            "mirror",
            "--no-progress",
        ]
    )
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1 and "nan.json" in line and not (tmp_path / "new").exists(), line


def test_a_run_that_fails_midway_leaves_no_output_behind_unless_a_case_finished(
    tiny, tmp_path, monkeypatch
):
    import metalung_monai.transforms.metalung.offline as offline

    dl = _datalist(tiny, ["C1", "C2"], name="dl_fail.json")
    real = offline.expand_case

    def fail_on_c2(entry, cid, out_dir, cfg):
        if cid == "C2":
            raise InputError(entry["image"], "cannot be loaded by MONAI (simulated)")
        return real(entry, cid, out_dir, cfg)

    monkeypatch.setattr(offline, "expand_case", fail_on_c2)
    with pytest.raises(InputError):  # C1 finished: kept for a rerun
        expand_datalist(dl, tmp_path / "a" / "out", ops=["mirror"], progress=False)
    assert (tmp_path / "a" / "out" / "records" / "C1.json").is_file()
    monkeypatch.setattr(offline, "expand_case", lambda *a: fail_on_c2(a[0], "C2", *a[2:]))
    with pytest.raises(InputError):  # nothing finished: nothing left
        expand_datalist(dl, tmp_path / "b" / "out", ops=["mirror"], progress=False)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- #12 absurd sizes, streaming
def test_absurd_copies_are_refused_at_once_and_nothing_is_written(tiny, tmp_path, capsys):
    from metalung_monai.transforms.metalung.offline import MAX_COPIES

    dl = _datalist(tiny, ["C1"], name="dl_copies.json")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc = main(["augment", str(dl), "--out", str(out), "--copies", "1000000", "--no-progress"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1 and "--copies" in line and str(MAX_COPIES) in line
    assert time.perf_counter() - t0 < 5 and not out.exists()
    for bad in (
        ["--copies", "0"],
        ["--seed", "-1"],
        ["--workers", "0"],
        ["--workers", "100000"],
        ["--ops", "mirror,mirror"],
    ):
        rc = main(["augment", str(dl), "--out", str(out), "--no-progress", *bad])
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 1 and bad[0] in line, line
        assert not out.exists()


def test_the_command_spells_out_the_operations_and_limits_of_the_transforms():
    """``metalung augment``'s parser does not import the transforms (torch): its copies of their
    operation names and copy limit must stay equal to them."""
    from metalung_monai.commands import augment as command
    from metalung_monai.transforms.metalung.dictionary import METALUNG_OPS
    from metalung_monai.transforms.metalung.offline import MAX_COPIES

    assert command.OPS == METALUNG_OPS and command.MAX_COPIES == MAX_COPIES


def test_output_larger_than_the_free_disk_is_refused_up_front(tiny, tmp_path, monkeypatch):
    import shutil

    dl = _datalist(tiny, ["C1", "C2"], name="dl_disk.json")
    real = shutil.disk_usage(tmp_path)

    def disk_with(free: int):  # check_free_space keeps 5 % of the disk in reserve
        return lambda p: type(real)(real.total, real.total - free, free)

    out = tmp_path / "out"
    # 1 MB usable: 2 cases x (1 mirror + 5 operations x 50 copies) variants of the source files' size
    monkeypatch.setattr(
        "metalung_monai.utils.paths.shutil.disk_usage",
        disk_with(int(0.05 * real.total) + 1_000_000),
    )
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        expand_datalist(dl, out, copies=50, progress=False)
    assert time.perf_counter() - t0 < 5
    assert (
        err.value.source == "--copies"
        and "502 variants" in err.value.problem
        and "free" in err.value.problem
    )
    assert not out.exists()
    monkeypatch.setattr("metalung_monai.utils.paths.shutil.disk_usage", disk_with(0))  # a full disk
    with pytest.raises(InputError) as err:
        expand_datalist(dl, out, copies=1, progress=False)
    assert err.value.source == "--out" and not out.exists()


def test_iter_expand_streams_the_same_variants_as_expand():
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    d = as_dict(chest)
    t = MetaLungd(mode="expand", copies=3)
    listed = t.set_random_state(7).expand(d)
    stream = t.set_random_state(7).iter_expand(d)
    assert not isinstance(stream, list) and iter(stream) is stream
    streamed = list(stream)
    assert len(streamed) == len(listed) == 1 + 1 + 5 * 3
    for a, b in zip(listed, streamed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert a["image"].meta["metalung"] == b["image"].meta["metalung"]
    # a bad input is refused when the stream is made, before any variant
    bad = dict(d, mask=d["mask"][:, :50])
    with pytest.raises(InputError, match="mask"):
        t.iter_expand(bad)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, SimpleITK as sitk
    root = sys.argv[1]
    rng = np.random.default_rng(0)
    img = rng.integers(-1000, 400, size=(48, 192, 192)).astype(np.int16)
    mask = np.zeros(img.shape, np.uint8)
    mask[20:28, 80:100, 80:100] = 1
    for name, a in (("img", img), ("mask", mask)):
        im = sitk.GetImageFromArray(a)
        im.SetSpacing((1.5, 1.5, 2.5))
        sitk.WriteImage(im, f"{root}/{name}.nii.gz")
    json.dump({"training": [{"image": "img.nii.gz", "mask": "mask.nii.gz", "patient_id": "P1", "case_id": "P1"}]},
              open(f"{root}/dl.json", "w"))
    from metalung_monai.transforms.metalung.offline import expand_datalist
    peaks = {}
    # copies=1 warms up (first-call allocations: imports, caches, matplotlib); the peak is monotonic, so
    # the copies=8 run can only raise it by what it needs beyond the copies=2 run
    for copies in (1, 2, 8):
        expand_datalist(f"{root}/dl.json", f"{root}/out{copies}", ops=["rotate_image", "noise_image"],
                        copies=copies, progress=False)
        peaks[copies] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(peaks))
""")


@pytest.mark.slow
def test_memory_stays_flat_with_more_copies(tmp_path):
    """Peak RSS of `augment` on one case at copies=2, then copies=8 (4 vs 16 variants of 5.3 MB each), in one process.

    Holding every variant (the old list) raised the peak by about 74 MB at copies=8; streaming, by
    about 0.
    """
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    peaks = {int(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
    print(
        f"peak RSS: copies=2 {peaks[2]:.0f} MB, copies=8 {peaks[8]:.0f} MB, growth {peaks[8] - peaks[2]:.1f} MB"
    )
    assert peaks[8] - peaks[2] < 25, peaks


# --------------------------------------------------------------------------- #13c mask of another shape
def _keyed(chest, keys=("ct", "seg")):
    d = as_dict(chest, with_lungs=True)
    return {keys[0]: d["image"], keys[1]: d["mask"], "lung": d["lung"]}


_DICT_TRANSFORMS = {
    **{
        f"MetaLungd[{op}]": (lambda op=op: MetaLungd(keys=("ct", "seg"), ops=[op]))
        for op in METALUNG_OPS
    },
    **{
        f"MetaLungd-expand[{op}]": (
            lambda op=op: MetaLungd(keys=("ct", "seg"), ops=[op], mode="expand")
        )
        for op in METALUNG_OPS
    },
    "MirrorLRd": lambda: MirrorLRd(keys=("ct", "seg")),
    "RandMirrorLRd": lambda: RandMirrorLRd(keys=("ct", "seg"), prob=1.0),
    "RandRotateImaged": lambda: RandRotateImaged(keys=("ct", "seg")),
    "RandRelocateTumord": lambda: RandRelocateTumord(keys=("ct", "seg")),
    "RandRotateTumord": lambda: RandRotateTumord(keys=("ct", "seg")),
    "RandTumorNoised": lambda: RandTumorNoised(keys=("ct", "seg")),
}


@pytest.mark.parametrize("name", list(_DICT_TRANSFORMS))
def test_every_transform_refuses_a_mask_of_another_shape_naming_the_key(name):
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    d = _keyed(chest)
    d["seg"] = d["seg"][:, :80, :100]
    t = _DICT_TRANSFORMS[name]()
    if hasattr(t, "set_random_state"):
        t.set_random_state(0)
    with pytest.raises(InputError) as err:
        t(d)
    assert (
        err.value.source == "seg"
        and "(80, 100)" in err.value.problem
        and "(96, 128)" in err.value.problem
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: MetaLungd(keys=("ct", "seg"), lung_key="lung", ops=["relocate"]),
        lambda: RandRelocateTumord(keys=("ct", "seg"), lung_key="lung"),
        lambda: RandRotateImaged(keys=("ct", "seg", "lung")),
    ],
)
def test_lung_labels_of_another_shape_are_refused_naming_the_key(make):
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    d = _keyed(chest)
    d["lung"] = d["lung"][:, :, :64]
    with pytest.raises(InputError) as err:
        make().set_random_state(0)(d)
    assert err.value.source == "lung"


@pytest.mark.parametrize("op", [RandTumorNoise, RandRelocateTumor, RandRotateTumor])
def test_array_tumour_operations_refuse_a_mask_or_lungs_of_another_shape(op):
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    d = as_dict(chest, with_lungs=True)
    with pytest.raises(InputError) as err:
        op().set_random_state(0)(d["image"], d["mask"][:, :, :64])
    assert err.value.source == "mask"
    if op is not RandTumorNoise:
        with pytest.raises(InputError) as err:
            op().set_random_state(0)(d["image"], d["mask"], lungs=d["lung"][:, :64])
        assert err.value.source == "lungs"


# --------------------------------------------------------------------------- #13d one mask convention
@pytest.mark.parametrize("op", METALUNG_OPS)
@pytest.mark.parametrize("value", [255, 2])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_every_operation_returns_a_0_1_mask_in_the_input_dtype(op, value, dtype):
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    base = as_dict(chest, with_lungs=True)
    base["mask"] = base["mask"].to(dtype)
    scaled = dict(base, mask=base["mask"] * value)
    assert set(torch.unique(scaled["mask"]).tolist()) == {0, value}
    for mode in ("online", "expand"):
        t = MetaLungd(ops=[op], lung_key="lung", mode=mode)
        ref = t.set_random_state(3)(base)
        out = t.set_random_state(3)(scaled)
        refs, outs = (ref, out) if mode == "expand" else ([ref], [out])
        assert len(outs) == len(refs) >= 1
        for r, o in zip(refs, outs):
            assert o["mask"].dtype == dtype
            assert set(torch.unique(o["mask"]).tolist()) <= {0, 1}
            assert torch.equal(o["mask"], r["mask"]) and torch.equal(
                o["image"], r["image"]
            )  # same result as {0, 1}
            assert torch.equal(o["lung"], r["lung"])  # labels keep 1 / 2
        if mode == "online":
            assert set(torch.unique(out["lung"]).tolist()) == {0, 1, 2}


_TWINS = {
    "MirrorLRd": lambda: MirrorLRd(keys=("image", "mask", "lung"), mask_keys="mask"),
    "RandMirrorLRd": lambda: RandMirrorLRd(
        keys=("image", "mask", "lung"), prob=1.0, mask_keys="mask"
    ),
    "RandRotateImaged": lambda: RandRotateImaged(
        keys=("image", "mask", "lung"), mask_keys=("mask",)
    ),
    "RandRelocateTumord": lambda: RandRelocateTumord(lung_key="lung"),
    "RandRotateTumord": lambda: RandRotateTumord(lung_key="lung"),
    "RandTumorNoised": lambda: RandTumorNoised(),
    "RandRelocateTumord-skipped": lambda: RandRelocateTumord(lung_key="lung", prob=0.0),
}


@pytest.mark.parametrize("name", list(_TWINS))
@pytest.mark.parametrize("value", [255, 2])
def test_dictionary_twins_apply_the_same_convention(name, value):
    chest = make_chest(shape=(96, 128), tumours=(("left", 5.0),), seed=11)
    base = as_dict(chest, with_lungs=True)
    scaled = dict(base, mask=base["mask"] * value)
    t = _TWINS[name]()
    ref = t.set_random_state(5)(base) if hasattr(t, "set_random_state") else t(base)
    out = t.set_random_state(5)(scaled) if hasattr(t, "set_random_state") else t(scaled)
    assert (
        set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
        and out["mask"].dtype == base["mask"].dtype
    )
    assert torch.equal(out["mask"], ref["mask"]) and torch.equal(out["image"], ref["image"])
    assert torch.equal(out["lung"], ref["lung"])
    # without mask_keys the per-key geometric twins only move values (they also carry label maps)
    if name in ("MirrorLRd", "RandRotateImaged"):
        plain = (
            MirrorLRd(keys=("image", "lung"))
            if name == "MirrorLRd"
            else RandRotateImaged(keys=("image", "lung")).set_random_state(5)
        )(base)
        assert set(torch.unique(plain["lung"]).tolist()) == {0.0, 1.0, 2.0}


def test_offline_variants_of_a_0_255_mask_are_0_1(tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "img.nii.gz").write_bytes((tiny / "img.nii.gz").read_bytes())
    m = sitk.ReadImage(str(tiny / "mask.nii.gz"))
    m255 = sitk.GetImageFromArray(sitk.GetArrayFromImage(m) * np.uint8(255))
    m255.CopyInformation(m)
    sitk.WriteImage(m255, str(data / "mask.nii.gz"))
    dl = _datalist(data, ["C1"])
    path = expand_datalist(
        dl,
        tmp_path / "out",
        ops=["mirror", "rotate_image", "noise_image", "noise_tumor"],
        progress=False,
    )
    variants = [e for e in datalist_entries(path, "training") if e.get("augmentation")]
    assert len(variants) == 4
    for v in variants:
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(v["mask"])))) <= {0, 1}, v[
            "augmentation"
        ]["op"]


# --------------------------------------------------------------------------- a real SIGKILL
@pytest.mark.slow
def test_real_sigkill_then_resume_equals_an_uninterrupted_run(small_cohort, tmp_path):
    """`metalung augment` in its own process, SIGKILLed after its first finished case, then rerun."""
    src = json.loads((small_cohort / "datalist.json").read_text())
    train = [
        dict(e, **{k: str(small_cohort / e[k]) for k in ("image", "mask", "lung_mask") if e.get(k)})
        for e in src["training"][:4]
    ]
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"name": "four cases", "training": train}))
    ops = "mirror,noise_tumor"
    ref = tmp_path / "ref"
    expand_datalist(dl, ref, ops=ops.split(","), seed=4, progress=False)
    out = tmp_path / "killed"
    argv = [
        "augment",
        str(dl),
        "--out",
        str(out),
        "--ops",
        ops,
        "--seed",
        "4",
        "--workers",
        "1",
        "--no-progress",
    ]

    def a_case_finished() -> bool:  # a case's record is written last
        return (out / "records").is_dir() and any(
            p.suffix == ".json" and not p.name.startswith(".") for p in (out / "records").iterdir()
        )

    pid = sigkill_when(argv, a_case_finished)
    finished = [p for p in (out / "records").glob("*.json") if not p.name.startswith(".")]
    n_cases = len(load_datalist(dl)["training"])
    assert 1 <= len(finished) < n_cases and not (out / "datalist.json").exists()
    # whatever the kill interrupted, add the temporary files a kill inside a write leaves
    cid = finished[0].stem
    for rel in (
        f"images/.{cid}__mirror_0.partial-{pid}-0badc0de.nii.gz",
        f"records/.{cid}.partial-{pid}-0badc0de.json",
    ):
        (out / rel).write_bytes(b"half")
    assert main(argv) == 0  # the rerun, to completion
    a, b = _tree(ref), _tree(out)
    assert not [p for p in b if ".partial" in p]
    assert sorted(a) == sorted(b)
    differ = [p for p in a if a[p] != b[p] and p != MANIFEST]
    assert not differ, differ  # datalist, records, every image and mask
    assert json.loads(a["datalist.json"]) == json.loads(b["datalist.json"])
