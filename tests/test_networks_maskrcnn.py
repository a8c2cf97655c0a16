"""Mask R-CNN adapter: instance targets, training losses, semantic output, MONAI engines, weights, export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, StatsHandler, from_engine
from monai.networks.utils import convert_to_torchscript
from monai.transforms import AsDiscreted
from scipy import ndimage
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import metalung_monai.networks as mnets
from metalung_monai.errors import InputError, MaskError, UnsupportedFormatError
from metalung_monai.networks import MaskRCNNSegmenter
from metalung_monai.training.maskrcnn_glue import targets_from_mask, train_iteration

SIZE = 64
# small RPN / RoI sampling keeps a CPU step well under a second on 64-px images
FAST = dict(
    image_size=SIZE,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=200,
    rpn_batch_size_per_image=64,
    box_batch_size_per_image=16,  # <= 4 positive RoIs per image: the 4-conv mask head dominates CPU time
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
)
LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


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


def _disc(cy: int, cx: int, r: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def toy_batch(n: int = 2, empty_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs (window value 0.8 + noise) on a 0.1-0.25 background, masks (n, 1, 64, 64)."""
    centres = [(20, 24, 8), (40, 36, 6), (30, 30, 10), (18, 44, 5)]
    masks = np.stack([_disc(*centres[i % 4]) for i in range(n)])[:, None].astype(np.float32)
    if empty_last:
        masks[-1] = 0
    g = torch.Generator().manual_seed(1)
    m = torch.from_numpy(masks)
    return 0.1 + 0.15 * torch.rand(m.shape, generator=g) + 0.7 * m, m


# ----------------------------------------------------------------------------- targets_from_mask


def test_targets_from_empty_mask_has_zero_instances():
    t = targets_from_mask(torch.zeros(1, SIZE, SIZE))
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (0, SIZE, SIZE) and t["masks"].dtype == torch.uint8


def test_targets_from_one_component():
    mask = _disc(30, 20, 7)
    t = targets_from_mask(torch.from_numpy(mask)[None].float())
    rows, cols = np.nonzero(mask)
    assert t["boxes"].tolist() == [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]
    assert t["labels"].tolist() == [1]
    np.testing.assert_array_equal(t["masks"][0].numpy(), mask)


def test_targets_from_three_components_use_8_connectivity():
    mask = _disc(12, 12, 5) | _disc(45, 40, 8)
    mask[50, 5] = mask[51, 6] = 1  # two pixels touching by a corner: one component (8-connected)
    assert ndimage.label(mask)[1] == 4  # 4-connectivity would split them
    t = targets_from_mask(mask)  # numpy (H, W) input
    assert len(t["labels"]) == 3 and (t["labels"] == 1).all()
    masks = t["masks"].numpy()
    np.testing.assert_array_equal(masks.sum(0), mask)  # disjoint and covering the mask
    for m, box in zip(masks, t["boxes"].tolist()):
        assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1
        rows, cols = np.nonzero(m)
        assert box == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    diag = [b for b in t["boxes"].tolist() if b[0] == 5]
    assert diag == [[5, 50, 7, 52]]  # two corner-touching pixels: a 2 x 2 box, no zero area


@pytest.mark.parametrize(
    "bad, problem",
    [
        (torch.full((1, 8, 8), 0.5), "not binary"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), "NaN"),
        (torch.zeros(2, 8, 8), "shape"),
    ],
)
def test_targets_reject_bad_masks(bad, problem):
    with pytest.raises(MaskError, match=problem) as err:
        targets_from_mask(bad, source="label[3]")
    assert str(err.value).startswith("label[3]: ")


# ----------------------------------------------------------------------------- training / eval


@pytest.mark.slow
def test_training_steps_give_finite_decreasing_losses():
    net = MaskRCNNSegmenter(**FAST)
    x, y = toy_batch(2, empty_last=True)  # an empty target (background-only image) included
    targets = [targets_from_mask(m) for m in y]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    net.train()
    totals = []
    for _ in range(5):
        opt.zero_grad()
        losses = net(x, targets)
        assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert abs(totals[0] - (0.69 + 0.69 + 0.69)) < 1.0  # ~ln 2 for objectness, classifier and mask
    assert np.mean(totals[-2:]) < np.mean(totals[:2])


def test_eval_output_is_a_probability_map():
    net = MaskRCNNSegmenter(score_threshold=0.05, **FAST).eval()
    x, _ = toy_batch(3)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (3, 2, SIZE, SIZE) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    torch.testing.assert_close(y.sum(1), torch.ones(3, SIZE, SIZE))


@pytest.mark.parametrize("image_size", [None, SIZE])
def test_other_input_sizes_come_back_at_their_size(image_size):
    net = MaskRCNNSegmenter(score_threshold=0.05, **{**FAST, "image_size": image_size}).eval()
    x = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        batched, _ = net.model.transform([img for img in x])
        y = net(x)
    # None keeps the pixel scale; 64 = min_size = max_size scales the long side 96 -> 64
    assert batched.image_sizes == ([(96, 80)] * 2 if image_size is None else [(64, 53)] * 2)
    assert y.shape == (2, 2, 96, 80)
    torch.testing.assert_close(y.sum(1), torch.ones(2, 96, 80))


def test_semantic_merges_instances_by_score_and_threshold():
    net = MaskRCNNSegmenter(score_threshold=0.5, mask_threshold=0.3, **FAST)
    p = torch.zeros(3, 1, 8, 8)
    p[0, 0, :4] = 0.4  # kept (score 0.9); 0.4 > mask_threshold 0.3 -> tumour
    p[1, 0, 2:6] = 0.2  # kept (score 0.6); 0.2 < 0.3 -> background, overlaps rows 2-3 of p[0]
    p[2, 0, :] = 0.99  # dropped: score 0.3 below score_threshold
    det = {"scores": torch.tensor([0.9, 0.6, 0.3]), "labels": torch.tensor([1, 1, 1]), "masks": p}
    empty = {
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 1, 8, 8),
    }
    out = net.semantic([det, empty], 8, 8, torch.float32, torch.device("cpu"))
    assert out.shape == (2, 2, 8, 8)
    seg = out.argmax(1)
    assert seg[0, :4].all() and not seg[0, 4:].any()  # max over instances, then threshold 0.3
    torch.testing.assert_close(out[0, 1, 0, 0], torch.tensor(0.5 + 0.5 * (0.4 - 0.3) / 0.7))
    torch.testing.assert_close(out[0, 1, 4, 0], torch.tensor(0.5 * 0.2 / 0.3))
    assert (out[1, 0] == 1).all() and (out[1, 1] == 0).all()  # no detection: all background


def test_mode_and_shape_errors():
    net = MaskRCNNSegmenter(**FAST)
    x, y = toy_batch(1)
    with pytest.raises(ValueError, match="needs targets"):
        net.train()(x)
    with pytest.raises(ValueError, match="train"):
        net.eval()(x, [targets_from_mask(y[0])])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net.eval()(torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="backbone"):
        MaskRCNNSegmenter(backbone="vgg16")


def test_slim_fpn_and_heads_follow_the_widths():
    net = MaskRCNNSegmenter(fpn_channels=32, representation_size=64, **FAST)
    m = net.model
    assert m.backbone.out_channels == 32
    assert [blk[0].out_channels for blk in m.backbone.fpn.layer_blocks] == [32] * 4
    assert (
        m.roi_heads.box_head.fc6.in_features == 32 * 7 * 7
        and m.roi_heads.box_head.fc7.out_features == 64
    )
    assert m.roi_heads.box_predictor.cls_score.in_features == 64
    assert m.roi_heads.mask_predictor.conv5_mask.in_channels == 32
    x, y = toy_batch(2)
    losses = net.train()(x, [targets_from_mask(t) for t in y])
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    assert net.eval()(x).shape == (2, 2, SIZE, SIZE)
    slim, default = (
        sum(q.numel() for q in n.parameters()) for n in (net, MaskRCNNSegmenter(**FAST))
    )
    assert slim < default / 2
    with pytest.raises(ValueError, match="fpn_channels"):
        MaskRCNNSegmenter(fpn_channels=0)


def test_trainable_layers_freeze_the_first_stages():
    net = MaskRCNNSegmenter(trainable_layers=3, **FAST)
    body = net.model.backbone.body
    assert not body.conv1.weight.requires_grad and body.conv1.weight.shape[1] == 1
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert MaskRCNNSegmenter(**FAST).model.backbone.body.conv1.weight.requires_grad


# ----------------------------------------------------------------------------- MONAI engines


@pytest.mark.slow
def test_supervised_trainer_and_evaluator():
    x, y = toy_batch(4, empty_last=True)
    # MetaTensors, as a LoadImaged / EnsureChannelFirstd pipeline gives them
    data = [{"image": MetaTensor(x[i]), "label": MetaTensor(y[i])} for i in range(4)]
    loader = DataLoader(Dataset(data), batch_size=2, shuffle=False, num_workers=0)
    net = MaskRCNNSegmenter(**FAST)
    before = net.model.backbone.body.layer4[0].conv1.weight.detach().clone()
    seen: list[dict] = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
        loss_function=nn.Identity(),  # unused: the network computes its losses
        iteration_update=train_iteration,
        train_handlers=[
            StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))
        ],
    )

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        seen.append(
            {
                "loss": from_engine(["loss"], first=True)(engine.state.output),
                "mask": from_engine(["loss_mask"], first=True)(engine.state.output),
            }
        )

    trainer.run()
    assert trainer.state.iteration == 2 and len(seen) == 2
    assert all(np.isfinite(float(s["loss"])) and isinstance(s["mask"], float) for s in seen)
    assert not torch.equal(
        before, net.model.backbone.body.layer4[0].conv1.weight
    )  # optimizer stepped
    assert net.training

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        postprocessing=AsDiscreted(keys=["pred", "label"], argmax=(True, False), to_onehot=2),
        key_val_metric={
            "dice": MeanDice(
                include_background=False, output_transform=from_engine(["pred", "label"])
            )
        },
    )
    evaluator.run()  # in train mode forward(x) would raise: the evaluator switched to eval
    dice = evaluator.state.metrics["dice"]
    assert 0.0 <= dice <= 1.0 or np.isnan(dice)
    pred = evaluator.state.output[0]["pred"]
    assert pred.shape == (2, SIZE, SIZE)


# ----------------------------------------------------------------------------- weights


def test_pretrained_backbone_from_resnet_state_dict(tmp_path):
    resnet = torchvision.models.resnet18()  # a fresh 3-channel ImageNet-style classifier
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    net = MaskRCNNSegmenter(pretrained_backbone=str(path), **FAST)
    body = net.model.backbone.body
    torch.testing.assert_close(body.conv1.weight, resnet.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(body.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    torch.testing.assert_close(body.bn1.running_var, resnet.bn1.running_var)
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # pretrained -> frozen statistics by default


def test_pretrained_backbone_from_saved_segmenter(tmp_path):
    src = MaskRCNNSegmenter(**FAST)
    path = tmp_path / "segmenter.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    net = MaskRCNNSegmenter(pretrained_backbone=path, norm="batch", **FAST)
    for (name, a), b in zip(
        src.model.backbone.state_dict().items(), net.model.backbone.state_dict().values()
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(
        src.model.rpn.head.conv[0][0].weight, net.model.rpn.head.conv[0][0].weight
    )


def test_pretrained_backbone_errors(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pt"
    with pytest.raises(InputError, match="not found") as err:
        MaskRCNNSegmenter(pretrained_backbone=missing, **FAST)
    assert str(missing) in str(err.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UnsupportedFormatError, match="state_dict"):
        MaskRCNNSegmenter(pretrained_backbone=junk, **FAST)
    sd = torchvision.models.resnet18().state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(sd, wrong_shape)
    with pytest.raises(InputError, match="do not fit") as err:
        MaskRCNNSegmenter(pretrained_backbone=wrong_shape, **FAST)
    assert "layer1.0.conv1.weight" in str(err.value)
    sd = torchvision.models.resnet18().state_dict()
    del sd["layer4.1.conv2.weight"]
    sd["layer5.weight"] = torch.zeros(1)
    wrong_keys = tmp_path / "wrong_keys.pt"
    torch.save(sd, wrong_keys)
    with pytest.raises(InputError, match="1 missing keys.*1 unexpected keys"):
        MaskRCNNSegmenter(pretrained_backbone=wrong_keys, **FAST)


# ----------------------------------------------------------------------------- export


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [SIZE, None])
def test_torchscript_script_round_trip(tmp_path, image_size):
    net = MaskRCNNSegmenter(score_threshold=0.05, **{**FAST, "image_size": image_size}).eval()
    x, _ = toy_batch(2)
    path = tmp_path / "maskrcnn.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_to_torchscript(net, str(path), verify=True, inputs=[x], device=torch.device("cpu"))
        loaded = torch.jit.load(str(path)).eval()
        with torch.no_grad():
            eager, scripted = net(x), loaded(x)
        torch.testing.assert_close(scripted, eager)
        assert float(eager[:, 1].max()) > 0  # detections were kept, so the comparison covers them
        loaded.train()
        losses = loaded(x, [targets_from_mask(m) for m in toy_batch(2)[1]])
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())


def test_torch_jit_trace_is_not_usable():
    """The documented reason tracing is not offered: data-dependent control flow is frozen."""
    net = MaskRCNNSegmenter(score_threshold=0.05, **FAST).eval()
    x, _ = toy_batch(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, x, check_trace=False)
    assert any(issubclass(w.category, torch.jit.TracerWarning) for w in caught)
    with pytest.raises(RuntimeError, match="Expected 2 elements in a list but found 1"):
        traced(x[:1])  # the per-image loop was unrolled for the example batch of 2


def test_training_glue_still_reachable_from_networks():
    """Bundle configs written before the split say ``$mnets.train_iteration``: it still resolves."""
    assert mnets.train_iteration is train_iteration
    assert mnets.targets_from_mask is targets_from_mask
    with pytest.raises(AttributeError):
        mnets.no_such_name  # noqa: B018


def test_pretrained_backbone_from_torchvision_maskrcnn_checkpoint(tmp_path):
    """``backbone.``-prefixed keys (a torchvision Mask R-CNN) load body and FPN; heads are ignored."""
    torch.manual_seed(0)
    src = MaskRCNNSegmenter(**FAST)
    state = {
        k[len("model.") :]: v for k, v in src.state_dict().items()
    }  # backbone., rpn., roi_heads.
    path = tmp_path / "torchvision_maskrcnn.pt"
    torch.save({"state_dict": state}, path)
    torch.manual_seed(1)
    net = MaskRCNNSegmenter(pretrained_backbone=path, norm="batch", **FAST)
    for name, value in src.model.backbone.state_dict().items():
        assert torch.equal(net.model.backbone.state_dict()[name], value), name
    head = "roi_heads.box_head.fc6.weight"
    assert not torch.equal(net.model.state_dict()[head], src.model.state_dict()[head])
