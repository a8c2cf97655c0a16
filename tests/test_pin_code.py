"""scripts/pin_code.sh: a long grid keeps the code of the commit that started it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pin_code.sh"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _repo(tmp_path: Path) -> tuple[Path, str]:
    """A throwaway repository with the script, a package and a bundle at version A; its commit."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "metalung_monai").mkdir()
    (repo / "bundles").mkdir()
    shutil.copy(SCRIPT, repo / "scripts" / "pin_code.sh")
    (repo / "metalung_monai" / "version.txt").write_text("A")
    (repo / "bundles" / "train.json").write_text('{"v": "A"}')
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "A")
    return repo, _git(repo, "rev-parse", "HEAD")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_grid_runs_the_code_of_the_commit_that_started_it(tmp_path):
    repo, first = _repo(tmp_path)
    out = repo / "outputs" / "grid"
    probe = f'source "{repo}/scripts/pin_code.sh" "{out}"; echo "PP=${{PYTHONPATH:-}}"'

    def run() -> str:
        res = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env={})
        assert res.returncode == 0, res.stderr
        return res.stdout

    assert run().strip().endswith("PP=")  # at its own commit: nothing to pin
    pin = out.parent / "grid.code_commit"  # beside the folder: a new experiment folder stays empty
    assert pin.read_text().strip() == first and not (out.is_dir() and any(out.iterdir()))
    (repo / "metalung_monai" / "version.txt").write_text("B")
    (repo / "bundles" / "train.json").write_text('{"v": "B"}')
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "B")
    text = run()
    pinned = repo / "outputs" / "pinned" / first
    assert f"PP={pinned}" in text and "pinned to commit" in text
    assert (pinned / "metalung_monai" / "version.txt").read_text() == "A"
    assert (pinned / "bundles" / "train.json").read_text() == '{"v": "A"}'
    assert pin.read_text().strip() == first  # kept


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_records_carry_the_pin_into_a_new_output_folder(tmp_path):
    repo, first = _repo(tmp_path)
    rec = repo / "docs" / "records"

    def run(out: Path, records: Path) -> subprocess.CompletedProcess:
        probe = f'source "{repo}/scripts/pin_code.sh" "{out}" "{records}" && echo "PP=${{PYTHONPATH:-}}"'
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env={})

    assert run(repo / "outputs" / "a", rec).returncode == 0
    assert (rec / "code_commit").read_text().strip() == first  # the records keep the pin
    (repo / "metalung_monai" / "version.txt").write_text("B")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "B")
    # the outputs were lost: a new folder takes the records' commit and runs its code
    res = run(repo / "outputs" / "b", rec)
    assert res.returncode == 0, res.stderr
    assert (repo / "outputs" / "b.code_commit").read_text().strip() == first
    assert f"PP={repo / 'outputs' / 'pinned' / first}" in res.stdout
    # an output folder and records of two commits are refused
    other = repo / "outputs" / "c"
    (repo / "outputs" / "c.code_commit").write_text(_git(repo, "rev-parse", "HEAD") + "\n")
    res = run(other, rec)
    assert res.returncode != 0 and "records" in res.stderr and "PP=" not in res.stdout
    # a pin to a commit the repository does not hold is refused, naming it
    gone = repo / "outputs" / "d"
    (repo / "outputs" / "d.code_commit").write_text("0" * 40 + "\n")
    res = run(gone, repo / "docs" / "other")
    assert res.returncode != 0 and "0" * 40 in res.stderr
    assert not (repo / "docs" / "other" / "code_commit").exists()
