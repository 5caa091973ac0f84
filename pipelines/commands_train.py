"""`y9k train`: Ray Train joint training on the ingested shards (see pipelines.train.stage)."""

from __future__ import annotations

import argparse
import logging

from pipelines.cli import add_config_args, load_cli_config

log = logging.getLogger("y9k")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with Ray Train (classification, detection or joint YOLO9000), resumable",
        description="Train on the training shards under <storage.root>/shards (every '*-train' directory) with a "
        "TorchTrainer: train.mode classify | detect | joint, train.num_workers workers, checkpoints every "
        "train.checkpoint_every steps to the output directory, MLflow logging from rank 0. Running the same "
        "command again resumes from the latest checkpoint (same step, lr schedule and MLflow run).",
    )
    add_config_args(p)
    p.add_argument("--shards", nargs="+", metavar="DIR",
                   help="shard directories (default: every '*-train' one under <storage.root>/shards)")
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
    from pipelines.commands_data import _load_tree
    from pipelines.errors import PipelineError
    from pipelines.stages import ensure_ray
    from pipelines.stages.anchors import shard_dirs
    from pipelines.train.stage import run_train

    cfg = load_cli_config(args)
    opts = cfg.storage.options
    root = storage.normalize(cfg.storage.root)
    shards = args.shards or [d for d in shard_dirs(root, opts) if d.rstrip("/").endswith("-train")]
    if not shards:
        raise PipelineError(f"train: no '*-train' shard directories under {storage.redact_uri(root)}/shards; "
                            "run `y9k ingest` first or pass --shards")
    tree = _load_tree(cfg, args.tree)
    anchors_uri = args.anchors or storage.join(root, "anchors", "anchors.json")
    anchors = None
    if storage.exists(anchors_uri, opts):
        anchors = storage.read_json(anchors_uri, opts).get("anchors")
    elif args.anchors:
        raise PipelineError(f"train: anchors file {storage.redact_uri(anchors_uri)} not found")
    out = args.out or storage.join(root, "train", cfg.train.mode)
    ensure_ray(cfg)
    res = run_train(cfg, shards, tree, anchors, out, stop_after=args.stop_after)
    state = "already complete" if res.skipped else f"step {res.step}/{cfg.train.max_steps}"
    print(f"train: {state}; checkpoint {res.checkpoint_uri}; MLflow run {res.run_id}")
    return 0
