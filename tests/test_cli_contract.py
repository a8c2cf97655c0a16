"""The command layer's failure contract: one line on stderr, a traceback only with -v (issue 9, #10)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metalung_monai import cli
from metalung_monai.errors import InputError
from metalung_monai.utils.atomic import write_json_atomic


def _fake_command(monkeypatch, exc: BaseException) -> None:
    """Make ``metalung convert`` raise ``exc`` once its arguments parsed."""
    import metalung_monai.io.convert as conv

    def boom(args):
        raise exc

    monkeypatch.setattr(conv, "run", boom)


@pytest.mark.parametrize(
    ("exc", "status", "expected"),
    [
        (
            InputError("scan.nii.gz", "truncated file"),
            1,
            "metalung convert: error: scan.nii.gz: truncated file",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/x/y.nii"),
            1,
            "metalung convert: error: /x/y.nii: No such file or directory",
        ),
        (
            OSError(28, "No space left on device"),
            1,
            "metalung convert: error: No space left on device",
        ),
        (
            ZeroDivisionError("float division by zero"),
            1,
            "metalung convert: error: unexpected ZeroDivisionError: float division by zero (this is a bug",
        ),
        (KeyboardInterrupt(), 130, "metalung convert: error: interrupted"),
        (
            InputError("multi\nline", "problem\nover lines"),
            1,
            "metalung convert: error: multi line: problem over lines",
        ),
    ],
)
def test_every_failure_is_one_line_without_traceback(
    monkeypatch, capsys, tmp_path, exc, status, expected
):
    _fake_command(monkeypatch, exc)
    rc = cli.main(["convert", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == status
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert "Traceback" not in err


def test_verbose_prints_the_traceback_then_the_line(monkeypatch, capsys, tmp_path):
    _fake_command(monkeypatch, ZeroDivisionError("float division by zero"))
    for argv in (["-v", "convert", "x", "--out", "o"], ["convert", "x", "--out", "o", "-v"]):
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 1
        assert "Traceback (most recent call last)" in err and "in boom" in err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith("metalung convert: error: unexpected ZeroDivisionError")
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["augment"],  # missing DATALIST and --out
        ["augment", "dl.json", "--out", "o", "--copies", "many"],
        ["phantom", "--out", "o", "--patients", "1e9"],
        ["convert", "x", "--out", "o", "--pixel-spacing", "1"],
        ["nonsense"],
        ["evaluate", "ck.pt", "--datalist", "d", "--out", "o", "--section", "nope"],
    ],
)
def test_usage_errors_are_one_line_with_status_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and ": error: " in err and "--help" in err, err


def test_the_installed_entry_point_keeps_the_contract(tmp_path):
    """A real process: exit status and stderr as a shell user sees them."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metalung_monai",
            "augment",
            str(tmp_path / "none.json"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.count("\n") == 1
        and "none.json" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_json_outputs_are_strict(tmp_path):
    """NaN and infinity never reach a JSON file (most readers reject them); nothing is written."""
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            write_json_atomic({"spacing": [bad, 1.0]}, tmp_path / "d.json")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic({"spacing": [0.7, 0.7]}, tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == {"spacing": [0.7, 0.7]}
