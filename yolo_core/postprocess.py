"""From a raw region output to detections: scores, thresholds and NMS, as darknet does.

Scores follow darknet's ``get_region_detections`` (HEAD):

* flat softmax: score of class c = obj x P(c), kept above ``thresh``;
* tree with ``class_subset`` (e.g. the 200 DET classes, darknet's ``map``): score of class k
  = obj x absolute P(class_subset[k]), kept above ``thresh``;
* tree without a subset: one class per box, the node reached by the top-down decode with
  ``hier_thresh``, scored by obj alone (darknet gives the box its objectness), kept when
  obj > ``thresh``. ``compound=True`` decodes as darknet HEAD's code does (it multiplies the
  already absolute probabilities along the way, see ``Tree.decode``); the default follows
  the described rule (absolute probability of each step > ``hier_thresh``).

NMS runs per image and per class at ``nms`` (darknet's ``do_nms_sort``) or, with
``agnostic``, per image over all classes (J17 used class-agnostic NMS at .4 for trees).
Boxes are corners (x1, y1, x2, y2) as fractions of the network input, not clipped; map
them to the original image with ``transforms.unletterbox_boxes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from yolo_core.boxes import batched_nms, cxcywh_to_xyxy
from yolo_core.region import _decode, _split, cell_offsets

# Candidate predictions are processed in chunks of at most this many class probabilities.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class Detections:
    """Detections of one image, by decreasing score."""

    boxes: Tensor  # (K, 4) x1, y1, x2, y2, fractions of the network input
    scores: Tensor  # (K,)
    classes: Tensor  # (K,) class / tree node index, or index into class_subset when given


def detect(raw: Tensor, anchors: Tensor | Sequence[Sequence[float]], num_classes: int, tree: Any = None,
           thresh: float = .24, hier_thresh: float = .5, nms: float = .45,
           class_subset: Tensor | Sequence[int] | None = None, agnostic: bool = False,
           compound: bool = False, location: str | None = None) -> list[Detections]:
    """Detections for each image of a raw head output (B, A*(5+C), H, W); ``location`` is the
    region layer's centre parametrisation (``yolo_core.region.cell_offsets``)."""
    anchors = torch.as_tensor(anchors, dtype=torch.float32, device=raw.device)
    num_anchors = anchors.shape[0]
    subset = None
    if class_subset is not None:
        subset = torch.as_tensor(class_subset, dtype=torch.long, device=raw.device)
    if subset is not None and subset.numel() and (subset.min() < 0 or subset.max() >= num_classes):
        raise ValueError(f"class_subset holds indices outside [0, {num_classes})")
    if tree is not None:
        tree = tree.to(raw.device)
    bsz = raw.shape[0]
    num_out = num_classes if subset is None else subset.numel()

    with torch.no_grad():
        v = _split(raw, num_anchors, num_classes)
        head = v[:, :, :5].float()
        obj = head[:, :, 4].sigmoid()
        # Every score is obj x a probability <= 1, so only predictions with obj > thresh can
        # yield a detection: class probabilities are computed for those alone.
        img, a, j, i = (obj > thresh).nonzero(as_tuple=True)
        sx, sy = cell_offsets(head[:, :, 0], head[:, :, 1], anchors, location)
        boxes = cxcywh_to_xyxy(_decode(sx, sy, head[:, :, 2], head[:, :, 3], anchors)[img, a, j, i])
        obj = obj[img, a, j, i]
        rows = max(1, _CHUNK_ELEMENTS // num_classes)
        found = []  # (candidate index, class, score) per chunk
        for r0 in range(0, img.numel(), rows):
            sl = slice(r0, r0 + rows)
            logits = v[img[sl], a[sl], :, j[sl], i[sl]][:, 5:].float()
            o = obj[sl]
            if tree is None:
                probs = logits.softmax(-1)
            else:
                probs = tree.absolute(tree.softmax(logits))
            if tree is not None and subset is None:
                node, _ = tree.decode(probs, hier_thresh, compound=compound)
                cand = torch.arange(o.numel(), device=raw.device)
                found.append((cand + r0, node, o))
            else:
                scores = o[:, None] * (probs[:, subset] if subset is not None else probs)
                cand, cls = (scores > thresh).nonzero(as_tuple=True)
                found.append((cand + r0, cls, scores[cand, cls]))
        cand = torch.cat([f[0] for f in found]) if found else img[:0]
        classes = torch.cat([f[1] for f in found]) if found else img[:0]
        scores = torch.cat([f[2] for f in found]) if found else obj[:0]
        images, boxes = img[cand], boxes[cand]
        groups = images if agnostic else images * num_out + classes
        keep = batched_nms(boxes, scores, groups, nms)
        boxes, scores, classes, images = boxes[keep], scores[keep], classes[keep], images[keep]
    return [Detections(boxes[images == b], scores[images == b], classes[images == b]) for b in range(bsz)]
