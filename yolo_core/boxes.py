"""Box formats, IoU and non-maximum suppression, in plain torch.

Two formats are used across the library: ``cxcywh`` (centre, width, height), the layout
of darknet's ``box`` and of the shards, and ``xyxy`` (corners), what detections return.
IoU follows darknet's ``box_iou``: intersection over union, 0 when the boxes do not overlap
(and 0, not NaN, for two degenerate boxes). The IoU functions accept leading batch
dimensions, so a whole batch of predictions is compared with its truths in one call.

NMS is greedy (darknet's ``do_nms_sort``): boxes are taken by decreasing score and each
kept box suppresses the later ones whose IoU with it exceeds the threshold. Boxes are grouped
(per class, per image), padded, and all groups advance together: the only Python loop runs
over the rank within the largest group.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """(..., 4) centre/size -> corners."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """(..., 4) corners -> centre/size."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def _iou_from_corners(a: Tensor, b: Tensor) -> Tensor:
    """IoU of broadcast-compatible xyxy boxes (..., 4) and (..., 4) -> (...)."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    # Two empty boxes: darknet would divide 0 by 0; they do not overlap, so 0.
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1), torch.zeros_like(inter))


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes: a (..., N, 4), b (..., M, 4) -> (..., N, M)."""
    return _iou_from_corners(a.unsqueeze(-2), b.unsqueeze(-3))


def box_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of cxcywh boxes: a (..., N, 4), b (..., M, 4) -> (..., N, M)."""
    return iou(cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


def aligned_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of cxcywh boxes with the same shape (..., 4) -> (...)."""
    return _iou_from_corners(cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


def nms(boxes: Tensor, scores: Tensor, thresh: float) -> Tensor:
    """Greedy NMS. boxes (N, 4) xyxy, scores (N,) -> indices kept, by decreasing score.

    A box is suppressed when its IoU with a kept, higher-scored box is greater than
    ``thresh`` (darknet's strict ``>``). Equal scores keep their input order.
    """
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), thresh)


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, thresh: float,
                max_elements: int = 1 << 24) -> Tensor:
    """NMS within each class (or any integer group id, e.g. image x class): boxes of
    different groups never suppress each other. Returns indices kept, by decreasing score.

    Groups are padded to the largest one and processed together; ``max_elements`` bounds
    the size of one chunk's (groups, L, L) suppression matrix.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1] \
            or classes.shape != scores.shape:
        raise ValueError(f"NMS expects boxes (N, 4), scores (N,) and classes (N,), got "
                         f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(classes.shape)}")
    n = scores.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # Order by group, then by decreasing score (stable: ties keep their input order).
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(classes[order], stable=True).indices]
    _, counts = torch.unique_consecutive(classes[order], return_counts=True)
    num_groups, length = counts.numel(), int(counts.max())
    gid = torch.repeat_interleave(torch.arange(num_groups, device=boxes.device), counts)
    rank = torch.arange(n, device=boxes.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    padded = boxes.new_zeros(num_groups, length, 4)
    padded[gid, rank] = boxes[order]
    keep = torch.zeros(num_groups, length, dtype=torch.bool, device=boxes.device)
    keep[gid, rank] = True
    chunk = max(1, max_elements // (length * length))
    for c0 in range(0, num_groups, chunk):
        sup = iou(padded[c0:c0 + chunk], padded[c0:c0 + chunk]) > thresh
        k_chunk = keep[c0:c0 + chunk]
        # Greedy in score order, all groups of the chunk at once: a box still kept at rank
        # k suppresses the lower-ranked boxes of its group that overlap it.
        for k in range(length - 1):
            k_chunk[:, k + 1:] &= ~(sup[:, k, k + 1:] & k_chunk[:, k:k + 1])
    kept = order[keep[gid, rank]]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
