"""detect(): darknet's scores, thresholds and per-class NMS, against a plain-Python reference."""

from __future__ import annotations

import math

import pytest
import torch

from yolo_core.postprocess import detect
from yolo_core.tree import Tree

ANCHORS = [[1.0, 1.5], [3.0, 2.0]]
A, C, H, W = 2, 3, 4, 5


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def ref_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_detect(raw: torch.Tensor, thresh: float, nms: float, subset: list[int] | None = None,
               agnostic: bool = False) -> list[list[tuple[int, float, list[float]]]]:
    """Darknet's get_region_detections + do_nms_sort, one loop per cell, anchor and class."""
    out = []
    for img in raw.tolist():
        dets = []  # (class, score, xyxy)
        for a in range(A):
            for j in range(H):
                for i in range(W):
                    v = [img[a * (5 + C) + e][j][i] for e in range(5 + C)]
                    obj = sig(v[4])
                    z = sum(math.exp(x) for x in v[5:])
                    p = [math.exp(x) / z for x in v[5:]]
                    cx, cy = (i + sig(v[0])) / W, (j + sig(v[1])) / H
                    w, h = ANCHORS[a][0] * math.exp(v[2]) / W, ANCHORS[a][1] * math.exp(v[3]) / H
                    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                    classes = subset if subset is not None else list(range(C))
                    for k, c in enumerate(classes):
                        if obj * p[c] > thresh:
                            dets.append((k, obj * p[c], box))
        dets.sort(key=lambda d: -d[1])
        alive = [True] * len(dets)
        for x in range(len(dets)):
            if not alive[x]:
                continue
            for y in range(x + 1, len(dets)):
                same = agnostic or dets[x][0] == dets[y][0]
                if same and ref_iou(dets[x][2], dets[y][2]) > nms:
                    alive[y] = False
        out.append([d for d, keep in zip(dets, alive) if keep])
    return out


def random_raw(seed: int, bsz: int = 2) -> torch.Tensor:
    raw = torch.randn(bsz, A * (5 + C), H, W, generator=torch.Generator().manual_seed(seed))
    v = raw.view(bsz, A, 5 + C, H, W)
    v[:, :, 2:4] *= .5
    v[:, :, 5:] *= 2
    return raw


def as_sorted(dets) -> list[tuple[int, float, list[float]]]:
    return sorted(dets, key=lambda d: (d[0], -d[1]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("agnostic", [False, True])
def test_flat_detect_matches_reference(seed: int, agnostic: bool) -> None:
    raw = random_raw(seed)
    got = detect(raw, ANCHORS, C, thresh=.2, nms=.3, agnostic=agnostic)
    want = ref_detect(raw, .2, .3, agnostic=agnostic)
    assert len(got) == 2
    for g, w in zip(got, want):
        assert len(w) > 0
        assert g.scores.tolist() == sorted(g.scores.tolist(), reverse=True)
        mine = [(int(c), float(s), b) for c, s, b in zip(g.classes, g.scores, g.boxes.tolist())]
        assert len(mine) == len(w)
        for (c1, s1, b1), (c2, s2, b2) in zip(as_sorted(mine), as_sorted(w)):
            assert c1 == c2 and s1 == pytest.approx(s2, rel=1e-5) and b1 == pytest.approx(b2, rel=1e-4, abs=1e-6)


def test_class_subset_scores_and_indices() -> None:
    raw = random_raw(9)
    got = detect(raw, ANCHORS, C, thresh=.1, nms=.45, class_subset=[2, 0])
    want = ref_detect(raw, .1, .45, subset=[2, 0])
    for g, w in zip(got, want):
        assert set(g.classes.tolist()) <= {0, 1}
        mine = [(int(c), float(s), b) for c, s, b in zip(g.classes, g.scores, g.boxes.tolist())]
        assert [(c, pytest.approx(s, rel=1e-5)) for c, s, _ in as_sorted(mine)] == \
            [(c, s) for c, s, _ in as_sorted(w)]


def test_per_class_versus_agnostic_nms_by_hand() -> None:
    """Two near-identical boxes of different classes: per-class NMS keeps both, agnostic one."""
    raw = torch.full((1, A * (5 + C), H, W), -20.0)
    v = raw.view(1, A, 5 + C, H, W)
    v[:, :, 0:4] = 0.0
    for a, (j, i), cls in ((0, (1, 1), 0), (1, (1, 1), 2)):
        v[0, a, 4, j, i] = 3.0
        v[0, a, 5 + cls, j, i] = 10.0
    v[0, 1, 2, 1, 1] = math.log(ANCHORS[0][0] / ANCHORS[1][0])  # same size as anchor 0's box
    v[0, 1, 3, 1, 1] = math.log(ANCHORS[0][1] / ANCHORS[1][1])
    per_class = detect(raw, ANCHORS, C, thresh=.5)[0]
    assert sorted(per_class.classes.tolist()) == [0, 2]
    agnostic = detect(raw, ANCHORS, C, thresh=.5, agnostic=True)[0]
    assert agnostic.classes.numel() == 1
    expected = [(1.5 - .5) / W, (1.5 - .75) / H, (1.5 + .5) / W, (1.5 + .75) / H]
    assert per_class.boxes[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert per_class.scores[0].item() == pytest.approx(sig(3.0), rel=1e-4)


def test_nothing_above_threshold_gives_empty_detections() -> None:
    raw = torch.full((3, A * (5 + C), H, W), -10.0)
    dets = detect(raw, ANCHORS, C)
    assert len(dets) == 3 and all(d.boxes.shape == (0, 4) for d in dets)


# --- WordTree outputs --------------------------------------------------------------------------
PARENTS = [-1, -1, 0, 0, 1, 1, 1, 2, 2]  # groups {0,1} {2,3} {4,5,6} {7,8}
TC = len(PARENTS)


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(PARENTS)


def tree_raw(cond: dict[int, float], obj_logit: float) -> torch.Tensor:
    """One image, one anchor, a 1x1 grid, with the given conditional probabilities (log-prob
    logits; nodes not given share their group's remaining mass)."""
    raw = torch.zeros(1, 5 + TC, 1, 1)
    groups = [[0, 1], [2, 3], [4, 5, 6], [7, 8]]
    for g in groups:
        given = {n: cond[n] for n in g if n in cond}
        rest = [n for n in g if n not in cond]
        for n in g:
            p = given[n] if n in given else (1 - sum(given.values())) / len(rest)
            raw[0, 5 + n, 0, 0] = math.log(p)
    raw[0, 4, 0, 0] = obj_logit
    return raw


def test_tree_decode_scores_with_objectness(tree) -> None:
    # P(0) = .9, P(2 | 0) = .8 -> P(2) = .72 > .5, P(7 | 2) = .6 -> P(7) = .432 < .5: node 2.
    raw = tree_raw({0: .9, 2: .8, 7: .6}, obj_logit=1.0)
    dets = detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=.5, hier_thresh=.5)[0]
    assert dets.classes.tolist() == [2]
    assert dets.scores.tolist() == pytest.approx([sig(1.0)])
    # A lower hier_thresh goes one level deeper.
    assert detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=.5, hier_thresh=.4)[0].classes.tolist() == [7]
    # darknet HEAD's compounded rule: .9 * .72 = .648 passes, .648 * .432 does not -> still 2.
    assert detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=.5, compound=True)[0].classes.tolist() == [2]
    # objectness at the threshold: nothing.
    assert detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=sig(1.0) + 1e-3)[0].classes.numel() == 0


def test_tree_subset_scores_are_obj_times_absolute_probability(tree) -> None:
    raw = tree_raw({0: .9, 2: .8, 7: .6, 4: .5}, obj_logit=2.0)
    dets = detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=.01, class_subset=[7, 4, 3])[0]
    obj = sig(2.0)
    expected = {0: obj * .9 * .8 * .6, 1: obj * .1 * .5, 2: obj * .9 * .2}
    assert dict(zip(dets.classes.tolist(), dets.scores.tolist())) == pytest.approx(expected, rel=1e-5)
    # Above a threshold of .1 only the subset classes 7 and 3 remain.
    assert sorted(detect(raw, [[1.0, 1.0]], TC, tree=tree, thresh=.1, class_subset=[7, 4, 3])[0].classes.tolist()) \
        == [0, 2]
