"""Anchors stage: detection boxes in the shards -> k IoU k-means priors in grid units.

    result = run_anchors(cfg.anchors, cfg.storage, cfg.ray)   # the anchor splits (pipelines.layout)
    result = run_anchors(cfg.anchors, cfg.storage, cfg.ray, [".../shards/coco-train"], out_uri=".../anchors")

Boxes are read with Ray Data from the ``boxes`` column only (Parquet column projection: image
bytes are never read, let alone decoded). Their normalized (w, h) are clustered by
:func:`yolo_core.kmeans.kmeans_iou` with ``anchors.*`` settings; anchors in grid units are the
centroids times ``input_size / stride`` (darknet's ``anchors=`` line). The stage also runs
k = 1..k_max for the average-IoU curve (the paper's Figure 2) and writes, under ``out_uri``
(default ``<storage.root>/anchors``): ``anchors.json`` (anchors, average IoU, best possible
recall at IoU 0.5, box count, settings), ``curve.json``, ``curve.png`` and ``manifest.json``
last. Same shards and settings: skipped.

Centroids: ``anchors.centroid`` is ``mean`` by default, the paper's k-means (it reproduces
Table 1 on VOC 2007: 61.1 / 67.7 average IoU for k = 5 / 9 against the paper's 61.0 / 67.2);
``median`` fits IoU better (62.2 / 69.0) but is not what the paper's priors were made with.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipelines import manifest, storage
from pipelines.config import AnchorsConfig, RayConfig, StorageConfig, sections_hash
from pipelines.errors import StageError
from pipelines.layout import ANCHORS, ANCHORS_FILE, Layout
from pipelines.shards import BOX_COLUMNS, shard_files
from yolo_core.kmeans import avg_iou_curve, best_possible_recall

log = logging.getLogger(__name__)
BPR_IOU = 0.5


@dataclass
class AnchorsResult:
    out_uri: str
    k: int
    anchors: list[list[float]]  # (k, 2) grid units at input_size / stride
    avg_iou: float
    best_possible_recall: float
    num_boxes: int
    curve: list[dict[str, Any]] = field(default_factory=list)  # per k: avg_iou and anchors
    skipped: bool = False

    def darknet_line(self) -> str:
        return "anchors = " + ",  ".join(f"{w:.5f},{h:.5f}" for w, h in self.anchors)

    def summary(self) -> str:
        lines = [f"anchors (k={self.k}, {self.num_boxes} boxes): avg IoU {100 * self.avg_iou:.2f}%, best possible "
                 f"recall at IoU {BPR_IOU}: {100 * self.best_possible_recall:.2f}%" +
                 (" (up to date, skipped)" if self.skipped else ""), self.darknet_line(), "k   avg IoU"]
        lines += [f"{c['k']:<3} {100 * c['avg_iou']:.2f}%" for c in self.curve]
        return "\n".join(lines)


def read_box_sizes(shards: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """(N, 2) normalized box widths and heights of every shard row, read with Ray Data."""
    import pyarrow.compute as pc
    import ray

    files = shard_files(shards, storage_options)
    if not files:
        raise StageError("anchors: the shards hold no files (no accepted images)")
    fs, _ = storage.filesystem(files[0], storage_options)
    paths = [storage.filesystem(f, storage_options)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=BOX_COLUMNS)
    parts = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
        flat = pc.list_flatten(batch.column("boxes"))  # one entry per box: fixed_size_list<float32>[4]
        if len(flat):
            values = pc.list_flatten(flat).to_numpy(zero_copy_only=False)
            parts.append(values.reshape(-1, 4)[:, 2:])
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 2))


def _plot(curve: list[dict[str, Any]], k: int, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [c["k"] for c in curve]
    ious = [100 * c["avg_iou"] for c in curve]
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    ax.plot(ks, ious, "o-", color="tab:blue")
    ax.plot([k], [ious[ks.index(k)]], "o", color="tab:red", markersize=9, label=f"k = {k}")
    ax.set_xlabel("# clusters (k)")
    ax.set_ylabel("average IoU (%)")
    ax.set_xticks(ks)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def run_anchors(anchors_cfg: AnchorsConfig, storage_cfg: StorageConfig, ray_cfg: RayConfig, shards: Sequence[str] | None = None,
                out_uri: str | None = None) -> AnchorsResult:
    """Compute the anchors from detection shards (default: the committed anchor splits under
    ``storage.root``, :mod:`pipelines.layout`, never evaluation data); see module doc. Ray is
    started from ``ray_cfg`` when this process has none."""
    from pipelines.stages import ensure_ray

    a, opts = anchors_cfg, storage_cfg.options
    layout = Layout.of(storage_cfg)
    shards = [storage.normalize(s) for s in (shards or layout.splits_for(ANCHORS))]
    if not shards:
        raise StageError(f"anchors: no ingested detection training shards under {storage.redact_uri(layout.shards)}; "
                         "run `y9k ingest` first")
    shard_files(shards, opts)  # an interrupted ingest is refused here, before Ray starts
    out_uri = storage.normalize(out_uri or layout.anchors)
    fingerprint = manifest.fingerprint_uris(shards, opts)
    chash = sections_hash(anchors=a)
    if manifest.is_complete(out_uri, fingerprint, chash, opts):
        saved = storage.read_json(storage.join(out_uri, ANCHORS_FILE), opts)
        known = {k: v for k, v in saved.items() if k in AnchorsResult.__dataclass_fields__}
        return AnchorsResult(**{**known, "out_uri": out_uri, "skipped": True})

    ensure_ray(ray_cfg)
    wh = read_box_sizes(shards, opts)
    if len(wh) < a.k_max:
        raise StageError(f"anchors: {len(wh)} boxes in {len(shards)} shard directories, fewer than "
                         f"anchors.k_max={a.k_max}")
    storage.remove(manifest.manifest_uri(out_uri), opts)
    grid = a.input_size / a.stride
    runs = avg_iou_curve(wh, a.k_max, restarts=a.restarts, iterations=a.iterations, centroid=a.centroid, seed=a.seed)
    curve = [{"k": r.centroids.shape[0], "avg_iou": r.avg_iou, "anchors": (r.centroids * grid).round(5).tolist()}
             for r in runs]
    best = runs[a.k - 1]
    res = AnchorsResult(out_uri=out_uri, k=a.k, anchors=(best.centroids * grid).round(5).tolist(),
                        avg_iou=best.avg_iou, best_possible_recall=best_possible_recall(wh, best.centroids, BPR_IOU),
                        num_boxes=int(len(wh)), curve=curve)
    record = {**asdict(res), "input_size": a.input_size, "stride": a.stride, "centroid": a.centroid,
              "restarts": a.restarts, "seed": a.seed, "anchors_normalized": best.centroids.round(6).tolist(),
              "darknet": res.darknet_line(), "shards": [storage.redact_uri(s) for s in shards]}
    record.pop("skipped")
    storage.write_json(storage.join(out_uri, ANCHORS_FILE), record, opts)
    storage.write_json(storage.join(out_uri, "curve.json"), curve, opts)
    title = f"IoU k-means ({a.centroid} centroids), {len(wh)} boxes"
    storage.write_bytes(storage.join(out_uri, "curve.png"), _plot(curve, a.k, title), opts)
    manifest.commit(out_uri, manifest.Manifest(
        stage="anchors", inputs_fingerprint=fingerprint, config_hash=chash,
        counts={"boxes": int(len(wh)), "shard_dirs": len(shards)},
        files=[ANCHORS_FILE, "curve.json", "curve.png"], extra={"avg_iou": res.avg_iou}), opts)
    log.info("%s", res.summary())
    return res
