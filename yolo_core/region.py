"""Darknet's region layer: activations, box decoding and the YOLOv2 / YOLO9000 loss.

Layout (darknet's): the raw head output is (B, A*(5+C), H, W) with channel
``anchor*(5+C) + entry``, entries x, y, w, h, objectness, then C class scores. x, y and
objectness go through a logistic, w and h stay raw, classes get a softmax (or, with a
WordTree, one softmax per sibling group). A box for cell (i, j) and anchor (pw, ph) in grid
units is ``((i + sx)/W, (j + sy)/H, pw*exp(tw)/W, ph*exp(th)/H)``, fractions of the network
input (see ``transforms.unletterbox_boxes`` for pixels of the original image).

``location='offset'`` (not darknet's; the YOLO9000 paper's Table 2 before "direct location
prediction") replaces the logistic centre with the region proposal network's unconstrained
offset, x = xa + tx * wa: the centre in its cell is ``.5 + tx * pw`` (``cell_offsets``), and the
loss's coordinate and prior errors are taken on tx itself (``xy_error``), as the RPN regresses it.

The loss reproduces darknet's deltas (``forward_region_layer``) as a differentiable sum:

* ``noobj``: 1/2 noobject_scale obj^2 for every prediction, except those whose decoded box has
  IoU > ``thresh`` (.6) with a truth of the image, and except responsible predictions.
* ``prior``: while ``seen < warmup_images`` (12,800), 1/2 .01 ((.5-sx)^2 + (.5-sy)^2 + tw^2 +
  th^2) for every prediction of a detection image that no truth is assigned to.
* ``coord``: each truth (the first ``max_boxes`` = 30 of an image) goes to the cell holding its
  centre and to the anchor whose shape best matches its own (IoU of boxes centred together);
  1/2 s ((tx-sx)^2 + (ty-sy)^2 + (tw'-tw)^2 + (th'-th)^2) with the darknet targets and
  s = coord_scale * (2 - w*h) (``variant='head'``) or coord_scale (``'j17'``).
* ``obj``: 1/2 object_scale (t - obj)^2 at responsible predictions, t = IoU of the decoded
  box with its truth (``rescore``, a constant) or 1.
* ``cls``: class_scale x cross-entropy, for a tree one term per sibling group on the path from
  the label to its root (groups below the label or off its path get nothing).
* A later truth in the same cell and anchor overwrites an earlier one, as darknet's delta
  assignments do: coordinates and objectness wholly, class groups group by group.
* Classification-only images (``image_label >= 0``): no coordinate or prior terms; every
  prediction gets ``noobj`` except the one ``cls_select`` picks (below), which gets the
  class loss for the label and, with ``'j17'``, 1/2 object_scale (.3 - obj)^2 when obj < .3
  (``'head'`` gives it no objectness term). Without a tree the same rule uses the flat softmax.
  ``'paper'`` follows the paper's text instead of either commit ("we only backpropagate
  classification loss", plus the .3 objectness assumption): the best prediction gets the
  class loss and the .3 pull, and no prediction of a classification image gets ``noobj``.
  Darknet's no-object term there teaches that a classification image's object is background
  everywhere but at one prediction, which keeps objectness off the classes that only
  classification data shows; otherwise it is the 'j17' loss.
* ``cls_select``: which prediction of a classification image is "the best one", the one that
  gets its class loss (and the 'j17' / 'paper' .3 objectness pull):

  - 'label' (YOLO9000 paper, darknet ``region_layer.c``, Detic's ``IMAGE_LABEL_LOSS:
    max_score``): the highest obj x P(label). From scratch it has an easy way out: with a few
    labels per sibling group and hundreds of predictions, some prediction already favours any
    given label, so the loss can be met by scoring labels at arbitrary predictions without
    reading the object (on the sample data the fine classes stayed at chance after 1200 steps;
    with 'object' they reached 69% top-1). Darknet starts joint training from an
    ImageNet-trained backbone, where this matters less.
  - 'object' (Detic's paper, Table 2, "max-object-score"): the highest objectness.
  - 'size' (Detic's default, ``IMAGE_LABEL_LOSS: max_size``): the largest decoded box among the
    K most object-like predictions. Detic takes the largest of its 128 top-scored proposals
    (``WS_NUM_PROPS``) on image-labelled inputs of 384 px (``DATALOADER.DATASET_INPUT_SIZE``
    default [896, 384], detic/config.py), i.e. 128 candidates per 12 x 12 stride-32 cells; the
    default K keeps that density: ``round(128 * H * W / 144)`` (150 of 845 predictions at 416,
    89 at 320, 321 at 608), capped at the number of predictions. ``cls_topk`` sets K directly.
  - 'image' (Detic's ``ADD_IMAGE_BOX`` with ``IMAGE_LABEL_LOSS: image``): the label as a
    whole-image box. YOLO has no RoI pooling of an arbitrary box, so the whole-image box is
    taught where darknet would assign a truth (0.5, 0.5, 1, 1): the centre cell and the anchor
    whose shape best matches the full image. The chosen prediction does not depend on the
    model's outputs.

  ``cls_loss_weight`` multiplies the class loss of classification images only (Detic's
  ``IMAGE_LOSS_WEIGHT``, 0.1 there; 1 is darknet, which has no separate weight).

Normalization: every part is summed over the batch and divided by the number of images B,
so ``total`` is the loss per image. Its gradient times B equals minus darknet's deltas, and
darknet divides its learning rate by the batch size, so plain SGD on ``total`` takes
darknet's step. With gradient accumulation over subdivisions, divide by their number too.
The loss is computed in float32 whatever the input dtype (safe under autocast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from yolo_core.boxes import aligned_iou_cxcywh, box_iou_cxcywh


class RegionTargetError(ValueError):
    """Training targets that cannot be used; the message names the batch row, box and field."""

    user_facing = True


@dataclass
class RegionOutput:
    """Activated region outputs. Each field is (B, A, H, W) except ``cls`` and
    ``cls_logits``, which are (B, A, H, W, C) (classes last)."""

    tx: Tensor  # logistic(x) (or .5 + x * pw, see cell_offsets): offset of the centre inside its cell
    ty: Tensor
    tw: Tensor  # raw: log of the size relative to the anchor
    th: Tensor
    obj: Tensor  # logistic(objectness)
    cls: Tensor  # conditional class probabilities (flat softmax, or per sibling group)
    cls_logits: Tensor


def _split(raw: Tensor, num_anchors: int, num_classes: int) -> Tensor:
    """(B, A*(5+C), H, W) -> a (B, A, 5+C, H, W) view."""
    if raw.ndim != 4 or raw.shape[1] != num_anchors * (5 + num_classes):
        raise ValueError(f"region input must be (B, {num_anchors}*(5+{num_classes}) = "
                         f"{num_anchors * (5 + num_classes)}, H, W), got {tuple(raw.shape)}")
    b, _, h, w = raw.shape
    return raw.view(b, num_anchors, 5 + num_classes, h, w)


LOCATIONS = (None, "offset")


def cell_offsets(x: Tensor, y: Tensor, anchors: Tensor | None, location: str | None = None) -> tuple[Tensor, Tensor]:
    """The box centre inside its cell from raw (B, A, H, W) x and y: darknet's logistic (direct
    location prediction, ``location`` None) or the RPN's unconstrained ``.5 + t * anchor``
    (``'offset'``, anchors (A, 2) in grid units)."""
    if location is None:
        return x.sigmoid(), y.sigmoid()
    if location != "offset" or anchors is None:
        raise ValueError(f"location must be None or 'offset' (with anchors), got {location!r}")
    a = anchors.to(x.dtype)
    return .5 + x * a[:, 0].view(1, -1, 1, 1), .5 + y * a[:, 1].view(1, -1, 1, 1)


def xy_error(target: Tensor, offset: Tensor, prior: Tensor, location: str | None = None) -> Tensor:
    """The coordinate error of a centre offset: darknet's ``target - sigma(t)`` (direct), or
    the RPN's ``t* - t = (target - offset) / prior`` (``'offset'``; prior: the anchor's side)."""
    return target - offset if location is None else (target - offset) / prior


def activate(raw: Tensor, num_anchors: int, num_classes: int, tree: Any = None, location: str | None = None,
             anchors: Tensor | Sequence[Sequence[float]] | None = None) -> RegionOutput:
    """Darknet's region activations of a raw head output (B, A*(5+C), H, W); ``location``
    'offset' (with ``anchors``) gives unconstrained centres (see ``cell_offsets``)."""
    v = _split(raw, num_anchors, num_classes)
    logits = v[:, :, 5:].permute(0, 1, 3, 4, 2)
    cls = tree.softmax(logits) if tree is not None else logits.softmax(-1)
    a = _anchor_tensor(anchors, raw) if anchors is not None else None
    tx, ty = cell_offsets(v[:, :, 0], v[:, :, 1], a, location)
    return RegionOutput(tx=tx, ty=ty, tw=v[:, :, 2], th=v[:, :, 3], obj=v[:, :, 4].sigmoid(), cls=cls,
                        cls_logits=logits)


def _anchor_tensor(anchors: Tensor | Sequence[Sequence[float]], like: Tensor) -> Tensor:
    a = torch.as_tensor(anchors, dtype=like.dtype, device=like.device)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"anchors must be (A, 2) widths and heights in grid units, got {tuple(a.shape)}")
    return a


def _decode(sx: Tensor, sy: Tensor, tw: Tensor, th: Tensor, anchors: Tensor) -> Tensor:
    """Darknet's get_region_box over (B, A, H, W) -> (B, A, H, W, 4) cxcywh fractions."""
    _, a, h, w = sx.shape
    if anchors.shape[0] != a:
        raise ValueError(f"{anchors.shape[0]} anchors given for a region output with {a}")
    gx = torch.arange(w, device=sx.device, dtype=sx.dtype).view(1, 1, 1, w)
    gy = torch.arange(h, device=sx.device, dtype=sx.dtype).view(1, 1, h, 1)
    pw = anchors[:, 0].view(1, a, 1, 1)
    ph = anchors[:, 1].view(1, a, 1, 1)
    return torch.stack(((gx + sx) / w, (gy + sy) / h, pw * tw.exp() / w, ph * th.exp() / h), dim=-1)


def decode_boxes(out: RegionOutput, anchors: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """Boxes (B, A, H, W, 4) as (cx, cy, w, h) fractions of the network input."""
    return _decode(out.tx, out.ty, out.tw, out.th, _anchor_tensor(anchors, out.tx))


def _label_paths(parent: Tensor) -> Tensor:
    """(N, D) table: row n lists n, its parent, ... up to its root, padded with -1."""
    cols = [torch.arange(parent.numel(), dtype=torch.long, device=parent.device)]
    while True:
        prev = cols[-1]
        nxt = torch.where(prev >= 0, parent[prev.clamp(min=0)], torch.full_like(prev, -1))
        if bool((nxt < 0).all()):
            return torch.stack(cols, dim=1)
        cols.append(nxt)


@dataclass
class RegionTargets:
    """What :meth:`RegionLoss.build_targets` assigns in a batch (flat indices run over image,
    anchor, row, column)."""

    responsible: tuple[Tensor, Tensor, Tensor, Tensor]  # (image, anchor, row, col) of each truth's predictor
    truth: Tensor  # (R, 4) the truth each responsible prediction answers, cxcywh fractions
    responsible_pos: Tensor  # (R,) their flat indices
    obj_target: Tensor  # (R,) objectness targets: IoU with the truth (rescore) or 1
    noobj_mask: Tensor  # (B * cells,) predictions penalised toward objectness 0
    is_cls: Tensor  # (B,) classification-only images
    cls_pos: Tensor  # flat index of the prediction chosen in each classification image
    cls_label: Tensor  # their image labels
    class_pos: Tensor  # flat indices of the truths' predictions, which get a class loss
    class_label: Tensor  # their class / tree node


CLS_SELECT_RULES = ("label", "object", "size", "image")
# Detic's max-size candidates: WS_NUM_PROPS = 128 proposals on a 384 px image-labelled input,
# i.e. on 12 x 12 stride-32 cells (detic/config.py defaults).
DETIC_PROPOSALS = 128
DETIC_GRID_CELLS = (384 // 32) ** 2


def size_rule_topk(grid_h: int, grid_w: int, num_predictions: int, topk: int | None = None) -> int:
    """K of the 'size' rule on a grid_h x grid_w grid: ``topk`` if given, else Detic's 128
    proposals per 144 cells scaled to this grid; at most ``num_predictions``."""
    k = topk if topk is not None else round(DETIC_PROPOSALS * grid_h * grid_w / DETIC_GRID_CELLS)
    return max(1, min(k, num_predictions))


class RegionLoss(nn.Module):
    """YOLOv2 / YOLO9000 region loss with darknet's semantics (see the module docstring).

    ``anchors`` (A, 2) in grid units; ``tree`` a ``yolo_core.tree.Tree`` for hierarchical
    classes (then ``num_classes`` is its number of nodes); ``variant`` 'head' (2018 code),
    'j17' (paper-era commit) or 'paper' (the paper's text); ``max_boxes`` darknet's cap of truths
    per image; ``cls_select`` the rule that picks the prediction a classification image teaches,
    ``cls_topk`` K of the 'size' rule (None: Detic's, scaled to the grid), ``cls_loss_weight``
    the weight of classification images' class loss, ``location`` the centre parametrisation
    (None: darknet's logistic; 'offset': the RPN's unconstrained offsets, see ``cell_offsets``).
    """

    def __init__(self, anchors: Tensor | Sequence[Sequence[float]], num_classes: int, tree: Any = None,
                 variant: Literal["head", "j17", "paper"] = "head", thresh: float = .6, object_scale: float = 5.,
                 noobject_scale: float = 1., coord_scale: float = 1., class_scale: float = 1.,
                 warmup_images: int = 12800, rescore: bool = True, max_boxes: int = 30,
                 cls_select: Literal["label", "object", "size", "image"] = "label", cls_topk: int | None = None,
                 cls_loss_weight: float = 1.0, location: str | None = None) -> None:
        super().__init__()
        if location not in LOCATIONS:
            raise ValueError(f"location must be None (darknet's logistic offset) or 'offset', got {location!r}")
        self.location = location
        if variant not in ("head", "j17", "paper"):
            raise ValueError(f"variant must be 'head', 'j17' or 'paper', got {variant!r}")
        if cls_select not in CLS_SELECT_RULES:
            raise ValueError(f"cls_select must be one of {', '.join(map(repr, CLS_SELECT_RULES))}, "
                             f"got {cls_select!r}")
        if cls_topk is not None and cls_topk < 1:
            raise ValueError(f"cls_topk must be None (Detic's 128 scaled to the grid) or >= 1, got {cls_topk!r}")
        if not cls_loss_weight >= 0:
            raise ValueError(f"cls_loss_weight must be a number >= 0, got {cls_loss_weight!r}")
        self.cls_select = cls_select
        self.cls_topk = cls_topk
        self.cls_loss_weight = cls_loss_weight
        if tree is not None and tree.num_nodes != num_classes:
            raise ValueError(f"num_classes ({num_classes}) must equal the tree's {tree.num_nodes} nodes")
        self.register_buffer("anchors", _anchor_tensor(anchors, torch.empty(0)).clone())
        self.num_anchors = self.anchors.shape[0]
        self.num_classes = num_classes
        self.tree = tree
        self.variant = variant
        self.thresh = thresh
        self.object_scale = object_scale
        self.noobject_scale = noobject_scale
        self.coord_scale = coord_scale
        self.class_scale = class_scale
        self.warmup_images = warmup_images
        self.rescore = rescore
        self.max_boxes = max_boxes
        # A flat softmax is one group whose paths are single nodes.
        if tree is None:
            self.register_buffer("paths", torch.arange(num_classes).view(-1, 1))
            self.register_buffer("node_group", torch.zeros(num_classes, dtype=torch.long))
            self.register_buffer("group_offset", torch.zeros(1, dtype=torch.long))
            self.register_buffer("group_size", torch.full((1,), num_classes, dtype=torch.long))
        else:
            self.register_buffer("paths", _label_paths(tree.parent.cpu().long()))
            self.register_buffer("node_group", tree.group.cpu().long().clone())
            self.register_buffer("group_offset", tree.group_offset.cpu().long().clone())
            self.register_buffer("group_size", tree.group_size.cpu().long().clone())

    def loss(self, raw: Tensor, targets: dict[str, Tensor], seen: int) -> dict[str, Tensor]:
        """Same as calling the module."""
        return self(raw, targets, seen)

    def forward(self, raw: Tensor, targets: dict[str, Tensor], seen: int) -> dict[str, Tensor]:
        """Loss parts (``total``, ``coord``, ``obj``, ``noobj``, ``cls``, ``prior``), per image.

        ``targets``: ``boxes`` (B, M, 4) cxcywh fractions, ``labels`` (B, M) class/node index
        with -1 for padding, ``image_label`` (B,) label of classification-only images, -1 for
        detection images (optional: all -1). ``seen``: images trained on so far, counted as
        darknet does (including this batch).
        """
        v = _split(raw.float(), self.num_anchors, self.num_classes)
        boxes, labels, image_label = self._check_targets(targets, v.shape[0], raw.device)
        if self.tree is not None:
            self.tree = self.tree.to(raw.device)
        # One slice for the five box entries: each slice of v costs a full-size gradient buffer.
        head = v[:, :, :5]
        sx, sy = cell_offsets(head[:, :, 0], head[:, :, 1], self.anchors.float(), self.location)
        tw, th = head[:, :, 2], head[:, :, 3]
        obj = head[:, :, 4].sigmoid()
        t = self.build_targets(v, sx, sy, tw, th, obj, boxes, labels, image_label)
        return self._loss(v, sx, sy, tw, th, obj, t, seen)

    @torch.no_grad()
    def build_targets(self, v: Tensor, sx: Tensor, sy: Tensor, tw: Tensor, th: Tensor, obj: Tensor,
                      boxes: Tensor, labels: Tensor, image_label: Tensor) -> RegionTargets:
        """Target assignment (no gradients): which prediction answers which truth, the objectness
        targets and the no-object mask (lightnet's ``build_targets`` has the same role)."""
        bsz, num_a, _, gh, gw = v.shape
        cells = num_a * gh * gw
        anchors = self.anchors.float()
        pred = _decode(sx, sy, tw, th, anchors)

        is_cls = image_label >= 0
        # Truths darknet sees: boxes of detection images, at most max_boxes per image.
        valid = (labels >= 0) & ~is_cls[:, None]
        valid &= valid.cumsum(1) <= self.max_boxes

        # No-object mask: predictions overlapping no truth by more than `thresh`.
        ious = box_iou_cxcywh(pred.view(bsz, cells, 4), boxes).masked_fill(~valid[:, None, :], 0)
        best = ious.amax(-1) if ious.shape[-1] else ious.new_zeros(bsz, cells)
        noobj_mask = (best <= self.thresh).view(-1)

        # Assignment: centre cell, best anchor by shape; the last truth per slot wins.
        bi, ti = valid.nonzero(as_tuple=True)
        truth = boxes[bi, ti]
        tx_, ty_, tw_, th_ = truth.unbind(-1)
        ci = (tx_ * gw).long().clamp(0, gw - 1)
        cj = (ty_ * gh).long().clamp(0, gh - 1)
        aw, ah = anchors[:, 0] / gw, anchors[:, 1] / gh
        inter = torch.minimum(tw_[:, None], aw) * torch.minimum(th_[:, None], ah)
        shape_iou = inter / (tw_[:, None] * th_[:, None] + aw * ah - inter)
        an = shape_iou.argmax(-1)  # first best, like darknet's strict '>'
        pos = ((bi * num_a + an) * gh + cj) * gw + ci
        order = torch.arange(pos.numel(), device=v.device)
        last = torch.full((bsz * cells,), -1, dtype=torch.long, device=v.device)
        last = last.scatter_reduce(0, pos, order, reduce="amax")
        win = last[pos] == order
        resp = (bi[win], an[win], cj[win], ci[win])
        wt = truth[win]
        obj_target = aligned_iou_cxcywh(pred[resp], wt) if self.rescore else torch.ones_like(wt[:, 0])
        noobj_mask[pos[win]] = False

        # Classification-only images: the prediction the cls_select rule picks.
        cls_img = is_cls.nonzero(as_tuple=True)[0]
        cls_pos = cls_img
        if cls_img.numel():
            best = self.select_for_label(v, obj, pred, image_label)
            cls_pos = cls_img * cells + best[cls_img]
        noobj_mask[cls_pos] = False
        if self.variant == "paper":
            noobj_mask &= ~is_cls.repeat_interleave(cells)
        return RegionTargets(
            responsible=resp, truth=wt, responsible_pos=pos[win], obj_target=obj_target, noobj_mask=noobj_mask,
            is_cls=is_cls, cls_pos=cls_pos, cls_label=image_label[cls_img], class_pos=pos,
            class_label=labels[bi, ti])

    @torch.no_grad()
    def select_for_label(self, v: Tensor, obj: Tensor, pred: Tensor, image_label: Tensor) -> Tensor:
        """For each image, the flat (anchor, row, col) index of the prediction that the
        ``cls_select`` rule picks (see the module docstring)."""
        bsz, num_a, _, gh, gw = v.shape
        if self.cls_select == "label":
            return self._best_for_label(v, obj, image_label)
        if self.cls_select == "object":
            return obj.reshape(bsz, -1).argmax(-1)
        if self.cls_select == "size":
            k = size_rule_topk(gh, gw, num_a * gh * gw, self.cls_topk)
            top = obj.reshape(bsz, -1).topk(k, dim=1).indices
            area = (pred[..., 2] * pred[..., 3]).reshape(bsz, -1).gather(1, top)
            return top.gather(1, area.argmax(1, keepdim=True)).squeeze(1)
        # 'image': where darknet's assignment puts a whole-image truth (0.5, 0.5, 1, 1).
        anchors = self.anchors.float()
        aw, ah = anchors[:, 0] / gw, anchors[:, 1] / gh
        shape_iou = aw.clamp(max=1) * ah.clamp(max=1) / (1 + aw * ah - aw.clamp(max=1) * ah.clamp(max=1))
        flat = (int(shape_iou.argmax()) * gh + gh // 2) * gw + gw // 2
        return torch.full((bsz,), flat, dtype=torch.long, device=v.device)

    def _loss(self, v: Tensor, sx: Tensor, sy: Tensor, tw: Tensor, th: Tensor, obj: Tensor, t: RegionTargets,
              seen: int) -> dict[str, Tensor]:
        """The loss arithmetic on assigned targets (darknet's deltas, as squared errors)."""
        bsz, num_a, _, gh, gw = v.shape
        cells = num_a * gh * gw
        anchors = self.anchors.float()
        # Coordinates and objectness of responsible predictions.
        wb, wa, wj, wi = t.responsible
        w_tx, w_ty, w_tw, w_th = t.truth.unbind(-1)
        scale = self.coord_scale * ((2 - w_tw * w_th) if self.variant == "head" else torch.ones_like(w_tw))
        coord_err = (xy_error(w_tx * gw - wi, sx[wb, wa, wj, wi], anchors[wa, 0], self.location) ** 2
                     + xy_error(w_ty * gh - wj, sy[wb, wa, wj, wi], anchors[wa, 1], self.location) ** 2
                     + (torch.log(w_tw * gw / anchors[wa, 0]) - tw[wb, wa, wj, wi]) ** 2
                     + (torch.log(w_th * gh / anchors[wa, 1]) - th[wb, wa, wj, wi]) ** 2)
        coord = .5 * (scale * coord_err).sum()
        obj_loss = .5 * self.object_scale * ((t.obj_target - obj[wb, wa, wj, wi]) ** 2).sum()

        # Warm-up toward the anchors' priors for unassigned predictions of detection images.
        prior = coord.new_zeros(())
        if seen < self.warmup_images:
            prior_mask = (~t.is_cls).view(bsz, 1).expand(bsz, cells).reshape(-1).clone()
            prior_mask[t.responsible_pos] = False
            aw, ah = anchors[:, 0].view(1, -1, 1, 1), anchors[:, 1].view(1, -1, 1, 1)
            prior_err = (xy_error(.5, sx, aw, self.location) ** 2 + xy_error(.5, sy, ah, self.location) ** 2
                         + tw ** 2 + th ** 2)
            prior = .5 * .01 * (prior_err.reshape(-1) * prior_mask).sum()

        if self.variant in ("j17", "paper"):
            o = obj.reshape(-1)[t.cls_pos]
            obj_loss = obj_loss + .5 * self.object_scale * ((.3 - o).clamp(min=0) ** 2).sum()

        noobj = .5 * self.noobject_scale * ((obj ** 2).reshape(-1) * t.noobj_mask).sum()
        cls = self._class_loss(v, t.class_pos, t.class_label)
        cls = cls + self.cls_loss_weight * self._class_loss(v, t.cls_pos, t.cls_label)

        parts = {"coord": coord, "obj": obj_loss, "noobj": noobj, "cls": cls, "prior": prior}
        parts = {k: p / bsz for k, p in parts.items()}
        parts["total"] = sum(parts.values())
        return parts

    def _check_targets(self, targets: dict[str, Tensor], bsz: int,
                       device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Validate and return (boxes float32 (B, M, 4), labels (B, M), image_label (B,))."""
        for key in ("boxes", "labels"):
            if key not in targets:
                raise RegionTargetError(f"region loss targets: missing '{key}' (have {sorted(targets)})")
        boxes = torch.as_tensor(targets["boxes"], device=device).float()
        labels = torch.as_tensor(targets["labels"], device=device).long()
        image_label = targets.get("image_label", torch.full((bsz,), -1))
        image_label = torch.as_tensor(image_label, device=device).long()
        if boxes.ndim != 3 or boxes.shape[0] != bsz or boxes.shape[2] != 4:
            raise RegionTargetError(f"region loss targets: 'boxes' must be ({bsz}, M, 4), "
                                    f"got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:2]:
            raise RegionTargetError(f"region loss targets: 'labels' must be {tuple(boxes.shape[:2])}, "
                                    f"got {tuple(labels.shape)}")
        if image_label.shape != (bsz,):
            raise RegionTargetError(f"region loss targets: 'image_label' must be ({bsz},), "
                                    f"got {tuple(image_label.shape)}")
        self._check_range("labels", labels)
        self._check_range("image_label", image_label)
        used = labels >= 0
        both = used.any(1) & (image_label >= 0)
        if both.any():
            b = int(both.nonzero()[0, 0])
            raise RegionTargetError(f"region loss targets: row {b} has both boxes and an image_label; "
                                    "a classification-only image must have no boxes (labels all -1)")
        cx, cy, w, h = boxes.unbind(-1)
        checks = (("boxes cx", cx, (cx >= 0) & (cx <= 1)), ("boxes cy", cy, (cy >= 0) & (cy <= 1)),
                  ("boxes w", w, (w > 0) & (w <= 1)), ("boxes h", h, (h > 0) & (h <= 1)))
        for field, value, ok in checks:
            bad = used & ~ok  # NaN fails every comparison, so it lands here too
            if bad.any():
                b, t = (int(i) for i in bad.nonzero()[0])
                raise RegionTargetError(f"region loss targets: row {b}, box {t}: field '{field}' is "
                                        f"{float(value[b, t])!r}, must be a finite fraction of the image "
                                        "(cx, cy in [0, 1], w, h in (0, 1])")
        return boxes, labels, image_label

    def _check_range(self, field: str, x: Tensor) -> None:
        bad = (x < -1) | (x >= self.num_classes)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise RegionTargetError(f"region loss targets: '{field}' at {idx} is {int(x[idx])}, must be -1 "
                                    f"(none) or a class index in [0, {self.num_classes})")

    @torch.no_grad()
    def _best_for_label(self, v: Tensor, obj: Tensor, label: Tensor) -> Tensor:
        """For each image, the flat (anchor, cell) index with the highest obj x P(label), P the
        product of conditional probabilities on the label's path (images with label -1: any).

        Only the sibling groups on the path are read (at most 221 of 9,418 nodes in 9k.tree),
        and a log-sum-exp per group gives the path's log-probability."""
        bsz, num_a, _, gh, gw = v.shape
        logits = v[:, :, 5:]
        path = self.paths[label.clamp(min=0)]  # (B, D), -1 padded
        depth = path.shape[1]
        on_path = path >= 0
        group = self.node_group[path.clamp(min=0)]
        size = torch.where(on_path, self.group_size[group], 0)
        # Members of every group on the path, flattened (B, D * S); padding moved to the end.
        span = torch.arange(int(size.max()), device=v.device)
        members = (self.group_offset[group][..., None] + span).flatten(1)
        used = (span < size[..., None]).flatten(1)
        level = torch.arange(depth, device=v.device).repeat_interleave(span.numel()).expand_as(members)
        order = torch.sort((~used).to(torch.uint8), dim=1, stable=True).indices[:, :int(used.sum(1).max())]
        used = used.gather(1, order)
        members = torch.where(used, members.gather(1, order), 0)
        level = torch.where(used, level.gather(1, order), depth)  # padding: a spare level
        # Per-group log-sum-exp over (B, A, members, H, W), shifted by each group's maximum.
        expand = (bsz, num_a, members.shape[1], gh, gw)
        x = logits.gather(2, members.view(bsz, 1, -1, 1, 1).expand(expand))
        lvl = level.view(bsz, 1, -1, 1, 1).expand(expand)
        top = x.new_full((bsz, num_a, depth + 1, gh, gw), float("-inf")).scatter_reduce(2, lvl, x, "amax")
        total = torch.zeros_like(top).scatter_add(2, lvl, (x - top.gather(2, lvl)).exp())
        lse = (top + total.log())[:, :, :depth]
        path_index = path.clamp(min=0).view(bsz, 1, depth, 1, 1).expand(bsz, num_a, depth, gh, gw)
        node_logit = logits.gather(2, path_index)
        log_p = ((node_logit - lse) * on_path.view(bsz, 1, depth, 1, 1)).sum(2)
        return (obj * log_p.exp()).reshape(bsz, -1).argmax(-1)  # first maximum, like darknet

    def _class_loss(self, v: Tensor, pos: Tensor, label: Tensor) -> Tensor:
        """class_scale x cross-entropy of each sibling group on each label's path at flat
        prediction index ``pos``; when several labels write the same group of the same
        prediction, the last one wins (darknet's assignment order)."""
        if pos.numel() == 0:
            return v.new_zeros(())
        _, num_a, _, gh, gw = v.shape
        path = self.paths[label]  # (E, D)
        on_path = path >= 0
        e_pos = pos[:, None].expand_as(path)[on_path]
        e_node = path[on_path]
        e_order = torch.arange(pos.numel(), device=pos.device)[:, None].expand_as(path)[on_path]
        slot_key = e_pos * int(self.node_group.max() + 1) + self.node_group[e_node]
        slots, slot = torch.unique(slot_key, return_inverse=True)
        last = torch.full((slots.numel(),), -1, dtype=torch.long, device=pos.device)
        last = last.scatter_reduce(0, slot, e_order, reduce="amax")
        keep = e_order == last[slot]
        e_pos, e_node = e_pos[keep], e_node[keep]
        # Class logits of just the predictions involved: (K, C).
        upos, row = torch.unique(e_pos, return_inverse=True)
        b, rest = upos // (num_a * gh * gw), upos % (num_a * gh * gw)
        a, rest = rest // (gh * gw), rest % (gh * gw)
        logits = v[b, a, :, rest // gw, rest % gw][:, 5:]  # index first: its gradient is sparse
        logp = logits.log_softmax(-1) if self.tree is None else self.tree.log_softmax(logits)
        return -self.class_scale * logp[row, e_node].sum()
