"""Property-based tests (hypothesis) of every reader, the worker's record function and the config:
they search for the next hostile input instead of listing the known ones.

A valid input is generated, then one field is replaced by anything (any JSON value, NaN, inf,
huge, negative, the wrong type) or removed. Whatever comes in, each outcome must be one of:
accepted rows whose boxes are finite and inside the image, reject rows naming source, record,
field and reason, or one clear error (StageError) for a whole-file problem; images in =
accepted + rejected and objects in = boxes kept + rejected; never another exception, a hang or
a silent change of meaning (an accepted box is exactly what a well-formed annotation said).

Readers and ``process_record`` are called directly (no Ray: the Ray path is the same function,
see test_ingest*.py). Example counts come from the hypothesis profile (tests/conftest.py):
``ci`` by default, ``HYPOTHESIS_PROFILE=long`` by hand.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pipelines.config import Config, ConfigError, config_from_dict
from pipelines.errors import StageError
from pipelines.readers import IMAGE, OBJECT, LabelMapper, Source, image_record
from pipelines.readers.coco import read_coco
from pipelines.readers.imagenet import read_imagenet
from pipelines.readers.voc import read_voc
from pipelines.stages.ingest import process_record
from tests.conftest import shared_path
from wordtree_build.tree import WordTree

W, H = 40, 30
CHIHUAHUA, TABBY = "n02085620", "n02123045"


@pytest.fixture(scope="module")
def mapper() -> LabelMapper:
    d = shared_path("darknet")
    return LabelMapper(WordTree.from_darknet(str(d / "9k.tree"), str(d / "9k.names")))


def _jpeg(seed: int, size=(W, H)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "JPEG")
    return buf.getvalue()


JPEGS = [_jpeg(i) for i in range(4)]

# Anything a JSON field can be, and the values that broke the readers before.
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.text(max_size=8),
                         st.floats(allow_nan=True, allow_infinity=True))
any_json = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
hostile = st.one_of(any_json, st.sampled_from([math.nan, math.inf, -math.inf, 1e12, 1e308, -5, -1e12, 0, True,
                                               "640", [1], {"a": 1}, [math.nan] * 4, [True, True, 20, 20],
                                               [1e308, 1e308, 1e308, 1e308], [-1e12, 0, 5, 5]]))
MISSING_FIELD = object()


@pytest.fixture(autouse=True)
def no_hang():
    """A hang fails the example instead of stalling the run."""
    def timeout(*_):
        raise TimeoutError("a reader or the worker hung")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _run_workers(read) -> tuple[list[dict], list[dict]]:
    """process_record over every record, as the Ray workers do: (rows, all rejects)."""
    rows, rejects = [], list(read.rejects)
    for rec in read.records:
        row, rej = process_record(rec, 512, 90, None)
        rejects += rej
        if row is not None:
            rows.append(row)
    return rows, rejects


def _check_outcome(read, rows: list[dict], rejects: list[dict]) -> None:
    images_rejected = sum(r["level"] == IMAGE for r in rejects)
    objects_rejected = sum(r["level"] == OBJECT for r in rejects)
    assert read.images_in == len(rows) + images_rejected
    assert read.objects_in == sum(len(r["boxes"]) for r in rows) + objects_rejected
    for r in rejects:
        assert r["source"] and r["record"] and r["field"] and r["reason"], r
    for row in rows:
        assert row["width"] > 0 and row["height"] > 0
        for box in row["boxes"]:
            cx, cy, w, h = box
            assert all(math.isfinite(v) for v in box), box
            assert 0 < w <= 1 and 0 < h <= 1 and 0 <= cx - w / 2 + 1e-6 and cx + w / 2 <= 1 + 1e-6, box
        assert len(row["boxes"]) == len(row["box_nodes"]) == len(row["box_labels"])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---- COCO ---------------------------------------------------------------------------------------


@st.composite
def coco_documents(draw):
    n_images = draw(st.integers(1, 3))
    images = [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": W, "height": H} for i in range(n_images)]
    anns = []
    for j in range(draw(st.integers(0, 4))):
        x, y = draw(st.integers(0, W - 10)), draw(st.integers(0, H - 10))
        anns.append({"id": j + 1, "image_id": draw(st.integers(1, n_images)), "category_id": 18,
                     "bbox": [x, y, draw(st.integers(2, W - x)), draw(st.integers(2, H - y))], "iscrowd": 0})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 18, "name": "dog"}]}
    # One field anywhere replaced by anything, or removed.
    targets = [("doc", None, k) for k in ("images", "annotations", "categories")]
    targets += [("images", i, k) for i in range(n_images) for k in ("id", "file_name", "width", "height")]
    targets += [("annotations", j, k) for j in range(len(anns)) for k in ("id", "image_id", "category_id", "bbox",
                                                                          "iscrowd")]
    where, index, key = draw(st.sampled_from(targets))
    value = draw(st.one_of(hostile, st.just(MISSING_FIELD)))
    holder = doc if where == "doc" else doc[where][index]
    if value is MISSING_FIELD:
        holder.pop(key)
    else:
        holder[key] = value
    return doc


@given(doc=coco_documents())
def test_property_coco_any_field_any_value(mapper, doc):
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "images"
        img.mkdir()
        for i in range(3):
            (img / f"{i + 1}.jpg").write_bytes(JPEGS[i])
        (Path(tmp) / "instances.json").write_text(json.dumps(doc))  # NaN / Infinity written as JSON allows
        read = read_coco(Source("coco", "val", images=str(img), annotations=str(Path(tmp) / "instances.json")),
                         mapper)
        rows, rejects = _run_workers(read)
    _check_outcome(read, rows, rejects)
    # No silent change of meaning: each kept box is a well-formed annotation's, unchanged.
    listed = doc.get("annotations") if isinstance(doc.get("annotations"), list) else []
    anns = {f"annotation {a['id']}": a for a in listed if isinstance(a, dict) and isinstance(a.get("id"), (int, str))}
    for rec in read.records:
        for rec_name, box in zip(rec["box_records"], rec["boxes_px"]):
            bbox = anns[rec_name]["bbox"]
            assert len(bbox) == 4 and all(_is_number(v) for v in bbox), bbox
            assert box == [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
            assert anns[rec_name].get("iscrowd", 0) in (0, False)
    for row in rows:  # a stated size that was kept is the real one
        image = next(i for i in doc["images"] if isinstance(i, dict) and f"coco/val/{i.get('id')}" == row["image_id"])
        for key, real in (("width", row["orig_width"]), ("height", row["orig_height"])):
            assert image.get(key, 0) in (0, real)


# ---- VOC / DET XML ------------------------------------------------------------------------------

xml_text = st.one_of(st.sampled_from(["nan", "NaN", "inf", "-inf", "1e309", "1e12", "-5", "", " ", "12.5", "0x10",
                                      "1_000", "abc", "٣", "4\u0000", "1e-320"]),
                     st.text(max_size=6).filter(lambda s: all(c.isprintable() for c in s)),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr))


@st.composite
def voc_documents(draw):
    """(XML bytes, label) of one file: a valid annotation with one field's text replaced or removed,
    or (rarely) bytes that are not XML at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64)), None
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = "img"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text, ET.SubElement(size, "height").text = str(W), str(H)
    fields = [size.find("width"), size.find("height")]
    for _ in range(draw(st.integers(0, 3))):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = draw(st.sampled_from([CHIHUAHUA, TABBY]))
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        x0, y0 = draw(st.integers(0, W - 10)), draw(st.integers(0, H - 10))
        for tag, v in (("xmin", x0), ("ymin", y0), ("xmax", draw(st.integers(x0 + 2, W))),
                       ("ymax", draw(st.integers(y0 + 2, H)))):
            ET.SubElement(bnd, tag).text = str(v)
        fields += [obj.find("name"), obj.find("difficult"), *bnd]
    target = draw(st.sampled_from(fields))
    if draw(st.booleans()):
        target.text = draw(xml_text)
    else:
        parent = next(p for p in root.iter() if target in list(p))
        parent.remove(target)
    return ET.tostring(root), root


@given(docs=st.lists(voc_documents(), min_size=1, max_size=3))
def test_property_det_xml_any_field_any_text(mapper, docs):
    with tempfile.TemporaryDirectory() as tmp:
        ann, data = Path(tmp) / "Annotations", Path(tmp) / "Data"
        ann.mkdir()
        data.mkdir()
        for i, (blob, root) in enumerate(docs):
            if root is not None:
                root.find("filename").text = f"img{i}"
                blob = ET.tostring(root)
            (ann / f"img{i}.xml").write_bytes(blob)
            (data / f"img{i}.JPEG").write_bytes(JPEGS[i])
        read = read_voc(Source("imagenet_det", "val", images=str(data), annotations=str(ann)), mapper)
        rows, rejects = _run_workers(read)
    _check_outcome(read, rows, rejects)
    assert read.images_in == len(docs)
    # No silent change of meaning: each kept box is the XML's own numbers.
    for rec in read.records:
        i = int(rec["image_id"].rsplit("img", 1)[1])
        objects = docs[i][1].findall("object")
        for rec_name, box in zip(rec["box_records"], rec["boxes_px"]):
            bnd = objects[int(rec_name.rsplit("[", 1)[1][:-1])].find("bndbox")
            assert box == [float(bnd.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")]


# ---- class-folder trees and image bytes ---------------------------------------------------------

folder_names = st.one_of(st.sampled_from([CHIHUAHUA, TABBY, "n99999999", "n0208562", "trian", ".hidden"]),
                         st.text("abcn0123456789_-", min_size=1, max_size=10))


@st.composite
def image_bytes(draw):
    """Valid images of many modes and formats, and broken ones (truncated, flipped bytes, junk)."""
    kind = draw(st.sampled_from(["jpeg", "png", "png16", "gif", "bmp", "webp", "tiff", "junk", "empty"]))
    if kind == "junk":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return b""
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "png16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "LA", "CMYK"]))
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    fmt = {"png16": "PNG"}.get(kind, kind.upper())
    buf = io.BytesIO()
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold: use RGB
        buf = io.BytesIO()
        im.convert("RGB").save(buf, fmt)
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return data


@given(tree=st.lists(st.tuples(folder_names, st.text("abcdefxyz0123456789_", min_size=1, max_size=8),
                               st.sampled_from([".JPEG", ".jpg", ".png", ".txt", ""]),
                               st.one_of(image_bytes(), st.just("fifo"), st.just("dir"))),
                     min_size=0, max_size=6),
       top_level=st.booleans())
def test_property_class_folder_trees(mapper, tree, top_level):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        root.mkdir()
        for folder, stem, ext, content in tree:
            parent = root if top_level and folder == "trian" else root / folder
            parent.mkdir(parents=True, exist_ok=True)
            path = parent / f"{stem}{ext}"
            if path.exists():
                continue
            if content == "fifo":
                os.mkfifo(path)
            elif content == "dir":
                path.mkdir()
                (path / "inner.jpg").write_bytes(JPEGS[0])
            else:
                path.write_bytes(content)
        read = read_imagenet(Source("imagenet", "train", images=str(root)), mapper)
        rows, rejects = _run_workers(read)
    _check_outcome(read, rows, rejects)
    for row in rows:  # a kept image is labelled by a real class folder
        assert row["image_label"] in (CHIHUAHUA, TABBY) and row["image_node"] >= 0


@given(data=image_bytes())
def test_property_image_bytes(data, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "image.bin"
    path.write_bytes(data)
    rec = image_record(image_id="imagenet/train/x", dataset="imagenet", split="train", kind="detection",
                       uri=str(path), boxes=[(1, 1, 5, 5)], box_nodes=[0], box_labels=["x"], box_records=["a"])
    row, rejects = process_record(rec, 32, 90, None)
    if row is None:
        assert rejects[0]["reason"] in ("corrupt image", "too many pixels") and rejects[0]["field"] == "image"
        return
    im = Image.open(io.BytesIO(row["image"]))
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (row["width"], row["height"])
    assert max(im.size) <= 32 and row["orig_width"] >= row["width"]
    # No silent change of meaning: the stored image has the source's brightness (16-bit, palettes, ...).
    src = Image.open(io.BytesIO(data))
    if src.mode in ("I;16", "I"):
        expected = np.asarray(src, dtype=np.float64).mean() / 257
        assert abs(np.asarray(im.convert("L"), dtype=np.float64).mean() - expected) < 12


# ---- config -------------------------------------------------------------------------------------

_SECTIONS = {name: f.type for name, f in Config.__dataclass_fields__.items() if name != "seed"}
config_keys = st.sampled_from([(s, k) for s in ("storage", "ray", "sample_data", "wordtree", "data", "anchors",
                                                 "model", "train", "eval", "mlflow")
                               for k in getattr(Config(), s).__dataclass_fields__])


@given(key=config_keys, value=st.one_of(hostile, st.just(MISSING_FIELD)))
def test_property_config_any_key_any_value(key, value):
    section, name = key
    data = {section: {} if value is MISSING_FIELD else {name: value}}
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        assert f"{section}.{name}" in str(e) or section in str(e)
        return
    got = getattr(getattr(cfg, section), name)
    for v in (got if isinstance(got, list) else [got]):
        if isinstance(v, float):
            assert math.isfinite(v)
    yaml_text = cfg.to_yaml()  # a valid config prints and flattens
    assert section in yaml_text and cfg.flat()


def test_whole_file_problem_is_one_clear_error(mapper, tmp_path):
    """The one outcome the properties above cannot reach: the annotation file is not there."""
    with pytest.raises(StageError, match="not found"):
        read_coco(Source("coco", "val", images=str(tmp_path), annotations=str(tmp_path / "x.json")), mapper)
