"""Darknet `.cfg` files: parse them into typed layer specs and build a PyTorch network.

The same specs are what `yolo_core.models` writes in Python, so a model from the registry and
one from darknet's cfg are the same module tree (same state_dict keys, same `.weights` order).

Parsing follows darknet's `read_cfg`: whitespace anywhere in a line is ignored, lines starting
with `#` or `;` are comments, `[name]` opens a section, `key=value` sets an option (the first
occurrence wins, as darknet's `option_find` does). Unlike darknet, unknown keys, unsupported
values and malformed numbers are errors naming the file, line and key, instead of being
printed and ignored.

Supported layer types (all that darknet's YOLOv2 / YOLO9000 / Darknet-19 cfgs use):
convolutional, maxpool, route, reorg, region, avgpool, softmax, cost; and those of its YOLOv1
cfgs (yolov1.cfg, yolov1-tiny.cfg): connected, local, dropout, detection.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from yolo_core.layers import (
    ACTIVATIONS,
    Connected,
    ConvBlock,
    GlobalAvgPool,
    LocalConv,
    MaxPool,
    Reorg,
    Route,
    local_output_size,
    maxpool_output_size,
)


class DarknetCfgError(ValueError):
    """A darknet cfg (or layer spec) that cannot be used; the message names file, line and key."""

    user_facing = True


# --- typed layer specs (field names are darknet's option keys) ---------------------------------

@dataclass
class NetSpec:
    """`[net]`: input size and channels; every other option is kept verbatim (training settings)."""

    width: int = 416
    height: int = 416
    channels: int = 3
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class ConvSpec:
    filters: int
    size: int = 1
    stride: int = 1
    pad: int = 0  # darknet's flag: padding = size // 2 when set, else `padding`
    padding: int = 0
    batch_normalize: int = 0
    activation: str = "logistic"  # darknet's defaults, so cfgs that omit a key read as in darknet
    line: int = field(default=0, compare=False, repr=False)
    kind = "convolutional"

    @property
    def effective_padding(self) -> int:
        return self.size // 2 if self.pad else self.padding


@dataclass
class MaxPoolSpec:
    size: int = 2
    stride: int = 2
    padding: int | None = None  # darknet default: size - 1
    line: int = field(default=0, compare=False, repr=False)
    kind = "maxpool"


@dataclass
class RouteSpec:
    layers: tuple[int, ...] = ()  # negative = relative to this layer, as in darknet
    line: int = field(default=0, compare=False, repr=False)
    kind = "route"


@dataclass
class ReorgSpec:
    stride: int = 2
    line: int = field(default=0, compare=False, repr=False)
    kind = "reorg"


@dataclass
class AvgPoolSpec:
    line: int = field(default=0, compare=False, repr=False)
    kind = "avgpool"


@dataclass
class SoftmaxSpec:
    groups: int = 1
    temperature: float = 1.0
    tree: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    kind = "softmax"


@dataclass
class CostSpec:
    type: str = "sse"
    scale: float = 1.0
    line: int = field(default=0, compare=False, repr=False)
    kind = "cost"


@dataclass
class RegionSpec:
    anchors: tuple[float, ...] = ()  # flat w0,h0,w1,h1,... in grid units
    bias_match: int = 1
    classes: int = 80
    coords: int = 4
    num: int = 5
    softmax: int = 1
    jitter: float = 0.2
    rescore: int = 1
    object_scale: float = 5.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    coord_scale: float = 1.0
    absolute: int = 1
    thresh: float = 0.6
    random: int = 1
    max: int = 30  # truth boxes per image
    tree: str | None = None
    map: str | None = None
    # Not darknet's: None (unwritten) is darknet's logistic offset in the cell; 'offset' the region
    # proposal network's unconstrained x = xa + tx * wa (the YOLO9000 paper's Table 2 before
    # "location prediction"; see yolo_core.region).
    location: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    kind = "region"


@dataclass
class ConnectedSpec:
    """`[connected]`: a fully connected layer on the flattened (C, H, W) input (YOLOv1)."""

    output: int = 1
    batch_normalize: int = 0
    activation: str = "logistic"
    line: int = field(default=0, compare=False, repr=False)
    kind = "connected"


@dataclass
class LocalSpec:
    """`[local]`: a locally connected layer (unshared filters); `pad` is pixels of zero padding."""

    filters: int = 1
    size: int = 1
    stride: int = 1
    pad: int = 0
    activation: str = "logistic"
    line: int = field(default=0, compare=False, repr=False)
    kind = "local"


@dataclass
class DropoutSpec:
    """`[dropout]`: zero each input with `probability` while training, scale the rest by 1 / (1 - p)."""

    probability: float = 0.5
    line: int = field(default=0, compare=False, repr=False)
    kind = "dropout"


@dataclass
class DetectionSpec:
    """`[detection]`: YOLOv1's output layer (defaults are darknet's `parse_detection`'s).

    Its input is side x side x ((1 + coords) x num + classes) numbers in darknet's order (all
    class probabilities, then all confidences, then all boxes; see `yolo_core.detection`).
    """

    classes: int = 1
    coords: int = 1
    rescore: int = 0
    num: int = 1  # boxes per cell (the paper's B)
    side: int = 7  # grid size (the paper's S)
    softmax: int = 0
    sqrt: int = 0
    jitter: float = 0.2
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    coord_scale: float = 1.0
    max: int = 90  # read by darknet, unused by the detection layer (one truth per cell)
    line: int = field(default=0, compare=False, repr=False)
    kind = "detection"

    @property
    def inputs(self) -> int:
        return self.side * self.side * ((1 + self.coords) * self.num + self.classes)


LayerSpec = (ConvSpec | MaxPoolSpec | RouteSpec | ReorgSpec | AvgPoolSpec | SoftmaxSpec | CostSpec | RegionSpec
             | ConnectedSpec | LocalSpec | DropoutSpec | DetectionSpec)

SECTION_ALIASES = {
    "convolutional": ConvSpec, "conv": ConvSpec, "maxpool": MaxPoolSpec, "max": MaxPoolSpec,
    "route": RouteSpec, "reorg": ReorgSpec, "avgpool": AvgPoolSpec, "avg": AvgPoolSpec,
    "softmax": SoftmaxSpec, "soft": SoftmaxSpec, "cost": CostSpec, "region": RegionSpec,
    "connected": ConnectedSpec, "conn": ConnectedSpec, "local": LocalSpec, "dropout": DropoutSpec,
    "detection": DetectionSpec,
}
# Keys darknet reads for these layers that we accept only at their no-op value.
NOOP_KEYS: dict[type, dict[str, str]] = {
    ConvSpec: {"groups": "1", "binary": "0", "xnor": "0", "flipped": "0", "dot": "0"},
    ReorgSpec: {"reverse": "0", "flatten": "0", "extra": "0"},
    SoftmaxSpec: {"spatial": "0", "noloss": "0"},
    RegionSpec: {"log": "0", "sqrt": "0", "background": "0", "classfix": "0", "mask_scale": "1"},
    DetectionSpec: {"forced": "0", "random": "0", "reorg": "0"},
}


# --- parsing ------------------------------------------------------------------------------------

@dataclass
class _Section:
    name: str
    line: int
    options: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)


def _read_sections(text: str, source: str) -> list[_Section]:
    sections: list[_Section] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # darknet's strip(): all whitespace goes
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise DarknetCfgError(f"{source}, line {lineno}: section header {raw.strip()!r} lacks ']'")
            sections.append(_Section(line[1:-1].lower(), lineno))
            continue
        if not sections:
            raise DarknetCfgError(f"{source}, line {lineno}: option {raw.strip()!r} before any [section]")
        key, sep, value = line.partition("=")
        value = value.split("#", 1)[0]
        if not sep or not key or not value:
            raise DarknetCfgError(f"{source}, line {lineno}: [{sections[-1].name}] expected key=value, "
                                  f"got {raw.strip()!r}")
        sections[-1].options.setdefault(key, (value, lineno))  # first occurrence wins
    return sections


def _convert(value: str, annotation: Any, where: str) -> Any:
    """Turn one option string into the dataclass field's type, or raise naming `where`."""
    kind = str(annotation)
    try:
        if kind.startswith("tuple"):
            parts = [p for p in value.split(",") if p]
            return tuple(int(p) for p in parts) if "int" in kind else tuple(float(p) for p in parts)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError:
        expected = "comma-separated list of numbers" if kind.startswith("tuple") else kind.split(" ")[0]
        raise DarknetCfgError(f"{where}: {value!r} is not a valid {expected}") from None
    return value


def _typed_spec(sec: _Section, source: str) -> LayerSpec:
    cls = SECTION_ALIASES.get(sec.name)
    if cls is None:
        raise DarknetCfgError(f"{source}, line {sec.line}: layer type [{sec.name}] is not supported "
                              f"(supported: {', '.join(sorted({c.kind for c in SECTION_ALIASES.values()}))})")
    names = {f.name: f.type for f in dataclasses.fields(cls) if f.name != "line"}
    kwargs: dict[str, Any] = {"line": sec.line}
    noop = NOOP_KEYS.get(cls, {})
    for key, (value, lineno) in sec.options.items():
        where = f"{source}, line {lineno}: [{sec.name}] {key}"
        if key in noop:
            if _convert(value, "float", where) != float(noop[key]):
                raise DarknetCfgError(f"{where}={value} is not supported (only {key}={noop[key]})")
            continue
        if key not in names:
            raise DarknetCfgError(f"{where}: unknown option (known: {', '.join(sorted(names) + sorted(noop))})")
        kwargs[key] = _convert(value, names[key], where)
    if cls is ConvSpec and "filters" not in kwargs:
        raise DarknetCfgError(f"{source}, line {sec.line}: [{sec.name}] filters is required")
    spec = cls(**kwargs)
    _validate(spec, source)
    return spec


def _validate(spec: LayerSpec, source: str) -> None:
    where = f"{source}, line {spec.line}: [{spec.kind}]"
    if isinstance(spec, ConvSpec | LocalSpec | ConnectedSpec) and spec.activation not in ACTIVATIONS:
        raise DarknetCfgError(f"{where} activation={spec.activation} is not supported "
                              f"(supported: {', '.join(ACTIVATIONS)})")
    if isinstance(spec, ConvSpec | LocalSpec):
        if spec.filters < 1 or spec.size < 1 or spec.stride < 1:
            raise DarknetCfgError(f"{where} filters, size and stride must be positive")
    elif isinstance(spec, ConnectedSpec) and spec.output < 1:
        raise DarknetCfgError(f"{where} output must be positive")
    elif isinstance(spec, DropoutSpec) and not 0 <= spec.probability < 1:
        raise DarknetCfgError(f"{where} probability must be in [0, 1)")
    elif isinstance(spec, DetectionSpec):
        if spec.coords != 4:
            raise DarknetCfgError(f"{where} coords={spec.coords} is not supported (only 4)")
        if spec.num < 1 or spec.side < 1 or spec.classes < 1:
            raise DarknetCfgError(f"{where} num, side and classes must be positive")
    elif isinstance(spec, MaxPoolSpec | ReorgSpec) and spec.stride < 1:
        raise DarknetCfgError(f"{where} stride must be positive")
    elif isinstance(spec, RouteSpec) and not spec.layers:
        raise DarknetCfgError(f"{where} layers is required")
    elif isinstance(spec, RegionSpec):
        if spec.coords != 4:
            raise DarknetCfgError(f"{where} coords={spec.coords} is not supported (only 4)")
        if len(spec.anchors) != 2 * spec.num:
            raise DarknetCfgError(f"{where} anchors has {len(spec.anchors)} numbers; num={spec.num} needs "
                                  f"{2 * spec.num} (w,h pairs)")
        if spec.location not in (None, "offset"):
            raise DarknetCfgError(f"{where} location={spec.location} is not supported (only offset, or unset: "
                                  "darknet's logistic offset)")


def parse_cfg_text(text: str, source: str = "<cfg>") -> tuple[NetSpec, list[LayerSpec]]:
    """Parse cfg text into the `[net]` spec and the layer specs, in order."""
    sections = _read_sections(text, source)
    if not sections or sections[0].name not in ("net", "network"):
        raise DarknetCfgError(f"{source}: the first section must be [net]")
    head = sections[0]
    net = NetSpec(options={k: v for k, (v, _) in head.options.items() if k not in ("width", "height", "channels")})
    for key in ("width", "height", "channels"):
        if key in head.options:
            value, lineno = head.options[key]
            setattr(net, key, _convert(value, "int", f"{source}, line {lineno}: [net] {key}"))
    layers = [_typed_spec(sec, source) for sec in sections[1:]]
    if not layers:
        raise DarknetCfgError(f"{source}: no layers after [net]")
    return net, layers


def parse_cfg(path: str | os.PathLike[str]) -> tuple[NetSpec, list[LayerSpec]]:
    """Parse a darknet cfg file (local path or fsspec URI)."""
    source = os.fspath(path)
    if "://" in source:
        import fsspec

        with fsspec.open(source, "rt") as f:
            text = f.read()
    else:
        with open(source) as f:
            text = f.read()
    return parse_cfg_text(text, source)


def cfg_text(net: NetSpec, layers: list[LayerSpec]) -> str:
    """Write specs back as darknet cfg text (darknet can read what this writes)."""
    lines = ["[net]", f"width={net.width}", f"height={net.height}", f"channels={net.channels}"]
    lines += [f"{k}={v}" for k, v in net.options.items()]
    for spec in layers:
        lines += ["", f"[{spec.kind}]"]
        for f in dataclasses.fields(spec):
            value = getattr(spec, f.name)
            if f.name == "line" or value is None or (isinstance(value, tuple) and not value):
                continue
            lines.append(f"{f.name}={','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return "\n".join(lines) + "\n"


# --- shapes --------------------------------------------------------------------------------------

def resolve_route(index: int, spec: RouteSpec, source: str) -> tuple[int, ...]:
    """Absolute layer indices of a route at position `index` (darknet: negative = relative)."""
    out = tuple(index + i if i < 0 else i for i in spec.layers)
    for i in out:
        if not 0 <= i < index:
            raise DarknetCfgError(f"{source}, line {spec.line}: [route] layers={spec.layers} refers to layer {i}, "
                                  f"but only layers 0..{index - 1} come before it")
    return out


def infer_shapes(net: NetSpec, layers: list[LayerSpec], height: int | None = None, width: int | None = None,
                 source: str = "<spec>") -> list[tuple[int, int, int]]:
    """Output (channels, height, width) of every layer for an input size, as darknet computes them."""
    c, h, w = net.channels, height or net.height, width or net.width
    shapes: list[tuple[int, int, int]] = []
    for i, spec in enumerate(layers):
        if isinstance(spec, ConvSpec):
            p = spec.effective_padding
            c, h, w = spec.filters, (h + 2 * p - spec.size) // spec.stride + 1, (w + 2 * p - spec.size) // spec.stride + 1
        elif isinstance(spec, MaxPoolSpec):
            pad = spec.size - 1 if spec.padding is None else spec.padding
            h, w = maxpool_output_size(h, spec.size, spec.stride, pad), maxpool_output_size(w, spec.size, spec.stride, pad)
        elif isinstance(spec, ReorgSpec):
            s = spec.stride
            if c % (s * s) or h % s or w % s:
                raise DarknetCfgError(f"{source}, line {spec.line}: [reorg] stride={s} needs channels divisible "
                                      f"by {s * s} and a spatial size divisible by {s}; its input is {c}x{h}x{w}")
            c, h, w = c * s * s, h // s, w // s
        elif isinstance(spec, RouteSpec):
            srcs = [shapes[j] for j in resolve_route(i, spec, source)]
            if len({s[1:] for s in srcs}) > 1:
                raise DarknetCfgError(f"{source}, line {spec.line}: [route] layers={spec.layers} join different "
                                      f"spatial sizes {[s[1:] for s in srcs]} at input {height or net.height}x"
                                      f"{width or net.width}")
            c, h, w = sum(s[0] for s in srcs), srcs[0][1], srcs[0][2]
        elif isinstance(spec, AvgPoolSpec):
            h, w = 1, 1
        elif isinstance(spec, ConnectedSpec):
            c, h, w = spec.output, 1, 1
        elif isinstance(spec, LocalSpec):
            out = (local_output_size(h, spec.size, spec.stride, spec.pad),
                   local_output_size(w, spec.size, spec.stride, spec.pad))
            cols = ((h + 2 * spec.pad - spec.size) // spec.stride + 1, (w + 2 * spec.pad - spec.size) // spec.stride + 1)
            if out != cols:
                raise DarknetCfgError(f"{source}, line {spec.line}: [local] size={spec.size} stride={spec.stride} "
                                      f"pad={spec.pad} on a {h}x{w} input: darknet's output size {out[0]}x{out[1]} "
                                      f"differs from its im2col grid {cols[0]}x{cols[1]} (darknet would read past "
                                      "its buffer)")
            c, (h, w) = spec.filters, out
        elif isinstance(spec, DetectionSpec):
            if c * h * w != spec.inputs:
                raise DarknetCfgError(f"{source}, line {spec.line}: [detection] side={spec.side}, num={spec.num}, "
                                      f"classes={spec.classes} needs {spec.inputs} inputs "
                                      f"(side^2 x (5 num + classes)), the layer before gives {c * h * w}")
        elif isinstance(spec, RegionSpec):
            need = spec.num * (spec.coords + 1 + spec.classes)
            if c != need:
                raise DarknetCfgError(f"{source}, line {spec.line}: [region] num={spec.num}, classes={spec.classes} "
                                      f"needs {need} input channels, the layer before gives {c}")
        if h < 1 or w < 1:
            raise DarknetCfgError(f"{source}, line {spec.line}: [{spec.kind}] output would be empty at input "
                                  f"{height or net.height}x{width or net.width}")
        shapes.append((c, h, w))
    return shapes


# --- the network ------------------------------------------------------------------------------

class RegionParams(nn.Module):
    """Darknet `[region]` in the network: the identity on the raw map, holding its parameters.

    Activation, decoding and the loss live in `yolo_core.region`; `anchors` is (A, 2) in grid units.
    """

    def __init__(self, spec: RegionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("anchors", torch.tensor(spec.anchors, dtype=torch.float32).reshape(spec.num, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DetectionParams(nn.Module):
    """Darknet `[detection]` in the network: the identity on the flat raw output, holding its parameters.

    Decoding and the loss live in `yolo_core.detection`.
    """

    def __init__(self, spec: DetectionSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Passthrough(nn.Module):
    """`[softmax]` and `[cost]` in the network: identity, the model returns logits."""

    def __init__(self, spec: SoftmaxSpec | CostSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DarknetNet(nn.Module):
    """A network built from darknet layer specs.

    Detectors ending in [region] return the raw region input (B, A*(5+C), H/s, W/s) with
    darknet's channel layout (anchor * (5 + C) + entry; entries x, y, w, h, obj, classes);
    YOLOv1 detectors (ending in [detection]) return the flat raw output (B, S*S*(5B+C)) in
    darknet's order; classifiers (with [avgpool]) return logits (B, C) (darknet's softmax is
    not applied).
    """

    def __init__(self, net: NetSpec, layers: list[LayerSpec], source: str = "<spec>") -> None:
        super().__init__()
        self.net, self.specs, self.source = net, list(layers), source
        shapes = infer_shapes(net, self.specs, source=source)
        self.layers = nn.ModuleList()
        self._routes: dict[int, tuple[int, ...]] = {}
        self._region_index: int | None = None
        self._detection_index: int | None = None
        strides: list[int] = []
        c, h, w = net.channels, net.height, net.width
        for i, spec in enumerate(self.specs):
            if self._region_index is not None or self._detection_index is not None:
                head = "region" if self._region_index is not None else "detection"
                raise DarknetCfgError(f"{source}, line {spec.line}: [{spec.kind}] after [{head}] is not supported")
            stride = strides[-1] if strides else 1
            if isinstance(spec, ConvSpec):
                module: nn.Module = ConvBlock(c, spec.filters, spec.size, spec.stride, spec.effective_padding,
                                              bool(spec.batch_normalize), spec.activation)
                stride *= spec.stride
            elif isinstance(spec, MaxPoolSpec):
                module = MaxPool(spec.size, spec.stride, spec.padding)
                stride *= spec.stride
            elif isinstance(spec, ReorgSpec):
                module = Reorg(spec.stride)
                stride *= spec.stride
            elif isinstance(spec, RouteSpec):
                self._routes[i] = resolve_route(i, spec, source)
                module = Route(self._routes[i])
                stride = strides[self._routes[i][0]]
            elif isinstance(spec, AvgPoolSpec):
                module = GlobalAvgPool()
            elif isinstance(spec, RegionSpec):
                module = RegionParams(spec)
                self._region_index = i
            elif isinstance(spec, ConnectedSpec):
                module = Connected(c * h * w, spec.output, bool(spec.batch_normalize), spec.activation)
            elif isinstance(spec, LocalSpec):
                module = LocalConv(c, h, w, spec.filters, spec.size, spec.stride, spec.pad, spec.activation)
                stride *= spec.stride
            elif isinstance(spec, DropoutSpec):
                module = nn.Dropout(spec.probability)  # darknet's: scale kept inputs by 1/(1-p) in training
            elif isinstance(spec, DetectionSpec):
                module = DetectionParams(spec)
                self._detection_index = i
            else:
                module = Passthrough(spec)
            self.layers.append(module)
            strides.append(stride)
            c, h, w = shapes[i]
        self.stride = strides[-1]
        self.out_channels = c
        self.is_classifier = any(isinstance(s, AvgPoolSpec) for s in self.specs)
        self._keep = {j for srcs in self._routes.values() for j in srcs}

    # Attributes the rest of the project reads (see the models contract).
    @property
    def region(self) -> RegionParams | None:
        """The [region] layer (kept in `layers` only, so the state_dict has no duplicate keys)."""
        return None if self._region_index is None else self.layers[self._region_index]

    @property
    def detection(self) -> DetectionParams | None:
        """The YOLOv1 [detection] layer, if this is a YOLOv1 network."""
        return None if self._detection_index is None else self.layers[self._detection_index]

    @property
    def is_detector(self) -> bool:
        return self.region is not None or self.detection is not None

    @property
    def num_classes(self) -> int:
        if self.detection is not None:
            return self.detection.spec.classes
        return self.region.spec.classes if self.region is not None else self.out_channels

    @property
    def num_anchors(self) -> int:
        """Anchors of a [region] head; 0 for classifiers and YOLOv1 (see `detection.spec.num`)."""
        return self.region.spec.num if self.region is not None else 0

    @property
    def anchors(self) -> torch.Tensor | None:
        return self.region.anchors if self.region is not None else None

    @property
    def tree_path(self) -> str | None:
        for spec in self.specs:
            if isinstance(spec, RegionSpec | SoftmaxSpec) and spec.tree:
                return spec.tree
        return None

    @property
    def map_path(self) -> str | None:
        return self.region.spec.map if self.region is not None else None

    @property
    def fixed_input(self) -> bool:
        """Whether [connected] or [local] layers fix the input size to the cfg's (YOLOv1)."""
        return any(isinstance(s, ConnectedSpec | LocalSpec) for s in self.specs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_input and tuple(x.shape[-2:]) != (self.net.height, self.net.width):
            raise ValueError(f"input size {x.shape[-2]}x{x.shape[-1]} differs from this network's fixed input "
                             f"{self.net.height}x{self.net.width} (its connected / local layers fix it)")
        if self.region is not None and (x.shape[-1] % self.stride or x.shape[-2] % self.stride):
            raise ValueError(f"input size {x.shape[-2]}x{x.shape[-1]} is not a multiple of {self.stride}")
        outputs: list[torch.Tensor | None] = []
        for i, layer in enumerate(self.layers):
            if i in self._routes:
                x = layer([outputs[j] for j in self._routes[i]])
            else:
                x = layer(x)
            outputs.append(x if i in self._keep else None)
        return x.flatten(1) if self.is_classifier or self.detection is not None else x

    def cfg_text(self) -> str:
        """This network as darknet cfg text."""
        return cfg_text(self.net, self.specs)


def model_from_cfg(path: str | os.PathLike[str]) -> DarknetNet:
    """Build the network a darknet cfg file describes (weights initialised by PyTorch)."""
    net, layers = parse_cfg(path)
    return DarknetNet(net, layers, source=os.fspath(path))
