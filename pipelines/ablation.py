"""`y9k ablation --steps table2`: the YOLO9000 paper's path from YOLO to YOLOv2, one training run per column.

    y9k ablation --config pipelines/configs/table2-voc.yaml --steps table2
    y9k ablation --config demo --steps table2 --only yolo,passthrough

Every column of the paper's Table 2 (``yolo_core.table2.COLUMNS``: YOLOv1, + batch norm, + hi-res
classifier, ..., + hi-res detector) gets the same data and the same budget (``train.*``): the data
stages of the job run once (sample data, WordTree, ingest, k-means anchors), then for each column

1. with ``hires_classifier``: a classification phase (``ablation.classifier_steps`` at the
   detector's training size, on the classification splits) whose trunk, saved as a partial
   darknet ``.weights`` file like darknet19_448.conv.23, the detector starts from; columns with
   the same trunk share it;
2. detection training through Ray Train (``model.name: table2`` with the column's switches in
   ``model.table2``; sizes, multi-scale and the flat classes as ``job.adapt_config_to_model`` sets them);
3. evaluation on the evaluation split (mAP@.5 over the evaluated classes), the network's FLOPs
   at the test size (darknet's count) and its forward images/s at that size, measured here.

MLflow: one parent run (``ablation-<steps>``) holding the table; each column's training run is
its child (tag ``mlflow.parentRunId``; the evaluation logs into the same run), and a classifier
phase run is a child too (tag ``table2.phase: classifier``). Written under
``<storage.root>/ablation/<steps>/run-<hash>/`` (and logged to the parent run): ``table2.md``,
``table2.csv``, ``table2.png`` (this run's mAP@.5 beside the paper's VOC 2007 figures, marked as
the paper's) and ``table2.json``. Running the command again reuses finished trainings and
evaluations (their manifests), so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from pipelines import manifest, storage
from pipelines.config import Config, Table2Config
from pipelines.errors import PipelineError
from yolo_core import table2

log = logging.getLogger("y9k.ablation")

STEP_SETS = {"table2": table2.STEP_NAMES}
DATA_STAGES = ("sample_data", "wordtree", "ingest", "anchors")
PAPER_SOURCE = ("Redmon & Farhadi, YOLO9000: Better, Faster, Stronger (CVPR 2017), Table 2: VOC 2007 test mAP, "
                "trained on VOC 2007+2012 at full scale")
# What each column adds, in the paper's words (its row labels).
ADDS = {"yolo": "YOLO (v1)", "batch_norm": "batch norm", "hires_classifier": "hi-res classifier",
        "convolutional": "convolutional + anchor boxes", "new_network": "new network (Darknet-19)",
        "dimension_priors": "dimension priors + location prediction", "passthrough": "passthrough",
        "multiscale": "multi-scale", "hires_detector": "hi-res detector"}


@dataclass
class Row:
    """One column's figures."""

    step: str
    adds: str
    switches: dict[str, bool]
    train_size: int
    test_size: int
    map50: float  # this run, mAP@.5 over the evaluated classes, in [0, 1]
    paper_map: float  # the paper's VOC 2007 mAP, in percent
    bflops: float  # darknet's count at test_size
    test_images_per_s: float  # forward pass at test_size, batch of 8, median of 5
    train_images_per_s: float | None  # the last logging window of training
    train_steps: int
    run_id: str | None
    classifier_run_id: str | None = None


@dataclass
class AblationResult:
    steps: str
    rows: list[Row]
    out_uri: str
    parent_run_id: str
    files: dict[str, str]


def columns(steps: str, only: list[str] | None = None) -> list[str]:
    """The columns of a step set, optionally a subset (kept in the set's order)."""
    if steps not in STEP_SETS:
        raise PipelineError(f"ablation: unknown --steps {steps!r}; known: {', '.join(STEP_SETS)}")
    names = STEP_SETS[steps]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise PipelineError(f"ablation: unknown step {unknown[0]!r} in --only; steps of {steps}: {', '.join(names)}")
        return [n for n in names if n in only]
    return list(names)


def column_config(base: Config, step: str) -> Config:
    """``base`` with the cumulative switches of ``step`` (model ``table2``) and the settings they fix."""
    from pipelines.job import adapt_config_to_model
    from yolo_core.models import TABLE2_MODEL

    cfg = copy.deepcopy(base)
    cfg.model.name = TABLE2_MODEL
    cfg.model.table2 = Table2Config(**dataclasses.asdict(table2.settings(step, base.model.table2)))
    for note in adapt_config_to_model(cfg):
        log.info("ablation %s: %s", step, note)
    return cfg


def trunk_kind(sw: table2.Table2) -> str:
    """Which pretrained trunk a configuration starts from (the keys of ``ablation.pretrained``)."""
    return "darknet19" if sw.new_network else "yolov1_bn" if sw.batch_norm else "yolov1"


def classifier_config(cfg: Config) -> Config:
    """The hi-res classifier phase of a column: its trunk (only the switches that shape the trunk are
    kept, so columns with the same trunk share the phase), classification at the training size."""
    from pipelines.job import adapt_config_to_model

    sw, a = cfg.model.table2, cfg.ablation
    trunk = Table2Config(batch_norm=sw.batch_norm, hires_classifier=True, convolutional=sw.convolutional,
                         anchor_boxes=sw.convolutional, new_network=sw.new_network,
                         yolo_input_size=sw.yolo_input_size, input_size=sw.input_size,
                         hires_test_size=sw.hires_test_size)
    out = copy.deepcopy(cfg)
    out.model.table2, out.model.init_weights = trunk, a.pretrained.get(trunk_kind(sw))
    # darknet19_448.cfg: lr 1e-3, poly decay with power 4.
    out.train = dataclasses.replace(cfg.train, mode="classify", max_steps=a.classifier_steps, lr=a.classifier_lr,
                                    policy="poly", power=4.0, burn_in=0, steps=[], scales=[], eval_every=0,
                                    checkpoint_every=a.classifier_steps)
    adapt_config_to_model(out)
    return out


def run_ablation(cfg: Config, steps: str = "table2", only: list[str] | None = None) -> AblationResult:
    """Train and evaluate every column of ``steps`` on the same data and budget; write the table."""
    from pipelines import dag, job
    from pipelines.layout import point_config_at_sample_data, uses_sample_data
    from pipelines.stages import ensure_ray

    names = columns(steps, only)
    base = column_config(cfg, names[0])  # the data stages see a table2 model's settings (anchors.input_size)
    sample = uses_sample_data(base)
    if sample:
        point_config_at_sample_data(base)
    ctx = job.JobContext(base, sample_data=sample)
    from pipelines.train.data import cpus_needed

    ensure_ray(base.ray, cpus_needed(base.train))  # one local instance for every column's training
    outcomes = dag.run_stages(dag.select(job.build_stages(), only=DATA_STAGES), ctx,
                              storage_options=base.storage.options)
    print(dag.format_report(outcomes), flush=True)
    data_fp = ctx.record_fingerprint("wordtree", "ingest", "anchors")
    # One directory (and parent run) per data and budget: a call with --only adds columns to it.
    sizes = {k: v for k, v in dataclasses.asdict(base.model.table2).items() if k not in table2.SWITCHES}
    run_key = manifest.stable_hash([data_fp, cfg.hash("train", "eval", "ablation"), base.model.width, sizes], 10)
    out_uri = ctx.layout.ablation(steps, f"run-{run_key}")
    tracking_uri = base.mlflow.resolved_tracking_uri()
    parent = _parent_run(base, out_uri, steps, tracking_uri)
    rows = []
    for step in names:
        started = time.perf_counter()
        rows.append(_column(ctx, column_config(ctx.cfg, step), step, out_uri, data_fp, parent, tracking_uri))
        log.info("ablation %s: mAP@.5 %.4f (paper %.1f) in %.0f s", step, rows[-1].map50, rows[-1].paper_map,
                 time.perf_counter() - started)
    files = write_table(rows, out_uri, base.storage.options, steps)
    _finish_parent(parent, rows, files, tracking_uri, base.storage.options, steps)
    return AblationResult(steps, rows, out_uri, parent, files)


def _parent_run(cfg: Config, out_uri: str, steps: str, tracking_uri: str) -> str:
    """The parent MLflow run of this ablation: created once, found again on a rerun."""
    from mlflow import MlflowClient

    from pipelines.train.tracking import create_run

    opts = cfg.storage.options
    run_file = storage.join(out_uri, "parent_run.json")
    if storage.exists(run_file, opts):
        return storage.read_json(run_file, opts)["run_id"]
    run_id = create_run(tracking_uri, cfg.mlflow.experiment, f"ablation-{steps}",
                        {"stage": "ablation", "ablation.steps": steps})
    client = MlflowClient(tracking_uri)
    for key, value in cfg.flat().items():  # redacted, as every training run's params
        client.log_param(run_id, key, str(value)[:6000])
    storage.write_json(run_file, {"run_id": run_id, "tracking_uri": storage.redact_uri(tracking_uri)}, opts)
    return run_id


def _column(ctx: Any, cfg: Config, step: str, out_uri: str, data_fp: str, parent: str, tracking_uri: str) -> Row:
    from mlflow import MlflowClient

    from pipelines import job
    from pipelines.evaluate.stage import run_evaluate
    from pipelines.layout import EVALUATE
    from pipelines.stages.wordtree import load_det_classes
    from pipelines.train.stage import run_train
    from yolo_core.flops import count_flops

    opts, layout, sw = cfg.storage.options, ctx.layout, cfg.model.table2
    client = MlflowClient(tracking_uri)
    wordtree, core_tree = job._tree(ctx), job._core_tree(ctx)
    classifier_run = None
    cfg.model.init_weights = cfg.ablation.pretrained.get(trunk_kind(sw))  # the 224 classifier, if given
    if sw.hires_classifier:
        cfg.model.init_weights, classifier_run = _hires_classifier(ctx, cfg, out_uri, data_fp, wordtree, core_tree)
        client.set_tag(classifier_run, "mlflow.parentRunId", parent)
        client.set_tag(classifier_run, "table2.phase", "classifier")
    flat = job.flat_classes_of(cfg.model, wordtree, layout.wordtree, opts)
    anchors = storage.read_json(layout.anchors_json, opts)["anchors"]
    run_dir = storage.join(out_uri, f"{step}-{manifest.stable_hash([data_fp, cfg.hash('model', 'train')], 10)}")
    result = run_train(cfg, layout.train_splits("detect"), wordtree, anchors, run_dir, flat_classes=flat)
    for key, value in {"mlflow.parentRunId": parent, "table2.step": step, "table2.phase": "detection",
                       "mlflow.runName": f"table2-{step}"}.items():
        client.set_tag(result.run_id, key, value)
    model = job.model_from_checkpoint(cfg, result.checkpoint_uri, core_tree, anchors, flat)
    rows = load_det_classes(layout.wordtree, opts)
    shards = layout.splits_for(EVALUATE)
    if not shards:
        raise PipelineError("ablation: no evaluation shards (imagenet_det-val): configure data.det_val")
    ev = run_evaluate(cfg.eval, cfg.ray, cfg.mlflow, model, shards, None,
                      [(r["wnid"], r["det_id"], r["name"]) for r in rows], storage.join(run_dir, "eval"),
                      storage_options=opts, split={r["wnid"]: r["split"] for r in rows},
                      run_id=result.run_id, train_run_id=result.run_id)
    size = sw.test_size
    return Row(step=step, adds=ADDS[step], switches=sw.switches(), train_size=sw.train_size, test_size=size,
               map50=float(ev.metrics["map50_all"]), paper_map=table2.column_of(step).paper_map,
               bflops=count_flops(model, size, size), test_images_per_s=forward_images_per_s(model, size),
               train_images_per_s=result.metrics.get("images_per_s"), train_steps=result.step,
               run_id=result.run_id, classifier_run_id=classifier_run)


def _hires_classifier(ctx: Any, cfg: Config, out_uri: str, data_fp: str, wordtree: Any,
                      core_tree: Any) -> tuple[str, str]:
    """Train (or reuse) the column's hi-res classifier; returns its trunk as a partial ``.weights`` file
    (the detector's warm start) and the classifier's run id."""
    import tempfile
    from pathlib import Path

    from pipelines import job
    from pipelines.train.stage import run_train
    from yolo_core.weights import save_weights

    ccfg = classifier_config(cfg)
    opts = cfg.storage.options
    run_dir = storage.join(out_uri, f"classifier-{manifest.stable_hash([data_fp, ccfg.hash('model', 'train')], 10)}")
    splits = ctx.layout.train_splits("classify")
    if not splits:
        raise PipelineError("ablation: the hi-res classifier needs classification shards (imagenet-train): "
                            "configure data.imagenet_train")
    result = run_train(ccfg, splits, wordtree, None, run_dir)
    trunk = len(table2.trunk_layers(ccfg.model.table2, ccfg.model.width))
    weights_uri = storage.join(run_dir, f"trunk.conv.{trunk}")
    if not storage.exists(weights_uri, opts):
        model = job.model_from_checkpoint(ccfg, result.checkpoint_uri, core_tree, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trunk.weights"
            save_weights(model, path, cutoff=trunk)  # darknet's `partial`: the layers before the head
            storage.write_bytes(weights_uri, path.read_bytes(), opts)
    return weights_uri, result.run_id


def forward_images_per_s(model: Any, size: int, batch: int = 8, repeats: int = 5) -> float:
    """Images/s of the network's forward pass at ``size`` (eval mode, no gradients): median of
    ``repeats`` timed batches after one warm-up."""
    import torch

    x = torch.rand(batch, 3, size, size)
    model = model.eval()
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            model(x)
            if i:
                times.append(time.perf_counter() - t0)
    return round(batch / statistics.median(times), 2)


# --- the table ----------------------------------------------------------------------------------

HEADER = ("step", "adds", "train size", "test size", "mAP@.5 (this run)", "VOC 2007 mAP (paper)", "BFLOPs",
          "test images/s", "train images/s", "steps")


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.step, r.adds, str(r.train_size), str(r.test_size), f"{100 * r.map50:.2f}", f"{r.paper_map:.1f}",
             f"{r.bflops:.3g}", f"{r.test_images_per_s:.1f}",
             "-" if r.train_images_per_s is None else f"{r.train_images_per_s:.1f}", str(r.train_steps)]
            for r in rows]


def markdown(rows: list[Row], steps: str) -> str:
    lines = [f"# Ablation `{steps}`: the path from YOLO to YOLOv2", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(rows)]
    lines += ["", f"mAP@.5 (this run): percent, over the evaluated classes of this run's evaluation split. "
              f"VOC 2007 mAP (paper): {PAPER_SOURCE}; not measured here. BFLOPs: darknet's count at the test size. "
              "test images/s: forward pass at the test size, batch 8, median of 5, this machine. train images/s: the last "
              "logging window of training."]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "adds", "train_size", "test_size", "map50_this_run", "paper_voc2007_map", "bflops",
                "test_images_per_s", "train_images_per_s", "train_steps", *table2.SWITCHES])
    for r in rows:
        w.writerow([r.step, r.adds, r.train_size, r.test_size, f"{r.map50:.5f}", r.paper_map, r.bflops,
                    r.test_images_per_s, "" if r.train_images_per_s is None else round(r.train_images_per_s, 2),
                    r.train_steps, *(int(r.switches[n]) for n in table2.SWITCHES)])
    return buf.getvalue()


def plot_png(rows: list[Row], steps: str) -> bytes:
    """This run's mAP@.5 beside the paper's, per column (two panels: the scales differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.step for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    left.bar(range(len(rows)), [100 * r.map50 for r in rows], color="#4c72b0")
    left.set_title("this run: mAP@.5 (%)")
    right.bar(range(len(rows)), [r.paper_map for r in rows], color="#b0b0b0", hatch="//")
    right.set_title("the paper's (YOLO9000, Table 2): VOC 2007 mAP (%)")
    right.set_ylim(50, 80)
    for ax in (left, right):
        ax.set_xticks(range(len(rows)), labels, rotation=35, ha="right", fontsize=8)
    fig.suptitle(f"ablation {steps}: the path from YOLO to YOLOv2")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_table(rows: list[Row], out_uri: str, opts: dict[str, Any], steps: str) -> dict[str, str]:
    """table2.md / .csv / .png / .json under ``out_uri``; returns their URIs by kind."""
    files = {kind: storage.join(out_uri, f"{steps}.{kind}") for kind in ("md", "csv", "png", "json")}
    storage.write_text(files["md"], markdown(rows, steps), opts)
    storage.write_text(files["csv"], csv_text(rows), opts)
    storage.write_bytes(files["png"], plot_png(rows, steps), opts)
    storage.write_json(files["json"], {"steps": steps, "paper_source": PAPER_SOURCE,
                                       "rows": [dataclasses.asdict(r) for r in rows]}, opts)
    return files


def _finish_parent(run_id: str, rows: list[Row], files: dict[str, str], tracking_uri: str,
                   opts: dict[str, Any], steps: str) -> None:
    """The table's figures as metrics (step = the column's index in the path) and its files as artifacts."""
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for r in rows:
        i = STEP_SETS[steps].index(r.step)
        client.log_metric(run_id, "map50", r.map50, step=i)
        client.log_metric(run_id, "paper_voc2007_map", r.paper_map, step=i)
        client.log_metric(run_id, "bflops", r.bflops, step=i)
        client.log_metric(run_id, "test_images_per_s", r.test_images_per_s, step=i)
        client.log_metric(run_id, f"map50_{r.step}", r.map50)
    with tempfile.TemporaryDirectory() as tmp:
        for uri in files.values():
            local = Path(tmp) / uri.rsplit("/", 1)[-1]
            local.write_bytes(storage.read_bytes(uri, opts))
            client.log_artifact(run_id, str(local))
    client.set_terminated(run_id, "FINISHED")
