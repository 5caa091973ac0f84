"""Region activations and box decoding against hand computations of darknet's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from yolo_core.region import activate, decode_boxes


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_layout_activations_and_decode_by_hand() -> None:
    anchors = [[1.0, 1.5], [3.0, 2.0]]
    a_n, c_n, gh, gw = 2, 3, 2, 3
    raw = torch.randn(2, a_n * (5 + c_n), gh, gw, generator=torch.Generator().manual_seed(0))
    # Anchor 1, cell (i=2, j=1) of image 1: channel = anchor*(5+C) + entry.
    base = 1 * (5 + c_n)
    raw[1, base + 0, 1, 2] = 0.3
    raw[1, base + 1, 1, 2] = -1.2
    raw[1, base + 2, 1, 2] = 0.4
    raw[1, base + 3, 1, 2] = -0.7
    raw[1, base + 4, 1, 2] = 2.0
    raw[1, base + 5:base + 8, 1, 2] = torch.tensor([1.0, 2.0, 0.5])

    out = activate(raw, a_n, c_n)
    assert out.tx.shape == (2, a_n, gh, gw) and out.cls.shape == (2, a_n, gh, gw, c_n)
    assert out.tx[1, 1, 1, 2].item() == pytest.approx(sig(0.3))
    assert out.ty[1, 1, 1, 2].item() == pytest.approx(sig(-1.2))
    assert out.tw[1, 1, 1, 2].item() == pytest.approx(0.4)
    assert out.obj[1, 1, 1, 2].item() == pytest.approx(sig(2.0))
    z = sum(math.exp(v) for v in (1.0, 2.0, 0.5))
    assert out.cls[1, 1, 1, 2].tolist() == pytest.approx([math.exp(v) / z for v in (1.0, 2.0, 0.5)])

    box = decode_boxes(out, anchors)[1, 1, 1, 2].tolist()
    expected = [(2 + sig(0.3)) / gw, (1 + sig(-1.2)) / gh, 3.0 * math.exp(0.4) / gw, 2.0 * math.exp(-0.7) / gh]
    assert box == pytest.approx(expected, rel=1e-6)


def test_decode_every_cell_matches_formula() -> None:
    anchors = torch.tensor([[0.57273, 0.677385], [1.87446, 2.06253]])
    raw = torch.randn(1, 2 * 6, 3, 4, generator=torch.Generator().manual_seed(1))
    out = activate(raw, 2, 1)
    boxes = decode_boxes(out, anchors)
    for a in range(2):
        for j in range(3):
            for i in range(4):
                v = raw[0, a * 6:(a + 1) * 6, j, i].tolist()
                expected = [(i + sig(v[0])) / 4, (j + sig(v[1])) / 3,
                            anchors[a, 0].item() * math.exp(v[2]) / 4, anchors[a, 1].item() * math.exp(v[3]) / 3]
                assert boxes[0, a, j, i].tolist() == pytest.approx(expected, rel=1e-5)


def test_wrong_channel_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"2\*\(5\+3\)"):
        activate(torch.zeros(1, 15, 2, 2), 2, 3)
