"""YOLOv1's loss: zero at the target, gradients only where the paper puts them, darknet's deltas."""

from __future__ import annotations

import pytest
import torch

from yolo_core.darknet_cfg import DetectionSpec
from yolo_core.detection import DetectionLoss, split_output
from yolo_core.region import RegionTargetError

SPEC = DetectionSpec(classes=3, coords=4, rescore=1, num=2, side=3, softmax=0, sqrt=1, object_scale=1.,
                     noobject_scale=.5, class_scale=1., coord_scale=5.)


def _raw_at_target(boxes: list[list[float]], labels: list[int], responsible: int = 0) -> torch.Tensor:
    """A raw output that predicts `boxes` exactly with box `responsible` of each object cell,
    confidence 1 there (IoU 1), 0 elsewhere; other boxes of the cell sit away from the truth."""
    raw = torch.zeros(1, SPEC.inputs)
    out = split_output(raw, SPEC)  # views into raw
    for (cx, cy, w, h), c in zip(boxes, labels):
        col, row = int(cx * SPEC.side), int(cy * SPEC.side)
        cell = row * SPEC.side + col
        out.probs[0, cell, c] = 1.
        out.conf[0, cell, responsible] = 1.
        out.boxes[0, cell, responsible] = torch.tensor([cx * 3 - col, cy * 3 - row, w ** .5, h ** .5])
        other = 1 - responsible
        out.boxes[0, cell, other] = torch.tensor([0., 0., .01, .01])  # tiny box in the cell's corner
    return raw


TRUTH = {"boxes": torch.tensor([[[.5, .5, .3, .4], [.1, .8, .1, .2]]]), "labels": torch.tensor([[2, 0]])}


@pytest.mark.parametrize("responsible", [0, 1])
def test_zero_at_the_target(responsible: int) -> None:
    raw = _raw_at_target(TRUTH["boxes"][0].tolist(), TRUTH["labels"][0].tolist(), responsible)
    parts = DetectionLoss(SPEC)(raw, TRUTH)
    assert set(parts) == {"total", "coord", "obj", "noobj", "cls", "prior"}
    assert all(float(v) == pytest.approx(0, abs=1e-10) for v in parts.values()), parts


def test_gradients_only_where_the_paper_says() -> None:
    raw = _raw_at_target(TRUTH["boxes"][0].tolist(), TRUTH["labels"][0].tolist())
    raw += .05 * torch.randn_like(raw)  # near the target, so box 0 stays responsible
    raw.requires_grad_(True)
    DetectionLoss(SPEC)(raw, TRUTH)["total"].backward()
    g = split_output(raw.grad, SPEC)
    object_cells = [4, 6]  # (row 1, col 1) and (row 2, col 0)
    empty = [c for c in range(9) if c not in object_cells]
    assert (g.probs[0, empty] == 0).all() and (g.probs[0, object_cells] != 0).all()  # class error: object cells
    assert (g.boxes[0, empty] == 0).all()  # coordinates: responsible boxes only
    assert (g.boxes[0, object_cells, 1] == 0).all() and (g.boxes[0, object_cells, 0] != 0).all()
    assert (g.conf[0] != 0).all()  # confidence: everywhere (object or no-object term)


def test_darknet_deltas_and_scales() -> None:
    # Gradient x number of images = minus darknet's delta (forward_detection_layer), so SGD takes its step.
    torch.manual_seed(0)
    raw = torch.randn(2, SPEC.inputs, requires_grad=True)
    targets = {"boxes": torch.tensor([[[.5, .5, .3, .4]], [[.2, .2, .2, .2]]]), "labels": torch.tensor([[1], [-1]])}
    parts = DetectionLoss(SPEC)(raw, targets)
    parts["total"].backward()
    out, g = split_output(raw.detach(), SPEC), split_output(raw.grad, SPEC)
    # Image 1 has no object: delta = noobject_scale * (0 - conf) for every box.
    assert torch.allclose(-g.conf[1] * 2, .5 * (0 - out.conf[1]))
    assert (g.boxes[1] == 0).all() and (g.probs[1] == 0).all()
    # Image 0, cell 4: delta = coord_scale * (target - out) with square roots of w and h.
    b = int(g.boxes[0, 4].abs().sum(-1).argmax())
    expect = torch.tensor([.5 * 3 - 1, .5 * 3 - 1, .3 ** .5, .4 ** .5])
    assert torch.allclose(-g.boxes[0, 4, b] * 2, 5 * (expect - out.boxes[0, 4, b]), atol=1e-6)
    assert torch.allclose(-g.probs[0, 4] * 2, torch.tensor([0., 1., 0.]) - out.probs[0, 4], atol=1e-6)
    # The other box of the cell is a no-object box.
    assert torch.allclose(-g.conf[0, 4, 1 - b] * 2, .5 * (0 - out.conf[0, 4, 1 - b]))


def test_responsible_box_highest_iou_then_rmse() -> None:
    raw = torch.zeros(1, SPEC.inputs)
    out = split_output(raw, SPEC)
    cell = 4
    out.boxes[0, cell, 0] = torch.tensor([.5, .5, .2, .2])  # overlaps the truth a little
    out.boxes[0, cell, 1] = torch.tensor([.5, .5, .5, .6])  # overlaps it most
    targets = {"boxes": torch.tensor([[[.5, .5, .3, .4]]]), "labels": torch.tensor([[0]])}
    raw.requires_grad_(True)
    DetectionLoss(SPEC)(raw, targets)["total"].backward()
    g = split_output(raw.grad, SPEC)
    assert (g.boxes[0, cell, 0] == 0).all() and (g.boxes[0, cell, 1] != 0).any()
    # No overlap at all: darknet falls back to the smallest RMSE.
    raw = torch.zeros(1, SPEC.inputs)
    out = split_output(raw, SPEC)
    out.boxes[0, cell, 0] = torch.tensor([0., 0., 0., 0.])
    out.boxes[0, cell, 1] = torch.tensor([.5, .5, 0., 0.])  # zero size, same centre: closer
    raw.requires_grad_(True)
    DetectionLoss(SPEC)(raw, targets)["total"].backward()
    g = split_output(raw.grad, SPEC)
    assert (g.boxes[0, cell, 0] == 0).all() and (g.boxes[0, cell, 1] != 0).any()


def test_rescore_target_is_the_iou_and_first_truth_in_a_cell_wins() -> None:
    raw = torch.zeros(1, SPEC.inputs)
    out = split_output(raw, SPEC)
    out.boxes[0, 4, :] = torch.tensor([.5, .5, .3 ** .5, .2 ** .5])  # half the truth's height: IoU .5
    out.conf[0, 4, :] = .5
    first = {"boxes": torch.tensor([[[.5, .5, .3, .4], [.45, .45, .1, .1]]]), "labels": torch.tensor([[0, 1]])}
    parts = DetectionLoss(SPEC)(raw, first)
    assert float(parts["obj"]) == pytest.approx(0, abs=1e-7)  # conf .5 = IoU .5
    alone = {"boxes": first["boxes"][:, :1], "labels": first["labels"][:, :1]}
    assert {k: float(v) for k, v in parts.items()} == {k: float(v) for k, v in DetectionLoss(SPEC)(raw, alone).items()}
    no_rescore = DetectionLoss(DetectionSpec(**{**SPEC.__dict__, "rescore": 0}))
    assert float(no_rescore(raw, first)["obj"]) == pytest.approx(.5 * .25)  # target 1


def test_bad_targets_name_row_box_and_field() -> None:
    loss = DetectionLoss(SPEC)
    raw = torch.zeros(2, SPEC.inputs)
    with pytest.raises(RegionTargetError, match="row 1, box 0: label 3"):
        loss(raw, {"boxes": torch.full((2, 1, 4), .5), "labels": torch.tensor([[0], [3]])})
    with pytest.raises(RegionTargetError, match="row 0, box 0"):
        loss(raw, {"boxes": torch.tensor([[[.5, .5, 0., .2]], [[.5, .5, .2, .2]]]), "labels": torch.tensor([[0], [0]])})
    with pytest.raises(RegionTargetError, match="row 1 is a classification-only image"):
        loss(raw, {"boxes": torch.zeros(2, 0, 4), "labels": torch.zeros(2, 0, dtype=torch.long),
                   "image_label": torch.tensor([-1, 2])})
    with pytest.raises(ValueError, match="must hold"):
        loss(torch.zeros(2, 10), {"boxes": torch.zeros(2, 0, 4), "labels": torch.zeros(2, 0, dtype=torch.long)})
