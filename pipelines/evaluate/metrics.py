"""Detection metrics: per-class AP with pycocotools, mAP over all / seen / unseen classes, VOC07.

Ground truth and predictions are columnar numpy arrays (one row per box, pixel ``x1, y1, x2, y2``
in continuous coordinates, so a box's width is ``x2 - x1``) so that 20,000 images x 200 classes
stay cheap to hold and to pass around.

ImageNet DET (the paper's 19.7 / 16.0 mAP) is scored with pycocotools' ``COCOeval`` restricted to
one IoU threshold (``iouThrs=[.5]``), one area range (``areaRng=[[0, 1e10]]``, label ``all``: every
box counts whatever its size) and ``maxDets=[100]`` (COCOeval applies it per image *and class*:
the 100 best-scored detections of a class in an image). AP is COCO's 101-point interpolated
precision averaged over recall. Each class is evaluated on the images where it has a ground-truth
box or a detection: an image with neither contributes nothing to that class (COCOeval returns no
record for it), so the result is identical to one COCOeval over all images, and much faster.

COCO val uses the same code with the ten thresholds .5:.05:.95 (COCO's mAP). PASCAL VOC 2007 uses
its own 11-point AP (``voc07_ap``), with 'difficult' boxes neither required nor penalized.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines import storage
from pipelines.errors import PipelineError

# The COCO IoU thresholds .5:.05:.95.
COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
MAX_DETS = 100
_ALL_AREAS = [0.0, 1e10]


class AnnotationError(PipelineError):
    """Ground truth or predictions that cannot be scored; names the file, record and field."""


@dataclass
class GroundTruth:
    """Every ground-truth box of an evaluation set, one row per box."""

    image_ids: list[str]
    class_ids: list[str]  # wnids for ImageNet DET, category names for COCO / VOC
    class_names: list[str]
    boxes: np.ndarray  # (M, 4) float64 x1, y1, x2, y2 pixels
    box_image: np.ndarray  # (M,) int64 index into image_ids
    box_class: np.ndarray  # (M,) int64 index into class_ids
    crowd: np.ndarray | None = None  # (M,) bool: COCO iscrowd
    difficult: np.ndarray | None = None  # (M,) bool: VOC difficult
    sizes: np.ndarray | None = None  # (N, 2) int width, height

    def __post_init__(self) -> None:
        m = len(self.boxes)
        self.crowd = np.zeros(m, bool) if self.crowd is None else np.asarray(self.crowd, bool)
        self.difficult = np.zeros(m, bool) if self.difficult is None else np.asarray(self.difficult, bool)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def image_index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.image_ids)}


@dataclass
class Predictions:
    """Scored detections, one row per box, indexed like a GroundTruth's images and classes."""

    boxes: np.ndarray  # (P, 4) float64 x1, y1, x2, y2 pixels
    scores: np.ndarray  # (P,)
    box_image: np.ndarray  # (P,) int64
    box_class: np.ndarray  # (P,) int64

    @classmethod
    def empty(cls) -> Predictions:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass
class ClassAP:
    """Per-class results of one evaluation: AP per IoU threshold and the PR curves."""

    iou_thrs: tuple[float, ...]
    ap: np.ndarray  # (K, T): NaN for a class without ground truth
    precision: np.ndarray  # (K, T, 101) at recall .00:.01:1.00, -1 where recall is not reached
    num_gt: np.ndarray  # (K,)
    num_dets: np.ndarray  # (K,)
    recall_thrs: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, self.iou_thrs.index(0.5)]

    @property
    def ap_mean(self) -> np.ndarray:
        """AP averaged over all thresholds (COCO's AP@.5:.95 when the thresholds are COCO's)."""
        return self.ap.mean(axis=1)


# --------------------------------------------------------------------------------------------
# Ground truth readers
# --------------------------------------------------------------------------------------------


def parse_voc_xml(data: bytes, source: str) -> tuple[str, int, int, list[tuple[str, float, float, float, float, bool]]]:
    """One PASCAL VOC / ImageNet DET annotation: (filename, width, height, objects).

    Each object is (name, xmin, ymin, xmax, ymax, difficult). Errors name the file, the object
    (1-based) and the field.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        line, col = e.position
        raise AnnotationError(f"{source}: malformed XML at line {line} column {col}") from None

    def number(node: ET.Element, path: str, where: str) -> float:
        text = node.findtext(path)
        if text is None or not text.strip():
            raise AnnotationError(f"{source}: {where}: missing field '{path}'")
        try:
            return float(text)
        except ValueError:
            raise AnnotationError(f"{source}: {where}: field '{path}' is not a number: {text.strip()!r}") from None

    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise AnnotationError(f"{source}: annotation: missing field 'filename'")
    width = int(number(root, "size/width", "annotation"))
    height = int(number(root, "size/height", "annotation"))
    objects = []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"{source}: {where}: missing field 'name'")
        x1, y1 = number(obj, "bndbox/xmin", where), number(obj, "bndbox/ymin", where)
        x2, y2 = number(obj, "bndbox/xmax", where), number(obj, "bndbox/ymax", where)
        if x2 < x1 or y2 < y1:
            raise AnnotationError(f"{source}: {where}: field 'bndbox' has xmax < xmin or ymax < ymin "
                                  f"({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name, x1, y1, x2, y2, difficult))
    return filename, width, height, objects


def load_voc_ground_truth(
    annotations_uri: str,
    class_ids: Sequence[str],
    class_names: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> GroundTruth:
    """Every ``*.xml`` under a directory (ImageNet DET val, VOC ``Annotations/``) as ground truth.

    ``class_ids`` are the object names to expect (wnids for DET). An object with any other name
    is an error naming the file and the object, never a silent drop. Images are sorted by id.
    """
    cls_index = {c: i for i, c in enumerate(class_ids)}
    local = "://" not in annotations_uri and os.path.isdir(annotations_uri)
    if local:
        # os.scandir is several times faster than fsspec's find for 10k files.
        files = sorted(e.path for e in os.scandir(annotations_uri) if e.name.endswith(".xml"))
    else:
        files = storage.list_files(annotations_uri, storage_options, suffix=".xml")

    def read(uri: str) -> bytes:
        if local:
            with open(uri, "rb") as f:
                return f.read()
        return storage.read_bytes(uri, storage_options)

    if not files:
        raise AnnotationError(f"{storage.redact_uri(annotations_uri)}: no *.xml annotation files found")
    image_ids, sizes, rows = [], [], []
    for i, uri in enumerate(files):
        source = storage.redact_uri(uri)
        filename, w, h, objects = parse_voc_xml(read(uri), source)
        image_ids.append(os.path.splitext(filename)[0])
        sizes.append((w, h))
        for k, (name, x1, y1, x2, y2, difficult) in enumerate(objects, start=1):
            c = cls_index.get(name)
            if c is None:
                raise AnnotationError(f"{source}: object {k}: field 'name' is {name!r}, which is not one of "
                                      f"the {len(class_ids)} evaluated classes")
            rows.append((x1, y1, x2, y2, i, c, difficult))
    if len(set(image_ids)) != len(image_ids):
        dup = next(x for x in image_ids if image_ids.count(x) > 1)
        raise AnnotationError(f"{storage.redact_uri(annotations_uri)}: image {dup!r} is annotated twice")
    arr = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return GroundTruth(
        image_ids=image_ids,
        class_ids=list(class_ids),
        class_names=list(class_names) if class_names is not None else list(class_ids),
        boxes=arr[:, :4].copy(),
        box_image=arr[:, 4].astype(np.int64),
        box_class=arr[:, 5].astype(np.int64),
        difficult=arr[:, 6].astype(bool),
        sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
    )


def load_coco_ground_truth(instances_uri: str, storage_options: Mapping[str, Any] | None = None) -> GroundTruth:
    """A COCO ``instances_*.json`` as ground truth (class ids are category names; crowd kept)."""
    data = storage.read_json(instances_uri, storage_options)
    source = storage.redact_uri(instances_uri)
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images = sorted(data.get("images", []), key=lambda im: im["id"])
    img_index = {im["id"]: i for i, im in enumerate(images)}
    rows = []
    for k, a in enumerate(data.get("annotations", [])):
        where = f"{source}: annotations[{k}] (id {a.get('id')})"
        if a.get("image_id") not in img_index:
            raise AnnotationError(f"{where}: field 'image_id' {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in cat_index:
            raise AnnotationError(f"{where}: field 'category_id' {a.get('category_id')!r} is not in 'categories'")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AnnotationError(f"{where}: field 'bbox' must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = map(float, bbox)
        rows.append((x, y, x + w, y + h, img_index[a["image_id"]], cat_index[a["category_id"]], bool(a.get("iscrowd", 0))))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return GroundTruth(
        image_ids=[str(im["id"]) for im in images],
        class_ids=[c["name"] for c in cats],
        class_names=[c["name"] for c in cats],
        boxes=arr[:, :4].copy(),
        box_image=arr[:, 4].astype(np.int64),
        box_class=arr[:, 5].astype(np.int64),
        crowd=arr[:, 6].astype(bool),
        sizes=np.array([(im.get("width", 0), im.get("height", 0)) for im in images], dtype=np.int64).reshape(-1, 2),
    )


# --------------------------------------------------------------------------------------------
# COCOeval-based AP
# --------------------------------------------------------------------------------------------


def _coco_dataset(image_count: int, num_classes: int, boxes: np.ndarray, box_image: np.ndarray,
                  box_class: np.ndarray, scores: np.ndarray | None, crowd: np.ndarray | None) -> Any:
    """A pycocotools COCO object built in memory (ids start at 1: COCOeval uses 0 as 'unmatched')."""
    from pycocotools.coco import COCO

    wh = boxes[:, 2:] - boxes[:, :2]
    anns = []
    for j in range(len(boxes)):
        w, h = float(wh[j, 0]), float(wh[j, 1])
        a = {"id": j + 1, "image_id": int(box_image[j]), "category_id": int(box_class[j]),
             "bbox": [float(boxes[j, 0]), float(boxes[j, 1]), w, h], "area": w * h,
             "iscrowd": int(crowd[j]) if crowd is not None else 0}
        if scores is not None:
            a["score"] = float(scores[j])
        anns.append(a)
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(image_count)],
                    "categories": [{"id": k} for k in range(num_classes)], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_predictions(gt: GroundTruth, preds: Predictions, source: str = "predictions") -> None:
    """Predictions must index the ground truth's images and classes and hold finite numbers."""
    n = len(preds.boxes)
    for name, arr, shape in (("boxes", preds.boxes, (n, 4)), ("scores", preds.scores, (n,)),
                             ("box_image", preds.box_image, (n,)), ("box_class", preds.box_class, (n,))):
        if np.shape(arr) != shape:
            raise AnnotationError(f"{source}: field '{name}' has shape {np.shape(arr)}, expected {shape}")
    for name, arr, hi in (("box_image", preds.box_image, gt.num_images), ("box_class", preds.box_class, gt.num_classes)):
        bad = np.flatnonzero((arr < 0) | (arr >= hi))
        if len(bad):
            raise AnnotationError(f"{source}: record {bad[0]}: field '{name}' = {arr[bad[0]]} is outside [0, {hi})")
    bad = np.flatnonzero(~np.isfinite(preds.boxes).all(1) | ~np.isfinite(preds.scores))
    if len(bad):
        raise AnnotationError(f"{source}: record {bad[0]}: fields 'boxes'/'scores' are not finite")


def coco_ap(gt: GroundTruth, preds: Predictions, iou_thrs: Sequence[float] = (0.5,),
            max_dets: int = MAX_DETS) -> ClassAP:
    """Per-class AP at each IoU threshold with pycocotools (area range 'all', ``max_dets``)."""
    from pycocotools.cocoeval import COCOeval

    check_predictions(gt, preds)
    iou_thrs = tuple(float(t) for t in iou_thrs)
    K, T = gt.num_classes, len(iou_thrs)
    coco_gt = _coco_dataset(gt.num_images, K, gt.boxes, gt.box_image, gt.box_class, None, gt.crowd)
    coco_dt = _coco_dataset(gt.num_images, K, preds.boxes, preds.box_image, preds.box_class, preds.scores, None)
    ap = np.full((K, T), np.nan)
    precision = -np.ones((K, T, 101))
    num_gt = np.bincount(gt.box_class[~gt.crowd], minlength=K)
    num_dets = np.bincount(preds.box_class, minlength=K)
    for k in range(K):
        images = np.union1d(gt.box_image[gt.box_class == k], preds.box_image[preds.box_class == k])
        if num_gt[k] == 0:
            continue  # AP is undefined without ground truth: NaN, left out of every mean
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        p = ev.params
        p.imgIds, p.catIds = images.tolist(), [k]
        p.iouThrs = np.array(iou_thrs)
        p.areaRng, p.areaRngLbl, p.maxDets = [_ALL_AREAS], ["all"], [max_dets]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        prec = ev.eval["precision"][:, :, 0, 0, 0]  # (T, R)
        precision[k] = prec
        ap[k] = np.where(prec > -1, prec, 0.0).mean(axis=1)
    return ClassAP(iou_thrs=iou_thrs, ap=ap, precision=precision, num_gt=num_gt, num_dets=num_dets)


def ap50(gt: GroundTruth, preds: Predictions, max_dets: int = MAX_DETS) -> ClassAP:
    """Per-class AP at IoU .5: the ImageNet DET / YOLO9000 paper metric."""
    return coco_ap(gt, preds, (0.5,), max_dets)


def coco_map(gt: GroundTruth, preds: Predictions, max_dets: int = MAX_DETS) -> dict[str, float]:
    """COCO's mAP@.5:.95 and mAP@.5 (area 'all', ``max_dets`` per image and class)."""
    res = coco_ap(gt, preds, COCO_IOUS, max_dets)
    return {"map": _nanmean(res.ap_mean), "map50": _nanmean(res.ap50), "map75": _nanmean(res.ap[:, COCO_IOUS.index(0.75)])}


# --------------------------------------------------------------------------------------------
# PASCAL VOC 2007 11-point AP
# --------------------------------------------------------------------------------------------


def voc07_ap(gt: GroundTruth, preds: Predictions, iou_thr: float = 0.5) -> np.ndarray:
    """Per-class VOC2007 AP: 11-point interpolated precision at recall 0, .1, ..., 1.

    Greedy matching in score order, each ground-truth box matched at most once; detections
    matched to a 'difficult' box count neither as true nor as false positives, and difficult
    boxes are not required. Boxes are continuous (no +1 pixel), like the rest of this module.
    """
    check_predictions(gt, preds)
    K = gt.num_classes
    out = np.full(K, np.nan)
    for k in range(K):
        g_sel = gt.box_class == k
        g_boxes, g_img, g_diff = gt.boxes[g_sel], gt.box_image[g_sel], gt.difficult[g_sel]
        npos = int((~g_diff).sum())
        if npos == 0:
            continue
        d_sel = np.flatnonzero(preds.box_class == k)
        order = d_sel[np.argsort(-preds.scores[d_sel], kind="stable")]
        by_image: dict[int, np.ndarray] = {}
        for img in np.unique(g_img):
            by_image[int(img)] = np.flatnonzero(g_img == img)
        used = np.zeros(len(g_boxes), bool)
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for i, d in enumerate(order):
            cand = by_image.get(int(preds.box_image[d]))
            if cand is None:
                fp[i] = 1
                continue
            ious = _iou_one(preds.boxes[d], g_boxes[cand])
            best = int(np.argmax(ious))
            if ious[best] >= iou_thr:
                g = cand[best]
                if g_diff[g]:
                    continue
                if not used[g]:
                    used[g] = True
                    tp[i] = 1
                else:
                    fp[i] = 1
            else:
                fp[i] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out[k] = np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.linspace(0, 1, 11)])
    return out


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def sibling_accuracy(gt: GroundTruth, preds: Predictions, groups: Sequence[Sequence[int]],
                     iou_thr: float = 0.5) -> dict[str, Any]:
    """Given a found box, is the fine class named right among its siblings?

    ``groups``: sets of class indices that are siblings (e.g. the fine classes below one coarse
    class). For every ground-truth box of a class in a group, the highest-scored prediction of
    any class of that group with IoU >= ``iou_thr``: the box is *found* when there is one, and
    named *right* when its class is the box's. Separates "where" (found / boxes) from "which"
    (right / found), which mAP mixes. Rows implied by ancestors are skipped (not in a group).
    ``per_class`` holds the same counts by class index."""
    group_of = {c: g for g, members in enumerate(groups) for c in members}
    per_class: dict[int, dict[str, int]] = {}
    for m in range(len(gt.boxes)):
        c = int(gt.box_class[m])
        if c not in group_of:
            continue
        counts = per_class.setdefault(c, {"boxes": 0, "found": 0, "right": 0})
        counts["boxes"] += 1
        members = list(groups[group_of[c]])
        cand = np.nonzero((preds.box_image == gt.box_image[m]) & np.isin(preds.box_class, members))[0]
        if len(cand):
            cand = cand[_iou_one(gt.boxes[m], preds.boxes[cand]) >= iou_thr]
        if len(cand):
            counts["found"] += 1
            counts["right"] += int(preds.box_class[cand[np.argmax(preds.scores[cand])]] == c)
    boxes, found, right = (sum(v[k] for v in per_class.values()) for k in ("boxes", "found", "right"))
    return {"boxes": boxes, "found": found, "right": right,
            "found_rate": found / boxes if boxes else float("nan"),
            "sibling_accuracy": right / found if found else float("nan"), "per_class": per_class}


# --------------------------------------------------------------------------------------------
# Summaries and the per-class table
# --------------------------------------------------------------------------------------------


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def summarize(ap: np.ndarray, class_ids: Sequence[str], split: Mapping[str, str] | None = None,
              prefix: str = "map50") -> dict[str, float]:
    """mAP over all classes and over each group of ``split`` (wnid -> 'seen' | 'unseen').

    Keys: ``<prefix>_all`` and ``<prefix>_<group>`` for each group, plus ``num_classes_<group>``.
    Classes without ground truth (NaN AP) are left out of every mean.
    """
    ap = np.asarray(ap, dtype=np.float64)
    if len(ap) != len(class_ids):
        raise ValueError(f"{len(ap)} AP values for {len(class_ids)} classes")
    out = {f"{prefix}_all": _nanmean(ap)}
    if split:
        missing = [c for c in class_ids if c not in split]
        if missing:
            raise AnnotationError(f"seen/unseen split: class {missing[0]!r} has no entry "
                                  f"({len(missing)} of {len(class_ids)} classes missing)")
        for group in sorted(set(split[c] for c in class_ids)):
            sel = np.array([split[c] == group for c in class_ids])
            out[f"{prefix}_{group}"] = _nanmean(ap[sel])
            out[f"num_classes_{group}"] = int(sel.sum())
    return out


def per_class_table(gt: GroundTruth, result: ClassAP, split: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per class: id, name, split group, AP per threshold, ground-truth and detection counts."""
    rows = []
    for k, cid in enumerate(gt.class_ids):
        row: dict[str, Any] = {"class": cid, "name": gt.class_names[k]}
        if split:
            row["split"] = split.get(cid, "")
        for t, thr in enumerate(result.iou_thrs):
            row[f"ap{round(thr * 100)}"] = None if np.isnan(result.ap[k, t]) else round(float(result.ap[k, t]), 6)
        row["num_gt"] = int(result.num_gt[k])
        row["num_dets"] = int(result.num_dets[k])
        rows.append(row)
    return rows


def table_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Shards and prediction tables
# --------------------------------------------------------------------------------------------


def ground_truth_from_shards(table: Any, class_ids: Sequence[str], class_names: Sequence[str] | None = None,
                             source: str = "shards",
                             implied: Mapping[str, Sequence[str]] | None = None) -> GroundTruth:
    """Ground truth from shard rows (columns image_id, orig_width, orig_height, boxes as normalized
    cx, cy, w, h, box_labels): boxes in pixels of the original image, classes by ``box_labels``.

    ``implied`` maps a class to the evaluated classes it belongs to as well (its ancestors in the
    WordTree, see ``evaluate.stage.ancestor_classes``): a box labelled "brown bear" is then also a
    "bear" box, so a detector that calls it a bear is right, not a false positive."""
    cls_index = {c: i for i, c in enumerate(class_ids)}
    implied = implied or {}
    ids = table.column("image_id").to_pylist()
    ow = table.column("orig_width").to_numpy().astype(np.float64)
    oh = table.column("orig_height").to_numpy().astype(np.float64)
    rows = []
    for i, (boxes, labels) in enumerate(zip(table.column("boxes").to_pylist(), table.column("box_labels").to_pylist())):
        for k, (b, lab) in enumerate(zip(boxes or [], labels or [])):
            c = cls_index.get(lab)
            if c is None:
                raise AnnotationError(f"{source}: image_id={ids[i]!r} box {k}: field 'box_labels' is {lab!r}, "
                                      f"not one of the {len(class_ids)} evaluated classes")
            cx, cy, w, h = b
            xyxy = ((cx - w / 2) * ow[i], (cy - h / 2) * oh[i], (cx + w / 2) * ow[i], (cy + h / 2) * oh[i])
            rows.append((*xyxy, i, c))
            rows.extend((*xyxy, i, cls_index[a]) for a in implied.get(lab, ()))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return GroundTruth(ids, list(class_ids), list(class_names) if class_names is not None else list(class_ids),
                       arr[:, :4].copy(), arr[:, 4].astype(np.int64), arr[:, 5].astype(np.int64),
                       sizes=np.stack([ow, oh], 1).astype(np.int64))


def predictions_from_table(table: Any, gt: GroundTruth, source: str = "predictions") -> Predictions:
    """A prediction table (image_id, boxes, scores, classes lists per image) indexed like ``gt``."""
    index = gt.image_index()
    boxes, scores, img, cls = [], [], [], []
    for image_id, b, s, c in zip(*(table.column(n).to_pylist() for n in ("image_id", "boxes", "scores", "classes"))):
        i = index.get(image_id)
        if i is None:
            raise AnnotationError(f"{source}: image_id={image_id!r}: field 'image_id' is not in the ground truth")
        boxes.extend(b)
        scores.extend(s)
        cls.extend(c)
        img.extend([i] * len(s))
    preds = Predictions(np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64),
                        np.array(img, np.int64), np.array(cls, np.int64))
    check_predictions(gt, preds, source)
    return preds
