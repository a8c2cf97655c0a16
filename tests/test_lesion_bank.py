"""The lesion bank (issue 12): the bank format (read/write) and the extraction from a datalist."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from metalung_monai.errors import GeometryMismatchError, InputError, MaskError
from metalung_monai.synthesis import lesion_bank
from metalung_monai.synthesis.bank import (
    ARRAYS_2D,
    COLUMNS,
    LesionBank,
    pack_native,
    read_bank,
    write_bank,
)
from metalung_monai.synthesis.lesion_bank import build_lesion_bank, lesion_type, split_patients


# --------------------------------------------------------------------------- the format
def _toy_bank(n2: int = 3, n3: int = 2, size: int = 8) -> LesionBank:
    """A small consistent bank: n2 2D and n3 3D lesions with native windows."""
    rng = np.random.default_rng(0)
    rows, windows = [], []
    for i in range(n2 + n3):
        kind = "2d" if i < n2 else "3d"
        shape = (1, 5 + i, 6) if kind == "2d" else (3, 4, 5 + i)
        img = rng.integers(-1000, 200, size=shape).astype(np.int16)
        m = (rng.random(shape) > 0.5).astype(np.uint8)
        windows.append((img, m, np.ones(shape, np.uint8)))
        row = dict.fromkeys(COLUMNS, 0.0)
        row.update(
            lesion_id=f"L{i}",
            kind=kind,
            index=i if kind == "2d" else i - n2,
            native_index=i,
            source="real",
            generator="",
            case_id=f"c{i}",
            patient_id=f"p{i % 2}",
            section="training",
            subset="train" if i % 2 else "hold",
            slice_index=i if kind == "2d" else -1,
            z0=0,
            z1=1,
            lung_rads="LR3",
            type="solid",
            n_voxels=int(m.sum()),
            model_size=size,
            touches_edge=False,
            spacing_z=2.5,
            spacing_y=0.7,
            spacing_x=0.8,
        )
        rows.append(row)
    arrays = {
        "image2d": rng.integers(-1000, 100, (n2, size, size)).astype(np.int16),
        "mask2d": (rng.random((n2, size, size)) > 0.5).astype(np.uint8),
        "lung2d": np.ones((n2, size, size), np.uint8),
        "image3d": rng.integers(-1000, 100, (n3, 4, size, size)).astype(np.int16),
        "mask3d": np.zeros((n3, 4, size, size), np.uint8),
        "lung3d": np.ones((n3, 4, size, size), np.uint8),
    }
    arrays.update(pack_native(windows))
    return LesionBank(arrays=arrays, table=pd.DataFrame(rows), meta={"command": "test"})


def test_write_read_round_trip(tmp_path):
    bank = _toy_bank()
    out = write_bank(bank, tmp_path / "bank")
    assert sorted(p.name for p in out.iterdir()) == ["bank.json", "bank.npz", "lesions.csv"]
    back = read_bank(out)
    assert len(back) == len(bank) == 5
    for k, v in bank.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
        assert back.arrays[k].dtype == v.dtype
    assert list(back.table.columns) == list(COLUMNS)
    assert back.table["generator"].tolist() == [""] * 5  # empty text stays text, not NaN
    assert back.table["index"].dtype == np.int64
    assert back.meta["counts"]["2d"]["lesions"] == 3 and back.meta["counts"]["3d"]["lesions"] == 2
    assert back.meta["format"] == "metalung-lesion-bank" and back.meta["command"] == "test"
    # native windows come back at their shapes, 2D as (y, x)
    img, m, lung, sp = back.native(0)
    assert img.shape == (5, 6) and sp == (0.7, 0.8)
    img3, _, _, sp3 = back.native("L4")
    assert img3.shape == (3, 4, 9) and sp3 == (2.5, 0.7, 0.8)
    np.testing.assert_array_equal(img3, bank.native(4)[0])


def test_select_reindexes_and_stays_a_bank(tmp_path):
    bank = _toy_bank()
    train = bank.select("2d", subset="train")
    assert train.table["lesion_id"].tolist() == ["L1"]
    assert train.table["index"].tolist() == [0] and train.table["native_index"].tolist() == [0]
    image, mask, _ = train.patches("2d")
    np.testing.assert_array_equal(image[0], bank.arrays["image2d"][1])
    np.testing.assert_array_equal(train.native(0)[0], bank.native(1)[0])
    assert train.arrays["image3d"].shape[0] == 0
    write_bank(train, tmp_path / "sub")  # a selection is a complete bank
    assert len(read_bank(tmp_path / "sub")) == 1
    both = bank.select(None, subset="hold")
    assert both.table["lesion_id"].tolist() == ["L0", "L2", "L4"]
    assert both.patches("3d")[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "lesions.csv").unlink(), "missing"),
        (lambda d: _rewrite_npz(d, drop="mask2d"), "missing array(s) mask2d"),
        (lambda d: _rewrite_npz(d, image2d=lambda a: a.astype(np.float32) + 0.5), "fractional"),
        (lambda d: _rewrite_npz(d, mask3d=lambda a: a + 2), "only 0 and 1"),
        (lambda d: _rewrite_npz(d, image2d=lambda a: a[:1]), "share one 3-D shape"),
        (lambda d: _rewrite_npz(d, **{k: lambda a: a[:1] for k in ARRAYS_2D}), "index outside"),
        (lambda d: _rewrite_csv(d, lambda t: t.drop(columns=["subset"])), "missing column"),
        (lambda d: _rewrite_csv(d, lambda t: t.assign(native_index=9)), "native_index outside"),
        (lambda d: (d / "bank.npz").write_bytes(b"PK\x03\x04broken"), "unreadable"),
        (lambda d: (d / "bank.json").write_text("{"), "unreadable"),
    ],
)
def test_damaged_bank_raises_typed_error(tmp_path, damage, message):
    out = write_bank(_toy_bank(), tmp_path / "bank")
    damage(out)
    with pytest.raises(InputError) as e:
        read_bank(out)
    assert message in str(e.value)
    assert str(out) in e.value.source  # the message names the file


def test_write_refuses_float_hu(tmp_path):
    bank = _toy_bank()
    bank.arrays["image2d"] = bank.arrays["image2d"].astype(np.float32)
    with pytest.raises(InputError, match="integers"):
        write_bank(bank, tmp_path / "bank")
    assert not (tmp_path / "bank").exists()


def _rewrite_npz(d, drop=None, **change):
    with np.load(d / "bank.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays.pop(drop, None)
    for k, f in change.items():
        arrays[k] = f(arrays[k])
    np.savez_compressed(d / "bank.npz", **arrays)


def _rewrite_csv(d, f):
    t = pd.read_csv(d / "lesions.csv", keep_default_na=False)
    f(t).to_csv(d / "lesions.csv", index=False)


def test_meta_is_json(tmp_path):
    out = write_bank(_toy_bank(), tmp_path / "bank")
    meta = json.loads((out / "bank.json").read_text())
    assert meta["counts"]["2d"]["subset"] == {"hold": 2, "train": 1}


# --------------------------------------------------------------------------- extraction
def _write(arr: np.ndarray, path, spacing_zyx) -> str:
    """Write a canonical (z, y, x) array as NIfTI (identity direction: canonical as is)."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return str(path.relative_to(path.parents[1]))


def _lung_ct(shape, rng) -> np.ndarray:
    """Lung-like HU: -850 +- 30 (integers)."""
    return rng.normal(-850, 30, shape).round().astype(np.int16)


def _disc(shape_yx, centre, radius) -> np.ndarray:
    yy, xx = np.ogrid[: shape_yx[0], : shape_yx[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2


def _datalist(root, cases, test=(), extra=None):
    """Write cases ``(patient, fold, hu, mask, spacing)`` and a datalist; returns its path."""
    rng_entries = []
    for i, (pid, fold, hu, mask, spacing) in enumerate(list(cases) + list(test)):
        e = {
            "image": _write(hu, root / "images" / f"c{i}.nii.gz", spacing),
            "mask": _write(mask, root / "masks" / f"c{i}.nii.gz", spacing),
            "patient_id": pid,
            "case_id": f"c{i}_{pid}",
        }
        if fold is not None:
            e["fold"] = fold
        rng_entries.append(e)
    dl = {"name": "t", "training": rng_entries[: len(cases)]}
    if test:
        dl["test"] = rng_entries[len(cases) :]
    dl.update(extra or {})
    path = root / "datalist.json"
    path.write_text(json.dumps(dl))
    return path


def _tumour_case(rng, n_slices=5, spacing=(2.5, 0.8, 0.8), centre=(30, 30), radius=6, hu=20):
    shape = (n_slices, 64, 64)
    ct = _lung_ct(shape, rng)
    mask = np.zeros(shape, np.uint8)
    for z in range(1, n_slices - 1):
        mask[z][_disc(shape[1:], centre, radius)] = 1
    ct[mask > 0] = rng.integers(hu - 40, hu + 40, int(mask.sum()))
    return ct, mask, spacing


def test_components_2d_per_slice_and_3d_per_tumour(tmp_path):
    rng = np.random.default_rng(0)
    # case 0: one tumour over slices 1..3 -> one 3D lesion and three 2D lesions
    ct, mask, sp = _tumour_case(rng, n_slices=5)
    # case 1: a single slice with two separate tumours -> two 2D lesions, no 3D
    ct1 = _lung_ct((1, 64, 64), rng)
    m1 = np.zeros((1, 64, 64), np.uint8)
    m1[0][_disc((64, 64), (15, 15), 4)] = 1
    m1[0][_disc((64, 64), (45, 40), 5)] = 1
    ct1[m1 > 0] = 30
    dl = _datalist(
        tmp_path / "d", [("A", None, ct, mask, sp), ("B", None, ct1, m1, (1.0, 0.7, 0.7))]
    )
    bank = build_lesion_bank(dl, tmp_path / "bank", val_fold=-1, progress_bar=False, figure=False)
    t = bank.table
    a = t[t["patient_id"] == "A"]
    assert (a["kind"] == "2d").sum() == 3 and (a["kind"] == "3d").sum() == 1
    assert sorted(a.loc[a["kind"] == "2d", "slice_index"]) == [1, 2, 3]
    three = a[a["kind"] == "3d"].iloc[0]
    assert (three["z0"], three["z1"], three["slice_index"]) == (1, 4, -1)
    assert three["n_voxels"] == mask.sum()
    b = t[t["patient_id"] == "B"]
    assert (b["kind"] == "2d").sum() == 2 and (b["kind"] == "3d").sum() == 0
    # each 2D lesion's mask holds only its own component
    for _, r in b.iterrows():
        _, m, _, _ = bank.native(r["lesion_id"])
        assert m.sum() == r["n_voxels"] and ndi.label(m)[1] == 1
    assert bank.arrays["image3d"].shape == (1, 32, 32, 32)
    assert bank.arrays["image2d"].shape == (5, 64, 64)


def test_geometry_of_a_disc(tmp_path):
    """Native window centred on the lesion, HU exact, scale and diameter right."""
    rng = np.random.default_rng(1)
    ct, mask, sp = _tumour_case(
        rng, n_slices=3, spacing=(2.0, 0.5, 0.5), centre=(28, 33), radius=10
    )
    dl = _datalist(tmp_path / "d", [("A", None, ct, mask, sp)])
    bank = build_lesion_bank(
        dl,
        tmp_path / "bank",
        val_fold=-1,
        context_mm=16.0,
        size=32,
        progress_bar=False,
        figure=False,
    )
    r = bank.table[bank.table["kind"] == "2d"].iloc[0]
    img, m, lung, spacing = bank.native(r["lesion_id"])
    n = round(16.0 / 0.5)  # 32 native pixels per side
    assert img.shape == (n, n) and spacing == (0.5, 0.5)
    # the disc's centre pixel is the window's centre pixel n // 2
    ys, xs = np.nonzero(m)
    assert (ys.min() + ys.max()) // 2 == n // 2 and (xs.min() + xs.max()) // 2 == n // 2
    # the HU under the mask are the source voxels, exactly
    z = int(r["slice_index"])
    y0, x0 = 28 - n // 2, 33 - n // 2
    np.testing.assert_array_equal(img, ct[z, y0 : y0 + n, x0 : x0 + n])
    np.testing.assert_array_equal(img[m > 0], ct[z][mask[z] > 0])
    assert r["scale"] == 32 / n == 1.0
    assert abs(r["longest_diameter_mm"] - 21 * 0.5) <= 0.5  # 2r + 1 pixels, within one pixel
    assert r["lung_rads"] == "LR4A" and r["type"] == "solid"
    assert not r["padded"] and not r["touches_edge"] and not r["clipped"]
    assert r["area_mm2"] == r["n_voxels"] * 0.25
    # model-size patch: the disc is centred there too, and its HU are integers
    image, mask2, _ = bank.select("2d").patches("2d")
    assert image.dtype == np.int16
    ys2, xs2 = np.nonzero(mask2[0])
    assert abs((ys2.min() + ys2.max()) / 2 - 16) <= 1 and abs((xs2.min() + xs2.max()) / 2 - 16) <= 1


def test_scale_and_padding_at_the_border(tmp_path):
    rng = np.random.default_rng(2)
    ct, mask, sp = _tumour_case(rng, n_slices=3, spacing=(2.0, 2.0, 2.0), centre=(2, 40), radius=3)
    dl = _datalist(tmp_path / "d", [("A", None, ct, mask, sp)])
    bank = build_lesion_bank(dl, tmp_path / "bank", val_fold=-1, progress_bar=False, figure=False)
    r = bank.table[bank.table["kind"] == "2d"].iloc[0]
    img, m, lung, _ = bank.native(0)
    assert img.shape == (32, 32)  # 64 mm / 2 mm
    assert r["scale"] == 2.0 and r["padded"] and r["touches_edge"]
    assert (img[:10] == -1000).all() and not m[:10].any()  # rows above the image: air, no mask


def test_type_rule():
    assert lesion_type(np.full(100, 20))[0] == "solid"
    assert lesion_type(np.full(100, -550))[0] == "ground-glass"
    assert lesion_type(np.r_[np.full(90, -550), np.full(10, 10)]) == ("part-solid", 0.1)
    assert lesion_type(np.r_[np.full(75, -550), np.full(25, -300)])[0] == "solid"  # f = 0.25
    assert lesion_type(np.r_[np.full(97, -550), np.full(3, 0)])[0] == "part-solid"  # f = 0.03
    assert lesion_type(np.r_[np.full(98, -550), np.full(2, 0)])[0] == "ground-glass"


def test_integer_hu_everywhere_even_from_float_images(tmp_path):
    rng = np.random.default_rng(3)
    ct, mask, sp = _tumour_case(rng, n_slices=4, spacing=(3.0, 0.9, 0.9))
    ct = ct.astype(np.float32) + 0.37  # a float image with fractional HU
    dl = _datalist(tmp_path / "d", [("A", None, ct, mask, sp)])
    bank = build_lesion_bank(
        dl, tmp_path / "bank", val_fold=-1, size=24, progress_bar=False, figure=False
    )
    for name in ("image2d", "image3d", "native_image"):
        assert bank.arrays[name].dtype == np.int16 and bank.arrays[name].size
    back = read_bank(tmp_path / "bank")
    np.testing.assert_array_equal(back.arrays["image2d"], bank.arrays["image2d"])
    img, m, _, _ = back.native(0)
    z = int(back.table.iloc[0]["slice_index"])
    np.testing.assert_array_equal(img[m > 0], np.rint(ct[z][mask[z] > 0]).astype(np.int16))


def _split_datalist(root, rng):
    cases = []
    for i in range(8):
        ct, mask, sp = _tumour_case(rng, n_slices=3, radius=3 + i % 3)
        cases.append((f"P{i}", i % 4, ct, mask, sp))
    test = [("T0", None, *_tumour_case(rng, n_slices=3))]
    return _datalist(root, cases, test=test)


def test_split_discipline(tmp_path):
    rng = np.random.default_rng(4)
    dl = _split_datalist(tmp_path / "d", rng)
    bank = build_lesion_bank(dl, tmp_path / "bank", val_fold=1, progress_bar=False, figure=False)
    pats = set(bank.table["patient_id"])
    assert pats == {"P0", "P2", "P3", "P4", "P6", "P7"}  # fold 1 (P1, P5) and the test T0 out
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert meta["excluded_patients"] == {
        "P1": "validation fold 1",
        "P5": "validation fold 1",
        "T0": "test section",
    }
    assert (bank.table["section"] == "training").all()
    # subset: one subset per patient, hold = round(0.25 * 6) = 2 patients, seeded
    per_patient = bank.table.groupby("patient_id")["subset"].nunique()
    assert (per_patient == 1).all()
    assert sorted(meta["subsets"]["hold"]) == sorted(
        bank.table.loc[bank.table["subset"] == "hold", "patient_id"].unique()
    )
    assert len(meta["subsets"]["hold"]) == 2
    # --val-fold -1 keeps every training patient, never the test patient
    allb = build_lesion_bank(dl, tmp_path / "all", val_fold=-1, progress_bar=False, figure=False)
    assert set(allb.table["patient_id"]) == {f"P{i}" for i in range(8)}


def test_split_patients_is_grouped_and_seeded():
    ids = [f"P{i:02d}" for i in range(20)]
    a = split_patients(ids, 0.25, seed=0)
    assert a == split_patients(list(reversed(ids)) + ids[:3], 0.25, seed=0)  # order, repeats
    assert sum(v == "hold" for v in a.values()) == 5
    assert a != split_patients(ids, 0.25, seed=1)
    assert set(split_patients(["A", "B"], 0.1, 0).values()) == {"train", "hold"}  # >= 1 hold
    assert set(split_patients(["A"], 0.5, 0).values()) == {"train"}  # never all held out
    assert set(split_patients(ids, 0.0, 0).values()) == {"train"}


def test_typed_errors(tmp_path):
    rng = np.random.default_rng(5)
    ct, mask, sp = _tumour_case(rng, n_slices=3)
    # no training cases
    only_test = _datalist(tmp_path / "a", [], test=[("T", None, ct, mask, sp)])
    with pytest.raises(InputError, match="no 'training' cases"):
        build_lesion_bank(only_test, tmp_path / "o1", progress_bar=False)
    # a mask that is not binary (names the mask file)
    bad = _datalist(tmp_path / "b", [("A", None, ct, mask * 255, sp)])
    with pytest.raises(MaskError, match="not binary") as e:
        build_lesion_bank(bad, tmp_path / "o2", val_fold=-1, progress_bar=False)
    assert e.value.source.endswith("masks/c0.nii.gz")
    assert not (tmp_path / "o2").exists()  # a refused run leaves nothing behind
    # mask and image of different shapes
    dl = _datalist(tmp_path / "c", [("A", None, ct, mask, sp)])
    _write(mask[:, :32], tmp_path / "c" / "masks" / "c0.nii.gz", sp)
    with pytest.raises(GeometryMismatchError, match="differs from the image"):
        build_lesion_bank(dl, tmp_path / "o3", val_fold=-1, progress_bar=False)
    # no tumour at all
    empty = _datalist(tmp_path / "d", [("A", None, ct, mask * 0, sp)])
    with pytest.raises(InputError, match="no tumour voxel"):
        build_lesion_bank(empty, tmp_path / "o4", val_fold=-1, progress_bar=False, figure=False)
    assert not (tmp_path / "o4").exists()
    # a validation fold that no case has
    with pytest.raises(InputError, match="no training case .* is in fold 0") as e:
        build_lesion_bank(dl, tmp_path / "o5", val_fold=0, progress_bar=False)
    assert e.value.source == "--val-fold"
    # every training case in the validation fold
    one = _datalist(tmp_path / "f", [("A", 0, ct, mask, sp)])
    with pytest.raises(InputError, match="every training case is left out"):
        build_lesion_bank(one, tmp_path / "o6", val_fold=0, progress_bar=False)
    for bad_opt in (
        {"context_mm": 0},
        {"context_mm": float("nan")},
        {"context_mm": 1e6},
        {"size": 4},
        {"size": 10_000},
        {"hold_fraction": 1.0},
        {"seed": -1},
    ):
        with pytest.raises(InputError):
            build_lesion_bank(dl, tmp_path / "o7", val_fold=-1, progress_bar=False, **bad_opt)


def test_resume_reuses_records_and_cleans_partials(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    dl = _split_datalist(tmp_path / "d", rng)
    out = tmp_path / "bank"
    first = build_lesion_bank(dl, out, val_fold=1, progress_bar=False, figure=False)
    # a killed run's temporary files (their writer, pid 2**22 + 1, is gone)
    dead = [
        out / ".bank.partial-4194305-0badcafe.npz",
        out / "records" / ".c0_P0.partial-4194305-0badcafe.npz",
    ]
    for p in dead:
        p.write_bytes(b"half")
    (out / "records" / "c2_P2.json").unlink()  # a case whose record was never written
    calls = []
    real = lesion_bank.case_lesions
    monkeypatch.setattr(
        lesion_bank, "case_lesions", lambda e, c, *a: calls.append(c) or real(e, c, *a)
    )
    second = build_lesion_bank(dl, out, val_fold=1, progress_bar=False, figure=False)
    assert calls == ["c2_P2"]  # only the unfinished case is redone
    assert not any(p.exists() for p in dead)
    pd.testing.assert_frame_equal(first.table, second.table)
    for k, v in first.arrays.items():
        np.testing.assert_array_equal(second.arrays[k], v)
    # other settings: refused, then --overwrite replaces (and redoes every case)
    with pytest.raises(InputError, match="other settings"):
        build_lesion_bank(dl, out, val_fold=1, seed=3, progress_bar=False, figure=False)
    (out / "notes.txt").write_text("mine")
    calls.clear()
    build_lesion_bank(dl, out, val_fold=1, seed=3, overwrite=True, progress_bar=False)
    assert len(calls) == 6 and (out / "notes.txt").read_text() == "mine"
    assert (out / "overview.png").is_file()
    # a folder holding a bank this command did not write is refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "bank.json").write_text("{}")
    with pytest.raises(InputError, match="did not write"):
        build_lesion_bank(dl, foreign, val_fold=1, progress_bar=False)


def test_cli_one_line_and_defaults(tmp_path, capsys):
    from metalung_monai import cli
    from metalung_monai.commands import lesion_bank as command

    rng = np.random.default_rng(7)
    dl = _split_datalist(tmp_path / "d", rng)
    p = cli.build_parser("lesion-bank")
    args = p.parse_args(["lesion-bank", str(dl), "--out", str(tmp_path / "b")])
    assert (
        args.context_mm == lesion_bank.DEFAULT_CONTEXT_MM and args.size == lesion_bank.DEFAULT_SIZE
    )
    assert args.hold_fraction == lesion_bank.DEFAULT_HOLD_FRACTION and command.run
    rc = cli.main(
        [
            "lesion-bank",
            str(dl),
            "--out",
            str(tmp_path / "b"),
            "--val-fold",
            "1",
            "--size",
            "32",
            "--no-progress",
        ]
    )
    out = capsys.readouterr()
    assert (
        rc == 0
        and out.out.startswith("metalung lesion-bank: ")
        and "3D lesions of 6 patients" in out.out
    )
    assert len(read_bank(tmp_path / "b").table)
    rc = cli.main(["lesion-bank", str(dl), "--out", str(tmp_path / "c"), "--val-fold", "7"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "--val-fold" in err


@pytest.mark.slow
def test_small_cohort_bank(small_cohort, tmp_path):
    """The phantom cohort: diameters as the phantom drew them, test and validation patients out."""
    bank = build_lesion_bank(small_cohort / "datalist.json", tmp_path / "bank", progress_bar=False)
    dl = json.loads((small_cohort / "datalist.json").read_text())
    test = {e["patient_id"] for e in dl["test"]}
    val = {e["patient_id"] for e in dl["training"] if e["fold"] == 0}
    assert not (set(bank.table["patient_id"]) & (test | val))
    cohort = pd.read_csv(small_cohort / "cohort.csv", keep_default_na=False)
    drawn = sorted(
        float(d)
        for _, r in cohort.iterrows()
        if r["patient_id"] in set(bank.table["patient_id"])
        for d in str(r["diameters_mm"]).split(";")
        if d
    )
    measured = sorted(bank.table.loc[bank.table["kind"] == "3d", "longest_diameter_mm"])
    np.testing.assert_allclose(measured, drawn, atol=0.01)
    assert bank.meta["lung_mask_source"] == {"datalist": len(bank.meta["patients"])}
    assert (tmp_path / "bank" / "overview.png").stat().st_size > 10_000
    # two workers: the same bank
    two = build_lesion_bank(
        small_cohort / "datalist.json", tmp_path / "w2", workers=2, progress_bar=False, figure=False
    )
    pd.testing.assert_frame_equal(two.table, bank.table)
    for k, v in bank.arrays.items():
        np.testing.assert_array_equal(two.arrays[k], v)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_bank(small_cohort, tmp_path):
    from killing import sigkill_when

    dl = small_cohort / "datalist.json"
    out = tmp_path / "killed"
    args = ["lesion-bank", dl, "--out", out, "--val-fold", "-1", "--no-progress", "--no-figure"]

    def one_record_done():
        return (out / "records").is_dir() and any(
            p.suffix == ".json" and not p.name.startswith(".") for p in (out / "records").iterdir()
        )

    sigkill_when(args, one_record_done)
    assert not (out / "bank.json").exists()
    resumed = build_lesion_bank(dl, out, val_fold=-1, progress_bar=False, figure=False)
    whole = build_lesion_bank(dl, tmp_path / "whole", val_fold=-1, progress_bar=False, figure=False)
    pd.testing.assert_frame_equal(resumed.table, whole.table)
    for k, v in whole.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[k], v)
    assert not [p for p in out.rglob(".*partial*")]


def test_real_msd_patches(real_data, tmp_path):
    """Real 2 mm MSD patches (48 x 48, no body outline): 2D lesions, empty lung masks."""
    src = real_data / "msd_lung_patches"
    rows = pd.read_csv(src / "patches.csv").head(20)  # two patients
    entries = [
        {
            "image": str(src / "images" / f"{c}.nii.gz"),
            "mask": str(src / "masks" / f"{c}.nii.gz"),
            "patient_id": p,
            "case_id": c,
        }
        for c, p in zip(rows["case"], rows["patient"], strict=True)
    ]
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"name": "msd", "training": entries}))
    bank = build_lesion_bank(dl, tmp_path / "bank", val_fold=-1, progress_bar=False)
    t = bank.table
    assert (t["kind"] == "2d").all() and len(t) >= int((rows["tumour_px"] > 0).sum())
    assert set(t["patient_id"]) == set(rows["patient"])
    assert (t["spacing_y"] == 2.0).all() and (t["scale"] == 2.0).all()  # 64 mm = 32 px -> 64
    # the lesion pixels add up to patches.csv's tumour pixels, per case
    px = t.groupby("case_id")["n_voxels"].sum()
    expected = rows.set_index("case")["tumour_px"]
    assert (px == expected[px.index]).all()
    assert bank.meta["cases_with_empty_lung_mask"] >= 1  # patches without body outline
    for name in ("image2d", "native_image"):
        a = bank.arrays[name]
        assert a.dtype == np.int16 and a.min() >= -1000 and a.max() <= 100


def test_docs_example_runs(tmp_path, monkeypatch):
    """The Python example of docs/synthesis.md's lesion-bank section runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "synthesis.md").read_text()
    section = text.split("## Lesion bank", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks
    write_bank(_toy_bank(size=64), tmp_path / "outputs" / "bank")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/synthesis.md", "exec"), ns)
    assert ns["image"].shape == (1, 64, 64) and ns["hu"].dtype == np.int16
