"""The per-worker training function, readable top to bottom.

    build the model -> restore a checkpoint (or warm start) -> wrap in DDP ->
    for each step: pick the input size, set the lr, accumulate `subdivisions` micro-batches
    (forward, loss, backward), optimizer step, log (MLflow, and a report for the driver's
    console), checkpoint.

Ray Train runs :func:`train_loop_per_worker` on every worker; ``config`` comes from
stage.run_train (the config as a dict, the tree, the anchors, the MLflow run). A step is one
optimizer update (darknet's "iteration"); ``seen`` counts images over all workers, which is
what darknet's region warm-up (the first 12,800 images) looks at.

YOLOv1 models (``yolo_core.models.YOLOV1_MODELS``) train the same way with darknet's detection
loss (``yolo_core.detection``) on a flat label set: ``config["flat_classes"]`` lists the tree
node of each class, and a box trains the class at its node or the nearest one above it (boxes
with none are counted as ``boxes_unmapped``). Their input size is fixed: every step runs at
``train.input_size``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F

from pipelines.config import EvalConfig, ModelConfig, TrainConfig, config_from_dict
from pipelines.train import checkpoint as ckpt_io
from pipelines.train.data import JointBatches, batch_split, multiscale_size
from pipelines.train.optim import build_optimizer, learning_rate, param_groups, set_lr
from pipelines.train.progress import ProgressSender
from pipelines.train.tracking import Tracker, prediction_grid, system_tags
from yolo_core.inference import Precision, autocast, choose_precision, to_channels_last
from yolo_core.tree import Tree

log = logging.getLogger("y9k.train")
# Score threshold of the preview grids (eval.thresh is for mAP, far too low for a picture).
PREVIEW_THRESH = 0.1


def build_model(model_cfg: ModelConfig, train_cfg: TrainConfig, tree: Tree | None, anchors: list[list[float]] | None,
                flat_classes: list[int] | None = None) -> torch.nn.Module:
    """The configured network; with a tree, one output per tree node; a YOLOv1 model has one
    output per flat class, at the fixed input train.input_size. ``train_cfg``: its mode (a
    classifier has no anchors) and input size."""
    from yolo_core.models import TABLE2_MODEL, YOLOV1_MODELS, create_model

    m = model_cfg
    if m.name == TABLE2_MODEL:  # the switches of model.table2 (yolo_core.table2)
        from yolo_core import table2

        if train_cfg.mode == "classify":  # the hi-res classifier phase, on the tree's classes
            return table2.build_classifier(m.table2, tree.num_nodes if tree is not None else 1000, m.width)
        if not flat_classes:
            raise ValueError("model table2 needs its flat class list (the evaluated classes); train it through "
                             "the pipeline (y9k run, y9k ablation), which passes them")
        return table2.build_detector(m.table2, len(flat_classes), m.width, anchors)
    if m.name in YOLOV1_MODELS:
        if not flat_classes:
            raise ValueError(f"model {m.name} (YOLOv1) needs its flat class list (the evaluated classes); "
                             "train it through the pipeline (y9k run), which passes them")
        return create_model(m.name, width=m.width, num_classes=len(flat_classes), size=train_cfg.input_size)
    kw: dict[str, Any] = {"width": m.width}
    if tree is not None:
        kw["num_classes"] = tree.num_nodes
    if anchors and train_cfg.mode != "classify":
        kw["anchors"] = anchors
    return create_model(m.name, **kw)


def train_precision(train_cfg: TrainConfig, device: torch.device) -> Precision:
    """The forward pass's compute type: bf16 autocast where ``train.amp`` is on and the device
    computes bf16 natively, fp32 otherwise; with the reason, for the log and the run's tags."""
    return choose_precision(device, "auto" if train_cfg.amp else "fp32")


def prepare_for_training(model: torch.nn.Module, train_cfg: TrainConfig) -> torch.nn.Module:
    """The model in the memory format the step uses (``train.channels_last``)."""
    return to_channels_last(model) if train_cfg.channels_last else model


def forward(model: torch.nn.Module, x: torch.Tensor, train_cfg: TrainConfig, precision: Precision) -> torch.Tensor:
    """One forward pass as training runs it: the input in the step's memory format, under the
    step's autocast; fp32 raw outputs for the loss."""
    x = x.contiguous(memory_format=torch.channels_last if train_cfg.channels_last else torch.contiguous_format)
    with autocast(x.device, precision):
        return model(x).float()


def flat_label_map(parents: list[int], flat_classes: list[int]) -> torch.Tensor:
    """(num_nodes,) tensor: the flat class of each tree node (itself or its nearest ancestor in
    ``flat_classes``), -1 when there is none."""
    index = {node: k for k, node in enumerate(flat_classes)}
    out = []
    for node in range(len(parents)):
        n = node
        while n >= 0 and n not in index:
            n = parents[n]
        out.append(index[n] if n >= 0 else -1)
    return torch.tensor(out, dtype=torch.long)


def schedule_of(t: TrainConfig) -> dict[str, Any]:
    """What fixes the meaning of a step: stored in checkpoints, checked on resume."""
    return {"optimizer": t.optimizer, "lr": t.lr, "policy": t.policy, "steps": list(t.steps), "scales": list(t.scales), "power": t.power,
            "burn_in": t.burn_in, "max_steps": t.max_steps, "batch_size": t.batch_size}


def classify_loss(logits: torch.Tensor, label: torch.Tensor, tree: Tree | None) -> dict[str, torch.Tensor]:
    """Classifier loss: hierarchical cross-entropy through the tree, or flat softmax."""
    cls = tree.nll(logits, label).mean() if tree is not None else F.cross_entropy(logits, label)
    return {"total": cls, "cls": cls}


@torch.no_grad()
def log_predictions(model: torch.nn.Module, jpegs: list[bytes], eval_cfg: EvalConfig, tree: Tree | None,
                    tracker: Tracker, step: int, device: torch.device) -> None:
    """Draw the model's detections on the fixed preview images and log the grid (rank 0 only)."""
    import io

    from PIL import Image

    from yolo_core import detection
    from yolo_core.postprocess import detect
    from yolo_core.transforms import letterbox, resize

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
    if model.detection is not None:  # YOLOv1: darknet's plain resize to the fixed input
        x = torch.stack([resize(img, (model.net.width, model.net.height)) for img in images])
    else:
        x = torch.stack([letterbox(img, eval_cfg.input_size)[0] for img in images])
    model.eval()
    raw = model(x.to(device)).float()
    model.train()
    if model.detection is not None:
        dets = detection.detect(raw, model.detection.spec, thresh=PREVIEW_THRESH, nms=eval_cfg.nms)
    else:
        dets = detect(raw, model.anchors, model.num_classes, tree=tree, thresh=PREVIEW_THRESH,
                      hier_thresh=eval_cfg.hier_thresh, nms=eval_cfg.nms, location=model.region.spec.location)
    tracker.log_image(prediction_grid(x, dets), f"predictions/step_{step:07d}.png")


def _quiet_report_log() -> None:
    """Ray Train logs every report's whole metrics dict from every worker at INFO; the driver
    prints the same numbers readably (pipelines/train/progress.py). Its logger is named by the
    module's file path."""
    try:
        from ray.train.v2._internal.execution import context as ray_train_context
    except ImportError:  # another Ray layout: its log stays as it is
        return
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker's training. ``config["cfg"]`` is the whole config (as a dict): the MLflow run
    records every setting (params and config.yaml), and the loop reads the model, train, eval
    and storage sections."""
    import ray.train
    import ray.train.torch

    from yolo_core.detection import DetectionLoss
    from yolo_core.region import RegionLoss

    cfg = config_from_dict(config["cfg"])
    t = cfg.train
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(t.seed + rank)
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)

    # Restore, first read: the latest checkpoint of this run; its data position starts the streams.
    step, seen, position, run_id, restored, warm = 0, 0, None, config.get("run_id"), False, ""
    state, worker = None, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state, worker = ckpt_io.read_checkpoint(d, rank)
        ckpt_io.check_schedule(state["schedule"], schedule_of(t), str(checkpoint.path))
        position = worker["position"] if worker is not None else None

    # Data: this worker's shard of each stream, restored to where it stopped, started now so that
    # the streams' executions start while the model is built.
    counts = batch_split(t)
    batches = JointBatches({k: ray.train.get_dataset_shard(k) for k in counts}, counts, t.seed + rank,
                           position).start()

    # Model and optimizer: the checkpoint's state, else a warm start.
    tree = Tree(config["tree"]["parents"]) if config.get("tree") else None
    model = build_model(cfg.model, t, tree, config.get("anchors"), config.get("flat_classes"))
    optimizer = build_optimizer(param_groups(model, t.weight_decay), t)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seen, run_id, restored = state["step"], state["seen"], state.get("run_id") or run_id, True
        if worker is not None:
            ckpt_io.set_rng_state(worker["rng"])
    elif cfg.model.init_weights:
        warm = ckpt_io.warm_start(model, cfg.model.init_weights, cfg.storage.options, config.get("tracking_uri"))
        log.info("warm start: %s", warm)
    model = prepare_for_training(model, t)
    precision = train_precision(t, device)
    log.info("precision: %s (%s)", precision.name, precision.reason)
    model = ray.train.torch.prepare_model(model)  # DDP on >1 worker (gloo on CPU, NCCL on GPU)
    core = model.module if hasattr(model, "module") else model

    # Loss: darknet's region loss for detectors, (hierarchical) cross-entropy for the classifier.
    tree_dev = tree.to(device) if tree is not None else None
    loss_fn, flat_of_node = None, None
    if config.get("flat_classes"):  # YOLOv1 / Table 2: tree nodes -> the flat classes
        flat_of_node = flat_label_map(config["tree"]["parents"], config["flat_classes"]).to(device)
    if core.detection is not None:
        loss_fn = DetectionLoss(core.detection.spec)
    elif t.mode != "classify":
        loss_fn = RegionLoss(core.anchors.detach().cpu(), core.num_classes,
                             tree=tree_dev if flat_of_node is None else None,
                             variant=t.loss_variant, cls_select=t.cls_select, cls_topk=t.cls_topk,
                             cls_loss_weight=t.cls_loss_weight, location=core.region.spec.location).to(device)

    # Tracking on rank 0: the same run before and after a resume.
    tracker = Tracker(config.get("tracking_uri"), run_id, rank == 0)
    if not restored:
        tracker.log_params(cfg.flat())
        tracker.set_tags({**system_tags(world, str(device)), **config.get("tags", {}), "warm_start": warm or "none",
                          "precision": f"{precision.name} ({precision.reason})"})
        tracker.log_text(cfg.to_yaml(), "config.yaml")
        if config.get("anchors"):
            tracker.log_dict({"anchors": config["anchors"]}, "anchors.json")
    tracker.log_metrics({"resumed_from_step": step}, step=step)

    micro = sum(counts.values())
    stop = min(t.max_steps, config.get("stop_after") or t.max_steps)
    progress_out = ProgressSender(config.get("progress_queue") if rank == 0 else None)

    sums: dict[str, float] = defaultdict(float)
    window_start, window_steps, window_cut, window_unmapped = time.perf_counter(), 0, 0, 0
    batches.wait_s = 0.0
    while step < stop:
        size = t.input_size if core.fixed_input else multiscale_size(step, t)
        lr = learning_rate(step, t, world)
        set_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        for i in range(t.subdivisions):
            batch = batches.next(size)
            x = batch["image"].to(device, non_blocking=True)
            seen += micro * world  # darknet counts this batch before computing its loss
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if i == t.subdivisions - 1 or world == 1 else model.no_sync()
            with sync:
                out = forward(model, x, t, precision)
                if loss_fn is None:
                    parts = classify_loss(out, batch["image_label"].to(device), tree_dev)
                else:
                    targets = {k: batch[k].to(device) for k in ("boxes", "labels", "image_label")}
                    if flat_of_node is not None:  # tree nodes -> the flat classes (YOLOv1, Table 2)
                        boxed = targets["labels"] >= 0
                        targets["labels"] = torch.where(boxed, flat_of_node[targets["labels"].clamp(min=0)], -1)
                        window_unmapped += int((boxed & (targets["labels"] < 0)).sum())
                    parts = loss_fn(out, targets, seen)
                (parts["total"] / t.subdivisions).backward()
            window_cut += int(batch["cut_boxes"].sum())
            for k, v in parts.items():
                sums[k] += float(v.detach()) / t.subdivisions
        optimizer.step()
        step += 1
        window_steps += 1

        progress: dict[str, Any] = {}
        if step % t.log_every == 0 or step == stop:
            elapsed = time.perf_counter() - window_start
            metrics = {f"loss_{k}": v / window_steps for k, v in sums.items()}
            metrics.update({
                "lr": lr, "input_size": size, "seen": seen, "boxes_cut": window_cut,
                **({"boxes_unmapped": window_unmapped} if flat_of_node is not None else {}),
                "images_per_s": window_steps * t.batch_size * world / elapsed,
                "data_wait_fraction": batches.wait_s / elapsed,
            })
            tracker.log_metrics(metrics, step=step)
            # The same window for the driver's console (see pipelines/train/progress.py).
            progress = {**metrics, "step": step, "window_steps": window_steps, "step_s": elapsed / window_steps}
            progress_out.send(progress)
            sums.clear()
            window_start, window_steps, window_cut, window_unmapped = time.perf_counter(), 0, 0, 0
            batches.wait_s = 0.0

        if t.eval_every and step % t.eval_every == 0 and rank == 0 and config.get("preview"):
            log_predictions(core, config["preview"], cfg.eval, tree_dev if flat_of_node is None else None, tracker,
                            step, device)

        # Every worker reports at the same steps (a report is a collective in Ray Train), and only
        # with a checkpoint: each report waits for the controller's poll (progress.py says why).
        if step % t.checkpoint_every == 0 or step == stop:
            with tempfile.TemporaryDirectory() as d:
                state = None
                if rank == 0:
                    state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                             "seen": seen, "run_id": run_id, "schedule": schedule_of(t)}
                ckpt_io.write_checkpoint(d, rank, {"position": batches.position(), "step": step}, state)
                tracker.flush()  # the logged metrics are durable before the checkpoint is
                ray.train.report({**progress, "step": step, "seen": seen, "lr": lr},
                                 checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"checkpoint_{step:09d}")
    batches.close()
    progress_out.close()
    tracker.flush()  # the driver ends the run after the fit (tracking.end_run)
