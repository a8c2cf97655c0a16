"""The three MONAI bundles as Model Zoo packages: layout, metadata (offline ``verify_metadata``),
network input/output (``verify_net_in_out``) and TorchScript export. Apart from ``test_bundles.py``
so that pytest-xdist (``--dist loadfile``) runs them beside the training tests."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from bundle_helpers import ARMS, BUNDLES, ENV, NAMES, ZOO_FILES, bundle_cmd, run, verify_metadata


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_zoo_layout_and_metadata(name):
    root = BUNDLES / name
    for rel in ZOO_FILES:
        assert (root / rel).is_file(), f"{name}: {rel} missing"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    # one package list (the optional one holds only what the required one does not)
    assert not set(meta["required_packages_version"]) & set(meta["optional_packages_version"])
    # measured metrics as numbers, one per arm, the figures of docs/experiments.md
    metrics = meta["eval_metrics"]
    assert {f"mean_dice_{arm}" for arm in ARMS} <= set(metrics)
    assert all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in metrics.values())
    readme = (root / "docs" / "README.md").read_text()
    assert all(f"{v:.3f}" in readme for v in metrics.values()), "docs/README.md: metric not shown"
    verify_metadata(root)
    # a broken metadata file is refused
    bad = dict(meta)
    del bad["task"]
    broken = root / "configs" / "metadata_broken_test.json"
    broken.write_text(json.dumps(bad))
    try:
        res = subprocess.run(
            bundle_cmd(
                "verify_metadata", "--meta_file", str(broken), "--filepath", "../meta_schema.json"
            ),
            cwd=root,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode != 0 and "'task' is a required property" in res.stderr + res.stdout
    finally:
        broken.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_network_in_out_and_torchscript_export(name, tmp_path):
    root = BUNDLES / name
    run(
        bundle_cmd(
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.json",
            "--device",
            "cpu",
            "--n",
            "4",
        ),
        root,
    )
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    run(
        bundle_cmd(
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts),
            "--ckpt_file",
            str(ckpt),
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.json",
        ),
        root,
    )
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
