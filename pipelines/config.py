"""The one typed config of the pipeline, loaded from YAML and validated on construction.

    cfg = load_config("pipelines/configs/demo.yaml", overrides=["train.batch_size=32"])

Every section is a dataclass; types come from the annotations and are checked when a file or
an override is loaded, so ``train.batch_size: "big"`` fails with a message naming the key, the
value and what is allowed, before any work starts. Ranges are checked in ``__post_init__``.
Numbers must be finite (NaN and infinity are refused for every key). Secrets (keys inside
``storage.options``, credentials in any URI) are redacted by :meth:`Config.to_safe_dict`
(:func:`pipelines.redaction.redact`), which is what logs, ``config show`` and MLflow params receive.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from pipelines import redaction
from yolo_core.table2 import Table2, Table2Error

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key, value and what is allowed."""


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': got {value!r}, expected {allowed}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class StorageConfig:
    # Where every stage writes its output (a local path or any fsspec URI).
    root: str = "./y9k-data"
    # fsspec storage options (credentials, endpoint_url, ...); never printed.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.root), "storage.root", self.root, "a non-empty path or URI")


@dataclass
class RayConfig:
    # None: connect to a running cluster if RAY_ADDRESS is set, else start a local instance.
    address: str | None = None
    # CPUs for a local instance (None: this machine's cores, or, for a command that trains, what
    # training needs if more: a training worker and each data stream hold one; pipelines/stages).
    num_cpus: int | None = None
    # Seconds between Ray Train's controller polls of its workers (Ray's default: 2). A worker's
    # checkpoint report and the end of a run each wait for the next poll: 0.5 s took ~4 s off each
    # Ray Train run here (a 2-step run: 40 -> 36 s). Ignored when RAY_TRAIN_HEALTH_CHECK_INTERVAL_S
    # is set. Not part of any stage's cache key: it changes when, not what.
    train_poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.num_cpus is not None:
            _check(self.num_cpus >= 1, "ray.num_cpus", self.num_cpus, "an integer >= 1 or null")
        _check(0 < self.train_poll_s <= 60, "ray.train_poll_s", self.train_poll_s, "a number of seconds in (0, 60]")


@dataclass
class SampleDataConfig:
    # Generate the synthetic datasets into <storage.root>/sample when the sources are unset.
    enabled: bool = True
    # tiny: a handful of images (pipeline tests); small: the demo; medium: about 5x small.
    scale: Literal["tiny", "small", "medium"] = "small"
    seed: int = 0
    # Which generated world (pipelines.sample_data.WORLDS): 'zoo' (cars, buses, birds, dogs,
    # elephants, bears and their breeds / species / models) or 'depot' (trucks, boats, ties,
    # sports balls, bottles, chairs and their kinds; other shapes, sizes and scenes). Both have
    # coarse classes with boxes, fine ones with classification images only, DET-style val.
    world: Literal["zoo", "depot"] = "zoo"


@dataclass
class WordTreeConfig:
    # 'auto' (the labels found in the configured datasets), 'imagenet1k', '9k', or a file URI
    # holding one wnid per line.
    labels: str = "auto"
    # WordNet synset every hypernym path must reach.
    root: str = "physical_entity.n.01"
    # Labels with no path to the root: attach under an extra root, skip with a warning, or fail.
    orphans: Literal["extra_root", "skip", "fail"] = "extra_root"
    # How chosen paths enter the tree: 'paths' (the paper's 1369 nodes for ImageNet-1k) or
    # 'incremental' (darknet's label-by-label growth: 95% of 9k.tree's parents).
    method: Literal["paths", "incremental"] = "paths"
    # When a DET class counts as seen: boxes at or below its node ('subtree'), at its node
    # ('identical'), or anywhere on its root path ('related').
    seen_rule: Literal["subtree", "identical", "related"] = "subtree"


@dataclass
class DataConfig:
    # Dataset sources (URIs). Unset sources are skipped (or filled by sample data).
    coco_train: str | None = None
    coco_val: str | None = None
    imagenet_train: str | None = None
    det_val: str | None = None
    voc: str | None = None
    # The evaluation class table (wnid<TAB>det_id<TAB>name); unset: det_classes.tsv at the DET root,
    # else the 200 ILSVRC DET classes.
    det_classes: str | None = None
    # Longest image side kept in the shards (images are downscaled, never upscaled).
    max_side: int = 512
    jpeg_quality: int = 90
    shard_mb: float = 128.0
    # Unmapped labels: reject the record, or drop only the label and keep the image.
    unmapped: Literal["reject", "drop_label"] = "reject"
    # Fail at the first rejected record with a precise message.
    strict: bool = False
    # A source whose reader finds no image at all (a mistyped folder, an empty JSON) is an error
    # unless this is true; true accepts an empty source as zero rows.
    allow_empty: bool = False
    # Images with more pixels than this are rejected ('too many pixels') before they are
    # decoded: a small file can hold a huge image (a 20 KB PNG of 13000 x 13000 decodes to 0.5 GB).
    max_pixels: int = 64_000_000

    def __post_init__(self) -> None:
        _check(32 <= self.max_side <= 8192, "data.max_side", self.max_side, "an integer in [32, 8192]")
        _check(1 <= self.jpeg_quality <= 100, "data.jpeg_quality", self.jpeg_quality, "an integer in [1, 100]")
        _check(0 < self.shard_mb <= 4096, "data.shard_mb", self.shard_mb, "a number of MiB in (0, 4096]")
        _check(1 <= self.max_pixels <= 1_000_000_000, "data.max_pixels", self.max_pixels,
               "an integer in [1, 1e9]")


@dataclass
class AnchorsConfig:
    k: int = 5
    # The average-IoU curve is computed for k = 1..k_max.
    k_max: int = 10
    input_size: int = 416
    stride: int = 32
    restarts: int = 5
    iterations: int = 300
    centroid: Literal["mean", "median"] = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.k <= 64, "anchors.k", self.k, "an integer in [1, 64]")
        _check(self.stride >= 1, "anchors.stride", self.stride, "a positive integer (the network's output stride)")
        _check(self.k <= self.k_max <= 64, "anchors.k_max", self.k_max, f"an integer in [anchors.k={self.k}, 64]")
        _check(self.input_size % self.stride == 0 and self.input_size > 0, "anchors.input_size",
               self.input_size, f"a positive multiple of anchors.stride ({self.stride})")
        _check(self.restarts >= 1, "anchors.restarts", self.restarts, "an integer >= 1")
        _check(self.iterations >= 1, "anchors.iterations", self.iterations, "an integer >= 1")


@dataclass
class Table2Config(Table2):
    """``model.table2``: the YOLO9000 paper's path from YOLO to YOLOv2, one switch per row of its Table 2.

    Read when ``model.name`` is ``table2``; each field's comment (paper's rationale, darknet's
    setting) is in :class:`yolo_core.table2.Table2`. ``y9k ablation --steps table2`` sets them
    column by column (:func:`yolo_core.table2.settings`); ``--set model.table2.batch_norm=true`` sets
    one by hand.
    """

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except Table2Error as e:
            raise ConfigError(f"config section 'model.table2': {e}") from None


@dataclass
class ModelConfig:
    # A name from yolo_core.list_models(), or 'cfg' to build from a darknet cfg file.
    name: str = "yolo9000"
    # Channel multiplier (1.0 = the paper's network; small values for CPU demos).
    width: float = 1.0
    cfg: str | None = None
    # Warm start: a darknet .weights file or an MLflow model URI ('models:/name@champion').
    init_weights: str | None = None
    # The Table 2 switches of model 'table2' (ignored by other models).
    table2: Table2Config = field(default_factory=Table2Config)

    def __post_init__(self) -> None:
        _check(0 < self.width <= 4, "model.width", self.width, "a number in (0, 4]")


@dataclass
class TrainConfig:
    mode: Literal["classify", "detect", "joint"] = "joint"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    # Intra-op threads of each training worker; 0 keeps Ray's choice (cpus_per_worker). More than
    # the reserved CPUs only pays off on idle cores: on the 2-core demo machine 2 threads made
    # training slower (300 demo steps: 191 s against 147 s, the worker spending twice the CPU).
    torch_threads: int = 0
    # CPUs for decoding and augmentation (Ray Data), shared by the streams in proportion to their
    # rows per step, at least one each. 0: what the training workers leave of the cluster at
    # start. Set it on an autoscaling cluster, where the start is smaller than the run.
    data_cpus: float = 0
    batch_size: int = 64
    subdivisions: int = 1
    max_steps: int = 500_200
    lr: float = 0.001
    # 'sgd' is darknet's (momentum, decay on conv weights). 'adamw' (Adam's moments, the same
    # decoupled decay on conv weights) learns far faster from scratch in a few hundred steps,
    # which is what short CPU runs such as the demo have; lr for adamw is ~1e-3.
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0005
    burn_in: int = 1000
    policy: Literal["steps", "poly", "constant"] = "steps"
    steps: list[int] = field(default_factory=lambda: [400_000, 450_000])
    scales: list[float] = field(default_factory=lambda: [0.1, 0.1])
    power: float = 4.0
    # Scale the learning rate with the number of workers (linear rule).
    scale_lr_with_workers: bool = True
    input_size: int = 416
    # Multi-scale: a new size from [min, max] (multiples of 32) every `multiscale_every` steps.
    multiscale: bool = True
    multiscale_min: int = 320
    multiscale_max: int = 608
    multiscale_every: int = 10
    # Fraction of each joint batch that holds detection images.
    det_fraction: float = 0.5
    # Darknet loss variants: 'head' (2018 code), 'j17' (the paper-era commit), or 'paper' (the
    # paper's text: classification images get only the class loss and the .3 objectness pull,
    # no no-object term; see yolo_core.region).
    loss_variant: Literal["head", "j17", "paper"] = "head"
    # Which prediction of a classification image gets its class loss (yolo_core.region has the
    # sources): 'label' (YOLO9000 / darknet: the one already scoring the label highest, obj x
    # P(label)), 'object' (the most object-like one), 'size' (Detic's default: the largest box
    # among the cls_topk most object-like ones) or 'image' (Detic's image box: the label taught
    # as a box covering the whole image). From scratch, 'label' lets the model score its labels
    # at arbitrary predictions instead of learning them from the object.
    cls_select: Literal["label", "object", "size", "image"] = "label"
    # K of the 'size' rule; null: Detic's 128 proposals scaled to the grid (128 per 12 x 12
    # cells: 150 of 845 predictions at 416 px, 32 of 180 at the demo's 192 px).
    cls_topk: int | None = None
    # Weight of the class loss of classification images (Detic's IMAGE_LOSS_WEIGHT, 0.1 there;
    # 1 is darknet's, which weighs them like detection labels).
    cls_loss_weight: float = 1.0
    # bf16 autocast for the forward pass where the device computes bf16 natively (GPUs with bf16;
    # CPUs with AVX512-BF16 or AMX-BF16): a demo training step (width 0.25, batch 16, 192 px, one
    # thread) runs ~1.75x faster than fp32 on the 2-core Zen 4 benchmark machine. Weights, gradients,
    # the optimizer and the loss stay fp32. fp32 where the device has no native bf16, or when false.
    amp: bool = True
    # Keep weights and activations in channels_last (NHWC) memory format: the same numbers, another
    # layout for the convolution kernels. On by default: a compute-only training step of the demo
    # model is 1.46x faster than NCHW on the 2-core benchmark machine (78.5 vs 53.6 images/s,
    # tests/benchmarks/results/train.json, 'step images/s channels_last' / 'nchw').
    channels_last: bool = True
    checkpoint_every: int = 100
    # Every this many steps: the window's metrics to MLflow and a progress line (or the tqdm bar
    # on a terminal) on the driver's console: step, loss and parts, lr, images/s, data wait, ETA.
    log_every: int = 10
    eval_every: int = 0
    max_failures: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, "train.num_workers", self.num_workers, "an integer >= 1")
        _check(self.cpus_per_worker >= 1, "train.cpus_per_worker", self.cpus_per_worker, "an integer >= 1")
        _check(self.data_cpus >= 0, "train.data_cpus", self.data_cpus, "a number >= 0 (0: what the workers leave)")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _check(self.torch_threads >= 0, "train.torch_threads", self.torch_threads, "an integer >= 0 (0: Ray's choice)")
        _check(self.optimizer in ("sgd", "adamw"), "train.optimizer", self.optimizer, "'sgd' or 'adamw'")
        _check(self.subdivisions >= 1 and self.batch_size % self.subdivisions == 0, "train.subdivisions",
               self.subdivisions, f"a divisor of train.batch_size ({self.batch_size})")
        _check(self.max_steps >= 1, "train.max_steps", self.max_steps, "an integer >= 1")
        _check(0 < self.lr <= 10, "train.lr", self.lr, "a number in (0, 10]")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(self.burn_in >= 0, "train.burn_in", self.burn_in, "an integer >= 0")
        _check(len(self.steps) == len(self.scales), "train.scales", self.scales,
               f"one scale per entry of train.steps ({len(self.steps)})")
        _check(list(self.steps) == sorted(self.steps), "train.steps", self.steps, "increasing step numbers")
        for name in ("input_size", "multiscale_min", "multiscale_max"):
            v = getattr(self, name)
            _check(v >= 32 and v % 32 == 0, f"train.{name}", v, "a positive multiple of 32")
        _check(self.multiscale_min <= self.multiscale_max, "train.multiscale_max", self.multiscale_max,
               f">= train.multiscale_min ({self.multiscale_min})")
        _check(self.multiscale_every >= 1, "train.multiscale_every", self.multiscale_every, "an integer >= 1")
        _check(0 <= self.det_fraction <= 1, "train.det_fraction", self.det_fraction, "a number in [0, 1]")
        if self.cls_topk is not None:
            _check(self.cls_topk >= 1, "train.cls_topk", self.cls_topk, "an integer >= 1 or null (Detic's, scaled)")
        _check(self.cls_loss_weight >= 0, "train.cls_loss_weight", self.cls_loss_weight, "a number >= 0")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every, "an integer >= 1")
        _check(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        _check(self.max_failures >= -1, "train.max_failures", self.max_failures, "an integer >= -1 (-1: retry forever)")


@dataclass
class EvalConfig:
    thresh: float = 0.005
    hier_thresh: float = 0.5
    nms: float = 0.45
    input_size: int = 416
    batch_size: int = 16
    # Number of validation images drawn with their detections and logged.
    draw_images: int = 8

    def __post_init__(self) -> None:
        for name in ("thresh", "hier_thresh", "nms"):
            v = getattr(self, name)
            _check(0 <= v <= 1, f"eval.{name}", v, "a number in [0, 1]")
        _check(self.input_size % 32 == 0 and self.input_size > 0, "eval.input_size", self.input_size,
               "a positive multiple of 32")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        _check(self.draw_images >= 0, "eval.draw_images", self.draw_images, "an integer >= 0")


@dataclass
class MlflowConfig:
    # None: MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db with ./mlruns.
    tracking_uri: str | None = None
    experiment: str = "yolo9000"
    registered_model: str = "yolo9000"
    # Promote a new version to 'champion' only when this metric beats the champion by margin.
    promote_metric: str = "map50_all"
    promote_margin: float = 0.0

    def __post_init__(self) -> None:
        _check(bool(self.experiment), "mlflow.experiment", self.experiment, "a non-empty name")
        _check(bool(self.registered_model), "mlflow.registered_model", self.registered_model, "a non-empty name")
        _check(0 <= self.promote_margin <= 1, "mlflow.promote_margin", self.promote_margin, "a number in [0, 1]")

    def resolved_tracking_uri(self) -> str:
        """``tracking_uri``, else MLFLOW_TRACKING_URI, else ./mlflow.db as an absolute sqlite URI
        (absolute because Ray workers do not share the driver's working directory)."""
        import os

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
                return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
            return uri
        return "sqlite:///" + os.path.abspath("mlflow.db")


@dataclass
class AblationConfig:
    # What `y9k ablation` gives every configuration: the same data, steps and schedule (train.*),
    # plus, for configurations with table2.hires_classifier, this many steps of classification
    # training at table2.input_size before detection (darknet: 10 epochs of ImageNet at 448).
    classifier_steps: int = 200
    # Learning rate of that classification phase (darknet19_448.cfg: 0.001).
    classifier_lr: float = 0.001
    # The paper starts every configuration from an ImageNet classifier trained at 224 (YOLOv1's
    # trunk, or Darknet-19: darknet19.weights); the hi-res classifier phase starts from it too.
    # Darknet .weights files (partial files fill the first layers) by trunk: 'yolov1' (no batch
    # norm), 'yolov1_bn', 'darknet19'. A trunk without one starts from random weights.
    pretrained: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.pretrained:
            _check(key in ("yolov1", "yolov1_bn", "darknet19"), f"ablation.pretrained.{key}", key,
                   "a trunk: 'yolov1', 'yolov1_bn' or 'darknet19'")
        _check(self.classifier_steps >= 1, "ablation.classifier_steps", self.classifier_steps, "an integer >= 1")
        _check(0 < self.classifier_lr <= 10, "ablation.classifier_lr", self.classifier_lr, "a number in (0, 10]")


@dataclass
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sample_data: SampleDataConfig = field(default_factory=SampleDataConfig)
    wordtree: WordTreeConfig = field(default_factory=WordTreeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        # Every literal secret in the config (options, URIs) is redacted from any later message.
        redaction.remember(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_safe_dict(self) -> dict[str, Any]:
        """The config with every secret redacted: what logs and MLflow receive."""
        return redaction.redact(self.to_dict())

    def flat(self) -> dict[str, Any]:
        """`section.key` -> value, redacted: MLflow params."""
        return dict(_flatten(self.to_safe_dict()))

    def hash(self, *sections: str) -> str:
        """Hash of the named sections (all when none): part of each stage's cache key; the
        same value as :func:`sections_hash` of those sections."""
        if sections:
            return sections_hash(**{s: getattr(self, s) for s in sections})
        from pipelines.manifest import stable_hash

        d = self.to_dict()
        d["storage"]["options"] = {}  # credentials do not change what a stage computes
        return stable_hash(d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_safe_dict(), sort_keys=False)


def sections_hash(**sections: Any) -> str:
    """Hash of config sections given by name (``sections_hash(anchors=cfg.anchors)``): what a
    stage that receives only its sections keys its cache on; equal to ``Config.hash(names...)``."""
    from pipelines.manifest import stable_hash

    d = {name: dataclasses.asdict(section) for name, section in sections.items()}
    if "storage" in d:
        d["storage"]["options"] = {}  # credentials do not change what a stage computes
    return stable_hash(d)


def _flatten(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and k != "options":
            yield from _flatten(v, key + ".")
        elif isinstance(v, Mapping):
            continue  # storage options are never params
        else:
            yield key, v


# --------------------------------------------------------------------------------------------
# Loading and type checking
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, Sequence):
        (inner,) = get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if origin in (dict, Mapping):
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        _check(value in get_args(tp), key, value, _type_name(tp))
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            _check(type(None) in args, key, value, _type_name(tp))
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': got {value!r}, expected {_type_name(tp)}")
    if origin in (list, Sequence):
        _check(isinstance(value, (list, tuple)), key, value, _type_name(tp))
        (inner,) = get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        _check(isinstance(value, Mapping), key, value, _type_name(tp))
        return dict(value)
    if tp is bool:
        _check(isinstance(value, bool), key, value, _type_name(tp))
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, _type_name(tp))
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, _type_name(tp))
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        _check(math.isfinite(number), key, value, "a finite number")
        return number
    if tp is str:
        _check(isinstance(value, str), key, value, _type_name(tp))
        return value
    return value


def _build(cls: type, data: Mapping[str, Any] | None, prefix: str) -> Any:
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"section '{prefix.rstrip('.')}'" if prefix else "the top level"
        raise ConfigError(
            f"config key '{prefix}{unknown[0]}': unknown key in {where}; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"config key '{key}': got {value!r}, expected a mapping (a config section)")
            kwargs[name] = _build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'top level'}': {e}") from None


def config_from_dict(data: Mapping[str, Any] | None) -> Config:
    return _build(Config, data, "")


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.batch_size=32")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to a raw config dict."""
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return data


def resolve_config_path(path: str | Path | None) -> Path | None:
    """A config path as given, or a bare name looked up in pipelines/configs (`demo`)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config {str(path)!r} is a directory; expected a YAML file or a bundled name")
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file {str(path)!r} not found (bundled configs: "
                      f"{', '.join(sorted(c.stem for c in CONFIG_DIR.glob('*.yaml')))})")


def load_config(path: str | Path | None = "demo", overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (a path, or a bundled name such as 'demo'), apply overrides, validate."""
    data: dict[str, Any] = {}
    resolved = resolve_config_path(path)
    if resolved is not None:
        try:
            text = resolved.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{resolved}: cannot read the config: {e}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{resolved}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{resolved}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        source = f"{resolved}" if resolved else "config"
        raise ConfigError(f"{source}: {e}") from None
