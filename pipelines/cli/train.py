"""`y9k train`: Ray Train joint training on the ingested shards (see pipelines.train.stage)."""

from __future__ import annotations

import argparse
import logging

from pipelines.cli.common import add_config_args, load_cli_config, load_tree

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
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.errors import PipelineError
    from pipelines.job import adapt_config_to_model, flat_classes_of
    from pipelines.layout import TRAIN_ROLES, Layout, split_names
    from pipelines.shards import shard_files
    from pipelines.stages import ensure_ray
    from pipelines.train.data import cpus_needed
    from pipelines.train.stage import run_train

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
    ensure_ray(cfg.ray, cpus_needed(cfg.train))
    # YOLOv1: the evaluated classes of `y9k wordtree`'s output, flat
    flat = flat_classes_of(cfg.model, tree, layout.wordtree, opts)
    res = run_train(cfg, shards, tree, anchors, out, stop_after=args.stop_after, flat_classes=flat)
    state = "already complete" if res.skipped else f"step {res.step}/{cfg.train.max_steps}"
    print(f"train: {state}; checkpoint {res.checkpoint_uri}; MLflow run {res.run_id}")
    return 0
