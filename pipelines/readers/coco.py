"""COCO instances JSON + image folder -> image records and rejects (the JSON is parsed once).

A file that is not JSON, or lacks the ``images`` or ``annotations`` list, is one rejected record
(malformed JSON); a missing file is an error. Checks made here, per record (``images`` entry or
annotation), each a reject with the field: an image entry without an integer / text ``id`` or a
text ``file_name``, or whose ``width`` / ``height`` is not a whole number of pixels in
[0, 2^20] (NaN, 1e12, -5: malformed JSON; absent or 0: not stated), a duplicate image or annotation
id, an image file absent from the folder (missing image), an annotation whose ``image_id`` is
not an image of the file (unknown image id), a ``bbox`` that is not four finite numbers (NaN,
infinity, booleans, text: malformed JSON), width or height <= 0 (zero or negative area), an
``iscrowd`` other than 0 / 1 (malformed JSON), ``iscrowd`` 1 (crowd annotation: a
region of many objects, not a box a detector should fit), a category without a WordTree node
(unmapped label). Boxes against the real image size are checked by the workers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines import storage
from pipelines.errors import StageError
from pipelines.readers import (
    CROWD,
    DUPLICATE,
    IMAGE,
    IMAGE_REJECTED,
    MALFORMED_JSON,
    MISSING,
    NON_POSITIVE,
    OBJECT,
    UNKNOWN_IMAGE,
    UNMAPPED,
    LabelMapper,
    ReadResult,
    Source,
    finite_number,
    image_record,
    is_record_id,
    reject,
    stated_side,
)
from pipelines.shards import DETECTION


def _short(value: Any, limit: int = 80) -> str:
    """A value for a reject's detail: its repr, cut short (a field may hold a huge JSON value)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _category_nodes(cats: Any, mapper: LabelMapper) -> dict[Any, tuple[int, str, str | None]]:
    """category id -> (node, name, reject reason or None)."""
    from wordtree_build.labelmaps import coco_wnid

    out: dict[Any, tuple[int, str, str | None]] = {}
    for c in cats if isinstance(cats, list) else []:
        if not isinstance(c, Mapping) or not is_record_id(c.get("id")):
            continue  # its annotations are then 'unmapped label' rejects
        name = str(c.get("name", ""))
        try:
            wnid = coco_wnid(name)
        except (KeyError, ValueError):
            out[c["id"]] = (-1, name, UNMAPPED)
            continue
        node, why = mapper.wnid(wnid)
        out[c["id"]] = (node, name, why)
    return out


def read_coco(source: Source, mapper: LabelMapper, unmapped: str = "reject",
              storage_options: Mapping[str, Any] | None = None) -> ReadResult:
    ann_uri = source.annotations or ""
    res = ReadResult()
    try:
        blob = storage.read_bytes(ann_uri, storage_options)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise StageError(f"{storage.redact_uri(ann_uri)}: COCO instances JSON not found") from None
    try:
        data = json.loads(blob)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError("images: no 'images' list at the top level")
        # Without annotations every image would be learnt as background: the file is unusable.
        if not isinstance(data.get("annotations"), list):
            raise ValueError(f"annotations: expected a list of annotations, got "
                             f"{_short(data.get('annotations')) if 'annotations' in data else 'nothing'}")
    except json.JSONDecodeError as e:
        # Nothing in the file can be trusted: the file is one rejected record.
        res.images_in = 1
        res.rejects.append(reject(ann_uri, ann_uri.rsplit("/", 1)[-1], f"line {e.lineno} column {e.colno}",
                                  MALFORMED_JSON, e.msg))
        return res
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        res.images_in = 1
        field_, _, detail = str(e).partition(": ") if isinstance(e, ValueError) else ("file", "", str(e))
        res.rejects.append(reject(ann_uri, ann_uri.rsplit("/", 1)[-1], field_, MALFORMED_JSON, detail or str(e)))
        return res

    files = {p.rsplit("/", 1)[-1]: p for p in storage.list_files(source.images, storage_options)}
    cats = _category_nodes(data.get("categories"), mapper)
    prefix = f"coco/{source.split}/"

    # Images: id -> pending record (labels filled from the annotations below).
    images: dict[Any, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        res.images_in += 1
        rec_name = f"images[{i}]"
        if not isinstance(im, Mapping) or not is_record_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            missing = "id" if not isinstance(im, Mapping) or not is_record_id(im.get("id")) else "file_name"
            res.rejects.append(reject(ann_uri, rec_name, missing, MALFORMED_JSON,
                                      "required field absent or of the wrong type (id: integer or text; "
                                      "file_name: text)"))
            continue
        if im["id"] in images:
            res.rejects.append(reject(ann_uri, f"image {im['id']}", "id", DUPLICATE,
                                      f"image id {im['id']} appears more than once"))
            continue
        size = []
        for key in ("width", "height"):
            side = stated_side(im.get(key, 0))
            if side is None:
                break
            size.append(side)
        if len(size) < 2:
            res.rejects.append(reject(ann_uri, f"image {im['id']}", key, MALFORMED_JSON,
                                      f"expected a whole number of pixels, got {_short(im.get(key))}"))
            # Kept by id so that its annotations are rejected as 'image rejected', not 'unknown image id'.
            images[im["id"]] = {"id": im["id"], "rejected": True, "records": []}
            continue
        images[im["id"]] = {"id": im["id"], "file_name": im["file_name"], "size": tuple(size), "boxes": [],
                            "nodes": [], "labels": [], "records": [], "bad_label": None, "rejected": False}

    seen_ann: set[Any] = set()
    for i, a in enumerate(data["annotations"]):
        res.objects_in += 1
        if not isinstance(a, Mapping) or not is_record_id(a.get("id")):
            res.rejects.append(reject(ann_uri, f"annotations[{i}]", "id", MALFORMED_JSON,
                                      "annotation without an id (an integer or text)", OBJECT))
            continue
        rec = f"annotation {a['id']}"
        if a["id"] in seen_ann:
            res.rejects.append(reject(ann_uri, rec, "id", DUPLICATE, f"annotation id {a['id']} appears more than once",
                                      OBJECT))
            continue
        seen_ann.add(a["id"])
        im = images.get(a.get("image_id")) if is_record_id(a.get("image_id")) else None
        if im is None:
            res.rejects.append(reject(ann_uri, rec, "image_id", UNKNOWN_IMAGE,
                                      f"image_id {_short(a.get('image_id'))} is not in 'images'", OBJECT))
            continue
        bbox = a.get("bbox")
        numbers = [finite_number(v) for v in bbox] if isinstance(bbox, list) else []
        if len(numbers) != 4 or None in numbers:
            res.rejects.append(reject(ann_uri, rec, "bbox", MALFORMED_JSON,
                                      f"expected [x, y, w, h] as four finite numbers, got {_short(bbox)}", OBJECT))
            continue
        x, y, w, h = numbers
        if w <= 0 or h <= 0:
            res.rejects.append(reject(ann_uri, rec, "bbox", NON_POSITIVE, f"w={w:g} h={h:g}", OBJECT))
            continue
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):  # True / False are 1 / 0 here
            res.rejects.append(reject(ann_uri, rec, "iscrowd", MALFORMED_JSON,
                                      f"expected 0 or 1, got {_short(crowd)}", OBJECT))
            continue
        if crowd:
            res.rejects.append(reject(ann_uri, rec, "iscrowd", CROWD, "iscrowd=1", OBJECT))
            continue
        if im["rejected"]:
            res.rejects.append(reject(ann_uri, rec, "image_id", IMAGE_REJECTED,
                                      f"image {im['id']}: {MALFORMED_JSON}", OBJECT))
            continue
        cat_id = a.get("category_id")
        node, name, why = (cats.get(cat_id) if is_record_id(cat_id) else None) or (-1, _short(cat_id), UNMAPPED)
        if why is not None:
            res.rejects.append(reject(ann_uri, rec, "category_id", why,
                                      f"category {_short(cat_id)} ({name}) has no WordTree node", OBJECT))
            if unmapped == "reject" and im["bad_label"] is None:
                im["bad_label"] = (rec, name, why)
            continue
        im["boxes"].append((x, y, x + w, y + h))
        im["nodes"].append(node)
        im["labels"].append(name)
        im["records"].append(rec)

    for im in images.values():
        if im["rejected"]:
            continue
        uri = files.get(im["file_name"].rsplit("/", 1)[-1])
        rec = f"image {im['id']}"
        why = detail = fld = None
        if im["bad_label"] is not None:
            fld, why, detail = "category_id", im["bad_label"][2], f"{im['bad_label'][0]} ({im['bad_label'][1]})"
        elif uri is None:
            fld, why, detail = "file_name", MISSING, f"{im['file_name']} not found in {storage.redact_uri(source.images)}"
        if why is not None:
            res.rejects.append(reject(ann_uri, rec, fld, why, detail or "", IMAGE))
            res.rejects.extend(reject(ann_uri, r, "image_id", IMAGE_REJECTED, f"{rec}: {why}", OBJECT)
                               for r in im["records"])
            continue
        res.records.append(image_record(
            image_id=f"{prefix}{im['id']}", dataset="coco", split=source.split, kind=DETECTION, uri=uri,
            stated_size=im["size"], boxes=im["boxes"], box_nodes=im["nodes"], box_labels=im["labels"],
            box_records=im["records"]))
    return res

