"""Darknet cfg parsing and building: darknet's real cfgs, agreement with the registry, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import shared_path
from yolo_core.darknet_cfg import (
    AvgPoolSpec,
    ConvSpec,
    CostSpec,
    DarknetCfgError,
    DarknetNet,
    MaxPoolSpec,
    RegionSpec,
    ReorgSpec,
    RouteSpec,
    SoftmaxSpec,
    infer_shapes,
    model_from_cfg,
    parse_cfg,
    parse_cfg_text,
)
from yolo_core.models import create_model

CFGS = ["yolov2", "yolo9000", "yolov2-tiny", "darknet19", "darknet19_448", "darknet9000", "yolov2-voc",
        "yolov2-tiny-voc"]


def cfg(name: str) -> Path:
    return shared_path("darknet", "cfg", f"{name}.cfg")


@pytest.mark.parametrize("name", CFGS)
def test_every_reference_cfg_parses(name: str) -> None:
    net, layers = parse_cfg(cfg(name))
    assert net.channels == 3 and net.width % 32 == 0
    assert all(spec.line > 0 for spec in layers)
    shapes = infer_shapes(net, layers, 416, 416)
    assert shapes[-1][1:] in {(13, 13), (1, 1)}


def test_yolov2_cfg_structure() -> None:
    net, layers = parse_cfg(cfg("yolov2"))
    assert (net.width, net.height) == (608, 608) and net.options["burn_in"] == "1000"
    assert len(layers) == 32
    kinds = [type(s) for s in layers]
    assert kinds.count(ConvSpec) == 23 and kinds.count(MaxPoolSpec) == 5
    assert layers[25] == RouteSpec(layers=(-9,)) and layers[27] == ReorgSpec(stride=2)
    assert layers[28] == RouteSpec(layers=(-1, -4))
    last_conv, region = layers[30], layers[31]
    assert (last_conv.filters, last_conv.batch_normalize, last_conv.activation) == (425, 0, "linear")
    assert isinstance(region, RegionSpec)
    assert region.anchors[:2] == (0.57273, 0.677385) and region.num == 5 and region.classes == 80
    assert (region.thresh, region.object_scale, region.rescore, region.jitter) == (0.6, 5.0, 1, 0.3)
    # The route after layer 24 takes darknet layer 16, the 26x26x512 map, at 416.
    shapes = infer_shapes(net, layers, 416, 416)
    assert shapes[16] == (512, 26, 26) and shapes[25] == (512, 26, 26) and shapes[26] == (64, 26, 26)
    assert shapes[27] == (256, 13, 13) and shapes[28] == (1280, 13, 13) and shapes[30] == (425, 13, 13)


def test_yolo9000_and_darknet9000_tree_options() -> None:
    model = model_from_cfg(cfg("yolo9000"))  # real anchors buffer: not on meta
    assert model.num_classes == 9418 and model.num_anchors == 3
    assert model.tree_path == "data/9k.tree" and model.map_path == "data/coco9k.map"
    torch.testing.assert_close(model.anchors[2], torch.tensor([9.22725, 9.61974]))
    _, layers = parse_cfg(cfg("darknet9000"))
    assert isinstance(layers[-3], AvgPoolSpec)
    assert layers[-2] == SoftmaxSpec(groups=1, tree="data/9k.tree") and layers[-1] == CostSpec(type="masked")


def test_registry_and_cfg_build_the_same_network() -> None:
    for name, cfg_name in [("yolov2", "yolov2"), ("yolov2_tiny", "yolov2-tiny"), ("darknet19", "darknet19")]:
        with torch.device("meta"):
            ours, theirs = create_model(name).state_dict(), model_from_cfg(cfg(cfg_name)).state_dict()
        assert list(ours) == list(theirs), name
        assert all(ours[k].shape == theirs[k].shape for k in ours), name


def test_cfg_text_round_trip_gives_the_same_function() -> None:
    small = create_model("yolov2", width=0.125, num_classes=3).eval()
    net, layers = parse_cfg_text(small.cfg_text(), "written.cfg")
    assert layers == small.specs and (net.width, net.height) == (416, 416)
    rebuilt = DarknetNet(net, layers, "written.cfg").eval()
    rebuilt.load_state_dict(small.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(small(x), rebuilt(x))


def test_tiny_cfg_forward_and_first_option_wins() -> None:
    model = model_from_cfg(cfg("yolov2-tiny-voc")).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 125, 2, 2)
    net, layers = parse_cfg_text("[net]\nwidth=64\nwidth=96\n[maxpool]\nsize = 2\nstride= 2 # comment\n")
    assert net.width == 64 and layers == [MaxPoolSpec(size=2, stride=2)]


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(DarknetCfgError) as err:
        model_from_cfg(path)
    assert err.value.user_facing is True
    assert str(path) in str(err.value)
    return str(err.value)


HEAD = "[net]\nwidth=64\nheight=64\nchannels=3\n"


def test_error_unknown_key_names_line_and_key(tmp_path: Path) -> None:
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=8\nsize=3\nfliters=4\n")
    assert "line 8" in msg and "fliters" in msg and "unknown option" in msg


def test_error_bad_number(tmp_path: Path) -> None:
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=eight\n")
    assert "line 6" in msg and "filters" in msg and "'eight'" in msg


def test_error_unsupported_layer_and_value(tmp_path: Path) -> None:
    assert "[shortcut]" in _error(tmp_path, HEAD + "[shortcut]\nfrom=-3\n")
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=8\ngroups=2\n")
    assert "line 7" in msg and "groups" in msg
    assert "activation=mish" in _error(tmp_path, HEAD + "[convolutional]\nfilters=8\nactivation=mish\n")


def test_error_route_out_of_range(tmp_path: Path) -> None:
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=8\n[route]\nlayers=-3\n")
    assert "line 7" in msg and "refers to layer -2" in msg


def test_error_region_channels_and_anchors(tmp_path: Path) -> None:
    region = "[region]\nanchors=1,1,2,2\nnum=2\nclasses=3\n"
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=15\nactivation=linear\n" + region)
    assert "line 8" in msg and "needs 16 input channels" in msg
    msg = _error(tmp_path, HEAD + "[convolutional]\nfilters=16\n[region]\nanchors=1,1,2\nnum=2\nclasses=3\n")
    assert "anchors has 3 numbers" in msg


def test_error_structure(tmp_path: Path) -> None:
    assert "first section must be [net]" in _error(tmp_path, "[convolutional]\nfilters=8\n")
    assert "before any [section]" in _error(tmp_path, "filters=8\n[net]\n")
    assert "line 5" in _error(tmp_path, HEAD + "[maxpool\n")
    assert "line 6" in _error(tmp_path, HEAD + "[maxpool]\nsize\n")
