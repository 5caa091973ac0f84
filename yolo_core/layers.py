"""Darknet's building blocks as PyTorch modules, numerically faithful to the C code.

- `DarknetBatchNorm2d`: training is PyTorch's batch norm (what darknet's GPU build does with
  cuDNN: eps 1e-5 inside the square root, running averages .99 / .01 with the unbiased
  variance); inference uses darknet's own formula with the epsilon *outside* the root,
  ``scale * (x - mean) / (sqrt(var) + 1e-6) + bias``, so loaded `.weights` give darknet's numbers.
- `ConvBlock`: convolution (+ batch norm) + activation, darknet's `[convolutional]`.
- `MaxPool`: darknet's max pool with its implicit padding (``size - 1`` split as
  ``pad // 2`` before, the rest after), which makes the size-2 stride-1 pool of yolov2-tiny
  keep the spatial size and odd inputs round up.
- `reorg` / `Reorg`: darknet's passthrough reorganisation, which is *not* space-to-depth.
- `Route`, `GlobalAvgPool`: concatenation of earlier outputs and darknet's `[avgpool]`.
- `Connected`: darknet's `[connected]` (YOLOv1's fully connected layers): the input flattened in
  darknet's (C, H, W) order, weights (outputs, inputs) as `nn.Linear`, optional batch norm.
- `LocalConv`: darknet's `[local]`, a locally connected layer (a separate filter bank per output
  position), with darknet's weight layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Darknet's inference epsilon, added to sqrt(var) (src/blas.c normalize_cpu).
DARKNET_BN_EPS = 1e-6

ACTIVATIONS = ("leaky", "linear", "relu", "logistic")


class DarknetBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose eval mode is darknet's ``(x - mean) / (sqrt(var) + 1e-6)``."""

    def __init__(self, num_features: int) -> None:
        # momentum .01 = darknet's rolling average (.99 old + .01 new); eps is cuDNN's 1e-5.
        super().__init__(num_features, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        # Fold darknet's epsilon into an effective variance so the fused kernel computes
        # (x - mean) / (sqrt(var) + 1e-6) exactly up to float rounding.
        var = (self.running_var.sqrt() + DARKNET_BN_EPS).square()
        return F.batch_norm(x, self.running_mean, var, self.weight, self.bias, False, 0.0, 0.0)


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Darknet activations by name (leaky slope .1 as in src/activations.h)."""
    if activation == "leaky":
        return F.leaky_relu(x, 0.1)
    if activation == "linear":
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


class ConvBlock(nn.Module):
    """Darknet `[convolutional]`: conv, optional batch norm, activation.

    With batch norm the convolution has no bias: darknet's `biases` are the batch norm shift.
    """

    def __init__(self, in_channels: int, filters: int, size: int, stride: int = 1, padding: int | None = None,
                 batch_normalize: bool = True, activation: str = "leaky") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        padding = size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, filters, size, stride, padding, bias=not batch_normalize)
        self.bn = DarknetBatchNorm2d(filters) if batch_normalize else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return activate(x, self.activation)


def maxpool_output_size(n: int, size: int, stride: int, padding: int) -> int:
    """Darknet's pooled length: (n + padding - size) / stride + 1 (integer division)."""
    return (n + padding - size) // stride + 1


class MaxPool(nn.Module):
    """Darknet `[maxpool]` with its padding convention (default padding = size - 1)."""

    def __init__(self, size: int = 2, stride: int = 2, padding: int | None = None) -> None:
        super().__init__()
        self.size, self.stride = size, stride
        self.padding = size - 1 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        before = self.padding // 2  # darknet's offset is -pad/2
        pads = []
        for n in (w, h):  # F.pad wants the last dimension first
            out = maxpool_output_size(n, self.size, self.stride, self.padding)
            after = max(0, (out - 1) * self.stride - before + self.size - n)
            pads += [before, after]
        if any(pads):
            # Darknet treats positions outside the image as -FLT_MAX: they never win.
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


def reorg(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Darknet's reorg (src/blas.c reorg_cpu with forward=0), exactly.

    The (B, C, H, W) buffer is read as (B, C/s^2, s*H, s*W) and gathered so that output channel
    k = offset * C/s^2 + c2 with offset = dy * s + dx; the result, laid out as (B, C, H, W),
    is then read as (B, s^2 * C, H/s, W/s). nn.PixelUnshuffle gives different numbers.
    """
    b, c, h, w = x.shape
    s = stride
    if c % (s * s) or h % s or w % s:
        raise ValueError(f"reorg stride {s} needs channels divisible by {s * s} and a spatial size divisible by {s}; "
                         f"got input {tuple(x.shape)}")
    y = x.reshape(b, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * s * s, h // s, w // s)


class Reorg(nn.Module):
    """Darknet `[reorg]` layer (passthrough of YOLOv2)."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reorg(x, self.stride)


class Route(nn.Module):
    """Darknet `[route]`: channel concatenation of earlier outputs (absolute layer indices)."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = tuple(layers)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if len(inputs) == 1:
            return inputs[0]
        sizes = {tuple(t.shape[-2:]) for t in inputs}
        if len(sizes) > 1:
            raise ValueError(f"route of layers {self.layers} joins different spatial sizes {sorted(sizes)}")
        return torch.cat(inputs, dim=1)


class GlobalAvgPool(nn.Module):
    """Darknet `[avgpool]`: mean over the whole spatial extent, output (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Connected(nn.Module):
    """Darknet `[connected]`: flatten (C, H, W), linear map, optional batch norm, activation.

    Output (B, outputs, 1, 1): darknet's connected layer is an image of size 1 x 1, so later
    layers see the same shapes as in darknet. With batch norm the linear map has no bias
    (darknet's `biases` are the batch norm shift, as in `[convolutional]`).
    """

    def __init__(self, inputs: int, outputs: int, batch_normalize: bool = False, activation: str = "logistic") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.linear = nn.Linear(inputs, outputs, bias=not batch_normalize)
        self.bn = DarknetBatchNorm2d(outputs) if batch_normalize else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.linear.in_features:
            raise ValueError(f"connected layer expects {self.linear.in_features} inputs per image, got "
                             f"{tuple(x.shape[1:])} = {x[0].numel()} (the network input size is fixed by its "
                             "connected layers)")
        x = self.linear(x.flatten(1))[:, :, None, None]
        if self.bn is not None:
            x = self.bn(x)
        return activate(x, self.activation)


def local_output_size(n: int, size: int, stride: int, pad: int) -> int:
    """Darknet's `local_out_height`: (n - 1) / stride + 1 with `pad` set, else (n - size) / stride + 1."""
    return (n - 1) // stride + 1 if pad else (n - size) // stride + 1


class LocalConv(nn.Module):
    """Darknet `[local]`: a convolution whose filters differ at every output position.

    Darknet's `forward_local_layer` runs im2col with `pad` pixels of zero padding (the cfg
    value itself, not size // 2) and, for output position j = y * out_w + x, multiplies the
    (filters, channels * size * size) block j of the weights with column j. So `weight` is
    (out_h * out_w, filters, channels, size, size) and `bias` (filters, out_h, out_w): the
    order of darknet's `.weights` file and of its output.
    """

    def __init__(self, in_channels: int, height: int, width: int, filters: int, size: int, stride: int = 1,
                 pad: int = 0, activation: str = "logistic") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.size, self.stride, self.pad, self.activation = size, stride, pad, activation
        self.in_shape = (in_channels, height, width)
        self.out_h, self.out_w = local_output_size(height, size, stride, pad), local_output_size(width, size, stride, pad)
        # im2col's own column count must agree with darknet's output size, or darknet reads past its columns.
        cols = ((height + 2 * pad - size) // stride + 1, (width + 2 * pad - size) // stride + 1)
        if cols != (self.out_h, self.out_w):
            raise ValueError(f"local layer size={size} stride={stride} pad={pad} on {height}x{width}: darknet's "
                             f"output size {self.out_h}x{self.out_w} differs from its im2col grid {cols[0]}x{cols[1]}")
        locations = self.out_h * self.out_w
        fan_in = in_channels * size * size
        self.weight = nn.Parameter(torch.empty(locations, filters, in_channels, size, size).uniform_(-1, 1)
                                   * (2. / fan_in) ** .5)  # darknet's scale sqrt(2 / (size^2 c))
        self.bias = nn.Parameter(torch.zeros(filters, self.out_h, self.out_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"local layer expects input (B, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")
        cols = F.unfold(x, self.size, padding=self.pad, stride=self.stride)  # (B, C*k*k, L), im2col's row order
        weight = self.weight.flatten(2)  # (L, filters, C*k*k)
        out = torch.einsum("lfk,bkl->bfl", weight, cols).reshape(x.shape[0], -1, self.out_h, self.out_w)
        return activate(out + self.bias, self.activation)
