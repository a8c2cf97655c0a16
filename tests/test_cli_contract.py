"""The command layer's failure contract: one line on stderr, a traceback only with -v (issue 9, #10)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from metalung_monai import cli
from metalung_monai.errors import InputError
from metalung_monai.utils.atomic import write_json_atomic


def _fake_command(monkeypatch, exc: BaseException) -> None:
    """Make ``metalung convert`` raise ``exc`` once its arguments parsed."""
    import metalung_monai.commands.convert as conv

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


@pytest.mark.slow
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


#: what asking for help must never import (seconds of start-up; the failure contract needs none)
HEAVY = ("torch", "monai", "scipy", "SimpleITK")


def _heavy_imported_by(argv: list[str]) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after ``metalung <argv>`` exited."""
    code = (
        "import sys\n"
        "import metalung_monai.cli as c\n"
        "try:\n"
        f"    c.main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        f"print('heavy:', *(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "usage: metalung" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("heavy:"), proc.stdout
    return last.split()[1:]


@pytest.mark.parametrize(
    "command", [n for n, m in cli.SUBCOMMANDS if m.startswith("metalung_monai.commands.")]
)
def test_command_help_imports_no_heavy_module(command):
    """``metalung <command> --help`` imports only that command's module, which is light."""
    assert _heavy_imported_by([command, "--help"]) == []


def test_metalung_help_imports_no_heavy_module():
    """``metalung --help`` builds every parser and imports neither torch nor MONAI (nor SciPy)."""
    old = [m for _, m in cli.SUBCOMMANDS if not m.startswith("metalung_monai.commands.")]
    if old:
        pytest.skip(f"sub-commands not yet in metalung_monai.commands: {', '.join(old)}")
    assert _heavy_imported_by(["--help"]) == []


def test_only_the_named_command_is_imported():
    """The command line names one command: only its module is imported and registered."""
    parser = cli.build_parser("convert")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["convert"]
    assert cli._command_of(["-v", "lung-mask", "x", "--out", "convert"]) == "lung-mask"
    assert cli._command_of(["--version"]) is None and cli._command_of(["nonsense"]) is None
    full = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(full.choices) == [n for n, _ in cli.SUBCOMMANDS]


def test_json_outputs_are_strict(tmp_path):
    """NaN and infinity never reach a JSON file (most readers reject them); nothing is written."""
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            write_json_atomic({"spacing": [bad, 1.0]}, tmp_path / "d.json")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic({"spacing": [0.7, 0.7]}, tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == {"spacing": [0.7, 0.7]}
