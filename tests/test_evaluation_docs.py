"""The example in docs/evaluation.md runs as written and prints what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_evaluation_doc_snippet_runs(tmp_path, monkeypatch):
    blocks = re.findall(
        r"```python\n(.*?)```", (REPO / "docs" / "evaluation.md").read_text(encoding="utf-8"), re.S
    )
    assert blocks, "docs/evaluation.md has no python example"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/evaluation.md", "exec"), ns)
    s = ns["summarize"](ns["df"])
    # slice 1: TP 7x8 = 56, FP 8 (the row off) + 9 (calcification), FN 8; slice 2: missed
    assert s["dice"] == pytest.approx((112 / (112 + 17 + 8) + 0) / 2)
    assert (
        round(s["dice"], 2) == 0.41 and round(s["precision"], 2) == 0.77 and s["n_precision"] == 1
    )
    assert s["n_missed"] == 1 and s["fp_components"] == 1 and s["calcified_fp_components"] == 1
    assert (tmp_path / "tables" / "table8.csv").exists() and (
        tmp_path / "tables" / "table8.md"
    ).exists()
