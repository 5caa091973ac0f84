"""YOLOv1's output layer (darknet's ``[detection]``): output layout, decoding and the loss.

Layout (darknet's ``detection_layer.c``, not per cell): the flat output of one image holds
first the class probabilities of every cell (``cell * C + class``), then the confidences of
every box (``S*S*C + cell * B + box``), then the boxes (``S*S*(C+B) + (cell * B + box) * 4 +
k``), with cell = row * S + col. A box is x, y (offset of the centre in its cell), w, h
(fractions of the image; their square roots with ``sqrt=1``). No activation is applied
(``softmax=1`` would give each cell's class scores a softmax; neither of darknet's cfgs sets it).

Test path (``get_detection_detections`` + ``do_nms_sort`` as ``darknet yolo test`` calls them):
score of class c for a box = confidence x P(c), kept when > ``thresh`` (.2); NMS per class at .4.
The image is resized to the network input without letterbox (``transforms.resize``), so box
fractions are fractions of the original image.

The loss (``forward_detection_layer``, the paper's section 2.2), sum-squared error written as
a differentiable sum whose gradient is darknet's delta, per image:

* ``noobj``: 1/2 noobject_scale conf^2 for every box except the responsible ones;
* ``obj``: 1/2 object_scale (t - conf)^2 at responsible boxes, t = the IoU of the box with its
  truth (``rescore``, a constant) or 1;
* ``coord``: 1/2 coord_scale ((tx - x)^2 + (ty - y)^2 + (sqrt(tw) - w)^2 + (sqrt(th) - h)^2)
  at responsible boxes (without ``sqrt``: tw - w, th - h);
* ``cls``: 1/2 class_scale sum over classes of (onehot - P)^2 in cells holding an object
  (with ``softmax``: class_scale x cross-entropy, whose gradient is darknet's delta there);
* ``prior``: 0 (YOLOv1 has no anchors), kept so the parts match the region loss's.

Truths: a box goes to the cell holding its centre; the first box of a cell wins, later ones in
the same cell are dropped, and boxes narrower or lower than .005 are skipped (darknet's
``fill_truth_region``; darknet shuffles an image's boxes first). Responsible box: the one of the
cell with the highest IoU with the truth; when none overlaps it, the one with the smallest
RMSE of (x/S, y/S, w, h) (darknet's fallback). ``total`` is the sum of the parts divided by the
number of images, like the region loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolo_core.boxes import batched_nms, cxcywh_to_xyxy
from yolo_core.darknet_cfg import DetectionSpec
from yolo_core.postprocess import Detections
from yolo_core.region import RegionTargetError

# Darknet's fill_truth_region skips boxes narrower or lower than this (fraction of the image).
MIN_TRUTH_SIZE = .005


@dataclass
class DetectionOutput:
    """The raw output of a [detection] layer split in darknet's order."""

    probs: Tensor  # (B, S*S, C) class probabilities (softmax applied when the spec says so)
    conf: Tensor  # (B, S*S, n) confidences
    boxes: Tensor  # (B, S*S, n, 4) x, y offsets in the cell, w, h (square roots with sqrt=1)


def split_output(raw: Tensor, spec: DetectionSpec) -> DetectionOutput:
    """(B, S*S*(5n+C)) raw output (any shape with that many numbers per image) -> its parts."""
    bsz = raw.shape[0]
    flat = raw.reshape(bsz, -1)
    if flat.shape[1] != spec.inputs:
        raise ValueError(f"detection output must hold side^2 x (5 num + classes) = {spec.side}^2 x "
                         f"(5 x {spec.num} + {spec.classes}) = {spec.inputs} numbers per image, got {flat.shape[1]}")
    cells, c, n = spec.side * spec.side, spec.classes, spec.num
    probs = flat[:, :cells * c].reshape(bsz, cells, c)
    if spec.softmax:
        probs = probs.softmax(-1)
    conf = flat[:, cells * c:cells * (c + n)].reshape(bsz, cells, n)
    boxes = flat[:, cells * (c + n):].reshape(bsz, cells, n, 4)
    return DetectionOutput(probs, conf, boxes)


def decode_boxes(boxes: Tensor, spec: DetectionSpec) -> Tensor:
    """(B, S*S, n, 4) raw boxes -> (cx, cy, w, h) fractions of the image (darknet's
    ``get_detection_detections`` with w = h = 1)."""
    side = spec.side
    cell = torch.arange(side * side, device=boxes.device)
    col = (cell % side).to(boxes.dtype).view(1, -1, 1)
    row = (cell // side).to(boxes.dtype).view(1, -1, 1)
    wh = boxes[..., 2:] ** 2 if spec.sqrt else boxes[..., 2:]
    return torch.cat(((boxes[..., :1] + col[..., None]) / side, (boxes[..., 1:2] + row[..., None]) / side, wh), -1)


@torch.no_grad()
def detect(raw: Tensor, spec: DetectionSpec, thresh: float = .2, nms: float = .4) -> list[Detections]:
    """Detections per image, as ``darknet yolo test`` finds them (defaults are its thresh and NMS).

    Boxes are corners (x1, y1, x2, y2) as fractions of the image (not clipped); classes index
    the layer's classes."""
    out = split_output(raw.float(), spec)
    boxes = cxcywh_to_xyxy(decode_boxes(out.boxes, spec))  # (B, S*S, n, 4)
    scores = out.conf[..., None] * out.probs[:, :, None, :]  # (B, S*S, n, C)
    img, cell, box, cls = (scores > thresh).nonzero(as_tuple=True)
    kept_scores = scores[img, cell, box, cls]
    kept_boxes = boxes[img, cell, box]
    keep = batched_nms(kept_boxes, kept_scores, img * spec.classes + cls, nms)
    img, kept_boxes, kept_scores, cls = img[keep], kept_boxes[keep], kept_scores[keep], cls[keep]
    return [Detections(kept_boxes[img == b], kept_scores[img == b], cls[img == b]) for b in range(raw.shape[0])]


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """Darknet's box_iou of (cx, cy, w, h) boxes, element-wise; 0 where the union is empty."""
    lo = torch.maximum(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    hi = torch.minimum(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    inter = (hi - lo).clamp(min=0).prod(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter
    return torch.where(union > 0, inter / union.where(union > 0, torch.ones_like(union)), torch.zeros_like(union))


class DetectionLoss(nn.Module):
    """YOLOv1's loss with darknet's semantics (see the module docstring); settings from a ``DetectionSpec``."""

    def __init__(self, spec: DetectionSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, raw: Tensor, targets: dict[str, Tensor], seen: int = 0) -> dict[str, Tensor]:
        """Loss parts (``total``, ``coord``, ``obj``, ``noobj``, ``cls``, ``prior``), per image.

        ``targets`` as for the region loss: ``boxes`` (B, M, 4) cxcywh fractions, ``labels``
        (B, M) with -1 for padding; ``image_label``, if given, must be all -1 (YOLOv1 trains on
        detection images only). ``seen`` is accepted for the region loss's signature and unused.
        """
        spec = self.spec
        side, cells = spec.side, spec.side * spec.side
        bsz = raw.shape[0]
        out = split_output(raw.float(), spec)
        boxes, labels = self._check_targets(targets, bsz, raw.device)

        # Truth per cell: the first usable box whose centre lies in it.
        usable = (labels >= 0) & (boxes[..., 2] >= MIN_TRUTH_SIZE) & (boxes[..., 3] >= MIN_TRUTH_SIZE)
        bi, ti = usable.nonzero(as_tuple=True)
        col = (boxes[bi, ti, 0] * side).long().clamp(0, side - 1)
        row = (boxes[bi, ti, 1] * side).long().clamp(0, side - 1)
        slot = bi * cells + row * side + col
        order = torch.arange(slot.numel(), device=raw.device)
        first = torch.full((bsz * cells,), slot.numel(), device=raw.device).scatter_reduce(0, slot, order, "amin")
        win = first[slot] == order
        ob, ocell, truth = bi[win], (row * side + col)[win], boxes[bi[win], ti[win]]
        ocls = labels[bi[win], ti[win]]
        cell_xy = torch.stack((truth[:, 0] * side - col[win], truth[:, 1] * side - row[win]), -1)

        # Responsible box of each object cell: highest IoU, else smallest RMSE (darknet's order).
        pred = out.boxes[ob, ocell]  # (K, n, 4)
        with torch.no_grad():
            p = pred.detach()
            pwh = p[..., 2:] ** 2 if spec.sqrt else p[..., 2:]
            pbox = torch.cat((p[..., :2] / side, pwh), -1)
            tbox = torch.cat((cell_xy / side, truth[:, 2:]), -1)[:, None, :]
            iou = _iou(pbox, tbox)  # (K, n)
            rmse = (pbox - tbox).square().sum(-1).sqrt()
            best = torch.where(iou.amax(-1) > 0, iou.argmax(-1), rmse.argmin(-1)) if iou.numel() else \
                iou.new_zeros(0, dtype=torch.long)
            best_iou = iou.gather(1, best[:, None])[:, 0] if iou.numel() else iou.new_zeros(0)
        resp = pred[torch.arange(best.numel(), device=raw.device), best]  # (K, 4)
        twh = truth[:, 2:].sqrt() if spec.sqrt else truth[:, 2:]
        coord = .5 * spec.coord_scale * ((torch.cat((cell_xy, twh), -1) - resp) ** 2).sum()

        resp_conf = out.conf[ob, ocell, best]
        target = best_iou if spec.rescore else torch.ones_like(resp_conf)
        obj = .5 * spec.object_scale * ((target - resp_conf) ** 2).sum()
        noobj_mask = torch.ones_like(out.conf, dtype=torch.bool)
        noobj_mask[ob, ocell, best] = False
        noobj = .5 * spec.noobject_scale * (out.conf ** 2 * noobj_mask).sum()

        if spec.softmax:  # darknet's delta on softmax outputs is the cross-entropy gradient
            logits = raw.float().reshape(bsz, -1)[:, :cells * spec.classes].reshape(bsz, cells, -1)[ob, ocell]
            cls = spec.class_scale * nn.functional.cross_entropy(logits, ocls, reduction="sum")
        else:
            onehot = nn.functional.one_hot(ocls, spec.classes).to(out.probs.dtype)
            cls = .5 * spec.class_scale * ((onehot - out.probs[ob, ocell]) ** 2).sum()

        parts = {"coord": coord, "obj": obj, "noobj": noobj, "cls": cls, "prior": coord.new_zeros(())}
        parts = {k: v / bsz for k, v in parts.items()}
        parts["total"] = sum(parts.values())
        return parts

    def _check_targets(self, targets: dict[str, Tensor], bsz: int, device: torch.device) -> tuple[Tensor, Tensor]:
        for key in ("boxes", "labels"):
            if key not in targets:
                raise RegionTargetError(f"detection loss targets: missing '{key}' (have {sorted(targets)})")
        boxes = torch.as_tensor(targets["boxes"], device=device).float()
        labels = torch.as_tensor(targets["labels"], device=device).long()
        if boxes.ndim != 3 or boxes.shape[0] != bsz or boxes.shape[2] != 4 or labels.shape != boxes.shape[:2]:
            raise RegionTargetError(f"detection loss targets: 'boxes' must be ({bsz}, M, 4) and 'labels' ({bsz}, M), "
                                    f"got {tuple(boxes.shape)} and {tuple(labels.shape)}")
        image_label = targets.get("image_label")
        if image_label is not None and bool((torch.as_tensor(image_label) >= 0).any()):
            row = int((torch.as_tensor(image_label) >= 0).nonzero()[0, 0])
            raise RegionTargetError(f"detection loss targets: row {row} is a classification-only image "
                                    "(image_label >= 0); YOLOv1 trains on detection images only")
        bad = (labels < -1) | (labels >= self.spec.classes)
        if bad.any():
            b, t = (int(i) for i in bad.nonzero()[0])
            raise RegionTargetError(f"detection loss targets: row {b}, box {t}: label {int(labels[b, t])} is not -1 "
                                    f"or a class index in [0, {self.spec.classes})")
        used = labels >= 0
        ok = (boxes[..., :2] >= 0).all(-1) & (boxes[..., :2] <= 1).all(-1) & (boxes[..., 2:] > 0).all(-1) \
            & (boxes[..., 2:] <= 1).all(-1)
        if (used & ~ok).any():
            b, t = (int(i) for i in (used & ~ok).nonzero()[0])
            raise RegionTargetError(f"detection loss targets: row {b}, box {t} is {boxes[b, t].tolist()}; boxes must "
                                    "be finite (cx, cy, w, h) fractions (cx, cy in [0, 1], w, h in (0, 1])")
        return boxes, labels
