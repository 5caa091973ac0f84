"""What the commands share: the --config / --set options and loading the WordTree a command names."""

from __future__ import annotations

import argparse

from pipelines.config import StorageConfig


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--config and --set, shared by every command that reads the pipeline config."""
    p.add_argument("--config", "-c", default="demo",
                   help="YAML config: a path, or a bundled name (demo, yolo9000). Default: demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=32 (repeatable; values are YAML)")


def load_cli_config(args: argparse.Namespace):
    from pipelines.config import load_config

    return load_config(args.config, args.overrides)


def load_tree(storage_cfg: StorageConfig, path: str | None):
    """The WordTree: ``path`` (a tree.parquet or darknet .tree file), else the one `y9k wordtree`
    wrote under storage.root (see :mod:`pipelines.layout`)."""
    from pipelines import storage
    from pipelines.errors import PipelineError
    from pipelines.layout import Layout
    from wordtree_build.tree import WordTree

    opts = storage_cfg.options
    uri = path or Layout.of(storage_cfg).tree
    if not storage.exists(uri, opts):
        raise PipelineError(f"WordTree {storage.redact_uri(uri)} not found: run `y9k wordtree` first or pass --tree")
    if uri.endswith(".tree"):
        names = uri[: -len(".tree")] + ".names"
        return WordTree.from_darknet(uri, names if storage.exists(names, opts) else None, opts)
    return WordTree.from_parquet(uri, opts)
