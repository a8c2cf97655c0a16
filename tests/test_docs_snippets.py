"""The code shown in README.md and docs/*.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalung_monai.phantom.cohort import generate_cohort

REPO = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    generate_cohort(
        root / "outputs" / "cohort",
        n_patients=5,
        seed=0,
        size=128,
        slice_thickness=5.0,
        n_test_per_class=1,
        progress=False,
        figure=False,
    )
    return root


def test_metalung_pipeline_snippet_runs(tiny_cohort, monkeypatch, capsys):
    blocks = python_blocks(REPO / "docs" / "metalung.md")
    assert blocks, "docs/metalung.md has no python example"
    monkeypatch.chdir(tiny_cohort)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/metalung.md", "exec"), ns)
    assert tuple(ns["batch"]["image"].shape) == (4, 1, 96, 96, 16)
    assert len(ns["variants"]) >= 4  # input + every variant that applied (tiny 128 px cohort)
    ops = {
        r[-1]["op"]
        for r in map(
            lambda v: __import__("metalung_monai").transforms.metalung_records(v["image"]),
            ns["variants"][1:],
        )
    }
    assert {"mirror", "rotate_image", "noise_image"} <= ops


def test_readme_pipeline_snippet_runs(tiny_cohort, monkeypatch):
    blocks = python_blocks(REPO / "README.md")
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tiny_cohort)
    for code in blocks:
        ns: dict = {}
        exec(compile(code, "README.md", "exec"), ns)
    sample = ns["sample"]
    assert sample["image"].shape == sample["mask"].shape == sample["lung_mask"].shape
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
