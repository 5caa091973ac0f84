"""Data commands: `y9k ingest` (datasets -> Parquet shards + rejects) and `y9k anchors` (IoU k-means)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from pipelines.cli.common import add_config_args, load_cli_config, load_tree

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.readers import Source

log = logging.getLogger("y9k")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="ingest COCO / ImageNet / ImageNet DET / VOC into WordTree-labelled Parquet shards",
        description="Read the datasets named in the config (data.coco_train, data.coco_val, data.imagenet_train, "
        "data.det_val, data.voc; or the generated sample data when none is set and sample_data.enabled) with "
        "Ray Data, map every label to a WordTree node, and write <storage.root>/shards/<dataset>-<split>/ "
        "(Parquet parts of about data.shard_mb MiB + manifest.json) and <storage.root>/rejects/<dataset>-<split>/"
        "rejects.parquet. Up-to-date outputs are skipped. Prints a summary table and the rejects by reason; the log gets their totals in one line.",
    )
    add_config_args(p)
    p.add_argument("--tree", help="WordTree: a tree.parquet or darknet .tree file "
                   "(default: <storage.root>/wordtree/tree.parquet, written by `y9k wordtree`)")
    p.add_argument("--out", help="output root (default: storage.root)")
    p.add_argument("--strict", action="store_true", help="fail at the first rejected record (data.strict=true)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "anchors",
        help="IoU k-means anchors from the detection shards (the paper's dimension clusters)",
        description="Read the box sizes of the shards (no image decoding), run IoU k-means with the anchors.* "
        "settings and write anchors.json (grid units at anchors.input_size / anchors.stride), curve.json and "
        "curve.png (average IoU for k = 1..anchors.k_max) under <storage.root>/anchors.",
    )
    add_config_args(p)
    p.add_argument("--shards", nargs="+", metavar="DIR",
                   help="shard directories (default: the committed detection training splits under "
                   "<storage.root>/shards, coco-train and voc-trainval; never evaluation data)")
    p.add_argument("--out", help="output directory (default: <storage.root>/anchors)")
    p.set_defaults(func=cmd_anchors)


def _sources(cfg: Config) -> list[Source]:
    """The configured data.* sources, else the sample data (generated here first), as `y9k run` does."""
    from pipelines.errors import PipelineError
    from pipelines.layout import Layout, point_config_at_sample_data, uses_sample_data
    from pipelines.stages.ingest import sources_from_config

    if uses_sample_data(cfg):
        from pipelines.sample_data import generate

        generate(Layout.of(cfg.storage).sample, seed=cfg.sample_data.seed, scale=cfg.sample_data.scale,
                 storage_options=cfg.storage.options, world_name=cfg.sample_data.world)
        point_config_at_sample_data(cfg)
    sources = sources_from_config(cfg.data, cfg.storage.options)
    if not sources:
        raise PipelineError("no dataset configured (data.coco_train, data.imagenet_train, ...) and "
                            "sample_data.enabled is false: nothing to ingest")
    return sources


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.strict:
        args.overrides = [*args.overrides, "data.strict=true"]
    cfg = load_cli_config(args)
    from pipelines.stages.ingest import run_ingest

    # Ray for ingest only (this machine's cores): a `y9k train` later in the same process
    # resizes it (pipelines.stages.ensure_ray).
    result = run_ingest(cfg.data, cfg.storage, cfg.ray, load_tree(cfg.storage, args.tree), _sources(cfg),
                        out_root=args.out)
    print(result.summary_table())
    return 0


def cmd_anchors(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    from pipelines.stages.anchors import run_anchors

    result = run_anchors(cfg.anchors, cfg.storage, cfg.ray, args.shards, out_uri=args.out)
    print(result.summary())
    return 0
