"""FLOP counter in darknet's convention (2 x multiply-adds of the convolutions)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import shared_path
from yolo_core.darknet_cfg import DarknetNet, model_from_cfg, parse_cfg_text
from yolo_core.flops import conv_flops, count_flops, summary
from yolo_core.models import create_model


@pytest.mark.parametrize("name,size,bflops", [
    ("yolov2", 416, 29.46), ("yolov2", 608, 62.94), ("yolo9000", 416, 28.69), ("yolo9000", 544, 49.06),
    ("yolov2_tiny", 416, 5.41),
])
def test_darknet_reference_counts(name: str, size: int, bflops: float) -> None:
    with torch.device("meta"):  # shapes only: no weights allocated
        model = create_model(name)
    assert round(count_flops(model, size, size), 2) == bflops


def test_cfg_models_count_the_same() -> None:
    with torch.device("meta"):
        v2 = model_from_cfg(shared_path("darknet", "cfg", "yolov2.cfg"))
        tiny = model_from_cfg(shared_path("darknet", "cfg", "yolov2-tiny.cfg"))
    assert round(count_flops(v2), 2) == 62.94  # the cfg's own 608 input
    assert round(count_flops(v2, 416, 416), 2) == 29.46
    assert round(count_flops(tiny), 2) == 5.41


@pytest.mark.parametrize("cfg,ops", [("yolov1-tiny.cfg", 3_216_030_720), ("yolov1.cfg", 40_190_248_448)])
def test_yolov1_cfgs_count_what_darknet_ops_prints(cfg: str, ops: int) -> None:
    # `darknet ops cfg/<cfg>` (pjreddie/darknet f6afaab) prints "Floating Point Operations: <ops>":
    # convolutions plus 2 x inputs x outputs per connected layer; it skips the [local] layer.
    with torch.device("meta"):
        model = model_from_cfg(shared_path("darknet", "cfg", cfg))
    assert sum(f for _, f in conv_flops(model)) == ops
    assert round(count_flops(model, 448, 448), 2) == round(ops / 1e9, 2)
    name = {"yolov1-tiny.cfg": "fast_yolo", "yolov1.cfg": "yolov1_darknet"}[cfg]
    with torch.device("meta"):
        assert count_flops(create_model(name)) * 1e9 == ops
    assert "connected 1470" in summary(model) or "connected 1715" in summary(model)


def test_hand_computed_network() -> None:
    net, layers = parse_cfg_text("[net]\nwidth=20\nheight=12\nchannels=3\n"
                                 "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\n[maxpool]\n"
                                 "[convolutional]\nfilters=6\nsize=1\n")
    model = DarknetNet(net, layers)
    # conv 3->4, 3x3 stride 2 on 12x20 -> 6x10; pool -> 3x5; conv 4->6 1x1 (pad=0) -> 3x5.
    assert conv_flops(model) == [(0, 2.0 * 4 * 9 * 3 * 6 * 10), (2, 2.0 * 6 * 1 * 4 * 3 * 5)]


@pytest.mark.parametrize("name", ["yolov2", "yolov2_tiny", "darknet19"])
def test_agrees_with_torch_flop_counter(name: str) -> None:
    # PyTorch also counts 2 FLOPs per multiply-add of a convolution; nothing else here is counted.
    model = create_model(name, width=0.125, num_classes=4).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 96, 64))
    assert count_flops(model, 96, 64) * 1e9 == pytest.approx(counter.get_total_flops(), rel=1e-9)


def test_summary_table() -> None:
    with torch.device("meta"):
        model = create_model("yolov2")
    lines = summary(model, 416, 416).splitlines()
    assert len(lines) == 1 + len(model.specs) + 1
    assert "route -1 -4" in lines[1 + 28] and "1280 x 13 x 13" in lines[1 + 28]
    assert lines[-1].split() == ["total", "29.46"]
