"""Model registry: every model runs forward and backward at two sizes; layouts and overrides."""

from __future__ import annotations

import pytest
import torch

from yolo_core import models
from yolo_core.models import COCO_ANCHORS, create_model, list_models, register_model, scale_filters

SMALL = 0.125  # width multiplier that keeps every model fast on a CPU
V1_MODELS = ["fast_yolo", "yolov1", "yolov1_darknet"]  # grid fixed by a connected layer: one input size


def test_registry_names() -> None:
    assert list_models() == ["darknet19", "darknet19_448", "fast_yolo", "yolo9000", "yolov1", "yolov1_darknet",
                             "yolov2", "yolov2_tiny"]
    with pytest.raises(KeyError, match="registered: darknet19"):
        create_model("yolov3")


def test_registering_a_taken_name_warns_and_replaces(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    original = models._REGISTRY["yolov2"]

    def yolov2(**kwargs):
        return original(**kwargs)

    with pytest.warns(UserWarning, match="model 'yolov2' registered again"):
        register_model(yolov2)
    assert models._REGISTRY["yolov2"] is yolov2


@pytest.mark.parametrize("name", [n for n in list_models() if n not in V1_MODELS])
def test_forward_backward_at_two_sizes(name: str) -> None:
    model = create_model(name, width=SMALL).train()
    for h, w in [(64, 64), (96, 128)]:
        model.zero_grad()
        x = torch.randn(2, 3, h, w)
        out = model(x)
        if model.is_detector:
            assert out.shape == (2, model.num_anchors * (5 + model.num_classes), h // 32, w // 32)
        else:
            assert out.shape == (2, model.num_classes)
        out.square().mean().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, pname


def test_defaults_and_attributes() -> None:
    with torch.device("meta"):
        v2, v9k, tiny, d19 = (create_model(n) for n in ("yolov2", "yolo9000", "yolov2_tiny", "darknet19_448"))
    assert (v2.num_anchors, v2.num_classes, v2.stride, v2.tree_path) == (5, 80, 32, None)
    assert v2.anchors.shape == (5, 2)
    assert create_model("yolov2", width=SMALL).anchors.flatten().tolist() == pytest.approx(COCO_ANCHORS)
    assert (v9k.num_anchors, v9k.num_classes, v9k.out_channels) == (3, 9418, 28269)
    assert (tiny.stride, tiny.out_channels) == (32, 425)
    assert (d19.num_classes, d19.net.width, d19.is_detector) == (1000, 448, False)


def test_overrides() -> None:
    anchors = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]])
    model = create_model("yolov2", width=SMALL, num_classes=20, anchors=anchors)
    assert (model.num_anchors, model.out_channels) == (3, 75)
    assert torch.equal(model.anchors, anchors)
    tree = create_model("yolo9000", width=SMALL, num_classes=12, tree_path="data/9k.tree", map_path="m.map")
    assert (tree.tree_path, tree.map_path, tree.out_channels) == ("data/9k.tree", "m.map", 3 * 17)
    with pytest.raises(ValueError, match="pass anchors"):
        create_model("yolov2", width=SMALL, num_anchors=9)
    with pytest.raises(ValueError, match="pairs"):
        create_model("yolov2", width=SMALL, anchors=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("yolov2", width=SMALL, size=100)


def test_width_multiplier() -> None:
    assert [scale_filters(c, 0.125) for c in (32, 64, 512, 1024)] == [8, 8, 64, 128]
    assert scale_filters(64, 0.3) % 8 == 0  # reorg needs the passthrough conv divisible by 4
    model = create_model("yolov2", width=0.3)
    assert model.layers[26].conv.out_channels == scale_filters(64, 0.3)
    full = sum(p.numel() for p in create_model("yolov2_tiny", width=0.5).parameters())
    small = sum(p.numel() for p in create_model("yolov2_tiny", width=0.25).parameters())
    assert small < full / 2


def test_detector_rejects_sizes_not_multiple_of_32() -> None:
    model = create_model("yolov2_tiny", width=SMALL)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 64, 80))


def test_region_channel_layout_is_anchor_major() -> None:
    # channel = anchor * (5 + C) + entry: zero the final conv and set one bias per (anchor, entry).
    model = create_model("yolov2", width=SMALL, num_classes=3).eval()
    head = model.layers[30].conv
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.arange(head.out_channels, dtype=torch.float32))
        raw = model(torch.randn(1, 3, 64, 64))
    per_anchor = raw.view(1, 5, 8, 2, 2)
    assert per_anchor[0, 2, 4, 0, 0] == 2 * 8 + 4  # anchor 2, objectness


def test_full_size_yolov2_forward() -> None:
    # The one full-width forward of the suite: darknet's 13x13x425 map at 416.
    model = create_model("yolov2").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 416, 416)).shape == (1, 425, 13, 13)


@pytest.mark.parametrize("name", V1_MODELS)
def test_v1_forward_backward(name: str) -> None:
    model = create_model(name, width=SMALL, size=64, num_classes=4, side=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    num = model.detection.spec.num
    assert out.shape == (2, 3 * 3 * (5 * num + 4)) and num == (3 if name == "yolov1_darknet" else 2)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert (model.num_classes, model.num_anchors, model.anchors, model.is_detector) == (4, 0, None, True)
    with pytest.raises(ValueError, match="fixed input 64x64"):
        model(torch.randn(1, 3, 96, 96))
