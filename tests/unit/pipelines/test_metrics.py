"""Detection metrics on real annotations: ImageNet DET val2, COCO val, VOC 2007."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from pipelines.evaluate import metrics as M
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def det_gt() -> M.GroundTruth:
    rows = [line.rstrip("\n").split("\t") for line in shared_path("imagenet", "det200_synsets.tsv").open()]
    wnids, names = [r[0] for r in rows], [r[2] for r in rows]
    return M.load_voc_ground_truth(str(shared_path("imagenet", "det_val2", "Annotations")), wnids, names)


def _as_predictions(gt: M.GroundTruth, boxes: np.ndarray, scores: np.ndarray | None = None) -> M.Predictions:
    return M.Predictions(boxes, np.ones(len(boxes)) if scores is None else scores, gt.box_image.copy(),
                         gt.box_class.copy())


def test_det_val2_is_read_completely(det_gt):
    # The README's counts: 9,917 files, 26,782 boxes, all 200 classes, 677 images without objects.
    assert det_gt.num_images == 9917
    assert len(det_gt.boxes) == 26782
    assert len(np.unique(det_gt.box_class)) == 200
    assert det_gt.num_images - len(np.unique(det_gt.box_image)) == 677


def test_ground_truth_as_predictions_gives_map_one(det_gt):
    res = M.ap50(det_gt, _as_predictions(det_gt, det_gt.boxes.copy()))
    assert res.ap50.shape == (200,)
    np.testing.assert_allclose(res.ap50, 1.0)
    assert M.summarize(res.ap50, det_gt.class_ids)["map50_all"] == pytest.approx(1.0)
    assert (res.num_gt == res.num_dets).all()


def test_map_falls_as_boxes_shift(det_gt):
    w = det_gt.boxes[:, 2] - det_gt.boxes[:, 0]
    maps = []
    for frac in (0.0, 0.15, 0.3, 0.45):
        boxes = det_gt.boxes.copy()
        boxes[:, [0, 2]] += (frac * w)[:, None]
        maps.append(M.summarize(M.ap50(det_gt, _as_predictions(det_gt, boxes)).ap50, det_gt.class_ids)["map50_all"])
    assert maps[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(maps, maps[1:])), maps
    # A shift of .45 widths leaves IoU (1 - .45) / (1 + .45) = .38 < .5 with the box's own truth.
    assert maps[-1] < 0.05


def test_seen_unseen_means(det_gt):
    # Detections only for the 'seen' half: seen classes score 1, unseen 0, 'all' their mean.
    split = {c: ("seen" if k % 2 == 0 else "unseen") for k, c in enumerate(det_gt.class_ids)}
    keep = det_gt.box_class % 2 == 0
    preds = M.Predictions(det_gt.boxes[keep], np.ones(int(keep.sum())), det_gt.box_image[keep], det_gt.box_class[keep])
    res = M.ap50(det_gt, preds)
    s = M.summarize(res.ap50, det_gt.class_ids, split)
    assert s["map50_seen"] == pytest.approx(1.0)
    assert s["map50_unseen"] == pytest.approx(0.0)
    assert s["map50_all"] == pytest.approx(0.5)
    assert s["num_classes_seen"] == s["num_classes_unseen"] == 100
    rows = M.per_class_table(det_gt, res, split)
    assert [r["class"] for r in rows] == det_gt.class_ids
    assert rows[0]["split"] == "seen" and rows[0]["ap50"] == pytest.approx(1.0)
    assert rows[1]["split"] == "unseen" and rows[1]["ap50"] == 0.0
    csv_text = M.table_to_csv(rows)
    assert csv_text.splitlines()[0] == "class,name,split,ap50,num_gt,num_dets"
    assert len(csv_text.splitlines()) == 201


def test_low_scored_false_positives_lower_ap_only_where_they_rank_first(det_gt):
    # Scores order the PR curve: a false positive scored above the true ones costs precision.
    fp = det_gt.boxes[:1] + 1000.0  # far from any truth of its image
    k = int(det_gt.box_class[0])
    sel = det_gt.box_class == k
    for score, expect_perfect in ((0.5, True), (2.0, False)):
        preds = M.Predictions(np.vstack([det_gt.boxes[sel], fp]), np.r_[np.ones(int(sel.sum())), score],
                              np.r_[det_gt.box_image[sel], det_gt.box_image[0]], np.full(int(sel.sum()) + 1, k))
        ap = float(M.ap50(det_gt, preds).ap50[k])
        assert (ap == pytest.approx(1.0)) == expect_perfect, (score, ap)


def test_coco_map_matches_plain_cocoeval():
    """The per-class evaluation gives exactly what one standard COCOeval run gives."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = shared_path("coco_mini", "annotations", "instances_val2017.json")
    gt = M.load_coco_ground_truth(str(ann))
    rng = np.random.default_rng(0)
    real = ~gt.crowd
    boxes = gt.boxes[real].copy()
    wh = boxes[:, 2:] - boxes[:, :2]
    boxes += rng.normal(0, 0.08, boxes.shape) * np.tile(wh, 2)  # jittered truth: IoU spread over .5 .. .95
    preds = M.Predictions(boxes, rng.random(len(boxes)), gt.box_image[real], gt.box_class[real])
    ours = M.coco_map(gt, preds)

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann))
        cat_ids = sorted(coco_gt.getCatIds())
        img_ids = sorted(coco_gt.getImgIds())
        res = np.column_stack([np.array(img_ids)[preds.box_image], boxes[:, :2], boxes[:, 2:] - boxes[:, :2],
                               preds.scores, np.array(cat_ids)[preds.box_class]])
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]
    assert 0.2 < ours["map"] < 0.9
    assert ours["map"] == pytest.approx(float(prec[prec > -1].mean()), abs=1e-9)
    p50 = prec[0]
    assert ours["map50"] == pytest.approx(float(p50[:, (p50 > -1).all(0)].mean()), abs=1e-9)


def _voc_gt() -> M.GroundTruth:
    path = shared_path("voc2007", "boxes_trainval.csv")
    classes = shared_path("voc2007", "voc_classes.txt").read_text().split()
    data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=str)
    image_ids, box_image = np.unique(data[:, 0], return_inverse=True)
    return M.GroundTruth(list(image_ids), classes, classes, data[:, 1:5].astype(float), box_image.astype(np.int64),
                         data[:, 5].astype(np.int64))


def test_voc07_ap_on_real_boxes_and_by_hand():
    gt = _voc_gt()
    assert gt.num_classes == 20 and len(gt.boxes) == 12608
    np.testing.assert_allclose(M.voc07_ap(gt, _as_predictions(gt, gt.boxes.copy())), 1.0)

    # By hand: two truths; detections .9 hit, .8 miss, .7 hit -> P=1 up to R=.5, then 2/3 up to R=1.
    small = M.GroundTruth(["a", "b"], ["x"], ["x"], np.array([[0, 0, 10, 10], [0, 0, 10, 10.]]),
                          np.array([0, 1]), np.array([0, 0]))
    preds = M.Predictions(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [1, 1, 10, 10.]]), np.array([.9, .8, .7]),
                          np.array([0, 0, 1]), np.array([0, 0, 0]))
    assert M.voc07_ap(small, preds)[0] == pytest.approx((6 + 5 * 2 / 3) / 11)
    # The first truth 'difficult': only one box required, the hit on it counts neither way.
    small.difficult = np.array([True, False])
    assert M.voc07_ap(small, preds)[0] == pytest.approx(0.5 * 6 / 11 + 0.5 * 5 / 11)


def test_bad_annotations_name_file_record_and_field(tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>a</filename>\n<size><width>10</width>")
    with pytest.raises(M.AnnotationError, match=r"a\.xml: malformed XML at line 2"):
        M.load_voc_ground_truth(str(tmp_path), ["n1"])
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a</filename><size><width>10</width><height>10</height></size>"
        "<object><name>n1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>n9</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")
    with pytest.raises(M.AnnotationError, match=r"a\.xml: object 2: field 'name' is 'n9'"):
        M.load_voc_ground_truth(str(tmp_path), ["n1"])
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a</filename><size><width>10</width><height>10</height></size>"
        "<object><name>n1</name><bndbox><xmin>1</xmin><ymin>x</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")
    with pytest.raises(M.AnnotationError, match=r"a\.xml: object 1: field 'bndbox/ymin' is not a number"):
        M.load_voc_ground_truth(str(tmp_path), ["n1"])
    gt = M.GroundTruth(["a"], ["n1"], ["n1"], np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    bad = M.Predictions(np.zeros((2, 4)), np.ones(2), np.array([0, 0]), np.array([0, 3]))
    with pytest.raises(M.AnnotationError, match=r"record 1: field 'box_class' = 3"):
        M.ap50(gt, bad)


# ---- nested classes: an object of a fine class is also an object of each evaluated ancestor ---------


def _nested_table(labels: list[str]):
    import pyarrow as pa

    boxes = [[0.25 + 0.3 * k, 0.5, 0.2, 0.4] for k in range(len(labels))]
    return pa.table({"image_id": ["img"], "orig_width": [200], "orig_height": [100],
                     "boxes": [boxes], "box_labels": [labels]})


def test_implied_ancestor_classes_turn_false_positives_into_true_positives():
    classes = ["bear", "brown_bear", "dog"]
    table = _nested_table(["brown_bear", "bear"])
    plain = M.ground_truth_from_shards(table, classes)
    nested = M.ground_truth_from_shards(table, classes, implied={"brown_bear": ["bear"]})
    assert len(plain.boxes) == 2 and len(nested.boxes) == 3
    # The brown bear's box is ground truth for both of its classes.
    assert sorted(nested.box_class[np.all(nested.boxes == plain.boxes[0], 1)].tolist()) == [0, 1]
    # A detector that calls both objects "bear" (the hierarchy's answer for a brown bear too).
    preds = M.Predictions(plain.boxes.copy(), np.array([0.9, 0.8]), np.zeros(2, np.int64), np.zeros(2, np.int64))
    assert M.ap50(plain, preds).ap50[0] < 0.6  # the brown bear counts against "bear"
    assert M.ap50(nested, preds).ap50[0] == pytest.approx(1.0)


def test_ancestor_classes_follow_the_tree_and_real_det200_has_none():
    from pipelines.evaluate.stage import ancestor_classes
    from wordtree_build.tree import WordTree
    from yolo_core.tree import Tree

    # root -> bear -> (brown_bear, ice_bear); root -> dog; "carnivore" between root and bear is not evaluated.
    tree = Tree.from_wordtree(WordTree(wnids=["root", "carnivore", "dog", "bear", "brown_bear", "ice_bear"],
                                       names=["root", "carnivore", "dog", "bear", "brown bear", "ice bear"],
                                       parents=[-1, 0, 0, 1, 3, 3], is_label=[False, False, True, True, True, True]))
    assert ancestor_classes(tree, ["dog", "bear", "brown_bear", "ice_bear"]) == \
        {"brown_bear": ["bear"], "ice_bear": ["bear"]}
    assert ancestor_classes(tree, ["brown_bear", "dog"]) == {}
    assert ancestor_classes(tree, ["root", "ice_bear"]) == {"ice_bear": ["root"]}

    # ImageNet DET-200 nests no class under another in darknet's 9k tree: the rule changes nothing there.
    t9k = Tree.load(shared_path("darknet", "9k.tree"))
    rows = [line.split("\t") for line in shared_path("imagenet", "det200_synsets.tsv").open()]
    det = [r[0] for r in rows if r[0] in set(t9k.wnids)]
    assert len(det) >= 190
    assert ancestor_classes(t9k, det) == {}


def test_sibling_accuracy_counts_found_boxes_and_right_names_among_siblings():
    """Classes 0, 1 are siblings (say two breeds), 2 is their parent (implied rows), 3 unrelated."""
    gt = M.GroundTruth(["a", "b"], ["x", "y", "parent", "z"], ["x", "y", "parent", "z"],
                       boxes=np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10.]]),
                       box_image=np.array([0, 0, 0, 1]), box_class=np.array([0, 2, 1, 0]))
    preds = M.Predictions(
        boxes=np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 40, 40], [20, 20, 40, 40], [0, 0, 10, 10],
                        [30, 30, 40, 40.]]),
        scores=np.array([.3, .6, .2, .9, .99, .8]),
        box_image=np.array([0, 0, 0, 0, 1, 0]), box_class=np.array([0, 1, 1, 3, 3, 0]))
    r = M.sibling_accuracy(gt, preds, [[0, 1]])
    # Box 0 (class 0): found, but sibling 1 scores higher there (.6 > .3): wrong. Box 2 (class 1):
    # found, the unrelated .9 does not count: right. Image b's box: only an unrelated class: not found.
    assert r == {"boxes": 3, "found": 2, "right": 1, "found_rate": 2 / 3, "sibling_accuracy": 0.5,
                 "per_class": {0: {"boxes": 2, "found": 1, "right": 0}, 1: {"boxes": 1, "found": 1, "right": 1}}}
    # At IoU .95 the sibling's (1, 1, 10, 10) box (IoU .81) no longer competes: box 0 is named right.
    assert M.sibling_accuracy(gt, preds, [[0, 1]], iou_thr=0.95)["right"] == 2
