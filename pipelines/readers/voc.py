"""PASCAL VOC XML (ImageNet DET, PASCAL VOC) + image folder -> image records and rejects.

One XML file is one image record, each ``<object>`` one object record. XML files are fetched
in batches (``fs.cat`` of many paths: concurrent on object stores) and parsed on the driver;
the image folder is listed once, so a missing image costs nothing more than a set lookup.

Labels: ImageNet DET names objects by wnid; VOC by class name (``dog``), mapped to a wnid with
:data:`wordtree_build.labelmaps.VOC_WNIDS`. Objects marked ``<difficult>1`` are rejected as
``difficult object``, as darknet's ``voc_label.py`` leaves them out. Coordinates are taken as
they are written (pixels, ``xmin < xmax``); a coordinate or size that is not a finite number
(``nan``, ``inf``, text) is malformed XML, as is a size that is not a whole number of pixels in
[0, 2^20]. Boxes against the real image size are checked by the workers. An entry of VOC's
``ImageSets/Main/<split>.txt`` without an XML file is a ``missing annotation`` reject.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from pipelines import storage
from pipelines.errors import StageError
from pipelines.readers import (
    DIFFICULT,
    DUPLICATE,
    IMAGE,
    IMAGE_REJECTED,
    MALFORMED_XML,
    MAX_STATED_SIDE,
    MISSING,
    MISSING_ANNOTATION,
    NON_POSITIVE,
    NOT_REGULAR,
    OBJECT,
    UNMAPPED,
    LabelMapper,
    ReadResult,
    Source,
    image_record,
    list_by_stem,
    reject,
    stated_side,
)
from pipelines.shards import DETECTION

_BATCH = 1000  # XML files fetched per fs.cat call


def _text(el: ET.Element | None, tag: str) -> str | None:
    child = el.find(tag) if el is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _number(el: ET.Element | None, tag: str) -> float:
    """A finite number from ``<tag>`` (``nan``, ``inf``, text: ValueError naming the tag)."""
    text = _text(el, tag)
    if text is None:
        raise ValueError(f"<{tag}> missing")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"<{tag}> is not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"<{tag}> is not a finite number: {text[:40]!r}")
    return number


def _side(el: ET.Element | None, tag: str) -> int:
    """An image width / height: a whole number of pixels in [0, 2^20] (0: not stated)."""
    side = stated_side(_number(el, tag))
    if side is None:
        raise ValueError(f"<{tag}> is not a whole number of pixels in [0, {MAX_STATED_SIDE}]: {_text(el, tag)[:40]!r}")
    return side


def _label_wnid(dataset: str, name: str) -> str:
    if dataset == "voc":
        from wordtree_build.labelmaps import VOC_WNIDS

        return VOC_WNIDS.get(name, name)
    return name


def _xml_files(source: Source, storage_options: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """The XML files to read, and the image-list entries that have none (each a reject)."""
    files = storage.list_files(source.annotations or "", storage_options, suffix=".xml")
    if not source.image_list:
        return files, []
    try:
        text = storage.read_text(source.image_list, storage_options)
    except FileNotFoundError:
        raise StageError(f"{storage.redact_uri(source.image_list)}: image list not found") from None
    except UnicodeDecodeError:
        raise StageError(f"{storage.redact_uri(source.image_list)}: image list is not UTF-8 text") from None
    wanted = list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
    by_stem = {f.rsplit("/", 1)[-1][:-4]: f for f in files}
    return [by_stem[w] for w in wanted if w in by_stem], [w for w in wanted if w not in by_stem]


def read_voc(source: Source, mapper: LabelMapper, unmapped: str = "reject",
             storage_options: Mapping[str, Any] | None = None) -> ReadResult:
    res = ReadResult()
    images = list_by_stem(source.images, storage_options)
    xml_files, unannotated = _xml_files(source, storage_options)
    for stem in unannotated:  # listed in ImageSets but without an XML file: counted, not dropped
        res.images_in += 1
        res.rejects.append(reject(source.image_list or "", stem, "annotation", MISSING_ANNOTATION,
                                  f"{stem}.xml not found in {storage.redact_uri(source.annotations)}"))
    for uri in [u for u in xml_files if storage.is_irregular_local_file(u)]:  # a FIFO would block the read
        res.images_in += 1
        res.rejects.append(reject(uri, uri.rsplit("/", 1)[-1][:-4], "file", NOT_REGULAR,
                                  "a FIFO, socket, device or folder: not opened"))
    xml_files = [u for u in xml_files if not storage.is_irregular_local_file(u)]
    fs, _ = storage.filesystem(source.annotations or "", storage_options)
    seen: set[str] = set()
    for start in range(0, len(xml_files), _BATCH):
        chunk = xml_files[start:start + _BATCH]
        paths = [storage.filesystem(u, storage_options)[1] for u in chunk]
        blobs = fs.cat(paths) if len(paths) > 1 else {paths[0]: fs.cat_file(paths[0])}
        for uri, path in zip(chunk, paths):
            _parse_one(source, uri, blobs[path], images, mapper, unmapped, seen, res)
    return res


def _parse_one(source: Source, uri: str, blob: bytes, images: dict[str, str], mapper: LabelMapper,
               unmapped: str, seen: set[str], res: ReadResult) -> None:
    res.images_in += 1
    stem = uri.rsplit("/", 1)[-1][:-4]
    try:
        root = ET.fromstring(blob)
    except ET.ParseError as e:
        line, col = e.position
        res.rejects.append(reject(uri, stem, f"line {line} column {col}", MALFORMED_XML, str(e)))
        return
    except (ValueError, RecursionError) as e:  # e.g. bytes that are not XML text at all
        res.rejects.append(reject(uri, stem, "file", MALFORMED_XML, f"{type(e).__name__}: {str(e)[:200]}"))
        return
    objects = root.findall("object")
    res.objects_in += len(objects)
    obj_recs = [f"{stem}/object[{i}]" for i in range(len(objects))]

    def reject_image(field_: str, reason: str, detail: str) -> None:
        res.rejects.append(reject(uri, stem, field_, reason, detail, IMAGE))
        res.rejects.extend(reject(uri, r, "object", IMAGE_REJECTED, f"{stem}: {reason}", OBJECT) for r in obj_recs)

    filename = (_text(root, "filename") or stem).rsplit("/", 1)[-1]
    image_stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    image_id = f"{source.dataset}/{source.split}/{image_stem}"
    if image_id in seen:
        reject_image("filename", DUPLICATE, f"image {image_stem} is annotated by more than one XML file")
        return
    size_el = root.find("size")
    try:
        size = (_side(size_el, "width"), _side(size_el, "height")) if size_el is not None else (-1, -1)
    except ValueError as e:
        reject_image("size", MALFORMED_XML, str(e))
        return

    boxes, nodes, labels, recs = [], [], [], []
    bad_label = None
    for rec, obj in zip(obj_recs, objects):
        name = _text(obj, "name")
        if not name:
            res.rejects.append(reject(uri, rec, "name", MALFORMED_XML, "<name> missing or empty", OBJECT))
            continue
        if _text(obj, "difficult") == "1":
            res.rejects.append(reject(uri, rec, "difficult", DIFFICULT, "difficult=1", OBJECT))
            continue
        bnd = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (_number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            res.rejects.append(reject(uri, rec, "bndbox", MALFORMED_XML, str(e), OBJECT))
            continue
        if x1 <= x0 or y1 <= y0:
            res.rejects.append(reject(uri, rec, "bndbox", NON_POSITIVE, f"xmin={x0:g} xmax={x1:g} ymin={y0:g} "
                                      f"ymax={y1:g}", OBJECT))
            continue
        node, why = mapper.wnid(_label_wnid(source.dataset, name))
        if why is not None:
            res.rejects.append(reject(uri, rec, "name", why, f"{name} has no WordTree node"
                                      if why == UNMAPPED else f"{name!r} is not a WordNet noun id", OBJECT))
            if unmapped == "reject" and bad_label is None:
                bad_label = (rec, name, why)
            continue
        boxes.append((x0, y0, x1, y1))
        nodes.append(node)
        labels.append(name)
        recs.append(rec)

    image_uri = images.get(image_stem)
    if bad_label is not None or image_uri is None:
        why = bad_label[2] if bad_label else MISSING
        detail = (f"{bad_label[0]} ({bad_label[1]})" if bad_label
                  else f"{filename} not found in {storage.redact_uri(source.images)}")
        res.rejects.append(reject(uri, stem, "name" if bad_label else "filename", why, detail, IMAGE))
        res.rejects.extend(reject(uri, r, "object", IMAGE_REJECTED, f"{stem}: {why}", OBJECT) for r in recs)
        return
    seen.add(image_id)
    res.records.append(image_record(
        image_id=image_id, dataset=source.dataset, split=source.split, kind=DETECTION, uri=image_uri,
        stated_size=size, boxes=boxes, box_nodes=nodes, box_labels=labels, box_records=recs))
