"""The code shown in README.md and docs/*.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def workdir(small_cohort, tmp_path_factory):
    """A working folder whose ``outputs/cohort`` is the shared phantom cohort (the snippets read it)."""
    root = tmp_path_factory.mktemp("readme")
    (root / "outputs").mkdir()
    (root / "outputs" / "cohort").symlink_to(small_cohort, target_is_directory=True)
    return root


@pytest.mark.slow
def test_metalung_pipeline_snippet_runs(workdir, monkeypatch, capsys):
    blocks = python_blocks(REPO / "docs" / "metalung.md")
    assert blocks, "docs/metalung.md has no python example"
    monkeypatch.chdir(workdir)
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


def test_readme_pipeline_snippet_runs(workdir, monkeypatch):
    blocks = python_blocks(REPO / "README.md")
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(workdir)
    for code in blocks:
        ns: dict = {}
        exec(compile(code, "README.md", "exec"), ns)
    sample = ns["sample"]
    assert sample["image"].shape == sample["mask"].shape == sample["lung_mask"].shape
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
