"""IoU and NMS against plain-Python references."""

from __future__ import annotations

import random

import pytest
import torch

from yolo_core.boxes import (
    aligned_iou_cxcywh,
    batched_nms,
    box_iou_cxcywh,
    cxcywh_to_xyxy,
    iou,
    nms,
    xyxy_to_cxcywh,
)


def ref_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes: list[list[float]], scores: list[float], thresh: float) -> list[int]:
    """Darknet's do_nms_sort for one class, written as plainly as possible."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    alive = {i: True for i in order}
    keep = []
    for k, i in enumerate(order):
        if not alive[i]:
            continue
        keep.append(i)
        for j in order[k + 1:]:
            if ref_iou(boxes[i], boxes[j]) > thresh:
                alive[j] = False
    return keep


def random_boxes(rng: random.Random, n: int) -> list[list[float]]:
    out = []
    for _ in range(n):
        x, y = rng.uniform(0, .8), rng.uniform(0, .8)
        out.append([x, y, x + rng.uniform(.02, .3), y + rng.uniform(.02, .3)])
    return out


def test_iou_hand_values() -> None:
    a = torch.tensor([[0., 0., 2., 2.]])
    b = torch.tensor([[1., 1., 3., 3.], [2., 2., 3., 3.], [0., 0., 2., 2.], [0.5, 0.5, 1.5, 1.5]])
    # overlap 1 / union 7; touching corners; identical; contained (1 / 4).
    assert torch.allclose(iou(a, b), torch.tensor([[1 / 7, 0., 1., .25]]))


def test_iou_degenerate_boxes_are_zero_not_nan() -> None:
    z = torch.tensor([[.5, .5, .5, .5]])
    assert iou(z, z).item() == 0.0


def test_formats_round_trip_and_cxcywh_iou() -> None:
    gen = torch.Generator().manual_seed(0)
    xyxy = torch.tensor(random_boxes(random.Random(1), 20))
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy)), xyxy, atol=1e-6)
    c = xyxy_to_cxcywh(xyxy)
    assert torch.allclose(box_iou_cxcywh(c, c), iou(xyxy, xyxy), atol=1e-6)
    # Batched leading dimensions and the aligned version agree with the pairwise diagonal.
    batch = torch.rand(3, 5, 4, generator=gen) * .5 + torch.tensor([.25, .25, .05, .05])
    pair = box_iou_cxcywh(batch, batch)
    assert pair.shape == (3, 5, 5)
    assert torch.allclose(torch.diagonal(pair, dim1=-2, dim2=-1), aligned_iou_cxcywh(batch, batch))
    expected = [[ref_iou(cxcywh_to_xyxy(batch[0, i]).tolist(), cxcywh_to_xyxy(batch[0, j]).tolist())
                 for j in range(5)] for i in range(5)]
    assert torch.allclose(pair[0], torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thresh", [.3, .45, .7])
def test_nms_matches_reference(seed: int, thresh: float) -> None:
    rng = random.Random(seed)
    boxes = random_boxes(rng, 60)
    scores = [rng.random() for _ in boxes]
    keep = nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), thresh)
    assert keep.tolist() == ref_nms(boxes, scores, thresh)


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_is_nms_per_class(seed: int) -> None:
    rng = random.Random(100 + seed)
    boxes = random_boxes(rng, 80)
    scores = [rng.random() for _ in boxes]
    classes = [rng.randrange(4) for _ in boxes]
    keep = batched_nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64),
                       torch.tensor(classes), .45)
    expected = []
    for c in range(4):
        idx = [i for i in range(len(boxes)) if classes[i] == c]
        expected += [idx[k] for k in ref_nms([boxes[i] for i in idx], [scores[i] for i in idx], .45)]
    assert sorted(keep.tolist()) == sorted(expected)
    # Returned by decreasing score.
    kept_scores = [scores[i] for i in keep.tolist()]
    assert kept_scores == sorted(kept_scores, reverse=True)


def test_batched_nms_small_chunks_give_the_same_answer() -> None:
    rng = random.Random(7)
    boxes = torch.tensor(random_boxes(rng, 50))
    scores = torch.rand(50, generator=torch.Generator().manual_seed(7))
    classes = torch.randint(0, 6, (50,), generator=torch.Generator().manual_seed(8))
    full = batched_nms(boxes, scores, classes, .4)
    assert torch.equal(batched_nms(boxes, scores, classes, .4, max_elements=1), full)


def test_nms_empty_and_bad_shapes() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), .5).numel() == 0
    with pytest.raises(ValueError, match="boxes"):
        nms(torch.zeros(3, 5), torch.zeros(3), .5)
