"""Darknet layers: reorg index semantics, max pool padding, batch norm epsilon, conv blocks, route."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from yolo_core.layers import ConvBlock, DarknetBatchNorm2d, GlobalAvgPool, MaxPool, Route, reorg


def darknet_reorg_loops(x: np.ndarray, stride: int) -> np.ndarray:
    """A line-by-line transcription of darknet's reorg_cpu(..., forward=0, out) on the input shape."""
    batch, c, h, w = x.shape
    flat_in = x.reshape(-1)
    out = np.empty_like(flat_in)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    out[in_index] = flat_in[out_index]
    return out.reshape(batch, c * stride * stride, h // stride, w // stride)


def darknet_maxpool_loops(x: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    """Darknet's forward_maxpool_layer for one (H, W) plane."""
    h, w = x.shape
    oh, ow = (h + pad - size) // stride + 1, (w + pad - size) // stride + 1
    off = -(pad // 2)
    out = np.full((oh, ow), -np.inf, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            for n in range(size):
                for m in range(size):
                    ch, cw = off + i * stride + n, off + j * stride + m
                    if 0 <= ch < h and 0 <= cw < w:
                        out[i, j] = max(out[i, j], x[ch, cw])
    return out


def test_reorg_hand_checked_small_tensor() -> None:
    # Input (1, 4, 2, 2) = 0..15. Darknet reads the buffer as one 4x4 plane (C/4 = 1, 2H, 2W)
    # and takes, for each (dy, dx), the 2x2 subsampled plane: (0,0) -> 0 2 8 10, (0,1) -> 1 3 9 11 ...
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 2, 2)
    expected = [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15]
    y = reorg(x, 2)
    assert y.shape == (1, 16, 1, 1)
    assert y.flatten().tolist() == expected
    # PyTorch's space-to-depth reads the planes as (4, 2, 2) and gives 0..15 in order: not darknet.
    assert nn.PixelUnshuffle(2)(x).flatten().tolist() == list(range(16))


@pytest.mark.parametrize("shape,stride", [((2, 8, 4, 6), 2), ((1, 16, 6, 4), 2), ((1, 18, 3, 6), 3)])
def test_reorg_matches_darknet_loops(shape: tuple[int, int, int, int], stride: int) -> None:
    x = torch.randn(shape)
    expected = darknet_reorg_loops(x.numpy(), stride)
    assert np.array_equal(reorg(x, stride).numpy(), expected)


def test_reorg_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        reorg(torch.zeros(1, 6, 4, 4), 2)
    with pytest.raises(ValueError, match="divisible"):
        reorg(torch.zeros(1, 8, 5, 4), 2)


def test_reorg_gradient_is_a_permutation() -> None:
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    weights = torch.randn(1, 32, 2, 2)
    (reorg(x, 2) * weights).sum().backward()
    assert sorted(x.grad.flatten().tolist()) == sorted(weights.flatten().tolist())


@pytest.mark.parametrize("h,w,size,stride", [(6, 6, 2, 2), (5, 7, 2, 2), (6, 5, 2, 1), (7, 7, 3, 2)])
def test_maxpool_matches_darknet(h: int, w: int, size: int, stride: int) -> None:
    x = torch.randn(1, 2, h, w)
    y = MaxPool(size, stride)(x)
    for c in range(2):
        assert np.array_equal(y[0, c].numpy(), darknet_maxpool_loops(x[0, c].numpy(), size, stride, size - 1))


def test_tiny_maxpool_keeps_size() -> None:
    # yolov2-tiny's size-2 stride-1 pool: 13x13 stays 13x13, the last row/column sees only itself.
    x = torch.randn(1, 1, 13, 13)
    y = MaxPool(2, 1)(x)
    assert y.shape == x.shape
    assert y[0, 0, -1, -1] == x[0, 0, -1, -1]
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def _bn_with_stats(var: torch.Tensor) -> DarknetBatchNorm2d:
    bn = DarknetBatchNorm2d(var.numel())
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, var.numel()))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, var.numel()))
        bn.running_mean.copy_(torch.linspace(-0.3, 0.3, var.numel()))
        bn.running_var.copy_(var)
    return bn.eval()


def test_batchnorm_eval_uses_darknet_epsilon_outside_sqrt() -> None:
    var = torch.tensor([4.0, 0.25, 1e-12])
    bn = _bn_with_stats(var)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float32)
    shape = (1, 3, 1, 1)
    expected = (bn.weight.view(shape) * (x - bn.running_mean.view(shape)) / (var.sqrt().view(shape) + 1e-6)
                + bn.bias.view(shape))
    got = bn(x).detach()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    # For the near-zero variance channel, PyTorch's eps inside the root gives very different values.
    plain = nn.BatchNorm2d(3).eval()
    plain.load_state_dict(bn.state_dict())
    assert not torch.allclose(plain(x)[:, 2], got[:, 2], rtol=1e-2)


def test_batchnorm_training_running_averages_are_darknets() -> None:
    bn = DarknetBatchNorm2d(2).train()
    x = torch.randn(4, 2, 3, 3) * 3 + 1
    bn(x)
    mean = x.mean(dim=(0, 2, 3))
    unbiased_var = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean, 0.01 * mean)
    torch.testing.assert_close(bn.running_var, 0.99 * torch.ones(2) + 0.01 * unbiased_var)


def test_conv_block_structure_and_leaky() -> None:
    block = ConvBlock(3, 4, 3).eval()
    assert block.conv.bias is None and block.bn is not None and block.conv.padding == (1, 1)
    linear = ConvBlock(3, 5, 1, batch_normalize=False, activation="linear")
    assert linear.conv.bias is not None and linear.bn is None
    x = torch.randn(1, 3, 5, 5)
    pre = block.bn(block.conv(x))
    torch.testing.assert_close(block(x), torch.where(pre > 0, pre, 0.1 * pre))
    with pytest.raises(ValueError, match="activation"):
        ConvBlock(3, 4, 3, activation="mish")


def test_route_concatenates_in_order_and_checks_sizes() -> None:
    a, b = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
    out = Route((5, 2))([a, b])
    assert torch.equal(out[:, :2], a) and torch.equal(out[:, 2:], b)
    with pytest.raises(ValueError, match="spatial"):
        Route((1, 2))([a, torch.randn(1, 3, 2, 2)])


def test_global_avgpool() -> None:
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(GlobalAvgPool()(x), x.mean(dim=(2, 3), keepdim=True))
