"""pipelines.layout: the one table of split roles, read alike by the job and the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from pipelines.cli import main
from pipelines.layout import ANCHORS, EVALUATE, Layout
from pipelines.shards import SHARD_SCHEMA, write_committed
from tests.conftest import shared_path

SPLITS = {"coco-train": "detection", "voc-trainval": "detection", "imagenet-train": "classification",
          "imagenet_det-val": "detection", "coco-val": "detection"}


def _shards(root: Path) -> None:
    """One committed directory per split, one row each (only the `kind` column is ever read here)."""
    for name, kind in SPLITS.items():
        row = {"image_id": f"{name}/0", "dataset": name.split("-")[0], "split": name.split("-")[1], "kind": kind,
               "source_uri": "x", "image": b"", "orig_width": 1, "orig_height": 1, "width": 1, "height": 1,
               "boxes": [], "box_nodes": [], "box_labels": [], "image_node": -1, "image_label": ""}
        write_committed(str(root / "shards" / name), [pa.Table.from_pylist([row], schema=SHARD_SCHEMA)])
    (root / "shards" / "imagenet-train-partial").mkdir()  # no manifest: never picked


def test_roles_pick_committed_directories(tmp_path):
    _shards(tmp_path)
    layout = Layout(str(tmp_path))
    names = {role: [Path(d).name for d in layout.splits_for(role)] for role in (ANCHORS, EVALUATE)}
    assert names == {ANCHORS: ["coco-train", "voc-trainval"], EVALUATE: ["imagenet_det-val"]}
    assert [Path(d).name for d in layout.train_splits("detect")] == ["coco-train", "voc-trainval"]
    assert [Path(d).name for d in layout.train_splits("classify")] == ["imagenet-train"]
    assert [Path(d).name for d in layout.train_splits("joint")] == ["coco-train", "imagenet-train", "voc-trainval"]


def test_train_command_reads_the_splits_the_job_reads(ray_local, tmp_path, capsys):
    """`y9k train` in detect mode: coco-train and voc-trainval, as the job's train stage (it used
    to take every '*-train' directory: classification shards in, VOC out). The shards hold too
    few rows for a batch, so the command stops before training with a message naming them."""
    _shards(tmp_path)
    tree = shared_path("darknet", "9k.tree")
    rc = main(["train", "--set", f"storage.root={tmp_path}", "--set", "train.mode=detect", "--set",
               "train.num_workers=1", "--tree", str(tree)])
    err = capsys.readouterr().err
    assert rc == 1, err
    named = err[err.index("the shards ("):]
    assert f"{tmp_path}/shards/coco-train, {tmp_path}/shards/voc-trainval)" in named, err
    assert "imagenet" not in named and "coco-val" not in named, err


def test_train_dry_run_plans_without_starting_ray(tmp_path):
    """`y9k train --dry-run` in a fresh process: the splits, rows and CPUs per stream of the local
    instance training would start, and where it would start, with Ray never started (the first
    version asked the cluster for its CPUs and failed outside a process that had started Ray)."""
    _shards(tmp_path)
    code = ("import sys, ray; from pipelines.cli import main; rc = main(sys.argv[1:]); "
            "print('ray initialized:', ray.is_initialized()); sys.exit(rc)")
    res = subprocess.run(
        [sys.executable, "-c", code, "train", "--set", f"storage.root={tmp_path}", "--set", "train.mode=detect",
         "--set", "train.num_workers=1", "--set", "train.batch_size=2", "--set", "train.subdivisions=1",
         "--tree", str(shared_path("darknet", "9k.tree")), "--dry-run"],
        capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert f"train: detect mode on {tmp_path}/shards/coco-train, {tmp_path}/shards/voc-trainval\n" in out, out
    assert "train: rows {'detection': 2}" in out and "train: CPUs per data stream: {'det': " in out, out
    assert f"train: run directory {tmp_path}/train/detect: starts at step 0 of " in out, out
    assert "ray initialized: False" in out
