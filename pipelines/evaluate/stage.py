"""The `evaluate` stage: shards in, predictions + per-class AP + mAP (all / seen / unseen) out.

    run_evaluate(cfg.eval, cfg.ray, cfg.mlflow, model, shards=[".../shards/imagenet_det-val"],
                 tree=Tree.from_wordtree(wordtree), det_classes=load_det200(),
                 out_uri=".../eval/imagenet_det-val", split=seen_unseen(...), storage_options=cfg.storage.options)

Writes under ``out_uri``: ``predictions/`` (Parquet, one row per image), ``per_class.csv``,
``metrics.json``, ``pr_curves.png``, ``images/*.jpg`` (detections drawn with hierarchical labels)
and ``manifest.json`` last. The same inputs (shards, model weights, tree, classes, split, eval
config) find the finished output and skip the work. Metrics, the table, the curves and the
images go to MLflow (the ``mlflow`` section's store; nothing when it is None): into ``run_id``
(e.g. the training run) when given, else into a new evaluation run tagged with
``train_run_id``; the shard directories are logged as that run's dataset inputs in the
``evaluation`` context (pipelines/lineage.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines import manifest, storage
from pipelines.config import EvalConfig, MlflowConfig, RayConfig, sections_hash
from pipelines.errors import StageError
from pipelines.evaluate import metrics as M
from pipelines.evaluate import plots
from pipelines.inference import hierarchical_label, open_image, predict_shards, read_predictions
from pipelines.shards import GROUND_TRUTH_COLUMNS, INFERENCE_COLUMNS, shard_files
from yolo_core.tree import Tree

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    out_uri: str
    num_images: int
    num_predictions: int
    run_id: str | None = None
    skipped: bool = False
    files: list[str] = field(default_factory=list)


def tree_lists(tree: Tree) -> tuple[list[str], list[str], list[int]]:
    """(wnids, names, parents) of a tree; node numbers stand in for missing wnids and names."""
    parents = tree.parent.tolist()
    wnids = list(tree.wnids) if tree.wnids is not None else [str(k) for k in range(len(parents))]
    names = list(tree.names) if tree.names is not None else wnids  # a bare .tree file has no names
    return wnids, names, [int(p) for p in parents]


def class_subset_of(tree: Tree, det_wnids: Sequence[str]) -> list[int]:
    """Tree node of each evaluated class, or an error naming the first class missing from the tree."""
    wnids, _, _ = tree_lists(tree)
    index = {w: i for i, w in enumerate(wnids)}
    missing = [w for w in det_wnids if w not in index]
    if missing:
        raise StageError(f"evaluate: class {missing[0]!r} is not a node of the tree "
                         f"({len(missing)} of {len(det_wnids)} evaluated classes missing)")
    return [index[w] for w in det_wnids]


def ancestor_classes(tree: Tree, det_wnids: Sequence[str]) -> dict[str, list[str]]:
    """For each evaluated class, the evaluated classes above it in the tree (nearest first).

    ImageNet DET-200 has none (no DET class is a WordNet ancestor of another); the sample DET
    set evaluates "bear" next to "brown bear", and a brown bear is also a bear."""
    wnids, _, parents = tree_lists(tree)
    index = {w: i for i, w in enumerate(wnids)}
    evaluated = set(det_wnids)
    out: dict[str, list[str]] = {}
    for w in det_wnids:
        up, node = [], parents[index[w]]
        while node >= 0:
            if wnids[node] in evaluated:
                up.append(wnids[node])
            node = parents[node]
        if up:
            out[w] = up
    return out


def model_digest(model: Any) -> str:
    """Identifies the weights (and the architecture through the cfg text)."""
    h = hashlib.sha256(model.cfg_text().encode() if hasattr(model, "cfg_text") else b"")
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read_columns(files: Sequence[str], columns: Sequence[str], storage_options: Mapping[str, Any] | None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for u in files:
        with storage.open_uri(u, "rb", storage_options) as f:
            tables.append(pq.read_table(f, columns=list(columns)))
    return pa.concat_tables(tables)


def run_evaluate(eval_cfg: EvalConfig, ray_cfg: RayConfig, mlflow_cfg: MlflowConfig | None, model_or_checkpoint: Any,
                 shards: Sequence[str], tree: Tree | None, det_classes: Sequence[tuple[str, Any, str]], out_uri: str,
                 *, storage_options: Mapping[str, Any] | None = None, split: Mapping[str, str] | None = None,
                 run_id: str | None = None, train_run_id: str | None = None) -> EvalResult:
    """Batch inference over ``shards`` and AP@.5 for ``det_classes`` ((wnid, id, name) rows).

    ``model_or_checkpoint`` is a yolo_core model or an MLflow model URI / directory written by
    :func:`pipelines.registry.log_pyfunc`. With a tree, a class's score is objectness x absolute
    P(class node); without one, the model's classes must be ``det_classes`` in order. Ray is
    started from ``ray_cfg`` when this process has none; ``mlflow_cfg`` None logs nothing to MLflow.
    """
    from pipelines.stages import ensure_ray

    opts = storage_options
    out_uri = storage.normalize(out_uri)
    files = shard_files(shards, opts)  # first: an interrupted ingest is refused before any work
    model, tree = _resolve_model(model_or_checkpoint, tree)
    wnids = [str(c[0]) for c in det_classes]
    names = [str(c[2]) for c in det_classes]
    if tree is not None:
        subset: list[int] | None = class_subset_of(tree, wnids)
    else:
        if model.num_classes != len(wnids):
            raise StageError(f"evaluate: a model without a tree has {model.num_classes} classes but "
                             f"{len(wnids)} classes are evaluated")
        subset = None
    key = manifest.stable_hash([manifest.fingerprint_uris(list(shards), opts), model_digest(model),
                                tree_lists(tree) if tree is not None else None, wnids, dict(split or {})])
    config_hash = sections_hash(eval=eval_cfg)
    if manifest.is_complete(out_uri, key, config_hash, opts):
        m = manifest.read_manifest(out_uri, opts)
        saved = storage.read_json(storage.join(out_uri, "metrics.json"), opts)
        log.info("evaluate: %s is up to date, skipped", storage.redact_uri(out_uri))
        return EvalResult(saved["metrics"], saved["per_class"], out_uri, m.counts["images"],
                          m.counts["predictions"], saved.get("run_id"), skipped=True, files=m.files)

    e = eval_cfg
    ensure_ray(ray_cfg)
    pred_uri = storage.join(out_uri, "predictions")
    started = time.perf_counter()
    num_images = predict_shards(model, files, pred_uri, tree=tree, class_subset=subset, input_size=e.input_size,
                                thresh=e.thresh, hier_thresh=e.hier_thresh, nms=e.nms, batch_size=e.batch_size,
                                storage_options=opts)
    took = time.perf_counter() - started
    # Ray Data's bars showed the rows going through; this line stays in logs that have no bars.
    log.info("evaluate: %d images predicted in %.1f s (%.1f images/s)", num_images, took, num_images / max(took, 1e-9))
    gt = M.ground_truth_from_shards(_read_columns(files, GROUND_TRUTH_COLUMNS, opts), wnids, names,
                                    source=", ".join(storage.redact_uri(s) for s in shards),
                                    implied=ancestor_classes(tree, wnids) if tree is not None else None)
    preds = M.predictions_from_table(read_predictions(pred_uri, opts), gt, source=storage.redact_uri(pred_uri))
    res = M.ap50(gt, preds)
    summary = M.summarize(res.ap50, wnids, split)
    summary.update(num_images=float(num_images), num_predictions=float(len(preds.scores)))
    rows = M.per_class_table(gt, res, split)

    written = ["predictions/", "per_class.csv", "metrics.json", "pr_curves.png"]
    csv_text = M.table_to_csv(rows)
    storage.write_text(storage.join(out_uri, "per_class.csv"), csv_text, opts)
    fig = plots.pr_curves(res, names)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    storage.write_bytes(storage.join(out_uri, "pr_curves.png"), buf.getvalue(), opts)
    drawn = _draw_examples(files, gt, preds, tree, subset, names, e.draw_images, opts)
    for image_id, img in drawn:
        b = io.BytesIO()
        img.save(b, format="JPEG", quality=90)
        name = f"images/{image_id.replace('/', '_')}.jpg"
        storage.write_bytes(storage.join(out_uri, name), b.getvalue(), opts)
        written.append(name)

    if mlflow_cfg is not None:
        run_id = log_evaluation(mlflow_cfg, summary, csv_text, fig, drawn, run_id, train_run_id)
        from pipelines.lineage import EVALUATION, log_shard_inputs

        log_shard_inputs(mlflow_cfg.resolved_tracking_uri(), run_id, list(shards), EVALUATION, opts)
    storage.write_json(storage.join(out_uri, "metrics.json"),
                       {"metrics": summary, "per_class": rows, "run_id": run_id}, opts)
    manifest.commit(out_uri, manifest.Manifest(
        stage="evaluate", inputs_fingerprint=key, config_hash=config_hash,
        counts={"images": num_images, "predictions": int(len(preds.scores)), "classes": len(wnids),
                "boxes": int(len(gt.boxes))},
        files=written, extra={"metrics": summary, "run_id": run_id}), opts)
    return EvalResult(summary, rows, out_uri, num_images, int(len(preds.scores)), run_id, files=written)


def _resolve_model(model_or_checkpoint: Any, tree: Tree | None) -> tuple[Any, Tree | None]:
    """A model object, or one loaded from an MLflow pyfunc model (its own tree unless one is given)."""
    if not isinstance(model_or_checkpoint, str):
        return model_or_checkpoint, tree
    from pipelines.registry import load_detector

    detector = load_detector(model_or_checkpoint)
    return detector.model.cpu(), tree if tree is not None else detector.tree


def _draw_examples(files: Sequence[str], gt: M.GroundTruth, preds: M.Predictions, tree: Tree | None,
                   subset: Sequence[int] | None, names: Sequence[str], count: int,
                   opts: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The first ``count`` images with their detections above .25 drawn, labelled hierarchically."""
    if count <= 0:
        return []
    if tree is not None:
        _, tnames, parents = tree_lists(tree)
        labels = [hierarchical_label(node, tnames, parents) for node in subset]
    else:
        labels = list(names)
    table = _read_columns(files[:1], INFERENCE_COLUMNS, opts).slice(0, count)
    index = gt.image_index()
    out = []
    for row in table.to_pylist():
        img = open_image(row["image"], f"shard row image_id={row['image_id']!r}, field 'image'")
        i = index[row["image_id"]]
        sel = (preds.box_image == i) & (preds.scores >= 0.25)
        scale = np.array([img.width / row["orig_width"], img.height / row["orig_height"]] * 2)
        cls = preds.box_class[sel]
        out.append((row["image_id"], plots.draw_detections(img, preds.boxes[sel] * scale, preds.scores[sel],
                                                            [labels[k] for k in cls], keys=cls)))
    return out


def log_evaluation(mlflow_cfg: MlflowConfig, summary: Mapping[str, float], csv_text: str, fig: Any,
                   drawn: Sequence[tuple[str, Any]], run_id: str | None, train_run_id: str | None) -> str:
    """Metrics, the per-class CSV, the PR curves and the drawn images into ``run_id`` (e.g. the
    training run), or into a new evaluation run tagged ``y9k.train_run_id``. Returns the run id."""
    import mlflow


    client = mlflow.MlflowClient(mlflow_cfg.resolved_tracking_uri())
    if run_id is None:
        exp = client.get_experiment_by_name(mlflow_cfg.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(mlflow_cfg.experiment)
        tags = {"y9k.stage": "evaluate"}
        if train_run_id:
            tags["y9k.train_run_id"] = train_run_id
        run_id = client.create_run(exp_id, run_name="evaluate", tags=tags).info.run_id
        own = True
    else:
        own = False
    for k, v in summary.items():
        if np.isfinite(v):
            client.log_metric(run_id, k, float(v))
    client.log_text(run_id, csv_text, "eval/per_class.csv")
    client.log_figure(run_id, fig, "eval/pr_curves.png")
    for image_id, img in drawn:
        client.log_image(run_id, np.asarray(img), f"eval/images/{image_id.replace('/', '_')}.png")
    if own:
        client.set_terminated(run_id)
    return run_id
