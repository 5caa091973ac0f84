"""Every reject reason from a crafted bad input, accounting, drop_label, strict mode, tar layout."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.config import load_config
from pipelines.readers import LabelMapper, Source, image_record
from pipelines.shards import shard_files
from pipelines.stages.ingest import IngestRejectError, ingest_source
from tests.conftest import shared_path
from wordtree_build.labelmaps import coco_wnid
from wordtree_build.tree import WordTree
from wordtree_build.wordnet import load_wordnet

W, H = 64, 48
CHIHUAHUA = "n02085620"


@pytest.fixture(scope="module")
def tree9k() -> WordTree:
    d = shared_path("darknet")
    return WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names"))


def _jpeg(seed: int, size=(W, H)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cfg(root: Path, *extra: str):
    return load_config("demo", [f"storage.root={root}", *extra])


def _rejects(res) -> list[dict]:
    return pq.read_table(res.rejects_uri).to_pylist()


def _coco_dataset(root: Path) -> Path:
    """Images 1..8 and annotations 1..11, each bad in one documented way (see the comments)."""
    img = root / "images"
    img.mkdir(parents=True)
    (img / "1.jpg").write_bytes(_jpeg(1))
    (img / "2.jpg").write_bytes(b"this is not a JPEG at all" * 10)  # corrupt
    (img / "3.jpg").write_bytes(_jpeg(3)[: len(_jpeg(3)) // 2])  # truncated
    (img / "6.jpg").write_bytes(_jpeg(6))
    (img / "7.jpg").write_bytes(_jpeg(7))
    kite = 38  # a COCO category without a node in 9k.tree (darknet uses sport_kite)
    images = [
        {"id": 1, "file_name": "1.jpg", "width": W, "height": H},
        {"id": 2, "file_name": "2.jpg", "width": W, "height": H},
        {"id": 3, "file_name": "3.jpg", "width": W, "height": H},
        {"id": 4, "file_name": "4.jpg", "width": W, "height": H},  # missing file
        {"id": 1, "file_name": "1.jpg", "width": W, "height": H},  # duplicate id
        {"id": 6, "file_name": "6.jpg", "width": W, "height": H},
        {"id": 7, "file_name": "7.jpg", "width": 100, "height": 100},  # size mismatch
        {"id": 8, "width": W, "height": H},  # no file_name
    ]
    ann = [
        {"id": 1, "image_id": 1, "category_id": 18, "bbox": [10, 10, 20, 20], "iscrowd": 0},  # good
        {"id": 2, "image_id": 1, "category_id": 18, "bbox": [10, 10, 0, 20], "iscrowd": 0},  # zero area
        {"id": 3, "image_id": 1, "category_id": 18, "bbox": [10, 10, 20, -5], "iscrowd": 0},  # negative
        {"id": 4, "image_id": 1, "category_id": 18, "bbox": [50, 10, 40, 20], "iscrowd": 0},  # far outside
        {"id": 5, "image_id": 1, "category_id": 18, "bbox": [-1, 5, 20, 20], "iscrowd": 0},  # clipped, kept
        {"id": 6, "image_id": 1, "category_id": 18, "bbox": [63.5, 5, 1.5, 20], "iscrowd": 0},  # degenerate
        {"id": 7, "image_id": 1, "category_id": 18, "bbox": [5, 5, 30, 30], "iscrowd": 1},  # crowd
        {"id": 1, "image_id": 1, "category_id": 18, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # duplicate id
        {"id": 9, "image_id": 1, "category_id": 18, "bbox": [1, 2, 3], "iscrowd": 0},  # malformed bbox
        {"id": 10, "image_id": 999, "category_id": 18, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unknown image
        {"id": 11, "image_id": 6, "category_id": kite, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unmapped
        {"id": 12, "image_id": 6, "category_id": 18, "bbox": [20, 20, 10, 10], "iscrowd": 0},  # good
        {"id": 13, "image_id": 2, "category_id": 18, "bbox": [20, 20, 10, 10], "iscrowd": 0},  # on corrupt
    ]
    cats = [{"id": 18, "name": "dog", "supercategory": "animal"}, {"id": kite, "name": "kite", "supercategory": "x"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": ann, "categories": cats}))
    return root


def _by_record(rejects: list[dict]) -> dict[str, str]:
    return {r["record"]: r["reason"] for r in rejects}


def test_coco_each_reject_reason(ray_local, tree9k, tmp_path):
    root = _coco_dataset(tmp_path / "coco")
    src = Source("coco", "train", images=str(root / "images"), annotations=str(root / "instances.json"))
    c = _cfg(tmp_path / "out")
    res = ingest_source(c.data, c.storage, tree9k, src, mapper=LabelMapper(tree9k))
    rej = _rejects(res)
    images = {r["record"]: r for r in rej if r["level"] == "image"}
    assert images["image 1"]["reason"] == "duplicate id" and images["image 1"]["field"] == "id"
    assert images["images[7]"]["reason"] == "malformed JSON" and images["images[7]"]["field"] == "file_name"
    assert images["coco/train/2"]["reason"] == "corrupt image"
    assert images["coco/train/3"]["reason"] == "corrupt image" and "truncated" in images["coco/train/3"]["detail"]
    assert images["image 4"]["reason"] == "missing image"
    assert images["image 6"]["reason"] == "unmapped label" and images["image 6"]["field"] == "category_id"
    assert images["coco/train/7"]["reason"] == "size mismatch" and "100x100" in images["coco/train/7"]["detail"]
    assert len(images) == 7
    objects = _by_record([r for r in rej if r["level"] == "object"])
    assert objects == {
        "annotation 2": "zero or negative area", "annotation 3": "zero or negative area",
        "annotation 4": "box outside image", "annotation 6": "degenerate box", "annotation 7": "crowd annotation",
        "annotation 1": "duplicate id", "annotation 9": "malformed JSON",
        "annotation 10": "unknown image id", "annotation 11": "unmapped label",
        "annotation 12": "image rejected", "annotation 13": "image rejected",
    }
    # Every reject row names its source file.
    assert all(r["source"].endswith(("instances.json", ".jpg")) for r in rej)
    # The one accepted image keeps two boxes: the good one and the clipped one.
    assert (res.images_in, res.images_accepted, res.images_rejected) == (8, 1, 7)
    assert (res.objects_in, res.boxes_accepted, res.objects_rejected) == (13, 2, 11)
    (row,) = [r for f in shard_files(res.shards_uri) for r in pq.read_table(f).to_pylist()]
    assert row["image_id"] == "coco/train/1"
    boxes = sorted(row["boxes"])
    np.testing.assert_allclose(boxes[0], [9.5 / W, 15 / H, 19 / W, 20 / H], atol=1e-6)  # clipped at x = 0
    np.testing.assert_allclose(boxes[1], [20 / W, 20 / H, 20 / W, 20 / H], atol=1e-6)


def test_coco_drop_label_keeps_the_image(ray_local, tree9k, tmp_path):
    root = _coco_dataset(tmp_path / "coco")
    src = Source("coco", "train", images=str(root / "images"), annotations=str(root / "instances.json"))
    c = _cfg(tmp_path / "out", "data.unmapped=drop_label")
    res = ingest_source(c.data, c.storage, tree9k, src, mapper=LabelMapper(tree9k))
    rows = {r["image_id"]: r for f in shard_files(res.shards_uri) for r in pq.read_table(f).to_pylist()}
    assert set(rows) == {"coco/train/1", "coco/train/6"}
    assert rows["coco/train/6"]["box_labels"] == ["dog"]
    assert rows["coco/train/6"]["box_nodes"] == [tree9k.index(coco_wnid("dog"))]
    assert res.images_in == res.images_accepted + res.images_rejected
    assert res.objects_in == res.boxes_accepted + res.objects_rejected


def test_malformed_json_file(tree9k, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "bad.json").write_text('{"images": [\n {"id": 1,, }]}')
    src = Source("coco", "val", images=str(tmp_path / "images"), annotations=str(tmp_path / "bad.json"))
    c = _cfg(tmp_path / "out")
    res = ingest_source(c.data, c.storage, tree9k, src, mapper=LabelMapper(tree9k))
    (r,) = _rejects(res)
    assert r["reason"] == "malformed JSON" and r["field"] == "line 2 column 11" and r["record"] == "bad.json"
    assert (res.images_in, res.images_rejected) == (1, 1)


def _xml(name: str, objects: list[tuple[str, tuple]], size=(W, H)) -> str:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size>{objs}</annotation>")


def test_det_xml_reject_reasons(ray_local, tree9k, tmp_path):
    ann, data = tmp_path / "det" / "Annotations", tmp_path / "det" / "Data"
    ann.mkdir(parents=True)
    data.mkdir()
    for i in (1, 2):
        (data / f"img{i}.JPEG").write_bytes(_jpeg(i))
    # img1: a good box, an unknown wnid (not 'n' + 8 digits), a well-formed id WordNet does not know.
    (ann / "img1.xml").write_text(_xml("img1", [(CHIHUAHUA, (5, 5, 30, 30)), ("dog", (1, 1, 9, 9)),
                                                ("n99999999", (2, 2, 8, 8))]))
    (ann / "img2.xml").write_text("<annotation><filename>img2</filename><object><name>x</name>")  # malformed
    (ann / "img3.xml").write_text(_xml("img3", [(CHIHUAHUA, (5, 5, 30, 30))]))  # no image file
    cfg = _cfg(tmp_path / "out", "data.unmapped=drop_label")
    res = ingest_source(cfg.data, cfg.storage, tree9k, Source("imagenet_det", "val", images=str(data), annotations=str(ann)),
                        mapper=LabelMapper(tree9k, wordnet=load_wordnet))
    rej = {r["record"]: r for r in _rejects(res)}
    assert rej["img1/object[1]"]["reason"] == "unknown wnid"
    assert rej["img1/object[2]"]["reason"] == "unknown wnid"  # checked in WordNet: no such synset
    assert rej["img2"]["reason"] == "malformed XML" and rej["img2"]["field"].startswith("line 1 column")
    assert rej["img3"]["reason"] == "missing image" and rej["img3/object[0]"]["reason"] == "image rejected"
    assert (res.images_in, res.images_accepted, res.objects_in, res.boxes_accepted) == (3, 1, 4, 1)
    assert res.objects_in == res.boxes_accepted + res.objects_rejected


def test_unmapped_wnid_checked_in_wordnet(tree9k):
    """A real synset without a node is 'unmapped label', not 'unknown wnid'."""
    real_not_in_tree = "n02084071"  # dog.n.01 is in WordNet; build a one-node tree without it
    small = WordTree(wnids=[CHIHUAHUA], names=["chihuahua"], parents=[-1], is_label=[True])
    m = LabelMapper(small, wordnet=load_wordnet)
    assert m.wnid(CHIHUAHUA) == (0, None)
    assert m.wnid(real_not_in_tree) == (-1, "unmapped label")
    assert m.wnid("n99999999") == (-1, "unknown wnid")
    assert m.wnid("dog") == (-1, "unknown wnid")


def test_imagenet_folders_and_tars(ray_local, tree9k, tmp_path):
    folders, tars = tmp_path / "folders", tmp_path / "tars"
    (folders / CHIHUAHUA).mkdir(parents=True)
    (folders / "not_a_wnid").mkdir()
    for i in range(3):
        (folders / CHIHUAHUA / f"{CHIHUAHUA}_{i}.JPEG").write_bytes(_jpeg(i, (300, 200)))
    (folders / CHIHUAHUA / "notes.txt").write_text("not an image")
    (folders / "not_a_wnid" / "x_1.JPEG").write_bytes(_jpeg(9))
    c = _cfg(tmp_path / "o1")
    res = ingest_source(c.data, c.storage, tree9k, Source("imagenet", "train", images=str(folders)),
                        mapper=LabelMapper(tree9k))
    rej = {r["record"]: r["reason"] for r in _rejects(res)}
    assert rej == {"imagenet/train/notes": "corrupt image", "not_a_wnid/x_1.JPEG": "unknown wnid"}
    rows = [r for f in shard_files(res.shards_uri) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["image_id"] for r in rows) == [f"imagenet/train/{CHIHUAHUA}_{i}" for i in range(3)]
    assert all(r["image_node"] == tree9k.index(CHIHUAHUA) and r["kind"] == "classification" for r in rows)
    assert all((r["orig_width"], r["width"]) == (300, 256) for r in rows)  # demo max_side 256

    tars.mkdir()
    with tarfile.open(tars / f"{CHIHUAHUA}.tar", "w") as t:
        for i, blob in enumerate([_jpeg(1, (80, 60)), _jpeg(2, (80, 60)), b"garbage"]):
            info = tarfile.TarInfo(f"{CHIHUAHUA}_{i}.JPEG")
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    (tars / "n00000000.tar").write_bytes(b"not a tar archive" * 40)
    c = _cfg(tmp_path / "o2")
    res = ingest_source(c.data, c.storage, tree9k, Source("imagenet", "train", images=str(tars)),
                        mapper=LabelMapper(tree9k))
    rej = {r["record"]: r["reason"] for r in _rejects(res)}
    # n00000000 is well formed but has no node: its tar is not opened, and is one corrupt record.
    assert rej[f"imagenet/train/{CHIHUAHUA}_2"] == "corrupt image"
    assert rej["imagenet/train/n00000000.tar"] == "corrupt image"
    assert (res.images_in, res.images_accepted, res.images_rejected) == (4, 2, 2)
    rows = [r for f in shard_files(res.shards_uri) for r in pq.read_table(f).to_pylist()]
    assert all(r["source_uri"].endswith(f"{CHIHUAHUA}.tar#{r['image_id'].rsplit('/', 1)[1]}.JPEG") for r in rows)
    # Pass-through: a small RGB JPEG keeps its original bytes.
    assert rows[0]["image"] in (_jpeg(1, (80, 60)), _jpeg(2, (80, 60)))


def test_strict_fails_at_first_reject(ray_local, tree9k, tmp_path):
    root = _coco_dataset(tmp_path / "coco")
    src = Source("coco", "train", images=str(root / "images"), annotations=str(root / "instances.json"))
    with pytest.raises(IngestRejectError, match=r"instances.json: record image 1, field 'id': duplicate id"):
        c = _cfg(tmp_path / "out", "data.strict=true")
        ingest_source(c.data, c.storage, tree9k, src, mapper=LabelMapper(tree9k))
    # A reject found by a worker (the image bytes) stops the run too, with the same kind of message.
    img = tmp_path / "c2" / "images"
    img.mkdir(parents=True)
    (img / "1.jpg").write_bytes(b"\xff\xd8 broken")
    (tmp_path / "c2" / "i.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "width": W,
                                                                     "height": H}], "annotations": [],
                                                          "categories": []}))
    src = Source("coco", "train", images=str(img), annotations=str(tmp_path / "c2" / "i.json"))
    with pytest.raises(IngestRejectError, match=r"1.jpg: record coco/train/1, field 'image': corrupt image") as e:
        c = _cfg(tmp_path / "out2", "data.strict=true")
        ingest_source(c.data, c.storage, tree9k, src, mapper=LabelMapper(tree9k))
    assert "Traceback" not in str(e.value)


def _record(uri: str) -> dict:
    return image_record(image_id="coco/train/1", dataset="coco", split="train", kind="detection", uri=uri,
                        stated_size=(W, H), boxes=[(4, 4, 20, 20)], box_nodes=[0], box_labels=["dog"],
                        box_records=["ann 1"])


def test_png_checksum_is_verified(tmp_path):
    """JPEGs skip Pillow's verify pass (it checks nothing the decode does not); other formats keep it:
    a PNG whose pixel data fails its CRC decodes without complaint, and only verify catches it."""
    from pipelines.stages.ingest import process_record

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 4), dtype=np.uint8)).save(buf, "PNG")
    good = buf.getvalue()
    (tmp_path / "good.png").write_bytes(good)
    row, rejects = process_record(_record(str(tmp_path / "good.png")), 512, 90, None)
    assert rejects == [] and (row["width"], row["height"]) == (W, H)
    assert Image.open(io.BytesIO(row["image"])).format == "JPEG"  # RGBA PNG -> RGB JPEG

    bad = bytearray(good)
    idat = bad.index(b"IDAT")
    crc_at = idat + 4 + int.from_bytes(bad[idat - 4: idat], "big")  # chunk: length, type, data, CRC
    bad[crc_at] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(bad))
    Image.open(tmp_path / "bad.png").load()  # the decode alone accepts it
    row, rejects = process_record(_record(str(tmp_path / "bad.png")), 512, 90, None)
    assert row is None
    assert [(r["record"], r["field"], r["reason"]) for r in rejects] == [
        ("coco/train/1", "image", "corrupt image"), ("ann 1", "image", "image rejected")]
    assert "IDAT" in rejects[0]["detail"]
