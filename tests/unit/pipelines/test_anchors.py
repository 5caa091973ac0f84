"""Anchors stage: boxes from committed shards (no image decoding) -> anchors, curve, plot, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines import manifest
from pipelines.config import load_config
from pipelines.errors import StageError
from pipelines.layout import ANCHORS, Layout
from pipelines.shards import SHARD_SCHEMA, write_committed
from pipelines.stages.anchors import run_anchors
from tests.conftest import shared_path
from yolo_core.kmeans import kmeans_iou


def _write_shards(root: Path, name: str, wh: np.ndarray, per_image: int = 3) -> None:
    """Shards in the contract schema; the image column holds bytes that are not an image at all,
    so any attempt to decode them would fail."""
    rows = []
    for i in range(0, len(wh), per_image):
        chunk = wh[i:i + per_image]
        rows.append({"image_id": f"coco/train/{i}", "dataset": "coco", "split": "train", "kind": "detection",
                     "source_uri": "x", "image": b"not decodable", "orig_width": 640, "orig_height": 480,
                     "width": 256, "height": 192, "boxes": [[0.5, 0.5, float(w), float(h)] for w, h in chunk],
                     "box_nodes": [0] * len(chunk), "box_labels": ["dog"] * len(chunk), "image_node": -1,
                     "image_label": ""})
    rows.append({**rows[0], "image_id": "imagenet/train/x", "kind": "classification", "boxes": [],
                 "box_nodes": [], "box_labels": []})
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    half = table.num_rows // 2
    write_committed(str(root / "shards" / name), [table.slice(0, half), table.slice(half)])


@pytest.fixture()
def voc_wh() -> np.ndarray:
    d = np.loadtxt(shared_path("voc2007", "boxes_trainval.csv"), delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    # Normalize by a nominal 500x375 image, as the shards store fractions of the image.
    return np.stack([(d[:, 2] - d[:, 0]) / 500, (d[:, 3] - d[:, 1]) / 375], axis=1)


def test_anchors_stage_on_shards(ray_local, tmp_path, voc_wh):
    half = len(voc_wh) // 2
    _write_shards(tmp_path, "coco-train", voc_wh[:half])
    _write_shards(tmp_path, "voc-trainval", voc_wh[half:])
    (tmp_path / "shards" / "half-written").mkdir()  # no manifest: not a shard directory
    # Evaluation and validation boxes (all 90% of the image) must not shape the priors.
    _write_shards(tmp_path, "imagenet_det-val", np.full((30, 2), 0.9))
    _write_shards(tmp_path, "coco-val", np.full((30, 2), 0.9))
    cfg = load_config("demo", [f"storage.root={tmp_path}", "anchors.k=5", "anchors.k_max=6", "anchors.input_size=416",
                               "anchors.restarts=3"])
    assert [Path(d).name for d in Layout.of(cfg.storage).splits_for(ANCHORS)] == ["coco-train", "voc-trainval"]
    res = run_anchors(cfg.anchors, cfg.storage, cfg.ray)
    print("\n" + res.summary())
    # The same clustering on the same boxes (stored as float32; row order may differ, so the
    # k-means++ draws may too: compare within a tolerance).
    want = kmeans_iou(voc_wh.astype(np.float32), 5, restarts=3, seed=0)
    np.testing.assert_allclose(res.anchors, want.centroids * 13, rtol=0.02)  # 416 / 32 = 13 cells
    assert res.avg_iou == pytest.approx(want.avg_iou, abs=0.002) and res.avg_iou > 0.6
    assert 0 < res.best_possible_recall <= 1 and res.num_boxes == len(voc_wh)
    out = tmp_path / "anchors"
    saved = json.loads(Path(Layout.of(cfg.storage).anchors_json).read_text())  # where `y9k train` reads it
    assert saved["anchors"] == res.anchors and saved["darknet"].startswith("anchors = ")
    curve = json.loads((out / "curve.json").read_text())
    assert [c["k"] for c in curve] == list(range(1, 7))
    assert all(b["avg_iou"] > a["avg_iou"] for a, b in zip(curve, curve[1:]))
    with Image.open(out / "curve.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert manifest.read_manifest(str(out)).counts["boxes"] == len(voc_wh)
    again = run_anchors(cfg.anchors, cfg.storage, cfg.ray)
    assert again.skipped and again.anchors == res.anchors


def test_anchors_without_shards_is_a_clear_error(tmp_path):
    cfg = load_config("demo", [f"storage.root={tmp_path}"])
    with pytest.raises(StageError, match="run `y9k ingest` first"):
        run_anchors(cfg.anchors, cfg.storage, cfg.ray)
