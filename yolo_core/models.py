"""Model registry: Darknet-19, YOLOv2, yolov2-tiny, YOLO9000 and YOLOv1 / Fast YOLO as darknet layer specs.

`create_model(name, width=1.0, **overrides)` builds a `DarknetNet` from the same kind of specs
a darknet cfg parses into, so `create_model("yolov2")` and `model_from_cfg("yolov2.cfg")` have
the same layers, state_dict keys and `.weights` layout. `width` multiplies every hidden
layer's filters (rounded to a multiple of 8, at least 8) for small CPU variants; the output
convolution keeps the size the head needs.

YOLOv1 (Redmon et al. 2016): `yolov1` is the paper's network (24 convolutions without batch
norm, FC 4096, dropout .5, FC S*S*(5B+C)), `yolov1_darknet` darknet's later yolov1.cfg (batch
norm, a 3x3 locally connected layer, 3 boxes per cell) and `fast_yolo` yolov1-tiny.cfg (9
convolutions). Their grid is fixed by the last connected layer, so any input size works for
a given network, but one network takes one size only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from yolo_core.darknet_cfg import (
    AvgPoolSpec,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    DarknetNet,
    DetectionSpec,
    DropoutSpec,
    LayerSpec,
    LocalSpec,
    MaxPoolSpec,
    NetSpec,
    RegionSpec,
    ReorgSpec,
    RouteSpec,
    SoftmaxSpec,
)

# Anchors (w, h in grid units at stride 32) from darknet's cfgs.
COCO_ANCHORS = (0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778, 9.77052, 9.16828)
YOLO9000_ANCHORS = (0.77871, 1.14074, 3.00525, 4.31277, 9.22725, 9.61974)

_REGISTRY: dict[str, Callable[..., DarknetNet]] = {}
# YOLOv1 networks: a [detection] head on a flat class list and a fixed input size.
YOLOV1_MODELS = ("yolov1", "yolov1_darknet", "fast_yolo")
# The path from YOLO to YOLOv2 (yolo_core.table2): built from its switches, not registered here.
TABLE2_MODEL = "table2"
# Detectors of a flat class list (the evaluated classes), trained on detection images only.
FLAT_CLASS_MODELS = (*YOLOV1_MODELS, TABLE2_MODEL)


def register_model(fn: Callable[..., DarknetNet]) -> Callable[..., DarknetNet]:
    """Register a model builder under its function name; a second one of that name replaces the
    first with a warning (as timm's registry does), so a clash never passes unnoticed."""
    name = fn.__name__
    if name in _REGISTRY:
        old = _REGISTRY[name]
        warnings.warn(f"model {name!r} registered again: {fn.__module__}.{fn.__qualname__} replaces "
                      f"{old.__module__}.{old.__qualname__}", stacklevel=2)
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: object) -> DarknetNet:
    """Build a registered model; keyword arguments go to its builder (width, num_classes, ...)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)


def scale_filters(filters: int, width: float) -> int:
    """Channel multiplier: a multiple of 8 (keeps reorg's divide-by-4 valid), at least 8."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(8, int(round(filters * width / 8)) * 8)


def _conv(filters: int, size: int, width: float, stride: int = 1, batch_normalize: bool = True) -> ConvSpec:
    return ConvSpec(filters=scale_filters(filters, width), size=size, stride=stride, pad=1,
                    batch_normalize=int(batch_normalize), activation="leaky")


def darknet19_trunk(width: float = 1.0) -> list[LayerSpec]:
    """Darknet-19 layers 0-22: the 18 convolutions and 5 max pools of the classifiers, yolov2 and yolo9000."""
    plan: list[tuple[int, int] | None] = [
        (32, 3), None, (64, 3), None, (128, 3), (64, 1), (128, 3), None,
        (256, 3), (128, 1), (256, 3), None, (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), None,
        (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
    ]
    return [MaxPoolSpec() if p is None else _conv(p[0], p[1], width) for p in plan]


def _anchors(anchors: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | None, default: tuple[float, ...],
             num_anchors: int | None) -> tuple[float, ...]:
    """Flat anchor tuple from overrides; a different count without anchors is an error."""
    if anchors is None:
        if num_anchors is not None and num_anchors != len(default) // 2:
            raise ValueError(f"num_anchors={num_anchors} differs from the default {len(default) // 2}; "
                             "pass anchors (e.g. from the anchors stage) as well")
        return default
    flat = tuple(float(v) for v in torch.as_tensor(anchors, dtype=torch.float64).flatten().tolist())
    if len(flat) % 2 or (num_anchors is not None and len(flat) != 2 * num_anchors):
        raise ValueError(f"anchors must be {num_anchors or 'A'} (w, h) pairs in grid units, got {len(flat)} numbers")
    return flat


def _region(anchors: tuple[float, ...], num_classes: int, **kw: object) -> list[LayerSpec]:
    num = len(anchors) // 2
    return [ConvSpec(filters=num * (5 + num_classes), size=1, pad=1, activation="linear"),
            RegionSpec(anchors=anchors, classes=num_classes, num=num, **kw)]


def _net(size: int) -> NetSpec:
    if size % 32:
        raise ValueError(f"input size {size} is not a multiple of 32")
    return NetSpec(width=size, height=size)


def _classifier(width: float, num_classes: int, size: int) -> DarknetNet:
    layers = darknet19_trunk(width) + [
        ConvSpec(filters=num_classes, size=1, pad=1, activation="linear"),
        AvgPoolSpec(), SoftmaxSpec(), CostSpec(),
    ]
    return DarknetNet(_net(size), layers, source=f"darknet19 (width {width})")


@register_model
def darknet19(width: float = 1.0, num_classes: int = 1000, size: int = 224) -> DarknetNet:
    """Darknet-19 ImageNet classifier (darknet19.cfg), trained at 224."""
    return _classifier(width, num_classes, size)


@register_model
def darknet19_448(width: float = 1.0, num_classes: int = 1000, size: int = 448) -> DarknetNet:
    """Darknet-19 fine-tuned at 448 (darknet19_448.cfg): same layers, larger input."""
    return _classifier(width, num_classes, size)


@register_model
def yolov2(width: float = 1.0, num_classes: int = 80, anchors: Sequence[float] | None = None,
           num_anchors: int | None = None, size: int = 416) -> DarknetNet:
    """YOLOv2 (yolov2.cfg): trunk, two 3x3 convs, passthrough from layer 16 via reorg, head."""
    a = _anchors(anchors, COCO_ANCHORS, num_anchors)
    layers = darknet19_trunk(width) + [
        _conv(1024, 3, width), _conv(1024, 3, width),  # 23, 24
        RouteSpec(layers=(-9,)),  # 25: the 26x26x512 map of layer 16
        _conv(64, 1, width),  # 26
        ReorgSpec(stride=2),  # 27
        RouteSpec(layers=(-1, -4)),  # 28: reorg output first, then layer 24
        _conv(1024, 3, width),  # 29
    ] + _region(a, num_classes, jitter=0.3, rescore=1)
    return DarknetNet(_net(size), layers, source=f"yolov2 (width {width})")


@register_model
def yolov2_tiny(width: float = 1.0, num_classes: int = 80, anchors: Sequence[float] | None = None,
                num_anchors: int | None = None, size: int = 416) -> DarknetNet:
    """yolov2-tiny (yolov2-tiny.cfg): 9 convs; the last max pool is size 2 stride 1."""
    a = _anchors(anchors, COCO_ANCHORS, num_anchors)
    layers: list[LayerSpec] = []
    for filters in (16, 32, 64, 128, 256):
        layers += [_conv(filters, 3, width), MaxPoolSpec()]
    layers += [_conv(512, 3, width), MaxPoolSpec(size=2, stride=1), _conv(1024, 3, width), _conv(512, 3, width)]
    layers += _region(a, num_classes, jitter=0.2, rescore=0)
    return DarknetNet(_net(size), layers, source=f"yolov2_tiny (width {width})")


@register_model
def yolo9000(width: float = 1.0, num_classes: int = 9418, anchors: Sequence[float] | None = None,
             num_anchors: int | None = None, size: int = 416, tree_path: str | None = None,
             map_path: str | None = None) -> DarknetNet:
    """YOLO9000 (yolo9000.cfg): trunk, one 1x1 conv to 3 x (9418 + 5) channels, tree region."""
    a = _anchors(anchors, YOLO9000_ANCHORS, num_anchors)
    layers = darknet19_trunk(width) + _region(a, num_classes, jitter=0.2, rescore=1, tree=tree_path, map=map_path)
    return DarknetNet(_net(size), layers, source=f"yolo9000 (width {width})")


# --- YOLOv1 -------------------------------------------------------------------------------------

def yolov1_trunk(width: float = 1.0, batch_normalize: bool = False) -> list[LayerSpec]:
    """The 24 convolutions and 4 max pools of YOLOv1 (the paper's Figure 3; yolov1.cfg adds batch norm)."""
    plan: list[tuple[int, int] | tuple[int, int, int] | None] = [
        (64, 7, 2), None, (192, 3), None,
        (128, 1), (256, 3), (256, 1), (512, 3), None,
        *[(256, 1), (512, 3)] * 4, (512, 1), (1024, 3), None,
        *[(512, 1), (1024, 3)] * 2, (1024, 3), (1024, 3, 2),
        (1024, 3), (1024, 3),
    ]
    return [MaxPoolSpec() if p is None else _conv(p[0], p[1], width, p[2] if len(p) == 3 else 1, batch_normalize)
            for p in plan]


def _detection(num_classes: int, side: int, num_boxes: int) -> list[LayerSpec]:
    """The output connected layer and darknet's [detection] with the paper's loss settings
    (lambda_coord 5, lambda_noobj .5, square roots of w and h, confidence target = IoU)."""
    if side < 1 or num_boxes < 1 or num_classes < 1:
        raise ValueError(f"side, num_boxes and num_classes must be positive, got {side}, {num_boxes}, {num_classes}")
    spec = DetectionSpec(classes=num_classes, coords=4, rescore=1, num=num_boxes, side=side, softmax=0, sqrt=1,
                         jitter=0.2, object_scale=1.0, noobject_scale=0.5, class_scale=1.0, coord_scale=5.0)
    return [ConnectedSpec(output=spec.inputs, activation="linear"), spec]


@register_model
def yolov1(width: float = 1.0, num_classes: int = 20, side: int = 7, num_boxes: int = 2, size: int = 448,
           batch_normalize: bool = False) -> DarknetNet:
    """YOLOv1 as the paper describes it: 24 convolutions, FC 4096, dropout .5, FC 7x7x30 (VOC)."""
    layers = yolov1_trunk(width, batch_normalize) + [
        ConnectedSpec(output=scale_filters(4096, width), batch_normalize=int(batch_normalize), activation="leaky"),
        DropoutSpec(probability=0.5),
    ] + _detection(num_classes, side, num_boxes)
    return DarknetNet(_net(size), layers, source=f"yolov1 (width {width})")


@register_model
def yolov1_darknet(width: float = 1.0, num_classes: int = 20, side: int = 7, num_boxes: int = 3,
                   size: int = 448) -> DarknetNet:
    """YOLOv1 as darknet ships it (yolov1.cfg): batch norm, a 3x3 locally connected layer, 3 boxes."""
    layers = yolov1_trunk(width, batch_normalize=True) + [
        LocalSpec(filters=scale_filters(256, width), size=3, stride=1, pad=1, activation="leaky"),
        DropoutSpec(probability=0.5),
    ] + _detection(num_classes, side, num_boxes)
    return DarknetNet(_net(size), layers, source=f"yolov1_darknet (width {width})")


@register_model
def fast_yolo(width: float = 1.0, num_classes: int = 20, side: int = 7, num_boxes: int = 2,
              size: int = 448) -> DarknetNet:
    """Fast YOLO (yolov1-tiny.cfg): 9 convolutions with 6 max pools, one connected layer."""
    layers: list[LayerSpec] = []
    for filters in (16, 32, 64, 128, 256, 512):
        layers += [_conv(filters, 3, width), MaxPoolSpec()]
    layers += [_conv(1024, 3, width), _conv(256, 3, width)] + _detection(num_classes, side, num_boxes)
    return DarknetNet(_net(size), layers, source=f"fast_yolo (width {width})")
