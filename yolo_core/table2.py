"""The path from YOLO to YOLOv2 (YOLO9000 paper, Table 2) as switches.

Table 2 lists ten design decisions (its rows) and nine configurations (its columns), each
column adding one or two decisions to the one before:

    column              adds                                       VOC 2007 mAP (the paper's)
    yolo                - (YOLOv1, Redmon et al. 2016)               63.4
    batch_norm          batch norm                                   65.8
    hires_classifier    hi-res classifier                            69.5
    convolutional       convolutional + anchor boxes                 69.2
    new_network         new network (Darknet-19)                     69.6
    dimension_priors    dimension priors + location prediction       74.4  (anchor boxes unchecked)
    passthrough         passthrough                                  75.4
    multiscale          multi-scale                                  76.8
    hires_detector      hi-res detector                              78.6

Checked against the paper's text (arXiv 1612.08242, Table 2 and section 2): the checkmark
counts per row (batch norm 8, hi-res classifier 7, convolutional 6, anchor boxes 2, new network 5,
dimension priors 4, location prediction 4, passthrough 3, multi-scale 2, hi-res detector 1) give
the grouping above; the prose confirms it ("Without anchor boxes our intermediate model gets
69.5 mAP ... With anchor boxes our model gets 69.2"; dimension clusters with direct location
prediction "improves YOLO by almost 5% over the version with anchor boxes"; passthrough "a
modest 1%"), and Table 3 gives 78.6 for YOLOv2 at 544 and 76.8 at 416.

`Table2` holds the switches (one field per row, each documented with the paper's rationale and
darknet's setting) and the sizes; `settings(name)` gives the cumulative switches of a column
(a row name that shares a column gives that column). `build_detector` and `build_classifier`
turn switches into networks from the existing pieces (`yolo_core.models`): the YOLOv1 trunk or
Darknet-19, batch norm on or off in the layer specs, the YOLOv1 `[detection]` head or a `[region]`
head with hand-picked or k-means anchors and direct or unconstrained location, with or without
the passthrough. Training and test settings (multi-scale, sizes, the classifier phase) are
applied by the pipeline (`pipelines.job.adapt_config_to_model`, `pipelines.ablation`).

No torch at import: the pipeline's config imports this module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolo_core.darknet_cfg import DarknetNet, LayerSpec


class Table2Error(ValueError):
    """Switches that do not make a network; the message names the switches."""

    user_facing = True


@dataclass
class Table2:
    """The switches of Table 2 (all off: YOLOv1; all on but ``anchor_boxes``: YOLOv2) and the sizes."""

    # Batch norm after every convolution (darknet: `batch_normalize=1` in each [convolutional]), and
    # the dropout before the output layer removed. Paper: "more than 2% improvement in mAP ...
    # With batch normalization we can remove dropout from the model without overfitting."
    batch_norm: bool = False
    # Fine-tune the classifier at the detection resolution before detection training (darknet:
    # darknet19_448.cfg, 10 epochs at 448 from the 224 classifier, lr 1e-3; detection starts from
    # its first 23 layers, darknet19_448.conv.23). Paper: YOLO "has to simultaneously switch to
    # learning object detection and adjust to the new input resolution"; "almost 4% mAP". Here:
    # a classification phase (`ablation.classifier_steps`) on the classification shards at
    # `input_size`, whose trunk the detector starts from.
    hires_classifier: bool = False
    # A convolutional output layer instead of YOLOv1's fully connected ones: a 1x1 convolution
    # predicting, per anchor, a box, objectness and classes (darknet's [region] input), one max
    # pool of YOLOv1's trunk removed (stride 32) and the input `input_size` instead of
    # `yolo_input_size` (416 for an odd 13 x 13 grid). Paper: class prediction decoupled from
    # the cell; with anchor boxes, 69.5 -> 69.2 mAP but recall 81% -> 88%.
    convolutional: bool = False
    # Faster R-CNN's anchors (hand-picked: 128, 256, 512 px at 1:2, 1:1, 2:1 on images with a
    # 600 px side, as fractions of the input side) and its unconstrained offsets unless
    # `location_prediction`. The paper unchecks this row when dimension priors replace them.
    anchor_boxes: bool = False
    # Darknet-19 (19 convolutions, 5 max pools, batch norm; darknet19.cfg) instead of YOLOv1's
    # GoogLeNet-like network, with three 3x3 convolutions of 1024 filters before the output (as
    # in yolov2.cfg). Paper: 5.58 instead of 8.52 billion operations at 224, "cut computation by 33%".
    new_network: bool = False
    # Anchors from IoU k-means on the training boxes (the anchors stage; darknet's yolov2-voc.cfg
    # `anchors=` are k = 5 centroids) instead of hand-picked ones. Paper: 5 centroids give avg IoU
    # 61.0 where 9 hand-picked anchors give 60.9 (Table 1).
    dimension_priors: bool = False
    # Direct location prediction: the centre as a logistic offset inside its cell, sigma(tx) + cx
    # (darknet's region layer), instead of the region proposal network's unconstrained
    # x = xa + tx * wa, which "can end up at any point in the image" and makes early training
    # unstable. With dimension priors: "almost 5%" over the anchor-box version.
    location_prediction: bool = False
    # The passthrough layer: the 26 x 26 x 512 map of Darknet-19's layer 16, reduced to 64
    # channels and reorganised to 13 x 13 x 256, concatenated with the last map (yolov2.cfg
    # layers 25-28: route -9, 1x1 conv 64, reorg 2, route -1 -4). Paper: fine-grained features
    # for small objects, "a modest 1% performance increase".
    passthrough: bool = False
    # Multi-scale training: a new input size every 10 batches from multiples of 32 between
    # train.multiscale_min and train.multiscale_max (darknet: `random=1` in [region], 320-608).
    # Paper: 75.4 -> 76.8 mAP; one network for many resolutions.
    multiscale: bool = False
    # Test at `hires_test_size` (544 in the paper) instead of `input_size` (416); same weights.
    # Paper: 76.8 -> 78.6 mAP at 40 instead of 67 FPS (Table 3).
    hires_detector: bool = False
    # YOLOv1's input (448 in the paper): the size of networks with a fully connected head.
    yolo_input_size: int = 448
    # The input of convolutional networks (416 in the paper: a 13 x 13 grid), and the resolution
    # of the hi-res classifier phase.
    input_size: int = 416
    # The test size of the hi-res detector (544 in the paper).
    hires_test_size: int = 544

    def __post_init__(self) -> None:
        conv_only = ("anchor_boxes", "new_network", "dimension_priors", "location_prediction", "passthrough",
                     "multiscale", "hires_detector")
        if not self.convolutional:
            on = [n for n in conv_only if getattr(self, n)]
            if on:
                raise Table2Error(f"table2: {', '.join(on)} need(s) convolutional (a fully connected head has no "
                                  "anchors, no Darknet-19 passthrough and a fixed input size)")
        elif self.anchor_boxes == self.dimension_priors:
            raise Table2Error("table2: a convolutional head takes hand-picked anchors (anchor_boxes) or k-means ones "
                              f"(dimension_priors), exactly one; got anchor_boxes={self.anchor_boxes}, "
                              f"dimension_priors={self.dimension_priors}")
        if self.passthrough and not self.new_network:
            raise Table2Error("table2: passthrough needs new_network (it routes Darknet-19's layer 16)")
        for name, multiple in (("yolo_input_size", 64), ("input_size", 32), ("hires_test_size", 32)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0 and value % multiple == 0):
                raise Table2Error(f"table2.{name}: got {value!r}, expected a positive multiple of {multiple} "
                                  f"(the network's stride{' with a fully connected head' if multiple == 64 else ''})")

    def switches(self) -> dict[str, bool]:
        """The ten switches by name (the sizes left out)."""
        return {n: getattr(self, n) for n in SWITCHES}

    @property
    def train_size(self) -> int:
        """The training input (and the hi-res classifier's resolution)."""
        return self.input_size if self.convolutional else self.yolo_input_size

    @property
    def test_size(self) -> int:
        return self.hires_test_size if self.hires_detector else self.train_size


SWITCHES = ("batch_norm", "hires_classifier", "convolutional", "anchor_boxes", "new_network", "dimension_priors",
            "location_prediction", "passthrough", "multiscale", "hires_detector")


@dataclass(frozen=True)
class Column:
    """One column of Table 2: its name, the switches it turns on (and off), the paper's figure."""

    name: str
    on: tuple[str, ...]
    off: tuple[str, ...] = ()
    paper_map: float = math.nan  # VOC 2007 test mAP, the paper's Table 2


COLUMNS = (
    Column("yolo", (), paper_map=63.4),
    Column("batch_norm", ("batch_norm",), paper_map=65.8),
    Column("hires_classifier", ("hires_classifier",), paper_map=69.5),
    Column("convolutional", ("convolutional", "anchor_boxes"), paper_map=69.2),
    Column("new_network", ("new_network",), paper_map=69.6),
    Column("dimension_priors", ("dimension_priors", "location_prediction"), ("anchor_boxes",), paper_map=74.4),
    Column("passthrough", ("passthrough",), paper_map=75.4),
    Column("multiscale", ("multiscale",), paper_map=76.8),
    Column("hires_detector", ("hires_detector",), paper_map=78.6),
)
STEP_NAMES = tuple(c.name for c in COLUMNS)


def column_of(name: str) -> Column:
    """The column a step or row name belongs to ('anchor_boxes' is in 'convolutional''s column,
    'location_prediction' in 'dimension_priors''s)."""
    for c in COLUMNS:
        if name == c.name or name in c.on:
            return c
    raise Table2Error(f"table2: unknown step {name!r}; steps: {', '.join(STEP_NAMES)} "
                      f"(rows: {', '.join(SWITCHES)})")


def settings(name: str, base: Table2 | None = None) -> Table2:
    """The cumulative switches of a column (or of the column a row name belongs to): every
    column up to it applied in order to ``base``'s sizes, all switches off at the start."""
    target = column_of(name)
    sizes = {f.name: getattr(base, f.name) for f in dataclasses.fields(Table2) if f.name not in SWITCHES} \
        if base is not None else {}
    on: set[str] = set()
    for c in COLUMNS:
        on = (on | set(c.on)) - set(c.off)
        if c is target:
            break
    return Table2(**{n: n in on for n in SWITCHES}, **sizes)


# --- networks -----------------------------------------------------------------------------------

# Faster R-CNN's anchors (Ren et al. 2015, section 3.1.1): 3 scales x 3 aspect ratios (h / w) on
# images scaled to a 600 px side, areas kept per scale.
FASTER_RCNN_SCALES = (128, 256, 512)
FASTER_RCNN_RATIOS = (0.5, 1.0, 2.0)
FASTER_RCNN_SIDE = 600


def hand_picked_anchors(grid: int) -> list[list[float]]:
    """Faster R-CNN's 9 anchors as (w, h) in grid units of a grid x grid output (fractions of
    the input side x grid)."""
    return [[s / math.sqrt(r) / FASTER_RCNN_SIDE * grid, s * math.sqrt(r) / FASTER_RCNN_SIDE * grid]
            for s in FASTER_RCNN_SCALES for r in FASTER_RCNN_RATIOS]


def _v1_trunk(sw: Table2, width: float) -> list[LayerSpec]:
    """YOLOv1's 24 convolutions; without the FC head, its last max pool removed (stride 32)."""
    from yolo_core.darknet_cfg import MaxPoolSpec
    from yolo_core.models import yolov1_trunk

    layers = yolov1_trunk(width, batch_normalize=sw.batch_norm)
    if sw.convolutional:
        last_pool = max(i for i, spec in enumerate(layers) if isinstance(spec, MaxPoolSpec))
        del layers[last_pool]
    return layers


def trunk_layers(sw: Table2, width: float = 1.0) -> list[LayerSpec]:
    """The feature extractor the detector and the hi-res classifier share."""
    from yolo_core.models import darknet19_trunk

    return darknet19_trunk(width) if sw.new_network else _v1_trunk(sw, width)


def build_detector(sw: Table2, num_classes: int, width: float = 1.0, anchors: Any = None, side: int = 7,
                   num_boxes: int = 2) -> DarknetNet:
    """The detector of a set of switches, at ``sw.train_size``.

    Fully connected head (``convolutional`` off): YOLOv1's FC 4096 (leaky), dropout .5 (removed
    with batch norm) and the [detection] layer, ``side`` x ``side`` cells of ``num_boxes`` boxes.
    Convolutional head: Darknet-19 (``new_network``) gets yolov2.cfg's three 3x3 convolutions of
    1024, with ``passthrough`` its route / reorg; then a 1x1 convolution and [region] with
    ``anchors`` (k-means, needed with ``dimension_priors``) or Faster R-CNN's (``anchor_boxes``),
    the location parametrisation of ``location_prediction``.
    """
    from yolo_core.darknet_cfg import ConnectedSpec, DarknetNet, DropoutSpec, NetSpec, ReorgSpec, RouteSpec
    from yolo_core.models import _conv, _detection, _region, scale_filters

    layers = trunk_layers(sw, width)
    size = sw.train_size
    if not sw.convolutional:
        layers += [ConnectedSpec(output=scale_filters(4096, width), activation="leaky")]
        if not sw.batch_norm:
            layers += [DropoutSpec(probability=0.5)]
        layers += _detection(num_classes, side, num_boxes)
        return DarknetNet(NetSpec(width=size, height=size), layers, source=f"table2 (width {width})")
    if sw.new_network:
        layers += [_conv(1024, 3, width), _conv(1024, 3, width)]
        if sw.passthrough:  # yolov2.cfg layers 25-28
            layers += [RouteSpec(layers=(-9,)), _conv(64, 1, width), ReorgSpec(stride=2), RouteSpec(layers=(-1, -4))]
        layers += [_conv(1024, 3, width)]
    if sw.dimension_priors:
        if anchors is None:
            raise Table2Error("table2: dimension_priors needs the k-means anchors (the anchors stage's output)")
        flat = tuple(float(v) for pair in anchors for v in pair)
    else:
        flat = tuple(v for pair in hand_picked_anchors(size // 32) for v in pair)
    location = None if sw.location_prediction else "offset"
    layers += _region(flat, num_classes, jitter=0.3, rescore=1, location=location)  # yolov2(-voc).cfg's
    return DarknetNet(NetSpec(width=size, height=size), layers, source=f"table2 (width {width})")


def build_classifier(sw: Table2, num_classes: int, width: float = 1.0) -> DarknetNet:
    """The hi-res classifier of a set of switches at ``sw.train_size``: the detector's trunk, a
    1x1 convolution to the classes and global average pooling (darknet19_448.cfg's head).
    Its first ``len(trunk_layers(sw, width))`` layers are what the detector starts from."""
    from yolo_core.darknet_cfg import AvgPoolSpec, ConvSpec, CostSpec, DarknetNet, NetSpec, SoftmaxSpec

    size = sw.train_size
    layers = trunk_layers(sw, width) + [ConvSpec(filters=num_classes, size=1, pad=1, activation="linear"),
                                        AvgPoolSpec(), SoftmaxSpec(), CostSpec()]
    return DarknetNet(NetSpec(width=size, height=size), layers, source=f"table2 classifier (width {width})")
