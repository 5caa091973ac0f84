"""FLOP count in darknet's convention: 2 x multiply-adds of convolutional and connected layers.

Darknet prints `bflops = 2 * n * size * size * c / groups * out_h * out_w / 1e9` for each
convolutional layer, and `darknet ops` totals that plus `2 * inputs * outputs` for each
connected layer (examples/darknet.c `numops`); pools, reorg, routes, dropout, the region and
detection layers count nothing, and so does `[local]` (numops skips it: 0.23 BFLOPs in
yolov1.cfg). This gives 29.46 BFLOPs for yolov2 at 416, 62.94 at 608, 28.69 for yolo9000 at 416,
49.06 at 544, 5.41 for yolov2-tiny at 416, 3.22 for yolov1-tiny.cfg and 40.19 for yolov1.cfg.
"""

from __future__ import annotations

from yolo_core.darknet_cfg import ConnectedSpec, ConvSpec, DarknetNet, RouteSpec, infer_shapes


def conv_flops(model: DarknetNet, height: int | None = None, width: int | None = None) -> list[tuple[int, float]]:
    """(darknet layer index, FLOPs) of each convolutional and connected layer at an input size
    (default: the model's)."""
    shapes = infer_shapes(model.net, model.specs, height, width, source=model.source)
    out: list[tuple[int, float]] = []
    for i, spec in enumerate(model.specs):
        c_in, h_in, w_in = shapes[i - 1] if i else (model.net.channels, height or model.net.height,
                                                    width or model.net.width)
        if isinstance(spec, ConvSpec):
            _, h, w = shapes[i]
            out.append((i, 2.0 * spec.filters * spec.size * spec.size * c_in * h * w))
        elif isinstance(spec, ConnectedSpec):
            out.append((i, 2.0 * c_in * h_in * w_in * spec.output))
    return out


def count_flops(model: DarknetNet, height: int | None = None, width: int | None = None) -> float:
    """Total darknet BFLOPs (1e9 FLOPs) of `model` at an input size (default: the model's), as
    `darknet ops` prints them."""
    return sum(f for _, f in conv_flops(model, height, width)) / 1e9


def summary(model: DarknetNet, height: int | None = None, width: int | None = None) -> str:
    """Darknet's start-up table: one line per layer with its output shape and BFLOPs, then the total."""
    shapes = infer_shapes(model.net, model.specs, height, width, source=model.source)
    flops = dict(conv_flops(model, height, width))
    lines = [f"{'layer':>5}  {'type':<22}{'output c x h x w':>18}{'BFLOPs':>9}"]
    for i, (spec, (c, h, w)) in enumerate(zip(model.specs, shapes)):
        if isinstance(spec, ConvSpec):
            kind = f"conv {spec.filters} {spec.size}x{spec.size}/{spec.stride}"
        elif isinstance(spec, ConnectedSpec):
            kind = f"connected {spec.output}"
        elif isinstance(spec, RouteSpec):
            kind = f"route {' '.join(map(str, spec.layers))}"
        else:
            kind = spec.kind
        bf = f"{flops[i] / 1e9:.3f}" if i in flops else ""
        lines.append(f"{i:>5}  {kind:<22}{f'{c} x {h} x {w}':>18}{bf:>9}")
    lines.append(f"{'total':>5}  {'':<22}{'':>18}{sum(flops.values()) / 1e9:>9.2f}")
    return "\n".join(lines)
