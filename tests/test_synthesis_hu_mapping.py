"""HU mapping of generated lesions (issue 12): integer HU, monotone, quantiles matched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lesion_factory import make_bank
from monai.data import MetaTensor
from scipy import stats

from metalung_monai.errors import InputError
from metalung_monai.synthesis.hu_mapping import (
    ALL,
    HUQuantileMap,
    MapToLesionHU,
    MapToLesionHUd,
    quantile_map,
)


@pytest.fixture(scope="module")
def bank():
    return make_bank(n=120, size=32, seed=3, n_patients=10)


@pytest.fixture(scope="module")
def hu_map(bank):
    return HUQuantileMap.fit_from_bank(bank, by="lung_rads", min_group_size=10)


def _generated(n=8, size=32, seed=0):
    """Generator-like outputs in [-1, 1]: a bright blob on a dark background, and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    m = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 4) ** 2).astype(np.float32)
    v = np.tanh(rng.normal(-0.6, 0.3, (n, size, size)) + 1.2 * m).astype(np.float32)
    return v, np.broadcast_to(m, v.shape).copy()


def test_quantile_map_matches_a_known_distribution():
    rng = np.random.default_rng(0)
    src = rng.uniform(-1, 1, 20000)
    tgt = rng.normal(-600, 150, 20000)
    p = np.linspace(0, 1, 1001)
    out = quantile_map(src, np.quantile(src, p), np.quantile(tgt, p))
    assert stats.ks_2samp(out, tgt).statistic < 0.02
    order = np.argsort(src)
    assert np.all(np.diff(out[order]) >= 0)  # monotone
    # outside the source range: clamped to the target's extremes
    edge = quantile_map(np.array([-5.0, 5.0]), np.quantile(src, p), np.quantile(tgt, p))
    assert edge[0] == pytest.approx(tgt.min()) and edge[1] == pytest.approx(tgt.max())


def test_fit_from_bank_groups_and_fallback(bank):
    m = HUQuantileMap.fit_from_bank(bank, by="lung_rads", min_group_size=10)
    train = bank.select("2d", subset="train")
    assert m.counts[ALL] == len(train)
    assert set(m.target["lesion"]) == {ALL, "LR2", "LR3", "LR4A", "LR4B"}
    # a threshold above every class: all fall back to the table of all lesions
    big = HUQuantileMap.fit_from_bank(bank, by="lung_rads", min_group_size=1000)
    assert set(big.target["lesion"]) == {ALL}
    assert big.fallback == ["LR2", "LR3", "LR4A", "LR4B"]
    assert big.group_of("LR4B") == ALL and m.group_of("LR4B") == "LR4B"
    assert m.group_of("LR9") == ALL and m.group_of(None) == ALL
    # the lesion tables are the lesion HU, the context tables the window around it
    img, msk, _ = train.patches("2d")
    lr2 = (train.table["lung_rads"] == "LR2").to_numpy()
    assert m.target["lesion"]["LR2"][500] == pytest.approx(np.median(img[lr2][msk[lr2] > 0]))
    assert m.target["context"][ALL][500] == pytest.approx(np.median(img[msk == 0]))


def test_outputs_are_integer_hu_and_monotone(hu_map):
    v, m = _generated(n=1)
    out = MapToLesionHU(hu_map, group="LR3")(v, m)
    assert isinstance(out, np.ndarray) and out.dtype == np.int16 and out.shape == v.shape
    for region in (m > 0.5, m <= 0.5):  # monotone within each region
        order = np.argsort(v[region], kind="stable")
        assert np.all(np.diff(out[region][order].astype(int)) >= 0)


def test_per_image_matches_lesion_and_context_distributions(bank, hu_map):
    train = bank.select("2d", subset="train")
    img, msk, _ = train.patches("2d")
    lr4a = (train.table["lung_rads"] == "LR4A").to_numpy()
    real_lesion = img[lr4a][msk[lr4a] > 0]
    real_context = img[lr4a][msk[lr4a] == 0]
    v, m = _generated(n=1, size=64)
    out = MapToLesionHU(hu_map, group="LR4A")(v, m)
    les, ctx = out[m > 0.5], out[m <= 0.5]
    assert stats.ks_2samp(les, real_lesion).statistic < 0.05
    assert stats.ks_2samp(ctx, real_context).statistic < 0.05
    # the background is not drawn from the lesion's HU
    assert np.median(ctx) < -700 < np.median(les)


def test_pooled_mode_keeps_between_lesion_differences(hu_map):
    v, m = _generated(n=20, seed=1)
    v[:10] -= 0.2 * m[:10]  # ten darker lesions
    hm = HUQuantileMap.from_dict(hu_map.to_dict()).fit_source(v, m, ["LR3"] * 20)
    assert set(hm.source["lesion"]) == {ALL, "LR3"}
    out = np.stack([hm.map(v[i], m[i], "LR3", mode="pooled") for i in range(20)])
    means = [out[i][m[i] > 0.5].mean() for i in range(20)]
    assert np.mean(means[:10]) < np.mean(means[10:]) - 20
    pooled = out[m > 0.5]
    tgt = hm.target["lesion"]["LR3"]
    assert stats.ks_2samp(pooled, tgt).statistic < 0.05
    # per-image matching gives every lesion the same distribution
    per = [hm.map(v[i], m[i], "LR3").astype(float)[m[i] > 0.5].mean() for i in range(20)]
    assert np.ptp(per) < 10


def test_metatensor_and_torch_in_out(hu_map):
    v, m = _generated(n=1)
    mt = MetaTensor(torch.from_numpy(v), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    mt.meta["filename_or_obj"] = "gen0"
    out = MapToLesionHU(hu_map, group="LR2")(mt, torch.from_numpy(m[0]))  # mask without channel
    assert isinstance(out, MetaTensor) and out.dtype == torch.int16
    assert out.meta["filename_or_obj"] == "gen0" and torch.equal(out.affine, mt.affine)
    ref = MapToLesionHU(hu_map, group="LR2")(v, m)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_dictionary_twin_uses_the_group_key(hu_map):
    v, m = _generated(n=1)
    t = MapToLesionHUd("image", hu_map, mask_key="mask", group_key="lung_rads")
    d = t({"image": v, "mask": m, "lung_rads": "LR2"})
    d4 = t({"image": v, "mask": m, "lung_rads": "LR4B"})
    assert d["mask"] is m and d["image"].dtype == np.int16
    assert np.median(d["image"][m > 0.5]) < np.median(d4["image"][m > 0.5]) - 200
    with pytest.raises(InputError, match="mask"):
        t({"image": v})


def test_json_round_trip_and_load(tmp_path, hu_map):
    p = hu_map.save(tmp_path / "hu_map.json")
    back = HUQuantileMap.load(p)
    v, m = _generated(n=1)
    a = MapToLesionHU(hu_map, group="LR3")(v, m)
    b = MapToLesionHU(str(p), group="LR3")(v, m)
    np.testing.assert_array_equal(a, b)
    assert back.counts == hu_map.counts and back.by == "lung_rads"
    d = json.loads(p.read_text())
    d["target"]["lesion"][ALL] = d["target"]["lesion"][ALL][::-1]
    with pytest.raises(InputError, match="not sorted"):
        HUQuantileMap.from_dict(d)


def test_typed_errors(tmp_path, bank, hu_map):
    v, m = _generated(n=1)
    with pytest.raises(InputError, match="unknown grouping"):
        HUQuantileMap.fit_from_bank(bank, by="colour")
    with pytest.raises(InputError, match="no real 2d lesions"):
        HUQuantileMap.fit_from_bank(bank, subset="nobody")
    with pytest.raises(InputError, match="pooled"):
        MapToLesionHU(hu_map, mode="pooled")
    with pytest.raises(InputError, match="mask"):
        MapToLesionHU(hu_map)(v, m[:, :16])
    bad = v.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        MapToLesionHU(hu_map)(bad, m)
    with pytest.raises(InputError, match="integers"):
        HUQuantileMap.fit(np.full((2, 4, 4), 0.5), np.ones((2, 4, 4)))
    with pytest.raises(InputError, match="not found"):
        HUQuantileMap.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        HUQuantileMap.load(tmp_path / "x.json")


def test_docs_example_runs(tmp_path, monkeypatch, capsys, bank):
    """The python example of docs/realism.md runs as written and prints what its comment says."""
    from lesion_factory import save_bank

    doc = Path(__file__).resolve().parents[1] / "docs" / "realism.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    save_bank(bank, tmp_path / "outputs" / "bank")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "docs/realism.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["int16", "True"]
    assert HUQuantileMap.load(tmp_path / "outputs" / "hu_map.json").by == "lung_rads"
