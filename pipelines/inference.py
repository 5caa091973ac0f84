"""Batch inference: a Detector for single processes and a Ray Data actor pool over shards.

One code path turns images into detections everywhere (the evaluation stage, the pyfunc model,
``y9k predict``; YOLOv1 models take darknet's v1 path instead, see ``Detector._detect_v1``):
JPEGs decoded at a reduced DCT scale where the letterbox shrinks them anyway (Pillow's
``draft``), letterbox to the network size (darknet HEAD), forward through the fast form of the
network (``yolo_core.inference.make_runner``: torch with batch norm folded and channels_last,
in bf16 where the hardware computes bf16 natively; else ONNX Runtime on CPU when installed;
else that torch form in fp32; the choice is logged), region decode with
``yolo_core.postprocess.detect`` (score = objectness x absolute P(class node) when a
``class_subset`` such as the 200 DET classes is given; darknet's top-down tree decode with
``hier_thresh`` otherwise), per-class NMS, and boxes mapped back to the original image.

The Ray Data stage reads evaluation shards (one row per image, see :mod:`pipelines.shards`), runs an
actor pool of detectors (one GPU per actor when the cluster has GPUs), and writes one Parquet row
per image: ``image_id``, ``boxes`` (x1, y1, x2, y2 in pixels of the *original* image), ``scores``,
``classes`` (indices into the class subset, or tree nodes without one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipelines import storage
from pipelines.errors import PipelineError
from pipelines.shards import INFERENCE_COLUMNS
from yolo_core.tree import Tree


def hierarchical_label(node: int, names: Sequence[str], parents: Sequence[int], levels: int = 3) -> str:
    """The node's name followed by up to ``levels - 1`` ancestor names, joined with ' < '."""
    parts = []
    while node >= 0 and len(parts) < levels:
        parts.append(names[node])
        node = int(parents[node])
    return " < ".join(parts)


log = logging.getLogger(__name__)

# image.info key: (width, height) of the image before a reduced-size JPEG decode.
ORIGINAL_SIZE = "y9k_original_size"

PREDICTION_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
    ("scores", pa.list_(pa.float32())),
    ("classes", pa.list_(pa.int32())),
])


class InferenceError(PipelineError):
    """An image or shard row that cannot be run through the model; names the image and field."""


@dataclass
class ImageDetections:
    """Detections of one image in pixels of the image as given."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    scores: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) subset index, or tree node / class index


def open_image(data: bytes, source: str, network_size: int | None = None):
    """Decode image bytes to RGB, or an error naming the image.

    With ``network_size``, a JPEG whose letterbox to that size shrinks it by 2x or more is
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``), never below
    the letterboxed size; ``img.info[ORIGINAL_SIZE]`` keeps the full size, and the Detector
    reports boxes in pixels of it (see :func:`original_size`).
    """
    from PIL import UnidentifiedImageError

    from pipelines.images import TooManyPixels, open_checked, to_rgb

    try:
        img = open_checked(data)
        if network_size and img.format == "JPEG":
            w, h = img.size
            # The letterbox's own integer sizes (yolo_core.transforms.letterbox): draft never goes below them.
            n = network_size
            target = (n, max(1, h * n // w)) if n / w < n / h else (max(1, w * n // h), n)
            if 2 * target[0] <= w and 2 * target[1] <= h:
                img.draft("RGB", target)
                img.info[ORIGINAL_SIZE] = (w, h)
        img.load()
    except TooManyPixels as e:
        raise InferenceError(f"{source}: image too large ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InferenceError(f"{source}: not a readable image ({e})") from None
    return to_rgb(img)


def original_size(img: Any) -> tuple[int, int]:
    """(width, height) of the image as stored, also after a reduced-size decode."""
    return tuple(img.info.get(ORIGINAL_SIZE, img.size))


class Detector:
    """A region-layer model with its decoding settings; callable on a list of PIL images.

    ``model`` stays as given (``self.model``, e.g. to save or ship to Ray actors); images run
    through ``self.runner``, its fast form (``backend`` 'auto' | 'torch' | 'onnxruntime',
    ``precision`` 'auto' | 'fp32' | 'bf16', see ``yolo_core.inference.make_runner``).
    ``compound=True`` decodes trees as darknet HEAD's code does (``Tree.decode``).
    """

    def __init__(self, model: torch.nn.Module, tree: Tree | None = None, input_size: int = 416, thresh: float = 0.24,
                 hier_thresh: float = 0.5, nms: float = 0.45, class_subset: Sequence[int] | None = None,
                 device: str | torch.device | None = None, compound: bool = False, backend: str = "auto",
                 precision: str = "auto", onnx_model: Any = None) -> None:
        if getattr(model, "detection", None) is not None:
            input_size = model.net.width  # YOLOv1: the network fixes its input (resized to, not letterboxed)
        elif input_size % 32:
            raise InferenceError(f"input size {input_size} is not a multiple of 32")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.input_size = input_size
        self.set_backend(backend, precision, onnx_model)
        self.compound = compound
        self.tree = tree.to(self.device) if tree is not None else None
        self.thresh, self.hier_thresh, self.nms = thresh, hier_thresh, nms
        self.class_subset = (torch.as_tensor(list(class_subset), dtype=torch.long, device=self.device)
                             if class_subset is not None else None)

    def set_backend(self, backend: str = "auto", precision: str = "auto", onnx_model: Any = None) -> None:
        """Run the network through ``backend`` from now on (logged)."""
        from yolo_core.inference import make_runner

        if getattr(self.model, "detection", None) is not None:  # YOLOv1: darknet's v1 path, eager
            self.runner = None
            log.info("detector: YOLOv1, the eager model on %s", self.device)
            return
        self.runner = make_runner(self.model, self.device, backend, precision, self.input_size, onnx_model)
        log.info("detector: %s on %s", self.runner.describe(), self.device)

    @property
    def decode_size(self) -> int | None:
        """The size to decode JPEGs toward (``open_image``'s ``network_size``): the letterbox's, or
        None for YOLOv1, whose plain resize changes the aspect ratio."""
        return None if getattr(self.model, "detection", None) is not None else self.input_size

    @torch.inference_mode()
    def __call__(self, images: Sequence[Any]) -> list[ImageDetections]:
        from yolo_core.postprocess import detect
        from yolo_core.transforms import letterbox, unletterbox_boxes

        if not images:
            return []
        if getattr(self.model, "detection", None) is not None:
            return self._detect_v1(images)
        tensors, infos = zip(*(letterbox(img, self.input_size) for img in images))
        x = torch.stack(tensors).to(self.device)
        raw = self.runner(x)
        dets = detect(raw, self.model.anchors, self.model.num_classes, tree=self.tree, thresh=self.thresh,
                      hier_thresh=self.hier_thresh, nms=self.nms, class_subset=self.class_subset,
                      compound=self.compound, location=self.model.region.spec.location)
        out = []
        for img, info, d in zip(images, infos, dets):
            px = unletterbox_boxes(d.boxes.cpu(), info)  # pixels of the image as decoded
            (w, h) = original_size(img)
            if (w, h) != img.size:  # decoded at reduced size: back to pixels of the full image
                px = px * px.new_tensor([w / img.width, h / img.height] * 2)
            out.append(ImageDetections(px.numpy().astype(np.float64),
                                       d.scores.float().cpu().numpy().astype(np.float64),
                                       d.classes.cpu().numpy().astype(np.int64)))
        return out

    def _detect_v1(self, images: Sequence[Any]) -> list[ImageDetections]:
        """YOLOv1 (darknet's `yolo test`): plain resize to the network's fixed input, its detection
        decode (confidence x P(class)) and NMS; box fractions are fractions of each image."""
        from yolo_core.detection import detect
        from yolo_core.transforms import resize

        net = self.model.net
        x = torch.stack([resize(img, (net.width, net.height)) for img in images]).to(self.device)
        dets = detect(self.model(x), self.model.detection.spec, thresh=self.thresh, nms=self.nms)
        out = []
        for img, d in zip(images, dets):
            px = d.boxes.cpu().double() * torch.tensor([img.width, img.height] * 2, dtype=torch.float64)
            out.append(ImageDetections(px.numpy(), d.scores.float().cpu().numpy().astype(np.float64),
                                       d.classes.cpu().numpy().astype(np.int64)))
        return out


class _ShardPredictor:
    """Ray Data actor: one Detector per actor, fed shard batches (pyarrow tables)."""

    def __init__(self, model: Any, tree: Tree | None, settings: dict[str, Any]) -> None:
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.detector = Detector(model, tree, **settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("image_id").to_pylist()
        size = self.detector.decode_size
        images = [open_image(b, f"shard row image_id={i!r}, field 'image'", size)
                  for i, b in zip(ids, batch.column("image").to_pylist())]
        dets = self.detector(images)
        orig_w = batch.column("orig_width").to_numpy()
        orig_h = batch.column("orig_height").to_numpy()
        boxes, scores, classes = [], [], []
        for k, (img, d) in enumerate(zip(images, dets)):
            # Shards hold downscaled images; ground truth is in pixels of the original.
            w, h = original_size(img)
            s = np.array([orig_w[k] / w, orig_h[k] / h] * 2)
            boxes.append((d.boxes * s).astype(np.float32).tolist())
            scores.append(d.scores.astype(np.float32).tolist())
            classes.append(d.classes.astype(np.int32).tolist())
        return pa.table({"image_id": ids, "boxes": boxes, "scores": scores, "classes": classes},
                        schema=PREDICTION_SCHEMA)


def predict_shards(model: torch.nn.Module, shard_uris: Sequence[str], out_uri: str, *, tree: Tree | None = None,
                   class_subset: Sequence[int] | None = None, input_size: int = 416, thresh: float = 0.005,
                   hier_thresh: float = 0.5, nms: float = 0.45, batch_size: int = 16,
                   num_actors: int | None = None, use_gpu: bool | None = None,
                   storage_options: Mapping[str, Any] | None = None) -> int:
    """Run the model over every row of the shards with a Ray Data actor pool (up to ``num_actors``);
    write Parquet to ``out_uri`` (part files plus nothing else). Returns the number of images
    predicted."""
    import ray

    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if num_actors is None:
        res = ray.cluster_resources()
        # CPU actors leave one CPU free: the read tasks feeding them need one, or the pool deadlocks.
        num_actors = max(1, int(res.get("GPU", 0)) if use_gpu else int(res.get("CPU", 1)) - 1)
    ds = ray.data.read_parquet(list(shard_uris), columns=INFERENCE_COLUMNS,
                               filesystem=_arrow_fs(shard_uris[0], storage_options))
    settings = {"input_size": input_size, "thresh": thresh, "hier_thresh": hier_thresh, "nms": nms,
                "class_subset": list(class_subset) if class_subset is not None else None,
                "device": "cuda" if use_gpu else "cpu"}
    model_ref = ray.put(model.cpu())
    preds = ds.map_batches(_ShardPredictor, fn_constructor_kwargs={"model": model_ref, "tree": tree,
                                                                   "settings": settings},
                           batch_size=batch_size, batch_format="pyarrow",
                           # One actor first, more while input waits: each is a process that loads
                           # the model, and a small evaluation (one block) needs only one.
                           compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
                           num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)
    storage.remove(out_uri, storage_options)
    preds.write_parquet(out_uri, filesystem=_arrow_fs(out_uri, storage_options))
    return sum(pq_rows(u, storage_options) for u in storage.list_files(out_uri, storage_options, ".parquet"))


def _arrow_fs(uri: str, storage_options: Mapping[str, Any] | None):
    """A pyarrow filesystem for remote URIs with options (None lets Ray resolve local paths)."""
    if not storage_options or not storage.is_remote(uri):
        return None
    import pyarrow.fs as pafs

    fs, _ = storage.filesystem(uri, storage_options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def pq_rows(uri: str, storage_options: Mapping[str, Any] | None = None) -> int:
    import pyarrow.parquet as pq

    with storage.open_uri(uri, "rb", storage_options) as f:
        return pq.ParquetFile(f).metadata.num_rows


def read_predictions(uri: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Every prediction part file under ``uri`` as one table."""
    import pyarrow.parquet as pq

    parts = []
    for u in storage.list_files(uri, storage_options, ".parquet"):
        with storage.open_uri(u, "rb", storage_options) as f:
            parts.append(pq.read_table(f))
    if not parts:
        raise InferenceError(f"{storage.redact_uri(uri)}: no prediction files (*.parquet)")
    return pa.concat_tables(parts).cast(PREDICTION_SCHEMA)
