"""docs/networks.md: its example runs and its parameter counts are those of the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

from metalung_monai.networks import DeepLabV3, MaskRCNNSegmenter

DOC = Path(__file__).resolve().parents[1] / "docs" / "networks.md"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _count(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,}"


@pytest.mark.slow
def test_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/networks.md has no python example"
    torch.manual_seed(0)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), ns)
    assert ns["logits"].shape == (2, 2, 64, 64)
    assert ns["probs"].shape == (2, 2, 64, 64)
    torch.testing.assert_close(ns["probs"].sum(1), torch.ones(2, 64, 64))
    assert len(ns["losses"]) == 5 and all(torch.isfinite(v) for v in ns["losses"].values())
    assert [len(t["labels"]) for t in ns["targets"]] == [1, 0]


def test_parameter_counts_match_the_code():
    text = DOC.read_text(encoding="utf-8")
    unet = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )
    counts = {
        "UNet": _count(unet),
        "DeepLabV3 2D": _count(DeepLabV3()),
        "DeepLabV3 3D": _count(DeepLabV3(spatial_dims=3)),
        "Mask R-CNN resnet18": _count(MaskRCNNSegmenter(backbone="resnet18")),
        "Mask R-CNN resnet50": _count(MaskRCNNSegmenter(backbone="resnet50")),
    }
    missing = {name: n for name, n in counts.items() if n not in text}
    assert not missing, f"docs/networks.md does not state these parameter counts: {missing}"


def test_preset_parameter_counts_match_the_code():
    presets = pytest.importorskip("metalung_monai.training.presets").PRESETS
    text = DOC.read_text(encoding="utf-8")
    for name in ("quick", "full"):
        p = presets[name]
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), "")
        for sd in (2, 3):
            unet = UNet(
                spatial_dims=sd,
                in_channels=1,
                out_channels=2,
                channels=p["unet_channels"],
                strides=p["unet_strides"],
                num_res_units=2,
                norm="batch",
            )
            deeplab = DeepLabV3(
                spatial_dims=sd,
                channels=p["deeplab_channels"],
                aspp_channels=p["deeplab_aspp_channels"],
                aspp_rates=p["deeplab_aspp_rates"],
            )
            for label, net in ((f"U-Net {sd}D", unet), (f"DeepLabV3 {sd}D", deeplab)):
                assert f"| {_count(net)} |" in row, (
                    f"docs/networks.md: {name} {label} is not {_count(net)}"
                )
        maskrcnn = MaskRCNNSegmenter(
            backbone=p["maskrcnn_backbone"],
            fpn_channels=p["maskrcnn_fpn_channels"],
            representation_size=p["maskrcnn_representation_size"],
        )
        assert f"| {_count(maskrcnn)} (`{p['maskrcnn_backbone']}`" in row, (
            f"docs/networks.md: {name} Mask R-CNN"
        )
