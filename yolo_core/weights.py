"""Darknet `.weights` files: load into and save from a `DarknetNet`, byte for byte.

Layout (darknet src/parser.c, `load_weights_upto` / `save_weights_upto`): a header of int32
major, minor, revision, then `seen` (images trained on) as uint64 when major*10 + minor >= 2
(darknet HEAD writes 0.2.0, 20 bytes) or int32 otherwise (0.1.0, 16 bytes). Then, for each
layer with weights, in cfg order (float32 little-endian):

* `[convolutional]`: biases[n]; if batch-normalized scales[n], rolling_mean[n],
  rolling_variance[n]; then weights[n][c][k][k] (PyTorch's OIHW order).
* `[connected]`: biases[out], weights[out][in] (`nn.Linear`'s order; stored transposed,
  [in][out], when major or minor > 1000), then, if batch-normalized, scales, rolling_mean,
  rolling_variance: batch norm comes *after* the weights here, unlike convolutions.
* `[local]`: biases[n][out_h][out_w], weights[out_h * out_w][n][c][k][k].

Anchors are not stored. Partial files (such as `darknet19_448.conv.23`) hold only the first
layers; `cutoff` loads or saves only the layers before a darknet layer index, like darknet's
`partial` command.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from yolo_core.darknet_cfg import DarknetNet
from yolo_core.layers import Connected, ConvBlock, LocalConv


class WeightsError(ValueError):
    """A `.weights` file that does not fit the network; the message names file, layer and field."""

    user_facing = True


@dataclass
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def wide_seen(self) -> bool:
        """Whether `seen` is a uint64 (darknet's rule, including its guard against transposed files)."""
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def transposed(self) -> bool:
        """Darknet's rule for files whose connected weights are stored [in][out]."""
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 20 if self.wide_seen else 16

    def pack(self) -> bytes:
        seen = struct.pack("<Q" if self.wide_seen else "<i", self.seen)
        return struct.pack("<3i", self.major, self.minor, self.revision) + seen


@dataclass
class WeightsInfo:
    """What `load_weights` read: the header and how many layers with weights it filled."""

    header: WeightsHeader
    layers_loaded: int  # layers with weights filled (convolutional, connected, local)
    last_layer: int  # darknet index of the last filled layer, -1 if none


WeightedLayer = ConvBlock | Connected | LocalConv


def _weighted_layers(model: DarknetNet, cutoff: int | None) -> list[tuple[int, WeightedLayer]]:
    if not isinstance(model, DarknetNet):
        raise TypeError(f"expected a DarknetNet (from create_model or model_from_cfg), got {type(model).__name__}")
    stop = len(model.layers) if cutoff is None else cutoff
    return [(i, m) for i, m in enumerate(model.layers) if isinstance(m, WeightedLayer) and i < stop]


def _bn_tensors(bn: torch.nn.BatchNorm2d) -> list[tuple[str, torch.Tensor]]:
    return [("scales", bn.weight), ("rolling_mean", bn.running_mean), ("rolling_variance", bn.running_var)]


def _tensors(layer: WeightedLayer) -> list[tuple[str, torch.Tensor]]:
    """The tensors of one layer in file order, with darknet's field names."""
    if isinstance(layer, LocalConv):
        return [("biases", layer.bias), ("weights", layer.weight)]
    if isinstance(layer, Connected):
        if layer.bn is None:
            return [("biases", layer.linear.bias), ("weights", layer.linear.weight)]
        return [("biases", layer.bn.bias), ("weights", layer.linear.weight)] + _bn_tensors(layer.bn)
    if layer.bn is None:
        return [("biases", layer.conv.bias), ("weights", layer.conv.weight)]
    return [("biases", layer.bn.bias)] + _bn_tensors(layer.bn) + [("weights", layer.conv.weight)]


def _describe(layer: WeightedLayer) -> str:
    if isinstance(layer, Connected):
        return f"connected, {layer.linear.out_features} outputs"
    if isinstance(layer, LocalConv):
        return f"local, {layer.bias.shape[0]} filters"
    return f"convolutional, {layer.conv.out_channels} filters"


def _stored_transposed(layer: WeightedLayer, name: str, header: WeightsHeader) -> bool:
    return header.transposed and isinstance(layer, Connected) and name == "weights"


def darknet_num_params(model: DarknetNet) -> int:
    """Floats a full `.weights` file holds for this network (darknet's parameter count)."""
    return sum(t.numel() for _, layer in _weighted_layers(model, None) for _, t in _tensors(layer))


def _read_bytes(path: str) -> bytearray:
    """The whole file, writable (so its floats can be viewed without a copy)."""
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb") as f:
            return bytearray(f.read())
    with open(path, "rb") as f:
        data = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(data)
        return data


def read_header(data: bytes, source: str) -> WeightsHeader:
    if len(data) < 16:
        raise WeightsError(f"{source}: {len(data)} bytes is too short for a darknet weights header (16 or 20 bytes)")
    header = WeightsHeader(*struct.unpack_from("<3i", data), seen=0)
    if header.wide_seen and len(data) < 20:
        raise WeightsError(f"{source}: version {header.major}.{header.minor} needs a 20-byte header, "
                           f"the file has {len(data)} bytes")
    header.seen = struct.unpack_from("<Q" if header.wide_seen else "<i", data, 12)[0]
    return header


@torch.no_grad()
def load_weights(model: DarknetNet, path: str | os.PathLike[str], cutoff: int | None = None,
                 strict: bool = True) -> WeightsInfo:
    """Fill `model` from a darknet `.weights` file; returns the header and the layers filled.

    A file that ends exactly after a layer fills only the layers before that point (partial
    files). A file that ends inside a layer is an error naming the layer and field. With
    `strict`, data left over after the last layer (before `cutoff`) is an error too: the file
    belongs to a different network.
    """
    source = os.fspath(path)
    data = _read_bytes(source)
    header = read_header(data, source)
    body_bytes = len(data) - header.nbytes
    if body_bytes % 4:
        raise WeightsError(f"{source}: {body_bytes} bytes after the header is not a whole number of float32 values")
    floats = np.frombuffer(data, dtype="<f4", offset=header.nbytes)  # a view: no copy of a large file
    pos, loaded, last = 0, 0, -1
    for index, layer in _weighted_layers(model, cutoff):
        if pos == len(floats):
            break  # a partial file: the remaining layers keep their values
        for name, tensor in _tensors(layer):
            n = tensor.numel()
            if pos + n > len(floats):
                raise WeightsError(f"{source}: ends inside layer {index} ({_describe(layer)}), field {name}: "
                                   f"needs {n} floats at float offset {pos}, {len(floats) - pos} left")
            values = torch.from_numpy(floats[pos:pos + n])
            if _stored_transposed(layer, name, header):
                values = values.view(tensor.shape[1], tensor.shape[0]).t()
            values = values.reshape(tensor.shape)
            tensor.copy_(values.to(tensor.dtype))
            pos += n
        loaded, last = loaded + 1, index
    if strict and cutoff is None and pos < len(floats):
        raise WeightsError(f"{source}: {len(floats) - pos} floats left after the network's last layer; "
                           f"the file is for a different network (it holds {len(floats)} floats, this network "
                           f"{darknet_num_params(model)})")
    return WeightsInfo(header, loaded, last)


@torch.no_grad()
def save_weights(model: DarknetNet, path: str | os.PathLike[str], header: WeightsHeader | None = None,
                 cutoff: int | None = None) -> None:
    """Write `model` as a darknet `.weights` file (HEAD's 0.2.0 header unless one is given).

    `cutoff` writes only the layers before that darknet layer index (like `darknet partial`).
    """
    header = header or WeightsHeader()

    def write(f: Any) -> None:
        f.write(header.pack())
        for _, layer in _weighted_layers(model, cutoff):
            for name, tensor in _tensors(layer):
                t = tensor.detach().to("cpu", torch.float32)
                if _stored_transposed(layer, name, header):
                    t = t.t()
                f.write(np.ascontiguousarray(t.numpy(), dtype="<f4").data)  # no copy when already float32

    target = os.fspath(path)
    if "://" in target:
        import fsspec

        with fsspec.open(target, "wb") as f:
            write(f)
        return
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:  # write then rename: a reader never sees half a file
        write(f)
    os.replace(tmp, target)
