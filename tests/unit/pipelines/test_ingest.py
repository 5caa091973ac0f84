"""Ingest stage on real data (COCO subset, ImageNet DET val2 XML), sample data, and idempotence."""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import manifest
from pipelines.config import load_config
from pipelines.errors import StageError
from pipelines.layout import Layout, point_config_at_sample_data
from pipelines.readers import LabelMapper
from pipelines.shards import CLASSIFICATION, DETECTION, SHARD_SCHEMA, shard_files
from pipelines.stages.ingest import (
    coco_source,
    det_source,
    ingest_source,
    run_ingest,
    sources_from_config,
)
from tests.conftest import shared_path
from wordtree_build.labelmaps import coco_wnid
from wordtree_build.tree import WordTree


@pytest.fixture(scope="module")
def tree9k() -> WordTree:
    d = shared_path("darknet")
    return WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names"))


def _cfg(root: Path, *extra: str):
    return load_config("demo", [f"storage.root={root}", "data.max_side=256", *extra])


def _read_rows(shards_uri: str) -> list[dict]:
    return [r for f in shard_files(shards_uri) for r in pq.read_table(f).to_pylist()]


def _read_rejects(uri: str) -> list[dict]:
    return pq.read_table(uri).to_pylist()


def test_coco_mini_every_annotation_accounted(ray_local, tree9k, tmp_path):
    coco = shared_path("coco_mini")
    cfg = _cfg(tmp_path)
    res = run_ingest(cfg.data, cfg.storage, cfg.ray, tree9k, [coco_source(str(coco / "train2017"), "train"),
                                   coco_source(str(coco / "val2017"), "val")])
    for r, split in zip(res.sources, ("train", "val")):
        data = json.loads((coco / "annotations" / f"instances_{split}2017.json").read_text())
        assert r.images_in == len(data["images"])
        assert r.objects_in == len(data["annotations"])
        assert r.images_in == r.images_accepted + r.images_rejected
        assert r.objects_in == r.boxes_accepted + r.objects_rejected
        rows = _read_rows(r.shards_uri)
        rejects = _read_rejects(r.rejects_uri)
        assert len(rows) == r.images_accepted
        assert sum(len(x["boxes"]) for x in rows) == r.boxes_accepted
        # Every annotation id appears exactly once: as a kept box or as a reject row.
        obj_rejects = [x for x in rejects if x["level"] == "object"]
        assert len(obj_rejects) == r.objects_rejected
        assert len({x["record"] for x in obj_rejects}) == len(obj_rejects)
        assert Counter(x["reason"] for x in rejects) == Counter(r.rejects_by_reason)
        # Crowd annotations and the 7 COCO classes without a 9k.tree node are the real rejects here.
        crowd = sum(1 for a in data["annotations"] if a["iscrowd"])
        assert r.rejects_by_reason.get("crowd annotation", 0) == crowd
        unmapped_cats = {c["id"] for c in data["categories"] if coco_wnid(c["name"]) not in tree9k}
        n_unmapped = sum(1 for a in data["annotations"] if a["category_id"] in unmapped_cats and not a["iscrowd"])
        assert r.rejects_by_reason.get("unmapped label", 0) >= n_unmapped > 0
        by_id = {im["id"]: im for im in data["images"]}
        for row in rows:
            assert row["dataset"] == "coco" and row["split"] == split and row["kind"] == "detection"
            im = by_id[int(row["image_id"].rsplit("/", 1)[1])]
            assert (row["orig_width"], row["orig_height"]) == (im["width"], im["height"])
            assert max(row["width"], row["height"]) <= 256
            with Image.open(io.BytesIO(row["image"])) as dec:
                assert dec.size == (row["width"], row["height"]) and dec.format == "JPEG"
            b = np.array(row["boxes"], dtype=np.float64).reshape(-1, 4)
            assert np.all(b[:, :2] >= 0) and np.all(b[:, :2] <= 1) and np.all(b[:, 2:] > 0) and np.all(b[:, 2:] <= 1)
            for node, label in zip(row["box_nodes"], row["box_labels"]):
                assert tree9k.wnids[node] == coco_wnid(label)
            assert row["image_node"] == -1 and row["image_label"] == ""
    # The schema of the contract, exactly.
    assert pq.read_schema(shard_files(res.sources[0].shards_uri)[0]).remove_metadata() == SHARD_SCHEMA


def test_coco_box_matches_annotation(ray_local, tree9k, tmp_path):
    """A kept box is the annotation's [x, y, w, h] normalized to (cx, cy, w, h)."""
    coco = shared_path("coco_mini")
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    c = _cfg(tmp_path)
    res = run_ingest(c.data, c.storage, c.ray, tree9k, [coco_source(str(coco / "val2017"), "val")])
    rows = {r["image_id"]: r for r in _read_rows(res.sources[0].shards_uri)}
    by_id = {im["id"]: im for im in data["images"]}
    checked = 0
    for a in data["annotations"]:
        row = rows.get(f"coco/val/{a['image_id']}")
        if row is None or a["iscrowd"]:
            continue
        im = by_id[a["image_id"]]
        x, y, w, h = a["bbox"]
        want = [(x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"]]
        assert any(np.allclose(b, want, atol=1e-3) for b in row["boxes"]), (a["id"], want)
        checked += 1
    assert checked > 100


def test_det_val2_every_xml_parses_and_missing_images_are_rejects(tree9k, tmp_path):
    """9,917 real XML files without images: each parses, each image is a 'missing image' reject."""
    ann = shared_path("imagenet", "det_val2", "Annotations")
    n_xml = len(list(ann.glob("*.xml")))
    # No image reaches Ray here, so the stage runs on the driver only.
    c = _cfg(tmp_path)
    res = ingest_source(c.data, c.storage, tree9k, det_source(str(ann.parent)), mapper=LabelMapper(tree9k))
    assert res.images_in == n_xml == 9917
    assert res.objects_in == 26782
    assert res.rejects_by_reason == {"missing image": 9917, "image rejected": 26782}
    assert res.images_accepted == 0 and res.files == []
    rejects = _read_rejects(res.rejects_uri)
    assert len(rejects) == 9917 + 26782
    assert {r["reason"] for r in rejects if r["level"] == "image"} == {"missing image"}


def test_det_val2_with_generated_images(ray_local, tree9k, tmp_path):
    """A sample of the real XML files with images of the sizes they state: every box is kept."""
    import xml.etree.ElementTree as ET

    ann = shared_path("imagenet", "det_val2", "Annotations")
    files = sorted(ann.glob("*.xml"))
    picked = random.Random(0).sample(files, 40)
    (tmp_path / "det" / "Annotations").mkdir(parents=True)
    (tmp_path / "det" / "Data").mkdir()
    n_obj = 0
    for f in picked:
        shutil.copy(f, tmp_path / "det" / "Annotations" / f.name)
        root = ET.parse(f).getroot()
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        n_obj += len(root.findall("object"))
        Image.new("RGB", (w, h), (90, 120, 150)).save(tmp_path / "det" / "Data" / f"{f.stem}.JPEG", quality=80)
    c = _cfg(tmp_path / "out")
    res = ingest_source(c.data, c.storage, tree9k, det_source(str(tmp_path / "det")),
                        mapper=LabelMapper(tree9k))
    assert res.images_in == res.images_accepted == 40
    assert res.objects_in == n_obj
    assert res.boxes_accepted + res.objects_rejected == n_obj
    # Real ILSVRC boxes lie inside their images: nothing but box-level rejects can occur.
    assert res.images_rejected == 0
    rows = _read_rows(res.shards_uri)
    for row in rows:
        assert all(tree9k.wnids[n] == lab for n, lab in zip(row["box_nodes"], row["box_labels"]))


def test_rerun_is_noop_and_interrupted_output_is_invisible(ray_local, tree9k, tmp_path):
    coco = shared_path("coco_mini")
    cfg = _cfg(tmp_path)
    src = coco_source(str(coco / "val2017"), "val")
    first = run_ingest(cfg.data, cfg.storage, cfg.ray, tree9k, [src]).sources[0]
    files = shard_files(first.shards_uri)
    mtimes = {f: Path(f).stat().st_mtime_ns for f in files}
    again = run_ingest(cfg.data, cfg.storage, cfg.ray, tree9k, [src]).sources[0]
    assert again.skipped and again.images_accepted == first.images_accepted
    assert {f: Path(f).stat().st_mtime_ns for f in shard_files(again.shards_uri)} == mtimes
    # A different config is a different output: the stage runs again.
    c = _cfg(tmp_path, "data.jpeg_quality=70")
    other = run_ingest(c.data, c.storage, c.ray, tree9k, [src]).sources[0]
    assert not other.skipped
    # A run cut before its manifest leaves a directory that readers refuse.
    Path(manifest.manifest_uri(other.shards_uri)).unlink()
    with pytest.raises(StageError, match="no manifest.json"):
        shard_files(other.shards_uri)


def test_shard_size_target(ray_local, tree9k, tmp_path):
    coco = shared_path("coco_mini")
    cfg = _cfg(tmp_path, "data.shard_mb=0.25")
    r = run_ingest(cfg.data, cfg.storage, cfg.ray, tree9k, [coco_source(str(coco / "train2017"), "train")]).sources[0]
    sizes = [f["bytes"] for f in r.files]
    assert len(sizes) >= 3
    assert sum(f["rows"] for f in r.files) == r.images_accepted
    # Parts are near the target; a part may hold one bundle of blocks beyond it.
    assert max(sizes) < 3 * 0.25 * (1 << 20)


def test_sample_data_tiny(ray_local, tree9k, tmp_path):
    sample_data = pytest.importorskip("pipelines.sample_data")
    cfg = _cfg(tmp_path)
    sample_data.generate(Layout.of(cfg.storage).sample, seed=0, scale="tiny")
    point_config_at_sample_data(cfg)
    res = run_ingest(cfg.data, cfg.storage, cfg.ray, tree9k, sources_from_config(cfg.data, cfg.storage.options))
    by = {r.source: r for r in res.sources}
    assert set(by) == {"coco-train", "coco-val", "imagenet-train", "imagenet_det-val"}
    for r in res.sources:
        assert r.images_in > 0
        assert r.images_in == r.images_accepted + r.images_rejected
        assert r.objects_in == r.boxes_accepted + r.objects_rejected
    cls_rows = _read_rows(by["imagenet-train"].shards_uri)
    assert cls_rows and all(r["kind"] == CLASSIFICATION for r in cls_rows)
    assert {r["kind"] for r in _read_rows(by["coco-train"].shards_uri)} == {DETECTION}
    assert {r["kind"] for r in _read_rows(by["imagenet_det-val"].shards_uri)} == {DETECTION}
    for r in cls_rows:
        assert tree9k.wnids[r["image_node"]] == r["image_label"] == r["image_id"].rsplit("/", 1)[1].split("_")[0]
        assert r["boxes"] == [] and r["box_nodes"] == []


def test_cli_ingest_then_anchors(ray_local, tmp_path, capsys, caplog):
    from pipelines.cli import main

    coco, dk = shared_path("coco_mini"), shared_path("darknet")
    common = ["--config", "demo", "--set", f"storage.root={tmp_path}", "--set", f"data.coco_val={coco / 'val2017'}"]
    with caplog.at_level(logging.INFO, logger="pipelines.stages.ingest"):
        assert main(["ingest", *common, "--tree", str(dk / "9k.tree")]) == 0
    out = capsys.readouterr().out
    assert "coco-val" in out and "rejects by reason:" in out and "unmapped label" in out
    assert out.count("images in") == 1  # the table is printed once; the log gets its totals in a line
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest: ")]
    assert "1 sources (0 up to date)" in line and "unmapped label" in line and "images in" not in line
    # coco-val is validation data: the anchors never default to it, only when named.
    assert main(["anchors", *common]) == 1
    assert "no ingested detection training shards" in capsys.readouterr().err
    assert main(["anchors", *common, "--set", "anchors.k_max=5", "--set", "anchors.restarts=2",
                 "--shards", str(tmp_path / "shards" / "coco-val")]) == 0
    out = capsys.readouterr().out
    assert "anchors = " in out and (tmp_path / "anchors" / "curve.png").exists()
    # Strict mode: exit 1 and a one-line message naming the file, record and field; no traceback.
    assert main(["ingest", *common, "--set", f"storage.root={tmp_path / 's'}", "--tree", str(dk / "9k.tree"),
                 "--strict"]) == 1
    err = capsys.readouterr().err
    assert "instances_val2017.json: record annotation" in err and "Traceback" not in err
