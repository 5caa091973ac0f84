"""`y9k train`: Ray Train joint training on the ingested shards (see pipelines.train.stage)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from pipelines.cli.common import add_config_args, load_cli_config, load_tree

if TYPE_CHECKING:
    from pipelines.train.stage import TrainPlan

log = logging.getLogger("y9k")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with Ray Train (classification, detection or joint YOLO9000), resumable",
        description="Train on the training shards under <storage.root>/shards (the splits train.mode uses, as "
        "`y9k run` does: coco-train and voc-trainval for detection, imagenet-train for classification) with a "
        "TorchTrainer: train.mode classify | detect | joint, train.num_workers workers, checkpoints every "
        "train.checkpoint_every steps to the output directory, MLflow logging from rank 0. Running the same "
        "command again resumes from the latest checkpoint (same step, lr schedule and MLflow run).",
    )
    add_config_args(p)
    p.add_argument("--shards", nargs="+", metavar="DIR",
                   help="shard directories (default: the committed training splits of train.mode under "
                   "<storage.root>/shards)")
    p.add_argument("--tree", help="WordTree: a tree.parquet or darknet .tree file "
                   "(default: <storage.root>/wordtree/tree.parquet)")
    p.add_argument("--anchors", help="anchors.json (default: <storage.root>/anchors/anchors.json if present, "
                   "else the model's own anchors)")
    p.add_argument("--out", help="run directory: checkpoints and state (default: <storage.root>/train/<mode>)")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="end this call at STEP with a checkpoint; run again to continue")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be trained (mode, shards and their rows, passes per stream, run "
                   "directory, the step it resumes from) and exit without starting Ray")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.errors import PipelineError
    from pipelines.job import adapt_config_to_model, flat_classes_of
    from pipelines.layout import TRAIN_ROLES, Layout, split_names
    from pipelines.shards import shard_files
    from pipelines.stages import ensure_ray
    from pipelines.train.data import cpus_needed
    from pipelines.train.stage import plan_train, run_train

    cfg = load_cli_config(args)
    for note in adapt_config_to_model(cfg):
        log.info("config: %s", note)
    opts = cfg.storage.options
    layout = Layout.of(cfg.storage)
    shards = args.shards or layout.train_splits(cfg.train.mode)
    if not shards:
        wanted = ", ".join(split_names(*TRAIN_ROLES[cfg.train.mode]))
        raise PipelineError(f"train: no committed {cfg.train.mode} training shards ({wanted}) under "
                            f"{storage.redact_uri(layout.shards)}; run `y9k ingest` first or pass --shards")
    shard_files(shards, opts)  # an interrupted ingest is refused here, before Ray starts
    tree = load_tree(cfg.storage, args.tree)
    anchors_uri = args.anchors or layout.anchors_json
    anchors = None
    if storage.exists(anchors_uri, opts):
        anchors = storage.read_json(anchors_uri, opts).get("anchors")
    elif args.anchors:
        raise PipelineError(f"train: anchors file {storage.redact_uri(anchors_uri)} not found")
    out = args.out or layout.train_dir(cfg.train.mode)
    if args.dry_run:
        anchors_from = storage.redact_uri(anchors_uri) if anchors is not None else "the model's own"
        return _print_plan(plan_train(cfg, shards, out), cfg.train.max_steps, anchors_from)
    ensure_ray(cfg.ray, cpus_needed(cfg.train))
    # YOLOv1: the evaluated classes of `y9k wordtree`'s output, flat
    flat = flat_classes_of(cfg.model, tree, layout.wordtree, opts)
    res = run_train(cfg, shards, tree, anchors, out, stop_after=args.stop_after, flat_classes=flat)
    state = "already complete" if res.skipped else f"step {res.step}/{cfg.train.max_steps}"
    print(f"train: {state}; checkpoint {res.checkpoint_uri}; MLflow run {res.run_id}")
    return 0


def _print_plan(plan: TrainPlan, max_steps: int, anchors_from: str) -> int:
    """``y9k train --dry-run``: the lines training would log as it starts, and where it would start."""
    from pipelines import storage

    out = storage.redact_uri(plan.out_uri)
    if plan.complete_step is not None:
        print(f"train: {out} is complete (step {plan.complete_step}) for this config: nothing to train")
        return 0
    for line in plan.describe():
        print(f"train: {line}")
    print(f"train: anchors: {anchors_from}")
    if not plan.has_checkpoint:
        start = "starts at step 0"
    elif plan.resume_step is not None:
        start = f"resumes from the checkpoint of step {plan.resume_step}"
    else:
        start = "resumes from its latest checkpoint"
    print(f"train: run directory {out}: {start} of {max_steps}")
    return 0
