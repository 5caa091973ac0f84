"""COCO instances JSON + image folder -> image records and rejects (the JSON is parsed once).

Checks made here, per record (``images`` entry or annotation), each a reject with the field:
an image entry without ``id``/``file_name`` (malformed JSON), a duplicate image or annotation
id, an image file absent from the folder (missing image), an annotation whose ``image_id`` is
not an image of the file (unknown image id), a ``bbox`` that is not four numbers (malformed
JSON), width or height <= 0 (zero or negative area), ``iscrowd`` set (crowd annotation: a
region of many objects, not a box a detector should fit), a category without a WordTree node
(unmapped label). Boxes against the real image size are checked by the workers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from numbers import Real
from typing import Any

from pipelines import storage
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
    image_record,
    reject,
)


def _category_nodes(cats: Any, mapper: LabelMapper) -> dict[Any, tuple[int, str, str | None]]:
    """category id -> (node, name, reject reason or None)."""
    from wordtree_build.labelmaps import coco_wnid

    out: dict[Any, tuple[int, str, str | None]] = {}
    for c in cats if isinstance(cats, list) else []:
        if not isinstance(c, Mapping) or "id" not in c:
            continue
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
        data = json.loads(storage.read_bytes(ann_uri, storage_options))
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError("no 'images' list at the top level")
    except json.JSONDecodeError as e:
        # Nothing in the file can be trusted: the file is one rejected record.
        res.images_in = 1
        res.rejects.append(reject(ann_uri, ann_uri.rsplit("/", 1)[-1], f"line {e.lineno} column {e.colno}",
                                  MALFORMED_JSON, e.msg))
        return res
    except (ValueError, UnicodeDecodeError) as e:
        res.images_in = 1
        res.rejects.append(reject(ann_uri, ann_uri.rsplit("/", 1)[-1], "images", MALFORMED_JSON, str(e)))
        return res

    files = {p.rsplit("/", 1)[-1]: p for p in storage.list_files(source.images, storage_options)}
    cats = _category_nodes(data.get("categories"), mapper)
    prefix = f"coco/{source.split}/"

    # Images: id -> pending record (labels filled from the annotations below).
    images: dict[Any, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        res.images_in += 1
        rec_name = f"images[{i}]"
        if not isinstance(im, Mapping) or "id" not in im or not isinstance(im.get("file_name"), str):
            missing = "id" if not isinstance(im, Mapping) or "id" not in im else "file_name"
            res.rejects.append(reject(ann_uri, rec_name, missing, MALFORMED_JSON, "required field absent or not text"))
            continue
        if im["id"] in images:
            res.rejects.append(reject(ann_uri, f"image {im['id']}", "id", DUPLICATE,
                                      f"image id {im['id']} appears more than once"))
            continue
        size = (im.get("width", -1), im.get("height", -1))
        size = tuple(int(v) if isinstance(v, Real) else -1 for v in size)
        images[im["id"]] = {"id": im["id"], "file_name": im["file_name"], "size": size, "boxes": [],
                            "nodes": [], "labels": [], "records": [], "bad_label": None}

    seen_ann: set[Any] = set()
    for i, a in enumerate(data.get("annotations") or []):
        res.objects_in += 1
        if not isinstance(a, Mapping) or "id" not in a:
            res.rejects.append(reject(ann_uri, f"annotations[{i}]", "id", MALFORMED_JSON, "annotation without id",
                                      OBJECT))
            continue
        rec = f"annotation {a['id']}"
        if a["id"] in seen_ann:
            res.rejects.append(reject(ann_uri, rec, "id", DUPLICATE, f"annotation id {a['id']} appears more than once",
                                      OBJECT))
            continue
        seen_ann.add(a["id"])
        im = images.get(a.get("image_id"))
        if im is None:
            res.rejects.append(reject(ann_uri, rec, "image_id", UNKNOWN_IMAGE,
                                      f"image_id {a.get('image_id')!r} is not in 'images'", OBJECT))
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, Real) for v in bbox)):
            res.rejects.append(reject(ann_uri, rec, "bbox", MALFORMED_JSON, f"expected [x, y, w, h], got {bbox!r}",
                                      OBJECT))
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            res.rejects.append(reject(ann_uri, rec, "bbox", NON_POSITIVE, f"w={w:g} h={h:g}", OBJECT))
            continue
        if a.get("iscrowd"):
            res.rejects.append(reject(ann_uri, rec, "iscrowd", CROWD, "iscrowd=1", OBJECT))
            continue
        node, name, why = cats.get(a.get("category_id"), (-1, str(a.get("category_id")), UNMAPPED))
        if why is not None:
            res.rejects.append(reject(ann_uri, rec, "category_id", why,
                                      f"category {a.get('category_id')!r} ({name}) has no WordTree node", OBJECT))
            if unmapped == "reject" and im["bad_label"] is None:
                im["bad_label"] = (rec, name, why)
            continue
        im["boxes"].append((x, y, x + w, y + h))
        im["nodes"].append(node)
        im["labels"].append(name)
        im["records"].append(rec)

    for im in images.values():
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
            image_id=f"{prefix}{im['id']}", dataset="coco", split=source.split, kind="detection", uri=uri,
            stated_size=im["size"], boxes=im["boxes"], box_nodes=im["nodes"], box_labels=im["labels"],
            box_records=im["records"]))
    return res

