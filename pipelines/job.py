"""The pipeline as a list of stages: sample data -> wordtree -> ingest -> anchors -> train ->
evaluate -> register. `pipelines/full.py` runs them as one Ray job.

Each stage keeps a record in ``<storage.root>/_pipeline/<stage>/manifest.json`` (input
fingerprint, config hash, summary). Inputs of a stage include the records of the stages it
reads, so a change upstream re-runs what depends on it; the stages themselves are idempotent
too (their own outputs carry manifests), so a resubmitted job continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines import manifest, storage
from pipelines.dag import Stage
from pipelines.layout import ANCHORS, EVALUATE, Layout

if TYPE_CHECKING:  # torch and MLflow are imported only by the stages that need them
    from pipelines.config import Config, MlflowConfig, ModelConfig
    from pipelines.registry import Decision
    from wordtree_build.tree import WordTree
    from yolo_core.tree import Tree

log = logging.getLogger("y9k.job")

STAGE_NAMES = ("sample_data", "wordtree", "ingest", "anchors", "train", "evaluate", "register")


@dataclass
class JobContext:
    cfg: Config
    retrain: bool = False
    # True when the job generates and uses the sample datasets (decided before sources are filled in).
    sample_data: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def opts(self) -> dict[str, Any]:
        return self.cfg.storage.options

    @property
    def layout(self) -> Layout:
        return Layout.of(self.cfg.storage)

    @property
    def root(self) -> str:
        return self.layout.root

    def record(self, stage: str) -> str:
        return self.layout.record(stage)

    def record_fingerprint(self, *stages: str) -> str:
        """Fingerprint of upstream stage records: changes whenever one of them re-ran."""
        uris = [manifest.manifest_uri(self.record(s)) for s in stages]
        missing = [u for u in uris if not storage.exists(u, self.opts)]
        if missing:
            raise FileNotFoundError(f"upstream stage not finished: {storage.redact_uri(missing[0])}")
        return manifest.fingerprint_uris(uris, self.opts)

    def sources(self):
        from pipelines.stages.ingest import sources_from_config

        return sources_from_config(self.cfg.data, self.opts)


def cpus_needed(cfg: Config, stages: Sequence[Stage]) -> float:
    """Logical CPUs a local Ray needs for ``stages``: what training holds when it is among them
    (one instance serves every stage of the job; ingest, anchors and evaluation use what there is)."""
    if not any(s.name == "train" for s in stages):
        return 0
    from pipelines.train.data import cpus_needed as train_cpus

    return train_cpus(cfg.train)


def adapt_config_to_model(cfg: Config) -> list[str]:
    """Settings a YOLOv1 model fixes, applied to ``cfg``; returns what changed, to be logged.

    YOLOv1 (``yolo_core.models.YOLOV1_MODELS``) learns boxes of a flat class list (the evaluated
    classes) from detection images, at one input size: ``train.mode`` joint becomes detect,
    multi-scale goes off, and evaluation runs at train.input_size (darknet's resize, no letterbox).
    """
    from pipelines.config import ConfigError
    from yolo_core.models import YOLOV1_MODELS

    if cfg.model.name not in YOLOV1_MODELS:
        return []
    t, notes = cfg.train, []
    if t.mode == "classify":
        raise ConfigError(f"config key 'train.mode': got 'classify', expected 'detect' or 'joint' for model "
                          f"{cfg.model.name} (a YOLOv1 detector)")
    for key, section, value in (("mode", t, "detect"), ("multiscale", t, False), ("input_size", cfg.eval, t.input_size)):
        if getattr(section, key) != value:
            name = f"{'train' if section is t else 'eval'}.{key}"
            notes.append(f"{name}: {getattr(section, key)!r} -> {value!r}")
            setattr(section, key, value)
    return [f"{cfg.model.name} is a YOLOv1 model (flat classes, detection images, fixed input): " + ", ".join(notes)] \
        if notes else []


def flat_classes_of(model_cfg: ModelConfig, tree: WordTree, det_classes_uri: str,
                    storage_options: dict[str, Any] | None = None) -> list[int] | None:
    """The tree node of each evaluated class (the table at ``det_classes_uri``): a YOLOv1 model's
    classes, in order (None for other models)."""
    from yolo_core.models import YOLOV1_MODELS

    if model_cfg.name not in YOLOV1_MODELS:
        return None
    from pipelines.evaluate.stage import class_subset_of
    from pipelines.stages.wordtree import load_det_classes
    from yolo_core.tree import Tree

    wnids = [r["wnid"] for r in load_det_classes(det_classes_uri, storage_options)]
    return class_subset_of(Tree.from_wordtree(tree), wnids)


def flat_classes(ctx: JobContext) -> list[int] | None:
    return flat_classes_of(ctx.cfg.model, _tree(ctx), ctx.layout.wordtree, ctx.opts)


def _commit_record(ctx: JobContext, stage: str, fingerprint: str, config_hash: str, summary: dict) -> None:
    manifest.commit(ctx.record(stage), manifest.Manifest(
        stage=stage, inputs_fingerprint=fingerprint, config_hash=config_hash, counts=summary), ctx.opts)


def _stage(name: str, description: str, fingerprint, config_hash, work, **kw) -> Stage:
    """A stage whose record is committed after `work(ctx)` returns its summary."""

    def run(ctx: JobContext) -> dict:
        fp, ch = fingerprint(ctx), config_hash(ctx)
        summary = work(ctx)
        _commit_record(ctx, name, fp, ch, summary)
        return summary

    return Stage(name, description, lambda ctx: ctx.record(name), fingerprint, config_hash, run, **kw)


# --- stage bodies ---------------------------------------------------------------------------


def _sample_data(ctx: JobContext) -> dict:
    from pipelines.sample_data import generate

    s = ctx.cfg.sample_data
    summary = generate(ctx.layout.sample, seed=s.seed, scale=s.scale, storage_options=ctx.opts, world_name=s.world)
    log.info("%s", summary)
    d = summary.to_dict()
    return {k: d[k] for k in ("coco_train_images", "imagenet_images", "det_val_images", "det_seen", "det_unseen")}


def _wordtree_fp(ctx: JobContext) -> str:
    from pipelines.stages.wordtree import stage_key

    return stage_key(ctx.cfg.wordtree, ctx.cfg.data, ctx.sources(), ctx.opts)[0]


def _wordtree(ctx: JobContext) -> dict:
    from pipelines.stages.wordtree import run_wordtree

    result = run_wordtree(ctx.cfg.wordtree, ctx.cfg.data, ctx.sources(), ctx.layout.wordtree, ctx.opts)
    return result.summary()


def _ingest_fp(ctx: JobContext) -> str:
    uris = [u for s in ctx.sources() for u in s.input_uris()]
    return manifest.stable_hash([manifest.fingerprint_uris(uris, ctx.opts), ctx.record_fingerprint("wordtree")])


def _ingest(ctx: JobContext) -> dict:
    from pipelines.stages.ingest import run_ingest
    from pipelines.stages.wordtree import load_tree

    tree = load_tree(ctx.layout.wordtree, ctx.opts)
    result = run_ingest(ctx.cfg.data, ctx.cfg.storage, ctx.cfg.ray, tree, ctx.sources(), ctx.root)
    print(result.summary_table(), flush=True)
    return {
        "images": sum(r.images_accepted for r in result.sources),
        "boxes": sum(r.boxes_accepted for r in result.sources),
        "rejected": sum(r.images_rejected for r in result.sources),
        "sources": len(result.sources),
    }


def _anchors(ctx: JobContext) -> dict:
    from pipelines.stages.anchors import run_anchors

    result = run_anchors(ctx.cfg.anchors, ctx.cfg.storage, ctx.cfg.ray, ctx.layout.splits_for(ANCHORS),
                         ctx.layout.anchors)
    return {"k": result.k, "avg_iou": round(result.avg_iou, 4), "boxes": result.num_boxes}


def _record(ctx: JobContext, stage: str) -> dict[str, Any]:
    """The summary a finished stage recorded (also when this run skipped it)."""
    m = manifest.read_manifest(ctx.record(stage), ctx.opts)
    if m is None:
        raise FileNotFoundError(f"stage {stage} has not finished under {storage.redact_uri(ctx.root)}")
    return m.counts


def _tree(ctx: JobContext) -> WordTree:
    from pipelines.stages.wordtree import load_tree

    return load_tree(ctx.layout.wordtree, ctx.opts)


def _core_tree(ctx: JobContext) -> Tree:
    """The WordTree as the model's tree (yolo_core), converted where it is loaded."""
    from yolo_core.tree import Tree

    return Tree.from_wordtree(_tree(ctx))


def _anchor_list(ctx: JobContext) -> list[list[float]]:
    return storage.read_json(ctx.layout.anchors_json, ctx.opts)["anchors"]


def _no_new_data(ctx: JobContext) -> str | None:
    """In a scheduled retrain: a reason to stop when the champion was trained on exactly this data."""
    if not ctx.retrain:
        return None
    from pipelines.registry import champion

    cur = champion(ctx.cfg.mlflow.registered_model, ctx.cfg.mlflow.resolved_tracking_uri())
    if cur is None:
        return None
    current = manifest.read_manifest(ctx.record("ingest"), ctx.opts)
    if current is not None and cur.tags.get("data.ingest.fingerprint") == current.inputs_fingerprint:
        return f"retrain: no new data since champion version {cur.version} (same ingest fingerprint)"
    return None


def _train_fp(ctx: JobContext) -> str:
    fp = ctx.record_fingerprint("wordtree", "ingest", "anchors")
    if ctx.retrain:  # a new champion means a new starting point
        from pipelines.registry import champion

        cur = champion(ctx.cfg.mlflow.registered_model, ctx.cfg.mlflow.resolved_tracking_uri())
        fp = manifest.stable_hash([fp, cur.version if cur else None])
    return fp


def _train(ctx: JobContext) -> dict:
    from pipelines.train.stage import run_train

    cfg = ctx.cfg
    if ctx.retrain:
        from pipelines.registry import champion

        cur = champion(cfg.mlflow.registered_model, cfg.mlflow.resolved_tracking_uri())
        if cur is not None:
            cfg.model.init_weights = f"models:/{cfg.mlflow.registered_model}@champion"
            log.info("retrain: warm start from %s (version %s)", cfg.model.init_weights, cur.version)
        else:
            log.info("retrain: no champion registered yet, training from scratch")
    shards = ctx.layout.train_splits(cfg.train.mode)
    # One directory per (data, config): new data or a new config starts a new run, a resubmitted
    # job with the same inputs resumes the same run from its last checkpoint.
    run_dir = ctx.layout.train_dir("run-" + manifest.stable_hash([_train_fp(ctx), cfg.hash("model", "train")], 10))
    result = run_train(cfg, shards, _tree(ctx), _anchor_list(ctx), run_dir, flat_classes=flat_classes(ctx))
    return {"run_id": result.run_id, "step": result.step, "checkpoint_uri": result.checkpoint_uri,
            "out_uri": run_dir}


def trained_model(ctx: JobContext):
    """The network of the last training run, loaded from its final checkpoint."""
    import tempfile

    from pipelines.train.checkpoint import read_checkpoint
    from pipelines.train.loop import build_model

    rec = _record(ctx, "train")
    model = build_model(ctx.cfg.model, ctx.cfg.train, _core_tree(ctx), _anchor_list(ctx), flat_classes(ctx))
    with tempfile.TemporaryDirectory() as tmp:
        fs, path = storage.filesystem(rec["checkpoint_uri"], ctx.opts)
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        state, _ = read_checkpoint(tmp, 0)
    model.load_state_dict(state["model"])
    return model.eval()


def _evaluate(ctx: JobContext) -> dict:
    from pipelines.evaluate.stage import run_evaluate
    from pipelines.stages.wordtree import load_det_classes

    rows = load_det_classes(ctx.layout.wordtree, ctx.opts)
    classes = [(r["wnid"], r["det_id"], r["name"]) for r in rows]
    split = {r["wnid"]: r["split"] for r in rows}
    train = _record(ctx, "train")
    shards = ctx.layout.splits_for(EVALUATE)
    if not shards:
        raise FileNotFoundError("no imagenet_det-val shards: configure data.det_val")
    out = ctx.layout.eval_dir(train["out_uri"].rsplit("/", 1)[-1])
    flat = flat_classes(ctx) is not None  # a YOLOv1 model's classes are `classes`, in order: no tree
    cfg = ctx.cfg
    result = run_evaluate(cfg.eval, cfg.ray, cfg.mlflow, trained_model(ctx), shards, None if flat else _core_tree(ctx),
                          classes, out, storage_options=ctx.opts, split=split, run_id=train["run_id"],
                          train_run_id=train["run_id"])
    keep = ("map50_all", "map50_seen", "map50_unseen", "num_images")
    return {**{k: round(float(result.metrics[k]), 5) for k in keep if k in result.metrics}, "out_uri": out}


def _register(ctx: JobContext) -> dict:
    import mlflow

    from pipelines import registry

    cfg, uri = ctx.cfg, ctx.cfg.mlflow.resolved_tracking_uri()
    train, evaluation = _record(ctx, "train"), _record(ctx, "evaluate")
    metrics = {k: v for k, v in evaluation.items() if k.startswith("map50")}
    wt = _tree(ctx)
    wnids, names, parents = wt.wnids, wt.names, wt.parents
    if flat_classes(ctx) is not None:  # YOLOv1: the evaluated classes, flat
        from pipelines.stages.wordtree import load_det_classes

        rows = load_det_classes(ctx.layout.wordtree, ctx.opts)
        wnids, names, parents = [r["wnid"] for r in rows], [r["name"] for r in rows], None
    with registry.using_tracking_uri(uri), mlflow.start_run(run_id=train["run_id"]):
        info = registry.log_pyfunc(trained_model(ctx), wnids=wnids, names=names, parents=parents,
                                   config_yaml=cfg.to_yaml(), input_size=cfg.eval.input_size)
    fingerprints = {s: manifest.read_manifest(ctx.record(s), ctx.opts).inputs_fingerprint
                    for s in ("wordtree", "ingest", "anchors")}
    tags = registry.provenance_tags(fingerprints=fingerprints, tree_hash=wt.content_hash(), metrics=metrics,
                                    extra={"train_run_id": train["run_id"], "retrain": str(ctx.retrain).lower()})
    desc = (f"{cfg.model.name} (width {cfg.model.width}) trained {train['step']} steps in {cfg.train.mode} mode; "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    mv = registry.register_version(info.model_uri, cfg.mlflow.registered_model, tags=tags, description=desc,
                                   tracking_uri=uri)
    decision = registry.promote_if_better(cfg.mlflow.registered_model, mv.version, cfg.mlflow.promote_metric,
                                          cfg.mlflow.promote_margin, tracking_uri=uri, trigger="register stage")
    # Every version side by side, in the new version's run: the UI shows it beside the model.
    from pipelines.versions import log_comparison

    log_comparison(cfg.mlflow.registered_model, mv.run_id, uri)
    verdict = "promoted to champion" if decision.promoted else "champion unchanged"
    log.info("register: %s version %s (%s): %s", cfg.mlflow.registered_model, mv.version, verdict, decision.reason)
    ctx.results["final_report"] = final_report(cfg.mlflow, uri, mv.version, decision, metrics)
    return {"version": mv.version, "promoted": decision.promoted, "reason": decision.reason}


def final_report(mlflow_cfg: MlflowConfig, tracking_uri: str, version: str, decision: Decision,
                 metrics: dict[str, float]) -> str:
    """What `y9k run` prints at the end: the registered version, its metrics, where to look."""
    name = mlflow_cfg.registered_model
    lines = [f"registered model: {name} version {version} "
             f"({'now champion' if decision.promoted else 'champion unchanged'}: {decision.reason})"]
    lines += [f"  {k}: {v:.4f}" for k, v in metrics.items()]
    ui = (f"mlflow ui --backend-store-uri {storage.redact_uri(tracking_uri)}"
          if tracking_uri.startswith("sqlite:") else f"open {storage.redact_uri(tracking_uri)}")
    lines += [f"browse runs and the registry: {ui}  (then http://127.0.0.1:5000, Models -> {name})",
              f"load it anywhere: mlflow.pyfunc.load_model('models:/{name}@champion')"]
    return "\n".join(lines)


def build_stages() -> list[Stage]:
    return [
        _stage("sample_data", "generate the synthetic datasets (when no sources are configured)",
               lambda ctx: "generated", lambda ctx: ctx.cfg.hash("sample_data"), _sample_data,
               skip_reason=lambda ctx: None if ctx.sample_data else "data sources are configured"),
        _stage("wordtree", "WordNet -> WordTree over the datasets' labels, label maps, DET classes",
               _wordtree_fp, lambda ctx: ctx.cfg.hash("wordtree"), _wordtree),
        _stage("ingest", "Ray Data: datasets -> WordTree-labelled Parquet shards + rejects",
               _ingest_fp, lambda ctx: ctx.cfg.hash("data"), _ingest),
        _stage("anchors", "IoU k-means anchors from the detection boxes",
               lambda ctx: ctx.record_fingerprint("ingest"), lambda ctx: ctx.cfg.hash("anchors"), _anchors),
        _stage("train", "Ray Train: joint detection + classification, checkpoints, MLflow",
               _train_fp, lambda ctx: ctx.cfg.hash("model", "train"), _train, skip_reason=_no_new_data),
        _stage("evaluate", "Ray Data batch inference on DET val: mAP@.5 all / seen / unseen",
               lambda ctx: ctx.record_fingerprint("train"), lambda ctx: ctx.cfg.hash("eval"), _evaluate,
               skip_reason=_no_new_data),
        _stage("register", "log the pyfunc model, register a version, promote if better",
               lambda ctx: ctx.record_fingerprint("evaluate"), lambda ctx: ctx.cfg.hash("mlflow"), _register,
               skip_reason=_no_new_data),
    ]
