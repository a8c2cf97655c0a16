"""scripts/keep_banks.sh: a grid's generated lesion banks are kept with its records and restored."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lesion_factory import make_bank, save_bank

from metalung_monai.synthesis import read_bank
from metalung_monai.training.experiment import _folder_fingerprint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keep_banks.sh"


def _keep(rec: Path, syn: Path, mode: str, *gens: str) -> str:
    res = subprocess.run(
        [
            "bash",
            "-c",
            f'set -euo pipefail; source "{SCRIPT}" "$@"',
            "keep",
            str(rec),
            str(syn),
            mode,
            *gens,
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_generated_banks_survive_a_lost_outputs_folder(tmp_path):
    syn, rec = tmp_path / "outputs" / "synth", tmp_path / "repo" / "records"
    gen = Path(save_bank(make_bank(n=6, size=32, seed=3), syn / "dcgan" / "generated"))
    (gen / "overview.png").write_bytes(b"a picture: not kept")
    key = _folder_fingerprint(gen)
    assert "dcgan: save" in _keep(rec, syn, "save", "dcgan", "vqvae")  # vqvae: none yet, skipped
    assert sorted(p.name for p in (rec / "banks" / "dcgan").iterdir()) == [
        "bank.json",
        "bank.npz",
        "lesions.csv",
    ]
    assert not (rec / "banks" / "vqvae").exists()
    shutil.rmtree(tmp_path / "outputs")  # the next session: outputs lost, records kept
    assert "dcgan: restore" in _keep(rec, syn, "restore", "dcgan", "vqvae")
    assert _folder_fingerprint(syn / "dcgan" / "generated") == key  # the runs keep their key
    assert len(read_bank(syn / "dcgan" / "generated").table) == 6
    # a bank already present is never overwritten, in either direction
    other = save_bank(make_bank(n=4, size=32, seed=4), tmp_path / "other")
    shutil.copy(Path(other) / "lesions.csv", syn / "dcgan" / "generated" / "lesions.csv")
    assert _keep(rec, syn, "save", "dcgan") == ""
    assert _keep(rec, syn, "restore", "dcgan") == ""
    assert _folder_fingerprint(rec / "banks" / "dcgan") == key
