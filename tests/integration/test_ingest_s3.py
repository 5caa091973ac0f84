"""Ingest from and to an S3 API (moto server on loopback, through s3fs): the same rows as on disk."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import storage
from pipelines.config import load_config
from pipelines.readers import LabelMapper, Source
from pipelines.shards import shard_files
from pipelines.stages.anchors import run_anchors
from pipelines.stages.ingest import ingest_source
from tests.conftest import shared_path
from wordtree_build.tree import WordTree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free loopback port, dummy keys, AWS_ENDPOINT_URL set before Ray starts."""
    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("datasets", "pipeline"):
        s3.create_bucket(Bucket=bucket)
    yield endpoint
    if started_ray:
        ray.shutdown()
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, 7):
        w, h = (320, 240) if i % 2 else (200, 300)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
        (root / "images" / f"{i}.jpg").write_bytes(buf.getvalue())
        images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
        anns += [{"id": 10 * i + j, "image_id": i, "category_id": 18, "iscrowd": 0,
                  "bbox": [5.0 * j, 4.0 * j, 30.0 + 5 * j, 40.0 + 3 * j]} for j in range(1 + i % 3)]
    anns.append({"id": 999, "image_id": 77, "category_id": 18, "iscrowd": 0, "bbox": [1, 1, 5, 5]})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                     "categories": [{"id": 18, "name": "dog"}]}))


def test_ingest_s3_same_rows_as_local(s3_endpoint, tmp_path):
    d = shared_path("darknet")
    tree = WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names"))
    _dataset(tmp_path / "coco")
    opts = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    for f in sorted((tmp_path / "coco").rglob("*.*")):
        storage.write_bytes(f"s3://datasets/coco/{f.relative_to(tmp_path / 'coco')}", f.read_bytes(), opts)

    local_cfg = load_config("demo", [f"storage.root={tmp_path / 'out'}", "data.max_side=128"])
    local = ingest_source(local_cfg.data, local_cfg.storage, tree, Source("coco", "train", images=str(tmp_path / "coco" / "images"),
                                                  annotations=str(tmp_path / "coco" / "instances.json")),
                          mapper=LabelMapper(tree))
    s3_cfg = load_config("demo", ["storage.root=s3://pipeline/y9k", "data.max_side=128"])
    s3_cfg.storage.options = opts
    src = Source("coco", "train", images="s3://datasets/coco/images", annotations="s3://datasets/coco/instances.json")
    remote = ingest_source(s3_cfg.data, s3_cfg.storage, tree, src, mapper=LabelMapper(tree))
    assert remote.shards_uri == "s3://pipeline/y9k/shards/coco-train"
    assert (remote.images_accepted, remote.boxes_accepted, remote.objects_rejected) == (6, 12, 1)

    def rows(uri: str, options=None) -> list[dict]:
        out = []
        for f in shard_files(uri, options):
            fs, path = storage.filesystem(f, options)
            out += pq.read_table(path, filesystem=fs).to_pylist()
        return sorted(out, key=lambda r: r["image_id"])

    got, want = rows(remote.shards_uri, opts), rows(local.shards_uri)
    assert [r["source_uri"] for r in got] == [f"s3://datasets/coco/images/{i}.jpg" for i in range(1, 7)]
    strip = [{k: v for k, v in r.items() if k != "source_uri"} for r in got]
    assert strip == [{k: v for k, v in r.items() if k != "source_uri"} for r in want]
    rejects = pq.read_table(storage.filesystem(remote.rejects_uri, opts)[1],
                            filesystem=storage.filesystem(remote.rejects_uri, opts)[0]).to_pylist()
    assert [(r["record"], r["reason"]) for r in rejects] == [("annotation 999", "unknown image id")]
    # Re-running against the bucket is a no-op; the anchors stage reads the shards from S3 too.
    assert ingest_source(s3_cfg.data, s3_cfg.storage, tree, src, mapper=LabelMapper(tree)).skipped
    s3_cfg.anchors.k, s3_cfg.anchors.k_max, s3_cfg.anchors.restarts = 2, 3, 2
    anchors = run_anchors(s3_cfg.anchors, s3_cfg.storage, s3_cfg.ray)
    assert anchors.num_boxes == 12 and len(anchors.anchors) == 2
    assert storage.exists("s3://pipeline/y9k/anchors/curve.png", opts)
