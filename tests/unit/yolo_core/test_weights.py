"""Darknet `.weights` IO: byte-identical round trips, partial files, darknet's numbers, clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_core.darknet_cfg import DarknetNet, parse_cfg_text
from yolo_core.layers import ConvBlock
from yolo_core.models import create_model
from yolo_core.weights import WeightsError, WeightsHeader, darknet_num_params, load_weights, save_weights


def random_weights_file(path: Path, n_floats: int, header: bytes, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n_floats).astype("<f4")
    # Variances must be positive for a usable model, but the round trip must hold for any bits.
    data = header + values.tobytes()
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("name", ["yolov2", "yolov2_tiny", "yolo9000", "darknet19"])
@pytest.mark.parametrize("header", [struct.pack("<3iQ", 0, 2, 0, 2**40 + 7), struct.pack("<4i", 0, 1, 0, 123456)],
                         ids=["v0.2.0", "v0.1.0"])
def test_round_trip_is_byte_identical(tmp_path: Path, name: str, header: bytes) -> None:
    model = create_model(name, width=0.125, num_classes=7)
    src, dst = tmp_path / "in.weights", tmp_path / "out.weights"
    data = random_weights_file(src, darknet_num_params(model), header)
    info = load_weights(model, src)
    assert info.header.seen == struct.unpack_from("<Q" if len(header) == 20 else "<i", header, 12)[0]
    assert info.layers_loaded == sum(isinstance(m, ConvBlock) for m in model.layers)
    save_weights(model, dst, header=info.header)
    assert dst.read_bytes() == data


def test_default_header_is_darknet_heads(tmp_path: Path) -> None:
    model = create_model("yolov2_tiny", width=0.125)
    save_weights(model, tmp_path / "m.weights")
    data = (tmp_path / "m.weights").read_bytes()
    assert struct.unpack_from("<3iQ", data) == (0, 2, 0, 0)
    assert len(data) == 20 + 4 * darknet_num_params(model)


def test_yolov2_parameter_count_matches_public_file() -> None:
    with torch.device("meta"):
        model = create_model("yolov2")
    # The public yolov2.weights is 16 + 4 x 50,983,561 bytes (0.1.0 header).
    assert darknet_num_params(model) == 50_983_561


def test_partial_file_fills_only_first_layers(tmp_path: Path) -> None:
    classifier = create_model("darknet19", width=0.125)
    # Like `darknet partial darknet19_448.cfg darknet19_448.weights darknet19_448.conv.23 23`.
    save_weights(classifier, tmp_path / "d19.conv.23", cutoff=23)
    detector = create_model("yolov2", width=0.125)
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    info = load_weights(detector, tmp_path / "d19.conv.23")
    assert info.layers_loaded == 18 and info.last_layer == 22
    source = classifier.state_dict()
    for key, value in detector.state_dict().items():
        layer = int(key.split(".")[1])
        if layer < 23:
            assert torch.equal(value, source[key]), key
        elif "num_batches" not in key:
            assert torch.equal(value, before[key]), key


def test_cutoff_loads_trunk_from_a_full_classifier_file(tmp_path: Path) -> None:
    classifier = create_model("darknet19", width=0.125)
    save_weights(classifier, tmp_path / "d19.weights")
    detector = create_model("yolo9000", width=0.125, num_classes=5)
    with pytest.raises(WeightsError, match="different network"):
        load_weights(detector, tmp_path / "d19.weights")  # the 1000-class layer 23 does not fit
    info = load_weights(detector, tmp_path / "d19.weights", cutoff=23)
    assert info.layers_loaded == 18
    assert torch.equal(detector.layers[22].conv.weight, classifier.layers[22].conv.weight)


def test_loaded_network_gives_darknet_numbers(tmp_path: Path) -> None:
    # One 1x1 conv + batch norm + leaky and one linear conv, with hand-written file contents.
    net, layers = parse_cfg_text("[net]\nwidth=32\nheight=32\nchannels=2\n"
                                 "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=1\npad=1\nactivation=leaky\n"
                                 "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n")
    model = DarknetNet(net, layers)
    biases, scales = np.array([0.1, -0.2, 0.3]), np.array([1.5, 0.5, 2.0])
    mean, var = np.array([0.2, -0.1, 0.0]), np.array([0.5, 2.0, 1e-8])
    w1 = np.arange(6).reshape(3, 2) / 10 - 0.2
    b2, w2 = np.array([0.05, -0.05]), np.arange(6).reshape(2, 3) / 7 - 0.4
    floats = np.concatenate([biases, scales, mean, var, w1.ravel(), b2, w2.ravel()]).astype("<f4")
    (tmp_path / "hand.weights").write_bytes(struct.pack("<3iQ", 0, 2, 0, 64) + floats.tobytes())
    load_weights(model, tmp_path / "hand.weights")
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32)
    # Darknet, in float64: conv, (x - mean) / (sqrt(var) + .000001), * scale, + bias, leaky, conv + bias.
    h = np.einsum("oc,bchw->bohw", w1, x)
    h = (h - mean[:, None, None]) / (np.sqrt(var)[:, None, None] + 1e-6) * scales[:, None, None] + biases[:, None, None]
    h = np.where(h > 0, h, 0.1 * h)
    expected = np.einsum("oc,bchw->bohw", w2, h) + b2[:, None, None]
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def _bad(tmp_path: Path, data: bytes, model: DarknetNet, match: str) -> str:
    path = tmp_path / "bad.weights"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=match) as err:
        load_weights(model, path)
    assert str(path) in str(err.value) and err.value.user_facing is True
    return str(err.value)


def test_errors_name_file_layer_and_field(tmp_path: Path) -> None:
    model = create_model("yolov2_tiny", width=0.125, num_classes=2)
    header = WeightsHeader(0, 2, 0, 0).pack()
    first = model.layers[0].conv.out_channels
    # Ends in the middle of layer 0's scales.
    msg = _bad(tmp_path, header + b"\0" * 4 * (first + 3), model, "ends inside layer 0")
    assert "field scales" in msg
    # Ends inside layer 2 (the second conv; layer 1 is a max pool): its weights are cut.
    n0 = 4 * first + first * 3 * 9
    msg = _bad(tmp_path, header + b"\0" * 4 * (n0 + 4 * model.layers[2].conv.out_channels + 1), model,
               "ends inside layer 2")
    assert "field weights" in msg
    total = darknet_num_params(model)
    _bad(tmp_path, header + b"\0" * 4 * (total + 5), model, "5 floats left")
    _bad(tmp_path, header + b"\0" * 6, model, "whole number of float32")
    _bad(tmp_path, b"\0" * 10, model, "too short")
    _bad(tmp_path, struct.pack("<4i", 0, 2, 0, 0), model, "20-byte header")
