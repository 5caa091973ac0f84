"""Batch inference: a Detector for single processes and a Ray Data actor pool over shards.

One code path turns images into detections everywhere (the evaluation stage, the pyfunc model,
``y9k predict``; YOLOv1 models take darknet's v1 path instead, see ``Detector._detect_v1``):
letterbox to the network size (darknet HEAD), forward, region decode with
``yolo_core.postprocess.detect`` (score = objectness x absolute P(class node) when a
``class_subset`` such as the 200 DET classes is given; darknet's top-down tree decode with
``hier_thresh`` otherwise), per-class NMS, and boxes mapped back to the original image.

The Ray Data stage reads evaluation shards (one row per image, see :mod:`pipelines.shards`), runs an
actor pool of detectors (one GPU per actor when the cluster has GPUs), and writes one Parquet row
per image: ``image_id``, ``boxes`` (x1, y1, x2, y2 in pixels of the *original* image), ``scores``,
``classes`` (indices into the class subset, or tree nodes without one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipelines import storage
from pipelines.errors import PipelineError
from pipelines.shards import INFERENCE_COLUMNS


def hierarchical_label(node: int, names: Sequence[str], parents: Sequence[int], levels: int = 3) -> str:
    """The node's name followed by up to ``levels - 1`` ancestor names, joined with ' < '."""
    parts = []
    while node >= 0 and len(parts) < levels:
        parts.append(names[node])
        node = int(parents[node])
    return " < ".join(parts)


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


def open_image(data: bytes, source: str):
    """Decode image bytes to RGB, or an error naming the image."""
    from PIL import UnidentifiedImageError

    from pipelines.images import TooManyPixels, open_checked, to_rgb

    try:
        img = open_checked(data)
        img.load()
    except TooManyPixels as e:
        raise InferenceError(f"{source}: image too large ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InferenceError(f"{source}: not a readable image ({e})") from None
    return to_rgb(img)


class Detector:
    """A region-layer model with its decoding settings; callable on a list of PIL images."""

    def __init__(self, model: torch.nn.Module, tree: Any = None, input_size: int = 416, thresh: float = 0.24,
                 hier_thresh: float = 0.5, nms: float = 0.45, class_subset: Sequence[int] | None = None,
                 device: str | torch.device | None = None) -> None:
        if getattr(model, "detection", None) is not None:
            input_size = model.net.width  # YOLOv1: the network fixes its input (resized to, not letterboxed)
        elif input_size % 32:
            raise InferenceError(f"input size {input_size} is not a multiple of 32")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tree = tree.to(self.device) if tree is not None else None
        self.input_size = input_size
        self.thresh, self.hier_thresh, self.nms = thresh, hier_thresh, nms
        self.class_subset = (torch.as_tensor(list(class_subset), dtype=torch.long, device=self.device)
                             if class_subset is not None else None)

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
        raw = self.model(x)
        dets = detect(raw, self.model.anchors, self.model.num_classes, tree=self.tree, thresh=self.thresh,
                      hier_thresh=self.hier_thresh, nms=self.nms, class_subset=self.class_subset)
        out = []
        for info, d in zip(infos, dets):
            px = unletterbox_boxes(d.boxes.cpu(), info)  # pixels of the original image
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

    def __init__(self, model: Any, tree: Any, settings: dict[str, Any]) -> None:
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.detector = Detector(model, tree, **settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("image_id").to_pylist()
        images = [open_image(b, f"shard row image_id={i!r}, field 'image'")
                  for i, b in zip(ids, batch.column("image").to_pylist())]
        dets = self.detector(images)
        orig_w = batch.column("orig_width").to_numpy()
        orig_h = batch.column("orig_height").to_numpy()
        boxes, scores, classes = [], [], []
        for k, (img, d) in enumerate(zip(images, dets)):
            # Shards hold downscaled images; ground truth is in pixels of the original.
            s = np.array([orig_w[k] / img.width, orig_h[k] / img.height] * 2)
            boxes.append((d.boxes * s).astype(np.float32).tolist())
            scores.append(d.scores.astype(np.float32).tolist())
            classes.append(d.classes.astype(np.int32).tolist())
        return pa.table({"image_id": ids, "boxes": boxes, "scores": scores, "classes": classes},
                        schema=PREDICTION_SCHEMA)


def predict_shards(model: torch.nn.Module, shard_uris: Sequence[str], out_uri: str, *, tree: Any = None,
                   class_subset: Sequence[int] | None = None, input_size: int = 416, thresh: float = 0.005,
                   hier_thresh: float = 0.5, nms: float = 0.45, batch_size: int = 16,
                   num_actors: int | None = None, use_gpu: bool | None = None,
                   storage_options: Mapping[str, Any] | None = None) -> int:
    """Run the model over every row of the shards with a Ray Data actor pool; write Parquet to
    ``out_uri`` (part files plus nothing else). Returns the number of images predicted."""
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
                           compute=ray.data.ActorPoolStrategy(size=num_actors),
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
