"""Darknet `.weights` files: load into and save from a `DarknetNet`, byte for byte.

Layout (darknet src/parser.c, `load_weights_upto` / `save_weights_upto`): a header of int32
major, minor, revision, then `seen` (images trained on) as uint64 when major*10 + minor >= 2
(darknet HEAD writes 0.2.0, 20 bytes) or int32 otherwise (0.1.0, 16 bytes). Then, for each
convolutional layer in cfg order: biases[n]; if batch-normalized scales[n], rolling_mean[n],
rolling_variance[n]; then weights[n][c][k][k] (PyTorch's OIHW order). float32 little-endian.
Anchors are not stored. Partial files (such as `darknet19_448.conv.23`) hold only the first
layers; `cutoff` loads or saves only the layers before a darknet layer index, like darknet's
`partial` command.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

from yolo_core.darknet_cfg import DarknetNet
from yolo_core.layers import ConvBlock


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
    def nbytes(self) -> int:
        return 20 if self.wide_seen else 16

    def pack(self) -> bytes:
        seen = struct.pack("<Q" if self.wide_seen else "<i", self.seen)
        return struct.pack("<3i", self.major, self.minor, self.revision) + seen


@dataclass
class WeightsInfo:
    """What `load_weights` read: the header and how many conv layers it filled."""

    header: WeightsHeader
    layers_loaded: int  # conv layers filled
    last_layer: int  # darknet index of the last filled layer, -1 if none


def _conv_layers(model: DarknetNet, cutoff: int | None) -> list[tuple[int, ConvBlock]]:
    if not isinstance(model, DarknetNet):
        raise TypeError(f"expected a DarknetNet (from create_model or model_from_cfg), got {type(model).__name__}")
    stop = len(model.layers) if cutoff is None else cutoff
    return [(i, m) for i, m in enumerate(model.layers) if isinstance(m, ConvBlock) and i < stop]


def _tensors(conv: ConvBlock) -> list[tuple[str, torch.Tensor]]:
    """The tensors of one conv layer in file order, with darknet's field names."""
    if conv.bn is None:
        return [("biases", conv.conv.bias), ("weights", conv.conv.weight)]
    bn = conv.bn
    return [("biases", bn.bias), ("scales", bn.weight), ("rolling_mean", bn.running_mean),
            ("rolling_variance", bn.running_var), ("weights", conv.conv.weight)]


def darknet_num_params(model: DarknetNet) -> int:
    """Floats a full `.weights` file holds for this network (darknet's parameter count)."""
    return sum(t.numel() for _, conv in _conv_layers(model, None) for _, t in _tensors(conv))


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


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
    body = data[header.nbytes:]
    if len(body) % 4:
        raise WeightsError(f"{source}: {len(body)} bytes after the header is not a whole number of float32 values")
    floats = np.frombuffer(body, dtype="<f4")
    pos, loaded, last = 0, 0, -1
    for index, conv in _conv_layers(model, cutoff):
        if pos == len(floats):
            break  # a partial file: the remaining layers keep their values
        for name, tensor in _tensors(conv):
            n = tensor.numel()
            if pos + n > len(floats):
                raise WeightsError(f"{source}: ends inside layer {index} (convolutional, {conv.conv.out_channels} "
                                   f"filters), field {name}: needs {n} floats at float offset {pos}, "
                                   f"{len(floats) - pos} left")
            values = torch.from_numpy(floats[pos:pos + n].copy()).view_as(tensor)
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
    chunks = [header.pack()]
    for _, conv in _conv_layers(model, cutoff):
        for _, tensor in _tensors(conv):
            chunks.append(tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    data = b"".join(chunks)
    target = os.fspath(path)
    if "://" in target:
        import fsspec

        with fsspec.open(target, "wb") as f:
            f.write(data)
        return
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:  # write then rename: a reader never sees half a file
        f.write(data)
    os.replace(tmp, target)
