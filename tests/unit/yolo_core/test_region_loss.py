"""The darknet region loss: zero at the targets, hand-computed terms, and which entries get
gradients (flat softmax here; the tree cases need yolo_core.tree)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import shared_path
from yolo_core.boxes import aligned_iou_cxcywh
from yolo_core.region import RegionLoss, RegionTargetError, activate, decode_boxes
from yolo_core.tree import Tree

ANCHORS = [[1.0, 1.5], [3.0, 2.0]]
A, C, H, W = 2, 3, 4, 4
BIG = 30.0  # sigmoid(30) == 1 in float32; softmax of +-30 is one-hot to ~1e-26

# Truths (cx, cy, w, h), their label, and the slot darknet assigns (image, anchor, j, i) worked
# out by hand: cell = floor(c * 4); anchor = best shape IoU against (1/4, 1.5/4) and (3/4, 2/4).
TRUTHS = [
    (0, (0.30, 0.60, 0.30, 0.45), 2, (0, 0, 2, 1)),  # IoU .69 with anchor 0, .36 with anchor 1
    (0, (0.80, 0.10, 0.70, 0.55), 0, (0, 1, 0, 3)),
    (1, (0.55, 0.35, 0.20, 0.40), 1, (1, 0, 1, 2)),
]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def make_targets(truths=TRUTHS, bsz: int = 2, image_label: list[int] | None = None) -> dict[str, torch.Tensor]:
    m = max([sum(1 for t in truths if t[0] == b) for b in range(bsz)] + [1])
    boxes = torch.zeros(bsz, m, 4)
    labels = torch.full((bsz, m), -1)
    fill = [0] * bsz
    for b, box, label, _ in truths:
        boxes[b, fill[b]] = torch.tensor(box)
        labels[b, fill[b]] = label
        fill[b] += 1
    il = torch.tensor(image_label if image_label is not None else [-1] * bsz)
    return {"boxes": boxes, "labels": labels, "image_label": il}


def perfect_raw(truths=TRUTHS, bsz: int = 2, seed: int = 0) -> torch.Tensor:
    """Raw output whose responsible predictions equal their targets; every other prediction
    has objectness ~0 and random coordinates and classes."""
    raw = torch.randn(bsz, A * (5 + C), H, W, generator=torch.Generator().manual_seed(seed))
    v = raw.view(bsz, A, 5 + C, H, W)
    v[:, :, 4] = -BIG
    for _, (cx, cy, w, h), label, (b, a, j, i) in truths:
        v[b, a, 0, j, i] = logit(cx * W - i)
        v[b, a, 1, j, i] = logit(cy * H - j)
        v[b, a, 2, j, i] = math.log(w * W / ANCHORS[a][0])
        v[b, a, 3, j, i] = math.log(h * H / ANCHORS[a][1])
        v[b, a, 4, j, i] = BIG
        v[b, a, 5:, j, i] = -BIG
        v[b, a, 5 + label, j, i] = BIG
    return raw


def view(t: torch.Tensor) -> torch.Tensor:
    return t.view(t.shape[0], A, 5 + C, H, W)


@pytest.mark.parametrize("rescore", [True, False])
@pytest.mark.parametrize("variant", ["head", "j17"])
def test_loss_is_zero_at_the_targets(rescore: bool, variant: str) -> None:
    loss = RegionLoss(ANCHORS, C, variant=variant, rescore=rescore)
    parts = loss(perfect_raw(), make_targets(), seen=12800)  # warm-up over
    assert set(parts) == {"total", "coord", "obj", "noobj", "cls", "prior"}
    for name, value in parts.items():
        assert value.item() < 1e-8, name


def test_each_term_by_hand() -> None:
    targets = make_targets()
    base = perfect_raw()
    head, j17 = RegionLoss(ANCHORS, C, variant="head"), RegionLoss(ANCHORS, C, variant="j17")

    # x of the first truth's slot at sigmoid(0) = .5, target .2; B = 2 images.
    raw = base.clone()
    view(raw)[0, 0, 0, 2, 1] = 0.0
    assert head(raw, targets, 12800)["coord"].item() == pytest.approx(.5 * (2 - .30 * .45) * .3 ** 2 / 2, rel=1e-4)
    assert j17(raw, targets, 12800)["coord"].item() == pytest.approx(.5 * .3 ** 2 / 2, rel=1e-4)

    # Objectness of the second truth's slot at .5; with rescore the target is the IoU (~1).
    raw = base.clone()
    view(raw)[0, 1, 4, 0, 3] = 0.0
    assert head(raw, targets, 12800)["obj"].item() == pytest.approx(.5 * 5 * .5 ** 2 / 2, rel=1e-4)

    # The same slot's w drifts by .1: no longer a perfect box, so the rescore target drops.
    raw = base.clone()
    view(raw)[0, 1, 2, 0, 3] += 0.1
    parts = head(raw, targets, 12800)
    assert parts["coord"].item() == pytest.approx(.5 * (2 - .70 * .55) * .01 / 2, rel=1e-4)
    iou = 1 / math.exp(0.1)  # same centre and height, width scaled by e^.1
    assert parts["obj"].item() == pytest.approx(.5 * 5 * (1 - iou) ** 2 / 2, rel=1e-3)
    assert RegionLoss(ANCHORS, C, rescore=False)(raw, targets, 12800)["obj"].item() < 1e-8

    # Class logits of the third truth's slot all equal: cross-entropy log 3.
    raw = base.clone()
    view(raw)[1, 0, 5:, 1, 2] = 0.0
    assert head(raw, targets, 12800)["cls"].item() == pytest.approx(math.log(3) / 2, rel=1e-5)

    # A free prediction with objectness .5 far from every truth: no-object term.
    raw = base.clone()
    view(raw)[1, 1, 4, 3, 0] = 0.0
    assert head(raw, targets, 12800)["noobj"].item() == pytest.approx(.5 * .25 / 2, rel=1e-4)


def test_warmup_prior_on_unassigned_predictions_only() -> None:
    raw, targets = perfect_raw(), make_targets()
    loss = RegionLoss(ANCHORS, C)
    assert loss(raw, targets, seen=12800)["prior"].item() == 0.0
    prior = loss(raw, targets, seen=12799)["prior"].item()
    v = view(raw)
    err = (.5 - v[:, :, 0].sigmoid()) ** 2 + (.5 - v[:, :, 1].sigmoid()) ** 2 + v[:, :, 2] ** 2 + v[:, :, 3] ** 2
    mask = torch.ones_like(err)
    for *_, (b, a, j, i) in TRUTHS:
        mask[b, a, j, i] = 0
    assert prior == pytest.approx((.5 * .01 * err * mask).sum().item() / 2, rel=1e-5)


def test_total_is_the_sum_of_parts_per_image() -> None:
    raw = torch.randn(2, A * (5 + C), H, W, generator=torch.Generator().manual_seed(3))
    parts = RegionLoss(ANCHORS, C)(raw, make_targets(), seen=0)
    assert parts["total"].item() == pytest.approx(sum(parts[k].item() for k in
                                                      ("coord", "obj", "noobj", "cls", "prior")), rel=1e-6)
    # Per image: the same two images twice give the same loss.
    t = make_targets()
    doubled = {k: torch.cat([t[k], t[k]]) for k in t}
    parts2 = RegionLoss(ANCHORS, C)(torch.cat([raw, raw]), doubled, seen=0)
    assert parts2["total"].item() == pytest.approx(parts["total"].item(), rel=1e-5)


def test_ignore_threshold_removes_the_no_object_gradient() -> None:
    truths = [(0, (0.30, 0.60, 0.30, 0.45), 2, (0, 0, 2, 1))]
    raw = perfect_raw(truths, bsz=1)
    v = view(raw)
    v[0, :, 4] = 0.0  # every objectness at .5: each free prediction would get a gradient
    v[0, 0, 4, 2, 1] = BIG
    # Anchor 1 of the truth's cell predicts nearly the truth box (IoU > .6): ignored.
    v[0, 1, 0, 2, 1] = logit(.2)
    v[0, 1, 1, 2, 1] = logit(.4)
    v[0, 1, 2, 2, 1] = math.log(.3 * W / ANCHORS[1][0]) + .05
    v[0, 1, 3, 2, 1] = math.log(.45 * H / ANCHORS[1][1])
    # Anchor 0 of the cell to the right predicts the truth shifted right: IoU ~.5, below the
    # threshold, so it keeps its no-object gradient.
    v[0, 0, 0, 2, 2] = logit(.35)
    v[0, 0, 1, 2, 2] = logit(.4)
    v[0, 0, 2, 2, 2] = math.log(.3 * W / ANCHORS[0][0])
    v[0, 0, 3, 2, 2] = math.log(.45 * H / ANCHORS[0][1])
    raw.requires_grad_(True)
    parts = RegionLoss(ANCHORS, C)(raw, make_targets(truths, bsz=1), seen=12800)
    parts["total"].backward()
    g = view(raw.grad)[0, :, 4]
    with torch.no_grad():
        boxes = decode_boxes(activate(raw, A, C), ANCHORS)[0]
        truth = torch.tensor(truths[0][1])
    assert g[1, 2, 1].item() == 0.0
    assert g[0, 2, 2].item() != 0.0
    # Every other free prediction: gradient exactly where its IoU with the truth is <= .6.
    ious = aligned_iou_cxcywh(boxes, truth.expand_as(boxes))
    free = torch.ones(A, H, W, dtype=torch.bool)
    free[0, 2, 1] = False
    assert ((g != 0) == (ious <= .6))[free].all()
    assert (g[free] != 0).sum() >= A * H * W - 3


def test_classification_only_image_flat() -> None:
    """No coordinate or prior gradient; the class loss only at the best prediction for the
    label; objectness: no-object everywhere else, nothing there (HEAD) or the .3 pull (J17)."""
    raw = torch.randn(1, A * (5 + C), H, W, generator=torch.Generator().manual_seed(5))
    v = view(raw)
    v[0, :, 4] = -1.5  # everything else has obj < .3 ...
    v[0, 1, 4, 3, 2] = 1.0  # ... but this one: obj .73 and P(label 1) ~ .96, the best
    v[0, 1, 5:, 3, 2] = torch.tensor([0.0, 4.0, 0.0])
    v[0, 0, 4, 0, 0] = -2.0
    v[0, 0, 5:, 0, 0] = torch.tensor([0.0, 9.0, 0.0])
    targets = {"boxes": torch.zeros(1, 1, 4), "labels": torch.full((1, 1), -1), "image_label": torch.tensor([1])}
    for variant in ("head", "j17"):
        r = raw.clone().requires_grad_(True)
        parts = RegionLoss(ANCHORS, C, variant=variant)(r, targets, seen=0)  # warm-up on
        assert parts["coord"].item() == 0.0 and parts["prior"].item() == 0.0
        parts["total"].backward()
        g = view(r.grad)[0]
        assert (g[:, 0:4] == 0).all()
        cls_grad = g[:, 5:].abs().sum(1)
        assert (cls_grad != 0).nonzero().tolist() == [[1, 3, 2]]
        obj_grad = g[:, 4]
        others = torch.ones(A, H, W, dtype=torch.bool)
        others[1, 3, 2] = False
        assert (obj_grad[others] > 0).all()  # pushed down: gradient of +obj^2/2 is positive
        # sigmoid(1) = .73 > .3: no objectness gradient at the chosen prediction in either variant.
        assert obj_grad[1, 3, 2].item() == 0.0

    # When the chosen prediction's objectness is below .3, J17 pulls it up; HEAD does not.
    raw2 = raw.clone()
    view(raw2)[0, 1, 4, 3, 2] = -1.0  # .27 x .96 = .26 still beats every other obj x P
    grads = {}
    for variant in ("head", "j17"):
        r = raw2.clone().requires_grad_(True)
        RegionLoss(ANCHORS, C, variant=variant)(r, targets, seen=0)["total"].backward()
        grads[variant] = view(r.grad)[0, 1, 4, 3, 2].item()
        assert (view(r.grad)[0, :, 5:].abs().sum(1) != 0).nonzero().tolist() == [[1, 3, 2]]
    assert grads["head"] == 0.0
    s = 1 / (1 + math.exp(1.0))
    assert grads["j17"] == pytest.approx(-5 * (.3 - s) * s * (1 - s), rel=1e-4)


def test_paper_variant_gives_classification_images_no_noobject_term() -> None:
    """The paper's text: a classification image backpropagates the class loss (and the .3
    objectness pull) at its best prediction only; detection images in the same batch keep
    every term of the j17 loss."""
    gen = torch.Generator().manual_seed(11)
    raw = torch.randn(2, A * (5 + C), H, W, generator=gen)
    v = view(raw)
    v[0, :, 4] = -1.5  # obj .18 everywhere in the classification image ...
    v[0, 1, 4, 3, 2] = -1.0  # ... but its best prediction for label 1: obj .27 < .3, P(1) ~ 1
    v[0, 1, 5:, 3, 2] = torch.tensor([0.0, 9.0, 0.0])
    boxes = torch.zeros(2, 1, 4)
    boxes[1, 0] = torch.tensor([.3, .4, .2, .3])
    targets = {"boxes": boxes, "labels": torch.tensor([[-1], [2]]), "image_label": torch.tensor([1, -1])}
    grads = {}
    for variant in ("j17", "paper"):
        r = raw.clone().requires_grad_(True)
        RegionLoss(ANCHORS, C, variant=variant)(r, targets, seen=0)["total"].backward()
        grads[variant] = view(r.grad)
    g_paper, g_j17 = grads["paper"], grads["j17"]
    others = torch.ones(A, H, W, dtype=torch.bool)
    others[1, 3, 2] = False
    assert (g_j17[0, :, 4][others] > 0).all()  # j17 (darknet): no-object everywhere else
    assert (g_paper[0, :, 4][others] == 0).all()  # paper: nothing else is touched
    assert (g_paper[0, :, 0:4] == 0).all()
    assert (g_paper[0, :, 5:].abs().sum(1) != 0).nonzero().tolist() == [[1, 3, 2]]
    assert g_paper[0, 1, 4, 3, 2] == g_j17[0, 1, 4, 3, 2] < 0  # the same .3 pull
    assert torch.equal(g_paper[1], g_j17[1])  # the detection image is unaffected


def selection_scene() -> torch.Tensor:
    """One classification image where each rule has a different answer (anchors in grid units:
    a0 = 1 x 1.5, a1 = 3 x 2 on the 4 x 4 grid; every other prediction obj .12, anchor-sized)."""
    raw = torch.zeros(1, A * (5 + C), H, W)
    v = view(raw)
    v[0, :, 4] = -2.0
    v[0, 0, 4, 1, 1] = 2.0  # the most object-like: obj .88, a small box, P(label 1) = 1/3
    v[0, 0, 2:4, 1, 1] = -1.0
    v[0, 1, 4, 3, 0] = 0.5  # obj .62, but P(label 1) ~ 1: the best obj x P(label)
    v[0, 1, 5:, 3, 0] = torch.tensor([0.0, 9.0, 0.0])
    v[0, 1, 4, 0, 3] = 1.0  # obj .73, the largest box among the 3 most object-like
    v[0, 1, 2:4, 0, 3] = 1.0
    v[0, 1, 2:4, 3, 3] = 2.0  # the largest box of all, but obj .12
    return raw


CLS_TARGETS = {"boxes": torch.zeros(1, 1, 4), "labels": torch.tensor([[-1]]), "image_label": torch.tensor([1])}


@pytest.mark.parametrize("variant", ["head", "paper"])
@pytest.mark.parametrize("select, topk, chosen", [
    ("label", None, [1, 3, 0]),  # YOLO9000 / darknet: highest obj x P(label)
    ("object", None, [0, 1, 1]),  # highest objectness
    ("size", 3, [1, 0, 3]),  # Detic max-size: largest box among the 3 most object-like
    ("size", A * H * W, [1, 3, 3]),  # K = every prediction: the largest box outright
    ("image", None, [1, 2, 2]),  # whole-image box: centre cell (2, 2), a1 (closer to 1 x 1)
])
def test_each_cls_select_rule_teaches_only_the_prediction_it_names(select, topk, chosen, variant) -> None:
    """The class loss of a classification image reaches one prediction, the rule's; with the
    paper's loss nothing else gets any gradient (with 'head' the others get only no-object)."""
    r = selection_scene().requires_grad_(True)
    loss = RegionLoss(ANCHORS, C, variant=variant, cls_select=select, cls_topk=topk)
    loss(r, CLS_TARGETS, seen=0)["total"].backward()
    g = view(r.grad)[0]
    assert (g[:, 5:].abs().sum(1) != 0).nonzero().tolist() == [chosen]
    assert g[chosen[0], 5 + 1, chosen[1], chosen[2]] < 0  # toward the label
    if variant == "paper":
        assert (g.abs().sum(1) != 0).nonzero().tolist() == [chosen]
    else:  # no-object at every other prediction, no box terms anywhere
        no_object = (g[:, 4] > 0).nonzero().tolist()
        assert len(no_object) == A * H * W - 1 and chosen not in no_object
        assert (g[:, :4] == 0).all()


def test_size_rule_k_is_detics_128_proposals_scaled_to_the_grid() -> None:
    from yolo_core.region import size_rule_topk

    # 128 proposals per 12 x 12 cells (Detic's 384 px image-labelled input at stride 32).
    assert size_rule_topk(12, 12, 720) == 128
    assert [size_rule_topk(g, g, 5 * g * g) for g in (13, 10, 19, 6)] == [150, 89, 321, 32]
    assert size_rule_topk(4, 4, 32) == 14 and size_rule_topk(4, 4, 32, topk=100) == 32
    assert size_rule_topk(13, 13, 845, topk=7) == 7


def test_cls_loss_weight_scales_only_the_classification_images_class_loss() -> None:
    """Detic's IMAGE_LOSS_WEIGHT: a detection image's class loss keeps weight 1."""
    raw = torch.randn(2, A * (5 + C), H, W, generator=torch.Generator().manual_seed(3))
    targets = make_targets([t for t in TRUTHS if t[0] == 0], bsz=2, image_label=[-1, 2])
    cls = {w: RegionLoss(ANCHORS, C, cls_select="object", cls_loss_weight=w)(raw, targets, seen=0)["cls"].item()
           for w in (0.0, 0.1, 1.0)}
    assert cls[0.0] > 0 and cls[1.0] > cls[0.0]  # both images contribute
    assert cls[0.1] == pytest.approx(cls[0.0] + 0.1 * (cls[1.0] - cls[0.0]), rel=1e-5)


def test_bad_selection_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cls_select must be one of 'label', 'object', 'size', 'image', got 'box'"):
        RegionLoss(ANCHORS, C, cls_select="box")
    with pytest.raises(ValueError, match="cls_topk must be None"):
        RegionLoss(ANCHORS, C, cls_select="size", cls_topk=0)
    with pytest.raises(ValueError, match="cls_loss_weight must be a number >= 0"):
        RegionLoss(ANCHORS, C, cls_loss_weight=-1.0)


def test_unknown_loss_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="'head', 'j17' or 'paper'"):
        RegionLoss(ANCHORS, C, variant="v3")


def test_detection_gradients_only_at_responsible_slots_without_warmup() -> None:
    raw = torch.randn(2, A * (5 + C), H, W, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    RegionLoss(ANCHORS, C)(raw, make_targets(), seen=12800)["total"].backward()
    g = view(raw.grad)
    slots = {t[3] for t in TRUTHS}
    for b in range(2):
        for a in range(A):
            for j in range(H):
                for i in range(W):
                    on = (b, a, j, i) in slots
                    assert bool((g[b, a, 0:4, j, i] != 0).all()) == on
                    assert bool((g[b, a, 5:, j, i] != 0).any()) == on


def test_a_later_truth_in_the_same_slot_overwrites() -> None:
    first = (0, (0.30, 0.60, 0.28, 0.40), 0, (0, 0, 2, 1))
    second = (0, (0.35, 0.70, 0.30, 0.45), 2, (0, 0, 2, 1))
    raw = torch.randn(1, A * (5 + C), H, W, generator=torch.Generator().manual_seed(7))
    loss = RegionLoss(ANCHORS, C)
    both = loss(raw, make_targets([first, second], bsz=1), seen=0)
    last = loss(raw, make_targets([second], bsz=1), seen=0)
    for k in ("coord", "obj", "cls", "prior"):
        assert both[k].item() == pytest.approx(last[k].item(), rel=1e-6), k
    swapped = loss(raw, make_targets([second, first], bsz=1), seen=0)
    assert swapped["cls"].item() != pytest.approx(both["cls"].item(), rel=1e-3)


def test_at_most_30_truths_per_image() -> None:
    truths = [(0, ((i + .5) / W, (j + .5) / H, .2, .3), 0, None) for j in range(H) for i in range(W)]
    truths = [t for t in truths for _ in range(2)][:31]  # 31 boxes, the 31st alone in its cell
    raw = torch.randn(1, A * (5 + C), H, W, generator=torch.Generator().manual_seed(8))
    loss = RegionLoss(ANCHORS, C)
    capped = loss(raw, make_targets(truths, bsz=1), seen=0)
    first30 = loss(raw, make_targets(truths[:30], bsz=1), seen=0)
    all31 = RegionLoss(ANCHORS, C, max_boxes=31)(raw, make_targets(truths, bsz=1), seen=0)
    for k in capped:
        assert capped[k].item() == pytest.approx(first30[k].item(), rel=1e-6), k
    assert all31["coord"].item() > capped["coord"].item()


@pytest.mark.parametrize("change, message", [
    (lambda t: t["boxes"].__setitem__((1, 0, 2), -0.1), r"row 1, box 0: field 'boxes w'"),
    (lambda t: t["boxes"].__setitem__((0, 1, 0), float("nan")), r"row 0, box 1: field 'boxes cx'"),
    (lambda t: t["labels"].__setitem__((0, 0), 3), r"'labels' at \(0, 0\) is 3"),
    (lambda t: t["image_label"].__setitem__(0, 1), r"row 0 has both boxes and an image_label"),
])
def test_bad_targets_are_clear_errors(change, message: str) -> None:
    targets = make_targets()
    change(targets)
    with pytest.raises(RegionTargetError, match=message):
        RegionLoss(ANCHORS, C)(perfect_raw(), targets, seen=0)
    assert RegionTargetError.user_facing


def test_half_precision_input_gives_a_float32_loss() -> None:
    raw = perfect_raw().bfloat16()
    parts = RegionLoss(ANCHORS, C)(raw, make_targets(), seen=0)
    assert parts["total"].dtype == torch.float32 and torch.isfinite(parts["total"])


# --- WordTree classes -------------------------------------------------------------------------
# Hand tree: roots 0, 1 (group 0); 2, 3 under 0 (group 1); 4, 5, 6 under 1 (group 2);
# 7, 8 under 2 (group 3).
PARENTS = [-1, -1, 0, 0, 1, 1, 1, 2, 2]
GROUPS = [[0, 1], [2, 3], [4, 5, 6], [7, 8]]
TC = len(PARENTS)


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(PARENTS)


def tview(t: torch.Tensor) -> torch.Tensor:
    return t.view(t.shape[0], A, 5 + TC, H, W)


def group_ce(logits: torch.Tensor, node: int) -> float:
    """Cross-entropy of node's sibling group toward node, by hand."""
    group = next(g for g in GROUPS if node in g)
    return -torch.log_softmax(logits[group], 0)[group.index(node)].item()


def touched_nodes(grad: torch.Tensor) -> set[int]:
    return {int(n) for n in (grad != 0).nonzero().flatten()}


def test_tree_class_loss_only_at_and_above_the_label(tree) -> None:
    truth = (0, (0.30, 0.60, 0.30, 0.45), 2, (0, 0, 2, 1))  # label 2: path 2 -> 0
    raw = torch.randn(1, A * (5 + TC), H, W, generator=torch.Generator().manual_seed(11)).requires_grad_(True)
    parts = RegionLoss(ANCHORS, TC, tree=tree)(raw, make_targets([truth], bsz=1), seen=12800)
    logits = tview(raw)[0, 0, 5:, 2, 1].detach()
    assert parts["cls"].item() == pytest.approx(group_ce(logits, 2) + group_ce(logits, 0), rel=1e-5)
    parts["total"].backward()
    g = tview(raw.grad)[0, :, 5:]
    # Groups 0 and 1 (the path); not group 2 (off the path) nor group 3 (below the label).
    assert touched_nodes(g[0, :, 2, 1]) == {0, 1, 2, 3}
    g[0, :, 2, 1] = 0
    assert (g == 0).all()


def test_tree_loss_is_zero_when_the_path_is_certain(tree) -> None:
    truth = (0, (0.30, 0.60, 0.30, 0.45), 7, (0, 0, 2, 1))  # path 7 -> 2 -> 0
    raw = torch.randn(1, A * (5 + TC), H, W, generator=torch.Generator().manual_seed(12))
    v = tview(raw)
    v[0, :, 4] = -BIG
    cx, cy, w, h = truth[1]
    v[0, 0, 0:5, 2, 1] = torch.tensor([logit(cx * W - 1), logit(cy * H - 2), math.log(w * W / ANCHORS[0][0]),
                                       math.log(h * H / ANCHORS[0][1]), BIG])
    for node in (7, 2, 0):
        group = next(g for g in GROUPS if node in g)
        v[0, 0, 5 + torch.tensor(group), 2, 1] = -BIG
        v[0, 0, 5 + node, 2, 1] = BIG
    parts = RegionLoss(ANCHORS, TC, tree=tree)(raw, make_targets([truth], bsz=1), seen=12800)
    assert parts["total"].item() < 1e-8
    v[0, 0, 5 + 8, 2, 1] = BIG  # 7 and 8 now equally likely: log 2 in group 3
    assert RegionLoss(ANCHORS, TC, tree=tree)(raw, make_targets([truth], bsz=1), seen=12800)["cls"].item() \
        == pytest.approx(math.log(2), rel=1e-5)


def test_tree_overwrite_is_group_by_group(tree) -> None:
    slot = (0, 0, 2, 1)
    first = (0, (0.30, 0.60, 0.28, 0.40), 4, slot)  # path 4 -> 1: groups 2, 0
    second = (0, (0.32, 0.62, 0.30, 0.45), 7, slot)  # path 7 -> 2 -> 0: groups 3, 1, 0
    raw = torch.randn(1, A * (5 + TC), H, W, generator=torch.Generator().manual_seed(13))
    parts = RegionLoss(ANCHORS, TC, tree=tree)(raw, make_targets([first, second], bsz=1), seen=0)
    logits = tview(raw)[0, 0, 5:, 2, 1]
    # Group 2 keeps the first truth's delta; groups 3, 1 and 0 take the second's.
    expected = group_ce(logits, 4) + group_ce(logits, 7) + group_ce(logits, 2) + group_ce(logits, 0)
    assert parts["cls"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("variant", ["head", "j17"])
def test_tree_classification_only_image(tree, variant: str) -> None:
    raw = torch.randn(1, A * (5 + TC), H, W, generator=torch.Generator().manual_seed(14))
    v = tview(raw)
    v[0, :, 4] = -1.0
    # The prediction at anchor 1, cell (j=0, i=3) is sure of the path 7 -> 2 -> 0.
    v[0, 1, 4, 0, 3] = 0.0
    v[0, 1, 5:, 0, 3] = 0.0
    v[0, 1, 5 + torch.tensor([0, 2, 7]), 0, 3] = 6.0
    raw.requires_grad_(True)
    targets = {"boxes": torch.zeros(1, 0, 4), "labels": torch.zeros(1, 0, dtype=torch.long),
               "image_label": torch.tensor([7])}
    parts = RegionLoss(ANCHORS, TC, tree=tree, variant=variant)(raw, targets, seen=0)
    logits = tview(raw)[0, 1, 5:, 0, 3].detach()
    assert parts["cls"].item() == pytest.approx(sum(group_ce(logits, n) for n in (7, 2, 0)), rel=1e-5)
    parts["total"].backward()
    g = tview(raw.grad)[0]
    assert (g[:, 0:4] == 0).all()  # no coordinates, no prior
    assert touched_nodes(g[1, 5:, 0, 3]) == {0, 1, 2, 3, 7, 8}  # not group 2, off the path
    cls_grad = g[:, 5:].clone()
    cls_grad[1, :, 0, 3] = 0
    assert (cls_grad == 0).all()
    assert g[1, 4, 0, 3].item() == 0.0  # obj .5 > .3: no objectness term in either variant


def test_real_9k_tree_gradients_follow_the_path() -> None:
    nine_k = Tree.load(shared_path("darknet", "9k.tree"))
    n = nine_k.num_nodes
    dog = int(shared_path("darknet", "coco9k.map").read_text().split()[16])  # COCO class 16: dog
    path, node = [], dog
    while node >= 0:
        path.append(node)
        node = int(nine_k.parent[node])
    group = nine_k.group
    on_path = {int(i) for i in torch.isin(group, group[torch.tensor(path)]).nonzero().flatten()}
    a_n, gh, gw = 3, 2, 2
    anchors = [[0.77871, 1.14074], [3.00525, 4.31277], [9.22725, 9.61974]]
    raw = torch.randn(2, a_n * (5 + n), gh, gw, generator=torch.Generator().manual_seed(15)).requires_grad_(True)
    targets = {"boxes": torch.tensor([[[.3, .3, .4, .5]], [[0., 0., 0., 0.]]]),
               "labels": torch.tensor([[dog], [-1]]), "image_label": torch.tensor([-1, dog])}
    RegionLoss(anchors, n, tree=nine_k)(raw, targets, seen=0)["total"].backward()
    g = raw.grad.view(2, a_n, 5 + n, gh, gw)[:, :, 5:]
    for b in range(2):
        slots = (g[b].abs().sum(1) != 0).nonzero().tolist()
        assert len(slots) == 1
        a, j, i = slots[0]
        assert touched_nodes(g[b, a, :, j, i]) <= on_path
        assert set(path) <= touched_nodes(g[b, a, :, j, i])


# --- Against darknet's forward_region_layer, transcribed loop by loop --------------------------
def darknet_deltas(raw: torch.Tensor, anchors, truths, parents, seen: int, variant: str, rescore: bool,
                   stats: dict) -> torch.Tensor:
    """darknet's l.delta for the region layer (HEAD, with J17's differences), in float64 loops.

    truths[b]: a list of (x, y, w, h, class), or ("image", class) for a classification-only
    image. parents: the tree's parent list, or None for a flat softmax.
    """
    out = raw.double().clone()
    bsz, _, gh, gw = out.shape
    na = len(anchors)
    nc = out.shape[1] // na - 5
    v = out.view(bsz, na, 5 + nc, gh, gw)
    v[:, :, 0:2] = v[:, :, 0:2].sigmoid()
    v[:, :, 4] = v[:, :, 4].sigmoid()
    groups = []  # sibling groups: a new one wherever the parent changes
    tree_parents = parents if parents is not None else [-1] * nc
    for n, p in enumerate(tree_parents):
        if n == 0 or p != tree_parents[n - 1]:
            groups.append([])
        groups[-1].append(n)
    for g in groups:
        cols = [5 + n for n in g]
        v[:, :, cols] = v[:, :, cols].softmax(2)
    group_of = {n: g for g in groups for n in g}
    delta = torch.zeros_like(v)

    def box_at(b, a, j, i):
        return ((i + v[b, a, 0, j, i].item()) / gw, (j + v[b, a, 1, j, i].item()) / gh,
                anchors[a][0] * math.exp(v[b, a, 2, j, i].item()) / gw,
                anchors[a][1] * math.exp(v[b, a, 3, j, i].item()) / gh)

    def box_iou(p, q):
        def overlap(x1, w1, x2, w2):
            return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
        w, h = overlap(p[0], p[2], q[0], q[2]), overlap(p[1], p[3], q[1], q[3])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (p[2] * p[3] + q[2] * q[3] - inter)

    def delta_box(truth, b, a, j, i, scale):
        iou = box_iou(box_at(b, a, j, i), truth)
        targets = (truth[0] * gw - i, truth[1] * gh - j, math.log(truth[2] * gw / anchors[a][0]),
                   math.log(truth[3] * gh / anchors[a][1]))
        for e in range(4):
            delta[b, a, e, j, i] = scale * (targets[e] - v[b, a, e, j, i].item())
        return iou

    def delta_class(b, a, j, i, cls):
        if parents is None:
            for n in range(nc):
                delta[b, a, 5 + n, j, i] = (n == cls) - v[b, a, 5 + n, j, i].item()
            return
        while cls >= 0:
            for n in group_of[cls]:
                delta[b, a, 5 + n, j, i] = 0 - v[b, a, 5 + n, j, i].item()
            delta[b, a, 5 + cls, j, i] = 1 - v[b, a, 5 + cls, j, i].item()
            cls = parents[cls]

    for b in range(bsz):
        if truths[b] and truths[b][0][0] == "image":
            cls = truths[b][0][1]
            maxp, best = 0, (0, 0, 0)
            for a in range(na):
                for j in range(gh):
                    for i in range(gw):
                        delta[b, a, 4, j, i] = 1 * (0 - v[b, a, 4, j, i].item())
                        p, c = v[b, a, 4, j, i].item(), cls
                        while c >= 0:
                            p *= v[b, a, 5 + c, j, i].item()
                            c = -1 if parents is None else parents[c]
                        if p > maxp:
                            maxp, best = p, (a, j, i)
            a, j, i = best
            delta_class(b, a, j, i, cls)
            o = v[b, a, 4, j, i].item()
            delta[b, a, 4, j, i] = 5 * (.3 - o) if (variant == "j17" and o < .3) else 0
            continue
        for j in range(gh):
            for i in range(gw):
                for a in range(na):
                    pred = box_at(b, a, j, i)
                    best_iou = max([box_iou(pred, t[:4]) for t in truths[b]] + [0])
                    delta[b, a, 4, j, i] = 1 * (0 - v[b, a, 4, j, i].item())
                    if best_iou > .6:
                        delta[b, a, 4, j, i] = 0
                        stats["ignored"] = stats.get("ignored", 0) + 1
                    if seen < 12800:
                        delta_box(((i + .5) / gw, (j + .5) / gh, anchors[a][0] / gw, anchors[a][1] / gh),
                                  b, a, j, i, .01)
        for t in truths[b]:
            i, j = int(t[0] * gw), int(t[1] * gh)
            best_iou, best_a = 0, 0
            for a in range(na):
                iou = box_iou((0, 0, anchors[a][0] / gw, anchors[a][1] / gh), (0, 0, t[2], t[3]))
                if iou > best_iou:
                    best_iou, best_a = iou, a
            scale = 1 * (2 - t[2] * t[3]) if variant == "head" else 1
            iou = delta_box(t[:4], b, best_a, j, i, scale)
            o = v[b, best_a, 4, j, i].item()
            delta[b, best_a, 4, j, i] = 5 * ((iou if rescore else 1) - o)
            delta_class(b, best_a, j, i, t[4])
    # d loss / d raw: minus the delta, through the logistic where darknet applies one.
    grad = -delta
    grad[:, :, 0:2] *= v[:, :, 0:2] * (1 - v[:, :, 0:2])
    grad[:, :, 4] *= v[:, :, 4] * (1 - v[:, :, 4])
    return grad.view_as(raw)


def scenario(nc: int, labels: list[int], image_label: int) -> tuple[torch.Tensor, list, dict]:
    """Four images: three truths (two sharing a cell), one truth, classification-only, empty."""
    gen = torch.Generator().manual_seed(21)
    raw = torch.randn(4, A * (5 + nc), H, W, generator=gen)
    v = raw.view(4, A, 5 + nc, H, W)
    v[:, :, 2:4] *= .3
    v[:, :, 5:] *= 2
    boxes = [[(.30, .60, .30, .45), (.36, .66, .26, .40), (.80, .10, .70, .55)], [(.55, .35, .20, .40)], [], []]
    truths = [[(*bx, lab) for bx, lab in zip(bs, labels)] for bs in boxes]
    truths[2] = [("image", image_label)]
    # Anchor 1 of the first truth's cell predicts almost its box: ignored by the .6 threshold.
    v[0, 1, 0:4, 2, 1] = torch.tensor([logit(.2), logit(.4), math.log(.3 * W / 3.0), math.log(.45 * H / 2.0) + .1])
    targets = make_targets([(b, t[:4], t[4], None) for b in (0, 1) for t in truths[b]], bsz=4,
                           image_label=[-1, -1, image_label, -1])
    return raw, truths, targets


@pytest.mark.parametrize("variant, rescore, seen", [("head", True, 0), ("j17", False, 0), ("head", False, 20000),
                                                    ("j17", True, 20000)])
def test_gradients_equal_darknet_deltas_flat(variant: str, rescore: bool, seen: int) -> None:
    raw, truths, targets = scenario(C, [2, 1, 0, 1], image_label=1)
    stats = {}
    expected = darknet_deltas(raw, ANCHORS, truths, None, seen, variant, rescore, stats)
    assert stats["ignored"] >= 1
    raw.requires_grad_(True)
    parts = RegionLoss(ANCHORS, C, variant=variant, rescore=rescore)(raw, targets, seen=seen)
    parts["total"].backward()
    assert torch.allclose(raw.grad.double() * 4, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant, seen", [("head", 0), ("j17", 20000)])
def test_gradients_equal_darknet_deltas_tree(tree, variant: str, seen: int) -> None:
    # Labels 4 then 7 in the shared cell (groups 2 | 3, 1, 0), 3 and 5 elsewhere; image label 8.
    raw, truths, targets = scenario(TC, [4, 7, 3, 5], image_label=8)
    expected = darknet_deltas(raw, ANCHORS, truths, PARENTS, seen, variant, True, {})
    raw.requires_grad_(True)
    RegionLoss(ANCHORS, TC, tree=tree, variant=variant)(raw, targets, seen=seen)["total"].backward()
    assert torch.allclose(raw.grad.double() * 4, expected, rtol=1e-4, atol=1e-6)
