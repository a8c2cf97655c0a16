"""Figures: overlay grid and training curves render, draw what they should, and reject bad input."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from metalung_monai.errors import GeometryMismatchError, InputError, MaskError
from metalung_monai.evaluation import overlay_grid, training_curves, zoom_box
from metalung_monai.evaluation.figures import PRED_COLOR, TRUTH_COLOR, _outline_segments


def phantom_slice(size=128):
    """A chest-like slice in HU: body 40, two lungs -850, a 10 px tumour in the left lung."""
    yy, xx = np.mgrid[:size, :size]
    hu = np.full((size, size), -1000, np.int16)
    hu[((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.47 * size)) ** 2 < 1] = 40
    for cx in (0.3 * size, 0.7 * size):
        hu[((yy - size / 2) / (0.3 * size)) ** 2 + ((xx - cx) / (0.15 * size)) ** 2 < 1] = -850
    truth = (yy - 0.47 * size) ** 2 + (xx - 0.7 * size) ** 2 < 25
    hu[truth] = 20
    return hu, truth


def count_color(png, color, tol=0.12):
    rgb = imread(png)[..., :3]
    return int((np.abs(rgb - np.asarray(to_rgb(color))).max(-1) < tol).sum())


def test_overlay_grid_renders_outlines(tmp_path):
    hu, truth = phantom_slice()
    pred = np.roll(truth, 2, axis=1)
    far_fp = np.zeros_like(truth)
    far_fp[20:23, 20:23] = True
    rows = [
        dict(
            image=hu,
            truth=truth,
            preds={"baseline": pred | far_fp, "metalung": truth},
            title="case 1",
        ),
        dict(image=hu, truth=np.zeros_like(truth), preds={"baseline": far_fp}, title="no tumour"),
    ]
    out = overlay_grid(rows, tmp_path / "figs" / "overlay.png", dpi=60, panel_inches=2.0)
    assert out.exists() and out.stat().st_size > 0
    img = imread(out)
    assert img.shape[:2] == (round((2.0 * 2 + 0.55) * 60), round(2.0 * 3 * 60))
    with_pred = count_color(out, PRED_COLOR)
    assert count_color(out, TRUTH_COLOR) > 50
    # the same grid with empty predictions has fewer red pixels (only the legend's line)
    empty = [dict(r, preds={a: np.zeros_like(truth) for a in r["preds"]}) for r in rows]
    overlay_grid(empty, tmp_path / "empty.png", dpi=60, panel_inches=2.0)
    assert with_pred > count_color(tmp_path / "empty.png", PRED_COLOR) + 50
    assert not [p for p in (tmp_path / "figs").iterdir() if "partial" in p.name]


def test_overlay_grid_rejects_bad_rows(tmp_path):
    hu, truth = phantom_slice(64)
    target = tmp_path / "bad.png"
    with pytest.raises(GeometryMismatchError, match=r"rows\[0\]\.preds\[a\]: shape"):
        overlay_grid([dict(image=hu, truth=truth, preds={"a": truth[:32]})], target)
    with pytest.raises(MaskError, match=r"rows\[0\]\.truth"):
        overlay_grid([dict(image=hu, truth=truth * 0.5, preds={})], target)
    with pytest.raises(GeometryMismatchError, match="2D"):
        overlay_grid([dict(image=hu[None], truth=truth[None], preds={})], target)
    with pytest.raises(InputError, match="rows: no slice"):
        overlay_grid([], target)
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial file


def test_zoom_box_contains_the_tumour():
    m = np.zeros((100, 120), bool)
    m[90:96, 110:118] = True  # near the corner
    y0, y1, x0, x1 = zoom_box(m, m.shape, min_size=40)
    assert (y1 - y0, x1 - x0) == (40, 40)
    assert 0 <= y0 and y1 <= 100 and 0 <= x0 and x1 <= 120
    assert m[y0:y1, x0:x1].sum() == m.sum()
    big = np.zeros((100, 120), bool)
    big[10:60, 20:50] = True  # 3 x 50 = 150 > image: whole height
    assert zoom_box(big, big.shape)[:2] == (0, 100)
    assert zoom_box(np.zeros((30, 40), bool), (30, 40)) == (0, 30, 0, 40)


def test_outline_follows_pixel_edges():
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    segs = _outline_segments(one)
    assert len(segs) == 4
    xs, ys = segs[..., 0], segs[..., 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2.5, 3.5, 1.5, 2.5)
    block = np.zeros((6, 6), bool)
    block[1:3, 1:4] = True  # 2 x 3 block: perimeter 10 unit edges
    assert len(_outline_segments(block)) == 10
    assert len(_outline_segments(np.ones((4, 4), bool))) == 0  # array borders are not edges


def test_training_curves_single_and_several_seeds(tmp_path):
    rng = np.random.default_rng(0)
    hist = {
        "baseline": {
            "loss": [list(np.exp(-np.arange(20) / 5) + rng.normal(0, 0.01, 20)) for _ in range(3)],
            "val_dice": [list(rng.uniform(0.2, 0.4, 5)) for _ in range(3)],
            "val_dice_x": [4, 8, 12, 16, 20],
        },
        "metalung": {
            "loss": list(np.exp(-np.arange(20) / 4)),
            "val_dice": [0.3, 0.35, 0.4, 0.42, 0.43],
            "val_dice_x": [4, 8, 12, 16, 20],
        },
    }
    out = training_curves(hist, tmp_path / "curves.png", log_loss=True, dpi=60)
    assert out.exists() and out.stat().st_size > 0
    assert imread(out).shape[1] == round(4.2 * 2 * 60)  # one panel per metric
    with pytest.raises(
        InputError, match=r"histories\[metalung\]\[val_dice_x\]: 2 x positions for 5 values"
    ):
        training_curves(
            {"metalung": dict(hist["metalung"], val_dice_x=[1, 2])}, tmp_path / "bad.png"
        )
    with pytest.raises(InputError, match="no arm"):
        training_curves({}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
