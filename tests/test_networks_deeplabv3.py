"""DeepLabV3: shapes (2D/3D, odd sizes), atrous encoder, ASPP pooling branch, training, TorchScript."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.utils import convert_to_torchscript
from torch import nn

from metalung_monai.networks import DeepLabV3

TINY = dict(channels=(4, 8, 8, 8), blocks=(1, 1, 1, 1), aspp_channels=8, aspp_rates=(2, 4, 6))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the 2 shared cores, 2 OpenMP threads next to another busy process
    made a Mask R-CNN training step 20x slower (spinning threads), one thread never is."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _feature_size(n: int, output_stride: int) -> int:
    """Size after the stride-2 steps (conv 7/s2/p3, pool 3/s2/p1, conv 3/s2/p1: each ceil(n / 2))."""
    for _ in range(int(math.log2(output_stride))):
        n = (n + 1) // 2
    return n


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("size", [(64, 64), (65, 70), (37, 50)])
def test_2d_output_has_input_size_and_feature_stride(size, output_stride):
    net = DeepLabV3(
        spatial_dims=2, in_channels=1, out_channels=2, output_stride=output_stride, **TINY
    ).eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        feat = net.encoder(x)
        y = net(x)
    assert y.shape == (2, 2, *size) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert feat.shape == (2, 8, *(_feature_size(n, output_stride) for n in size))


def test_3d_output_has_input_size():
    net = DeepLabV3(
        spatial_dims=3, in_channels=1, out_channels=3, **{**TINY, "aspp_rates": (1, 2, 3)}
    ).eval()
    x = torch.rand(1, 1, 33, 30, 17)
    with torch.no_grad():
        y = net(x)
        feat = net.encoder(x)
    assert y.shape == (1, 3, 33, 30, 17)
    assert feat.shape[2:] == tuple(_feature_size(n, 8) for n in (33, 30, 17))
    assert isinstance(net.aspp.pooling[0], nn.AdaptiveAvgPool3d)
    assert all(
        isinstance(m, nn.Conv3d) for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)
    )


@pytest.mark.parametrize("output_stride, dilations", [(8, (1, 1, 2, 4)), (16, (1, 1, 1, 2))])
def test_late_stages_trade_stride_for_dilation(output_stride, dilations):
    net = DeepLabV3(output_stride=output_stride, **TINY)
    enc = net.encoder
    assert enc.stage_dilations == dilations
    for stage, d, s in zip(enc.stages, enc.stage_dilations, enc.stage_strides):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        strides = {m.stride for m in convs}
        if d > 1:  # a dilated stage keeps the resolution; first conv keeps the previous dilation
            assert s == 1 and strides == {(1, 1)}
            assert convs[0].dilation == (d // 2, d // 2)
            assert all(m.dilation == (d, d) and m.padding == (d, d) for m in convs[1:])
        else:
            assert all(m.dilation == (1, 1) for m in convs)
    aspp_dil = [
        m.dilation[0] for b in net.aspp.branches for m in b.modules() if isinstance(m, nn.Conv2d)
    ]
    assert aspp_dil == [1, 2, 4, 6]


def _receptive_field(net: DeepLabV3, dilated: bool) -> int:
    """Theoretical receptive field of the encoder's main path (conv / pool chain)."""
    rf, jump = 1, 1
    layers = [net.encoder.stem[0].conv, net.encoder.stem[1]]
    for stage in net.encoder.stages:
        for block in stage:
            layers += [block.conv_a.conv, block.conv_b.conv]
    for layer in layers:
        k = layer.kernel_size[0] if isinstance(layer.kernel_size, tuple) else layer.kernel_size
        s = layer.stride[0] if isinstance(layer.stride, tuple) else layer.stride
        d = layer.dilation[0] if dilated and isinstance(layer, nn.Conv2d) else 1
        rf += (k - 1) * d * jump
        jump *= s
    return rf


def test_dilation_widens_the_measured_receptive_field():
    net = DeepLabV3(output_stride=8, **TINY).double().eval()
    rf_dilated, rf_plain = _receptive_field(net, True), _receptive_field(net, False)
    assert rf_dilated > rf_plain + 50  # sanity of the construction: 195 vs 115 px
    x = torch.rand(1, 1, 224, 224, dtype=torch.float64, requires_grad=True)
    feat = net.encoder(x)
    c = feat.shape[-1] // 2
    feat[0, :, c, c].sum().backward()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    width = int(cols.max() - cols.min() + 1)
    # the input pixels that reach one feature span more than any undilated chain could reach
    assert rf_plain < width <= rf_dilated


def test_aspp_has_image_pooling_branch():
    net = DeepLabV3(**TINY).eval()
    aspp = net.aspp
    assert isinstance(aspp.pooling[0], nn.AdaptiveAvgPool2d) and aspp.pooling[0].output_size == 1
    assert len(aspp.branches) == 4  # 1x1 + three atrous
    assert aspp.project.conv.in_channels == 5 * 8  # + pooling branch
    feat = torch.rand(2, 8, 9, 11)
    with torch.no_grad():
        pooled = aspp.pooling(feat)
        direct = aspp.pooling[1](feat.mean(dim=(2, 3), keepdim=True))
        before = aspp(feat)
        aspp.pooling[1].conv.weight.zero_()
        aspp.pooling[1].conv.bias.fill_(-1.0)  # ReLU -> the branch outputs zeros
        after = aspp(feat)
    assert pooled.shape == (2, 8, 1, 1)
    torch.testing.assert_close(pooled, direct)
    assert not torch.allclose(before, after)  # the branch feeds the projection


def test_one_step_reduces_loss_on_toy_problem():
    net = DeepLabV3(**{**TINY, "aspp_rates": (1, 2, 3)}, dropout=0.0).train()
    x = torch.rand(4, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    target = (((yy - 16) ** 2 + (xx - 12) ** 2) < 64).long().expand(4, 32, 32).clone()
    x = x * 0.2 + 0.8 * target[:, None].float()  # a bright disc on noise
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss0 = loss_fn(net(x), target)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1 = loss_fn(net(x), target)
    assert torch.isfinite(loss0) and loss1 < loss0


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 45, 52)), (3, (1, 1, 20, 24, 18))])
def test_torchscript_round_trip(tmp_path, spatial_dims, shape):
    net = DeepLabV3(spatial_dims=spatial_dims, **{**TINY, "aspp_rates": (1, 2, 3)}).eval()
    path = tmp_path / "deeplab.ts"
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.rand(*shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    # MONAI's bundle exporter (ckpt_export) goes through convert_to_torchscript
    convert_to_torchscript(net, verify=True, inputs=[x], device=torch.device("cpu"))


def test_norm_variants_and_invalid_arguments():
    net = DeepLabV3(norm=("group", {"num_groups": 2}), **TINY)
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    assert net(torch.rand(1, 1, 40, 40)).shape == (1, 2, 40, 40)  # works with batch size 1
    with pytest.raises(ValueError, match="output_stride 12"):
        DeepLabV3(output_stride=12, **TINY)
    with pytest.raises(ValueError, match="spatial_dims"):
        DeepLabV3(spatial_dims=1, **TINY)
    with pytest.raises(ValueError, match="same length"):
        DeepLabV3(channels=(4, 8), blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="rates"):
        DeepLabV3(**{**TINY, "aspp_rates": (0, 2)})
