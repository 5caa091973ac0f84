"""Issue 17's findings, one test each: hostile annotations, images and paths end as rejects naming
the record and field, or as one clear error; never a box made of NaN, a hang or a traceback.

The readers and the worker's record function are called directly (no Ray): they hold every
check; the end-to-end path is covered by test_ingest*.py and test_hostile_cli.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.config import ConfigError, load_config
from pipelines.errors import StageError
from pipelines.readers import LabelMapper, Source, image_record
from pipelines.readers.coco import read_coco
from pipelines.readers.imagenet import read_imagenet
from pipelines.readers.voc import read_voc
from pipelines.stages.ingest import ingest_source, process_record
from tests.conftest import shared_path
from wordtree_build.tree import WordTree

W, H = 64, 48
CHIHUAHUA = "n02085620"


@pytest.fixture(scope="module")
def tree9k() -> WordTree:
    d = shared_path("darknet")
    return WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names"))


@pytest.fixture(scope="module")
def mapper(tree9k) -> LabelMapper:
    return LabelMapper(tree9k)


def _jpeg(seed: int = 0, size=(W, H)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def _coco(tmp_path: Path, images=None, annotations=None, raw: str | None = None, drop: str | None = None) -> Source:
    img = tmp_path / "images"
    img.mkdir(exist_ok=True)
    (img / "1.jpg").write_bytes(_jpeg(1))
    data = {"images": images if images is not None else [{"id": 1, "file_name": "1.jpg", "width": W, "height": H}],
            "annotations": annotations if annotations is not None else [],
            "categories": [{"id": 18, "name": "dog"}]}
    if drop:
        del data[drop]
    (tmp_path / "instances.json").write_text(raw if raw is not None else json.dumps(data))
    return Source("coco", "val", images=str(img), annotations=str(tmp_path / "instances.json"))


def _ann(i: int, bbox, **extra) -> dict:
    return {"id": i, "image_id": 1, "category_id": 18, "bbox": bbox, "iscrowd": 0, **extra}


def _rows(res) -> list[tuple[str, str, str]]:
    return [(r["record"], r["field"], r["reason"]) for r in res.rejects]


# ---- finding 2: NaN coordinates never become boxes ---------------------------------------------


@pytest.mark.parametrize("bbox", [[math.nan] * 4, [math.nan, 10, 20, 20], [10, 10, math.inf, 20],
                                  [True, True, 20, 20], ["1", 1, 20, 20], [1, 1, 20, 20, 5], 5, None])
def test_coco_bbox_not_four_finite_numbers_is_rejected(tmp_path, mapper, bbox):
    res = read_coco(_coco(tmp_path, annotations=[_ann(1, bbox), _ann(2, [1, 1, 20, 20])]), mapper)
    assert _rows(res) == [("annotation 1", "bbox", "malformed JSON")]
    (rec,) = res.records
    assert rec["boxes_px"] == [[1.0, 1.0, 21.0, 21.0]]  # only the good one
    assert (res.images_in, res.objects_in) == (1, 2)


def _det(tmp_path: Path, xmls: dict[str, str], image_list: list[str] | None = None) -> Source:
    ann, data = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir()
    data.mkdir()
    for stem, text in xmls.items():
        (ann / f"{stem}.xml").write_text(text)
        (data / f"{stem}.JPEG").write_bytes(_jpeg(1))
    lst = None
    if image_list is not None:
        lst = tmp_path / "list.txt"
        lst.write_text("".join(f"{s}\n" for s in image_list))
    return Source("voc" if lst else "imagenet_det", "val", images=str(data), annotations=str(ann),
                  image_list=str(lst) if lst else None)


def _xml(stem: str, box=("4", "4", "20", "20"), size=(str(W), str(H)), name=CHIHUAHUA) -> str:
    return (f"<annotation><filename>{stem}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size><object><name>{name}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")


@pytest.mark.parametrize("box", [("nan", "4", "20", "20"), ("4", "4", "inf", "20"), ("4", "-inf", "20", "20"),
                                 ("4", "4", "NaN", "nan")])
def test_det_non_finite_coordinate_is_rejected(tmp_path, mapper, box):
    res = read_voc(_det(tmp_path, {"a": _xml("a", box)}), mapper)
    assert _rows(res) == [("a/object[0]", "bndbox", "malformed XML")]
    assert "not a finite number" in res.rejects[0]["detail"]
    assert res.records[0]["boxes_px"] == []


def test_worker_refuses_a_non_finite_box_even_if_a_reader_let_one_through(tmp_path):
    (tmp_path / "1.jpg").write_bytes(_jpeg(1))
    rec = image_record(image_id="coco/val/1", dataset="coco", split="val", kind="detection",
                       uri=str(tmp_path / "1.jpg"), boxes=[(math.nan, 0, 10, 10), (4, 4, 20, 20)],
                       box_nodes=[0, 0], box_labels=["dog", "dog"], box_records=["a1", "a2"])
    row, rejects = process_record(rec, 512, 90, None)
    assert [(r["record"], r["field"]) for r in rejects] == [("a1", "bbox")]
    assert len(row["boxes"]) == 1 and all(0 <= v <= 1 for v in row["boxes"][0])


# ---- finding 4: one bad field is a reject naming the record, not an aborted ingest -------------


@pytest.mark.parametrize("field,value", [("width", math.nan), ("width", 1e12), ("height", -5), ("height", 12.5),
                                         ("width", "640"), ("height", None), ("width", [1])])
def test_coco_bad_image_size_is_a_reject(tmp_path, mapper, field, value):
    images = [{"id": 1, "file_name": "1.jpg", "width": W, "height": H, field: value}]
    res = read_coco(_coco(tmp_path, images=images, annotations=[_ann(1, [1, 1, 5, 5])]), mapper)
    assert _rows(res) == [("image 1", field, "malformed JSON"), ("annotation 1", "image_id", "image rejected")]
    assert res.records == [] and (res.images_in, res.objects_in) == (1, 1)


@pytest.mark.parametrize("bad_id", [[1], {"a": 1}, 1.5, True, None])
def test_coco_unusable_ids_are_rejects(tmp_path, mapper, bad_id):
    images = [{"id": bad_id, "file_name": "1.jpg"}, {"id": 1, "file_name": "1.jpg", "width": W, "height": H}]
    anns = [_ann(1, [1, 1, 5, 5], image_id=bad_id), {**_ann(2, [1, 1, 5, 5]), "id": bad_id},
            _ann(3, [1, 1, 5, 5], category_id=bad_id), _ann(4, [1, 1, 5, 5])]
    res = read_coco(_coco(tmp_path, images=images, annotations=anns), mapper)
    assert _rows(res) == [("images[0]", "id", "malformed JSON"), ("annotation 1", "image_id", "unknown image id"),
                          ("annotations[1]", "id", "malformed JSON"), ("annotation 3", "category_id", "unmapped label"),
                          ("image 1", "category_id", "unmapped label"), ("annotation 4", "image_id", "image rejected")]


@pytest.mark.parametrize("annotations", [5, "x", {"id": 1}, None])
def test_coco_annotations_not_a_list_is_one_file_reject(tmp_path, mapper, annotations):
    src = _coco(tmp_path)
    data = json.loads(Path(src.annotations).read_text())
    data["annotations"] = annotations
    Path(src.annotations).write_text(json.dumps(data))
    res = read_coco(src, mapper)
    assert _rows(res) == [("instances.json", "annotations", "malformed JSON")] and res.images_in == 1


def test_coco_without_annotations_is_not_silently_background(tmp_path, mapper):
    """Finding 6: a JSON with no 'annotations' key would make every image a background image."""
    res = read_coco(_coco(tmp_path, drop="annotations"), mapper)
    assert _rows(res) == [("instances.json", "annotations", "malformed JSON")]
    assert "got nothing" in res.rejects[0]["detail"] and res.records == []


def test_coco_missing_instances_json_is_one_clear_error(tmp_path, mapper):
    src = Source("coco", "val", images=str(tmp_path), annotations=str(tmp_path / "nope.json"))
    with pytest.raises(StageError, match=r"nope\.json: COCO instances JSON not found"):
        read_coco(src, mapper)


@pytest.mark.parametrize("size", [("inf", "48"), ("1e12", "48"), ("64", "nan"), ("-64", "48"), ("64.5", "48")])
def test_det_bad_size_is_a_reject(tmp_path, mapper, size):
    res = read_voc(_det(tmp_path, {"a": _xml("a", size=size)}), mapper)
    assert _rows(res) == [("a", "size", "malformed XML"), ("a/object[0]", "object", "image rejected")]


# ---- finding 6: silent drops ------------------------------------------------------------------


def test_voc_image_list_entry_without_xml_is_counted(tmp_path, mapper):
    res = read_voc(_det(tmp_path, {"a": _xml("a", name="dog")}, image_list=["a", "ghost"]), mapper)
    assert _rows(res) == [("ghost", "annotation", "missing annotation")]
    assert res.images_in == 2 and len(res.records) == 1


def test_mistyped_source_folder_is_an_error_unless_allowed(tmp_path, tree9k):
    (tmp_path / "imagenet" / "train" / CHIHUAHUA).mkdir(parents=True)
    src = Source("imagenet", "train", images=str(tmp_path / "imagenet" / "trian"))
    cfg = load_config("demo", [f"storage.root={tmp_path / 'out'}"])
    with pytest.raises(StageError, match=r"imagenet-train: no images found in .*trian.*data\.allow_empty"):
        ingest_source(cfg.data, cfg.storage, tree9k, src, mapper=LabelMapper(tree9k))
    assert not (tmp_path / "out" / "shards" / "imagenet-train" / "manifest.json").exists()
    allowed = load_config("demo", [f"storage.root={tmp_path / 'out'}", "data.allow_empty=true"])
    res = ingest_source(allowed.data, allowed.storage, tree9k, src, mapper=LabelMapper(tree9k))  # no records: Ray is never asked
    assert (res.images_in, res.images_accepted) == (0, 0)
    assert (tmp_path / "out" / "shards" / "imagenet-train" / "manifest.json").exists()


# ---- findings 5, 7, 12: images ----------------------------------------------------------------


def _record(uri: str, boxes=((4, 4, 20, 20),)) -> dict:
    return image_record(image_id="imagenet/train/x", dataset="imagenet", split="train", kind="detection", uri=uri,
                        boxes=boxes, box_nodes=[0] * len(boxes), box_labels=["dog"] * len(boxes),
                        box_records=[f"ann {i}" for i in range(len(boxes))])


def test_16bit_grayscale_png_keeps_its_brightness(tmp_path):
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a16).save(buf, "PNG")
    (tmp_path / "g16.png").write_bytes(buf.getvalue())
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # really 16-bit on disk
    row, rejects = process_record(_record(str(tmp_path / "g16.png")), 512, 100, None)
    assert rejects == []
    out = np.asarray(Image.open(io.BytesIO(row["image"])).convert("L"), dtype=np.float64)
    expected = a16 / 257.0
    assert abs(out.mean() - expected.mean()) < 2.0, (out.mean(), expected.mean())  # was 254.5 vs 127.5
    assert np.abs(out - expected).mean() < 8  # pixel by pixel, not only on average (JPEG noise aside)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header states width x height (1-bit gray) with a tiny IDAT: what a bomb looks like."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [13000, 20000])
def test_pixel_cap_rejects_before_decoding(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(side, side))
    row, rejects = process_record(_record(str(tmp_path / "bomb.png")), 512, 90, None)
    assert row is None
    assert [(r["field"], r["reason"]) for r in rejects] == [("image", "too many pixels"), ("image", "image rejected")]
    assert f"{side}x{side}" in rejects[0]["detail"]


def test_pixel_cap_is_the_configured_one(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    assert process_record(_record(str(tmp_path / "a.jpg")), 512, 90, None, max_pixels=W * H)[0] is not None
    row, rejects = process_record(_record(str(tmp_path / "a.jpg")), 512, 90, None, max_pixels=W * H - 1)
    assert row is None and rejects[0]["reason"] == "too many pixels"


@pytest.fixture
def alarm():
    """Fail instead of hanging for ever (the FIFO finding)."""
    def timeout(*_):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_fifo_in_a_class_folder_is_rejected_without_opening_it(tmp_path, mapper, alarm):
    folder = tmp_path / "train" / CHIHUAHUA
    folder.mkdir(parents=True)
    (folder / "good.JPEG").write_bytes(_jpeg(1))
    os.mkfifo(folder / "x.JPEG")
    read = read_imagenet(Source("imagenet", "train", images=str(tmp_path / "train")), mapper)
    results = {r["image_id"]: process_record(r, 512, 90, None) for r in read.records}
    assert results["imagenet/train/good"][0] is not None
    row, rejects = results["imagenet/train/x"]
    assert row is None and [(r["field"], r["reason"]) for r in rejects] == [("file", "not a regular file")]


def test_fifo_among_the_xml_files_is_rejected_without_opening_it(tmp_path, mapper, alarm):
    src = _det(tmp_path, {"a": _xml("a")})
    os.mkfifo(tmp_path / "Annotations" / "x.xml")
    res = read_voc(src, mapper)
    assert _rows(res) == [("x", "file", "not a regular file")]
    assert res.images_in == 2 and len(res.records) == 1


# ---- finding 11: config -----------------------------------------------------------------------


@pytest.mark.parametrize("override,key", [("anchors.stride=0", "anchors.stride"), ("anchors.stride=-32", "anchors.stride"),
                                          ("data.shard_mb=.inf", "data.shard_mb"),
                                          ("mlflow.promote_margin=.nan", "mlflow.promote_margin"),
                                          ("eval.draw_images=-5", "eval.draw_images"),
                                          ("train.lr=.nan", "train.lr"), ("train.lr=1e400", "train.lr"),
                                          ("data.max_pixels=0", "data.max_pixels"),
                                          ("ray.train_poll_s=.nan", "ray.train_poll_s"),
                                          ("ray.train_poll_s=.inf", "ray.train_poll_s")])
def test_config_refuses_what_crashed_or_passed(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config("demo", [override])


def test_config_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))
