"""Balancing (`metalung augment --balance lung|lung-rads`, `anatomy.balance`): issue 13.

Real arrays throughout: small chests of ``chest_factory`` (true lung labels, tumours placed in a
chosen lung with a chosen radius) written as NIfTI cases, expanded by ``expand_datalist``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from chest_factory import make_chest

from metalung_monai.anatomy.balance import (
    BALANCE_MODES,
    BalancePlanner,
    balance_table,
    case_facts,
    default_target,
    entry_facts,
    plan_expansion,
    tumor_position,
    tumor_side,
)
from metalung_monai.cli import main
from metalung_monai.commands.augment import BALANCE
from metalung_monai.errors import InputError
from metalung_monai.io.datalist import datalist_entries, load_datalist
from metalung_monai.transforms.metalung.offline import MANIFEST, expand_datalist

OPS = ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor")
SHAPE = (10, 64, 80)  # (z, y, x): small volumes, lungs about 24 px wide on 8 slices
SPACING_XYZ = (1.0, 1.0, 2.5)


def _write(arr: np.ndarray, path: Path) -> None:
    im = sitk.GetImageFromArray(np.ascontiguousarray(arr))  # canonical (z, y, x): x to the left
    im.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(im, str(path), useCompression=True)


def _cohort(folder: Path, tumours: list[tuple[str, float]]) -> Path:
    """One case per ``(lung, radius_px)`` (image, mask, lung labels) and their datalist."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (side, r) in enumerate(tumours):
        c = make_chest(shape=SHAPE, tumours=((side, r),), seed=10 + i, n_vessels=2)
        for sub, arr in (("img", c.hu), ("mask", c.mask), ("lungs", c.lungs)):
            _write(arr, folder / f"{sub}{i}.nii.gz")
        entries.append(
            {
                "image": f"img{i}.nii.gz",
                "mask": f"mask{i}.nii.gz",
                "lung_mask": f"lungs{i}.nii.gz",
                "case_id": f"C{i}",
                "patient_id": f"P{i}",
            }
        )
    path = folder / "datalist.json"
    path.write_text(json.dumps({"name": "balance", "training": entries}))
    return path


@pytest.fixture(scope="module")
def right_only(tmp_path_factory) -> Path:
    """Four cases, every tumour in the right lung (left share 0)."""
    return _cohort(tmp_path_factory.mktemp("right_only"), [("right", 3.0)] * 4)


@pytest.fixture(scope="module")
def small_heavy(tmp_path_factory) -> Path:
    """Three LR2 nodules (about 3-4 mm) and one LR4A tumour (about 10 mm): shares 0.75 / 0.25."""
    return _cohort(
        tmp_path_factory.mktemp("small_heavy"),
        [("right", 1.6), ("left", 1.6), ("right", 1.6), ("left", 5.0)],
    )


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "balance.csv").set_index("category")


# --------------------------------------------------------------------------- the planner
def test_planner_wants_the_category_furthest_below_its_target():
    p = BalancePlanner({"right": 13, "left": 7})
    assert p.target == {"right": 0.5, "left": 0.5}
    assert p.want() == "left"
    for _ in range(6):
        p.add(p.want())
    assert p.counts == {"right": 13, "left": 13} and p.shares() == {"right": 0.5, "left": 0.5}
    assert p.distance() == 0.0
    p.add("right")
    assert p.want() == "left" and p.want(among=["right"]) == "right" and p.want(among=[]) is None
    # a given mix; a category without cases yet
    q = BalancePlanner({"LR2": 6, "LR4B": 2}, {"LR2": 1, "LR3": 1, "LR4A": 1, "LR4B": 1})
    assert q.counts["LR3"] == 0 and q.want() == "LR3"  # ties: the earlier category
    assert q.shares()["LR2"] == 0.75


@pytest.mark.parametrize(
    "counts, target, what",
    [
        ({"left": -1}, None, "counts"),
        ({"left": 1.5}, None, "counts"),
        ({"left": 1}, {"left": float("nan")}, "target"),
        ({"left": 1}, {"left": -0.5}, "target"),
        ({"left": 1}, {"left": 0.0}, "target"),
        ({}, None, "counts"),
    ],
)
def test_planner_refuses_bad_counts_and_targets(counts, target, what):
    with pytest.raises(InputError, match=f"^{what}:"):
        BalancePlanner(counts, target)


def test_default_targets():
    assert default_target("lung") == {"right": 0.5, "left": 0.5}
    # lung-rads: uniform over the tumour classes present (LR1 = no tumour, never a target)
    assert default_target("lung-rads", {"LR1": 4, "LR2": 3, "LR4A": 1}) == {"LR2": 0.5, "LR4A": 0.5}
    assert set(default_target("lung-rads")) == {"LR2", "LR3", "LR4A", "LR4B"}
    assert BALANCE == BALANCE_MODES  # the CLI spells out the modes without importing them


def test_plan_moves_one_sided_cases_to_the_other_lung():
    plan = plan_expansion(["right"] * 5 + [None], "lung", OPS)
    assert plan.before == {"right": 5}
    assert abs(plan.planned["left"] / sum(plan.planned.values()) - 0.5) < 0.05
    assert plan.plans[-1] is None  # no tumour: expanded as without balancing
    for p in plan.plans[:5]:
        assert p["mirror"] == 1  # the side-changing operation that always applies, first
        assert all(0 <= n <= 1 for n in p.values())  # a subset of ops x copies
    # cannot reach the left lung without a side-changing operation: a typed error naming --balance
    with pytest.raises(InputError, match="^--balance:.*left.*mirror or relocate"):
        plan_expansion(["right"] * 3, "lung", ("noise_image",))
    with pytest.raises(InputError, match="^mode: unknown balance 'sides'"):
        plan_expansion(["right"], "sides", OPS)


# --------------------------------------------------------------------------- one tumour
def test_tumor_side_position_and_class_of_real_chests():
    for side in ("right", "left"):
        c = make_chest(shape=SHAPE, tumours=((side, 3.0),), seed=3)
        assert tumor_side(c.mask, c.lungs) == side
        assert tumor_side(c.mask) == side  # without labels: the image half
        other = "left" if side == "right" else "right"
        # MetaLung's mirror flips the labels with the image and keeps their values
        flipped_mask, flipped_lungs = c.mask[..., ::-1], c.lungs[..., ::-1]
        assert tumor_side(flipped_mask, flipped_lungs, mirrored=True) == other
        y, x = tumor_position(c.mask, c.lungs)
        assert 0 <= y <= 1 and (x < 0.5 if side == "right" else x > 0.5)
        facts = case_facts(c.mask, (2.5, 1.0, 1.0), c.lungs)
        assert facts.side == side and facts.category("lung") == side
        assert facts.lung_rads == "LR3"  # 2 x 3 px radius at 1 mm: 6-8 mm
    empty = np.zeros(SHAPE, np.uint8)
    assert tumor_side(empty, c.lungs) is None and tumor_position(empty) is None
    assert case_facts(empty, (2.5, 1.0, 1.0)).category("lung-rads") is None  # LR1: no category
    with pytest.raises(InputError, match="do not match"):
        tumor_side(c.mask, c.lungs[:, :10])


def test_entry_facts_read_the_files(right_only):
    e = datalist_entries(right_only, "training")[0]
    facts = entry_facts(e)
    assert facts.side == "right" and facts.lung_rads == "LR3" and facts.position is not None
    assert entry_facts({"image": e["image"]}).category("lung") is None  # no mask: no tumour


# --------------------------------------------------------------------------- metalung augment
@pytest.mark.slow
def test_balance_lung_brings_one_sided_tumours_to_half(right_only, tmp_path):
    out = tmp_path / "lung"
    path = expand_datalist(right_only, out, seed=0, progress=False, balance="lung")
    table = _table(out)
    assert table.loc["right", "before"] == 4 and table.loc["left", "before"] == 0
    assert table.loc["left", "before_share"] == 0.0
    # measured on the variants written: within 0.1 of the target (the plan's 11 / 10 when every
    # relocation finds room in the opposite lung)
    assert abs(table.loc["left", "after_share"] - 0.5) <= 0.1, table
    assert table.loc["left", "after"] >= 8
    # records: the plan and the measured side of each variant; a mirror always changes the side
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["balance"] == "lung" and manifest["target"] == {"right": 0.5, "left": 0.5}
    n_variants = 0
    for cid, rec in recs.items():
        bal = rec["balance"]
        assert bal["category"] == "right" and bal["plan"] == manifest["plan"][cid]
        planned = sum(bal["plan"].values())
        assert len(bal["variants"]) + sum(s["count"] for s in rec["skipped"]) == planned
        for v in bal["variants"]:
            if v["op"] == "mirror":
                assert v["side"] == "left" and v["position"][1] > 0.5
            if v["op"] in ("rotate_tumor", "noise_image", "noise_tumor"):
                assert v["side"] == "right"
        n_variants += len(bal["variants"])
    dl = load_datalist(path)
    assert sum(1 for e in dl["training"] if e.get("augmentation")) == n_variants
    assert (out / "balance.png").stat().st_size > 10_000 and (out / "heatmap.png").is_file()


@pytest.mark.slow
def test_balance_lung_rads_moves_the_classes_towards_the_target(small_heavy, tmp_path, capsys):
    out = tmp_path / "rads"
    rc = main(
        ["augment", str(small_heavy), "--out", str(out), "--balance", "lung-rads", "--no-progress"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "--balance lung-rads" in printed and "LR4A" in printed and "balance.png" in printed
    table = _table(out)
    assert table.loc["LR2", "before_share"] == 0.75 and table.loc["LR4A", "before_share"] == 0.25
    assert table.loc["LR2", "target"] == 0.5 and table.loc["LR4A", "target"] == 0.5
    # the one LR4A case gets all six variants, the three LR2 cases share about as many
    assert abs(table.loc["LR4A", "after_share"] - 0.5) <= 0.1, table
    assert abs(table.loc["LR4A", "after_share"] - 0.5) < abs(0.25 - 0.5)
    recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    for rec in recs:
        for v in rec["balance"]["variants"]:  # MetaLung keeps the size: the class is kept
            assert v["lung_rads"] == rec["balance"]["lung_rads"]


@pytest.mark.slow
def test_without_balance_nothing_changes(right_only, tmp_path):
    a = expand_datalist(right_only, tmp_path / "a", ops=("mirror", "noise_tumor"), progress=False)
    b = expand_datalist(
        right_only, tmp_path / "b", ops=("mirror", "noise_tumor"), progress=False, balance=None
    )

    def tree(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST  # the manifest names its own folder
        }

    ta, tb = tree(a.parent), tree(b.parent)
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta if k != "datalist.json")
    assert not (a.parent / "balance.csv").exists() and not (a.parent / "balance.png").exists()
    manifest = json.loads((a.parent / MANIFEST).read_text())
    assert "balance" not in manifest and "plan" not in manifest
    for p in (a.parent / "records").glob("*.json"):
        assert "balance" not in json.loads(p.read_text())
    # every case gets every variant (mirror once, noise on the tumour once)
    dl = load_datalist(a)
    assert sum(1 for e in dl["training"] if e.get("augmentation")) == 8


def test_bad_balance_values_are_typed_errors(right_only, tmp_path, capsys):
    for bad in ("sides", "", "LUNG", "lung,lung-rads"):
        with pytest.raises(InputError, match="^--balance: unknown balance"):
            expand_datalist(right_only, tmp_path / "x", progress=False, balance=bad)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    rc = main(["augment", str(right_only), "--out", str(tmp_path / "y"), "--balance", "left"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("metalung augment: error: --balance: unknown balance 'left'")
    assert not (tmp_path / "y").exists()


def test_balance_table_columns_and_shares():
    t = balance_table({"right": 4}, {"right": 11, "left": 10}, {"right": 0.5, "left": 0.5}, "lung")
    assert list(t["category"]) == ["right", "left"]
    assert list(t.columns) == [
        "category",
        "target",
        "before",
        "before_share",
        "after",
        "after_share",
    ]
    assert t["before_share"].tolist() == [1.0, 0.0]
    assert t["after_share"].round(4).tolist() == [round(11 / 21, 4), round(10 / 21, 4)]
