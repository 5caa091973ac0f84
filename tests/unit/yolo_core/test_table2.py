"""The Table 2 switches (yolo_core.table2): each changes what it should and nothing else.

Every test builds the networks of two switch sets that differ in one column of the paper's
Table 2 and compares their layer specs (and, for the location switch, the decode and the loss)
at tiny widths and inputs.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from yolo_core import table2
from yolo_core.darknet_cfg import (
    ConnectedSpec,
    ConvSpec,
    DetectionSpec,
    DropoutSpec,
    MaxPoolSpec,
    RegionSpec,
    ReorgSpec,
    RouteSpec,
)
from yolo_core.models import yolov1, yolov2
from yolo_core.postprocess import detect
from yolo_core.region import RegionLoss

SIZES = {"yolo_input_size": 128, "input_size": 64, "hires_test_size": 96}
WIDTH = 1 / 16
KMEANS = [[0.5, 0.8], [1.2, 1.0], [1.5, 1.9]]


def sw(step: str, **changes: object) -> table2.Table2:
    return dataclasses.replace(table2.settings(step, table2.Table2(**SIZES)), **changes)


def specs(s: table2.Table2, classes: int = 3):
    return table2.build_detector(s, classes, WIDTH, KMEANS).specs


def test_columns_match_the_papers_table():
    # The paper's Table 2 (arXiv 1612.08242): checkmarks per row and the VOC 2007 mAP row.
    counts = {n: sum(getattr(table2.settings(c.name), n) for c in table2.COLUMNS) for n in table2.SWITCHES}
    assert counts == {"batch_norm": 8, "hires_classifier": 7, "convolutional": 6, "anchor_boxes": 2,
                      "new_network": 5, "dimension_priors": 4, "location_prediction": 4, "passthrough": 3,
                      "multiscale": 2, "hires_detector": 1}
    assert [c.paper_map for c in table2.COLUMNS] == [63.4, 65.8, 69.5, 69.2, 69.6, 74.4, 75.4, 76.8, 78.6]
    assert table2.settings("yolo").switches() == dict.fromkeys(table2.SWITCHES, False)
    assert table2.settings("hires_detector").switches() == {**dict.fromkeys(table2.SWITCHES, True),
                                                           "anchor_boxes": False}
    # Row names that share a column give that column.
    assert table2.settings("anchor_boxes") == table2.settings("convolutional")
    assert table2.settings("location_prediction") == table2.settings("dimension_priors")
    with pytest.raises(table2.Table2Error, match="unknown step 'dropout'.*steps: yolo, batch_norm"):
        table2.settings("dropout")


def test_settings_keep_the_sizes_of_the_base():
    s = table2.settings("passthrough", table2.Table2(**SIZES))
    assert (s.yolo_input_size, s.input_size, s.hires_test_size) == (128, 64, 96)


@pytest.mark.parametrize("bad, match", [
    ({"passthrough": True}, "passthrough need.*convolutional"),
    ({"convolutional": True}, "exactly one"),
    ({"convolutional": True, "anchor_boxes": True, "dimension_priors": True}, "exactly one"),
    ({"convolutional": True, "anchor_boxes": True, "passthrough": True}, "passthrough needs new_network"),
    ({"yolo_input_size": 96}, "yolo_input_size: got 96, expected a positive multiple of 64"),
])
def test_switches_that_make_no_network_are_refused(bad, match):
    with pytest.raises(table2.Table2Error, match=match):
        table2.Table2(**{**SIZES, **bad})


def test_yolo_is_the_papers_yolov1():
    assert specs(sw("yolo")) == yolov1(width=WIDTH, num_classes=3, size=128).specs


def test_batch_norm_turns_on_bn_in_every_conv_and_drops_dropout_only():
    before, after = specs(sw("yolo")), specs(sw("batch_norm"))
    assert [type(s) for s in before if not isinstance(s, DropoutSpec)] == [type(s) for s in after]
    assert any(isinstance(s, DropoutSpec) for s in before) and not any(isinstance(s, DropoutSpec) for s in after)
    convs = [(b, a) for b, a in zip([s for s in before if isinstance(s, ConvSpec)],
                                    [s for s in after if isinstance(s, ConvSpec)])]
    assert len(convs) == 24
    for b, a in convs:
        assert (b.batch_normalize, a.batch_normalize) == (0, 1)
        assert dataclasses.replace(b, batch_normalize=1) == a
    rest = lambda layers: [s for s in layers if not isinstance(s, ConvSpec | DropoutSpec)]  # noqa: E731
    assert rest(before) == rest(after)


def test_hires_classifier_changes_training_not_the_detector():
    before, after = sw("batch_norm"), sw("hires_classifier")
    assert specs(before) == specs(after)
    assert {k for k, v in after.switches().items() if v != before.switches()[k]} == {"hires_classifier"}
    # The classifier trained first is the detector's trunk at the detector's input, plus a head.
    clf = table2.build_classifier(after, 10, WIDTH)
    trunk = table2.trunk_layers(after, WIDTH)
    assert clf.specs[:len(trunk)] == specs(after)[:len(trunk)]
    assert (clf.net.width, clf.num_classes, clf.is_classifier) == (128, 10, True)


def test_convolutional_with_anchor_boxes_replaces_the_fc_head():
    before, after = specs(sw("hires_classifier")), specs(sw("convolutional"))
    b_model = table2.build_detector(sw("hires_classifier"), 3, WIDTH)
    a_model = table2.build_detector(sw("convolutional"), 3, WIDTH)
    # Trunk: the same convolutions, one max pool fewer (stride 64 -> 32), input 448 -> 416 (here 128 -> 64).
    assert [s for s in before if isinstance(s, ConvSpec)][:24] == [s for s in after if isinstance(s, ConvSpec)][:24]
    assert sum(isinstance(s, MaxPoolSpec) for s in before) == sum(isinstance(s, MaxPoolSpec) for s in after) + 1
    assert (b_model.stride, a_model.stride, b_model.net.width, a_model.net.width) == (64, 32, 128, 64)
    # Head: connected + [detection] -> a 1x1 conv to 9 x (5 + C) and [region] with Faster R-CNN's anchors.
    assert isinstance(before[-2], ConnectedSpec) and isinstance(before[-1], DetectionSpec)
    assert not any(isinstance(s, ConnectedSpec | DetectionSpec) for s in after)
    head, region = after[-2], after[-1]
    assert isinstance(region, RegionSpec) and (head.filters, head.size) == (9 * (5 + 3), 1)
    assert region.num == 9 and region.location == "offset"
    assert torch.allclose(a_model.anchors, torch.tensor(table2.hand_picked_anchors(2)))
    assert not a_model.fixed_input and b_model.fixed_input


def test_hand_picked_anchors_are_faster_rcnns():
    # 128, 256, 512 px at h/w 1/2, 1, 2 on a 600 px side; areas kept per scale.
    a = torch.tensor(table2.hand_picked_anchors(13)) * 600 / 13
    assert torch.allclose(a.prod(1).sqrt(), torch.tensor([128.] * 3 + [256.] * 3 + [512.] * 3))
    assert torch.allclose(a[:, 1] / a[:, 0], torch.tensor([.5, 1, 2] * 3))


def test_hand_picked_anchors_cover_voc_as_the_papers_table_1_says():
    # Table 1: Faster R-CNN's 9 anchor boxes give an average IoU of 60.9 with the VOC 2007 boxes.
    # Faster R-CNN scales images to a 600 px short side; VOC 2007 images are mostly 500 x 375, so
    # the boxes (pixels of the original images) are scaled by 600 / 375 = 1.6.
    import numpy as np

    from tests.conftest import shared_path

    d = np.loadtxt(shared_path("voc2007", "boxes_trainval.csv"), delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    wh = np.stack([d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]], 1) * 1.6
    anchors = np.array(table2.hand_picked_anchors(1)) * table2.FASTER_RCNN_SIDE
    inter = np.minimum(wh[:, None, 0], anchors[:, 0]) * np.minimum(wh[:, None, 1], anchors[:, 1])
    iou = inter / (wh[:, None].prod(-1) + anchors.prod(-1) - inter)
    assert 100 * iou.max(1).mean() == pytest.approx(60.9, abs=1.0)  # 61.3 here


def test_new_network_swaps_the_trunk_for_darknet19_and_keeps_the_head():
    before, after = specs(sw("convolutional")), specs(sw("new_network"))
    assert after[-1] == before[-1] and after[-2] == before[-2]  # same [region], same output conv
    from yolo_core.models import darknet19_trunk

    assert after[:23] == darknet19_trunk(WIDTH) and after[23:26] == [after[23]] * 3  # yolov2.cfg's three 3x3 1024
    assert before[:3] != after[:3]


def test_dimension_priors_change_the_anchors_only():
    before = sw("new_network")
    after = dataclasses.replace(before, anchor_boxes=False, dimension_priors=True)
    b, a = specs(before), specs(after)
    assert b[:-2] == a[:-2]
    assert a[-1] == dataclasses.replace(b[-1], anchors=tuple(v for p in KMEANS for v in p), num=3)
    assert a[-2] == dataclasses.replace(b[-2], filters=3 * (5 + 3))
    with pytest.raises(table2.Table2Error, match="k-means anchors"):
        table2.build_detector(after, 3, WIDTH, None)


def test_location_prediction_changes_decode_and_loss_only():
    before = dataclasses.replace(sw("new_network"), anchor_boxes=False, dimension_priors=True)
    after = sw("dimension_priors")
    assert after == dataclasses.replace(before, location_prediction=True)
    b, a = specs(before), specs(after)
    assert b[:-1] == a[:-1] and a[-1] == dataclasses.replace(b[-1], location=None)
    assert b[-1].location == "offset"

    # Decode: one prediction with tx = ty = 1, tw = th = 0, objectness high, on a 2 x 2 grid.
    anchors = torch.tensor(KMEANS)
    raw = torch.zeros(1, 3 * 8, 2, 2)
    raw[0, 0, 0, 0], raw[0, 1, 0, 0], raw[0, 4, 0, 0], raw[0, 5, 0, 0] = 1., 1., 10., 10.  # cell (0, 0), anchor 0
    boxes = {}
    for location in (None, "offset"):
        d = detect(raw, anchors, 3, thresh=.5, nms=1., location=location)[0]
        top = d.boxes[d.scores.argmax()]
        boxes[location] = ((top[:2] + top[2:]) / 2, top[2:] - top[:2])
    sig = 1 / (1 + math.exp(-1))
    assert torch.allclose(boxes[None][0], torch.tensor([sig / 2, sig / 2]))  # (0 + sigma(1)) / 2 cells
    assert torch.allclose(boxes["offset"][0], torch.tensor([(.5 + .5) / 2, (.5 + .8) / 2]))  # (.5 + t * pw) / 2
    assert torch.allclose(boxes[None][1], boxes["offset"][1])  # sizes: the same exp(tw) * pw either way

    # Loss: zero coordinate error at each parametrisation's own target, the RPN's error on t itself.
    truth = torch.tensor([[[.3, .3, .25, .4]]])  # cell (0, 0) of 2 x 2; best shape match: anchor 0
    targets = {"boxes": truth, "labels": torch.tensor([[0]])}
    raw = torch.zeros(1, 3 * 8, 2, 2, requires_grad=True)
    for location, tx, ty in ((None, math.log(.6 / .4), math.log(.6 / .4)), ("offset", .1 / .5, .1 / .8)):
        loss = RegionLoss(anchors, 3, variant="j17", location=location, warmup_images=0)
        at_target = raw.detach().clone()
        at_target[0, 0, 0, 0], at_target[0, 1, 0, 0] = tx, ty
        at_target[0, 2, 0, 0], at_target[0, 3, 0, 0] = math.log(.5 / .5), math.log(.8 / .8)
        assert float(loss(at_target, targets, seen=10**6)["coord"]) < 1e-10
        moved = at_target.clone().requires_grad_(True)
        with torch.no_grad():
            moved[0, 0, 0, 0] += .1
        loss(moved, targets, seen=10**6)["coord"].backward()
        grad = float(moved.grad[0, 0, 0, 0])
        # d/dt of .5 (t - t*)^2 = .1 (offset); through the logistic for darknet's.
        expected = .1 if location == "offset" else -(.6 - torch.sigmoid(torch.tensor(tx + .1))) * sig_grad(tx + .1)
        assert grad == pytest.approx(float(expected), rel=1e-4)


def sig_grad(x: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return s * (1 - s)


def test_passthrough_inserts_yolov2s_route_and_reorg_only():
    before, after = specs(sw("dimension_priors")), specs(sw("passthrough"))
    inserted = after[25:29]
    assert [type(s) for s in inserted] == [RouteSpec, ConvSpec, ReorgSpec, RouteSpec]
    assert after[:25] + after[29:] == before
    # The result is yolov2.cfg's network (with the VOC classes and k-means anchors).
    assert after == yolov2(width=WIDTH, num_classes=3, anchors=KMEANS, size=64).specs


@pytest.mark.parametrize("step, field, before, after", [
    ("multiscale", "multiscale", False, True),
    ("hires_detector", "test_size", 64, 96),
])
def test_multiscale_and_hires_detector_change_training_or_test_not_the_network(step, field, before, after):
    prev = table2.STEP_NAMES[table2.STEP_NAMES.index(step) - 1]
    assert specs(sw(prev)) == specs(sw(step))
    assert (getattr(sw(prev), field), getattr(sw(step), field)) == (before, after)
    changed = {k for k, v in sw(step).switches().items() if v != sw(prev).switches()[k]}
    assert changed == {step}


def test_every_column_builds_and_runs():
    shapes = {}
    with torch.inference_mode():
        for c in table2.COLUMNS:
            s = sw(c.name)
            model = table2.build_detector(s, 3, WIDTH, KMEANS).eval()
            shapes[c.name] = tuple(model(torch.zeros(1, 3, s.train_size, s.train_size)).shape)
    assert shapes["yolo"] == (1, 7 * 7 * (2 * 5 + 3))  # darknet's flat [detection] output
    assert shapes["convolutional"] == (1, 9 * (5 + 3), 2, 2) and shapes["hires_detector"] == (1, 3 * (5 + 3), 2, 2)


def test_unconstrained_location_survives_the_cfg_text():
    # The registry rebuilds models from their cfg text: location=offset must come back.
    from yolo_core.darknet_cfg import DarknetCfgError, parse_cfg_text

    model = table2.build_detector(sw("convolutional"), 3, WIDTH)
    _, layers = parse_cfg_text(model.cfg_text())
    assert layers == model.specs and layers[-1].location == "offset"
    assert "location" not in table2.build_detector(sw("passthrough"), 3, WIDTH, KMEANS).cfg_text()
    with pytest.raises(DarknetCfgError, match="location=logistic is not supported"):
        parse_cfg_text(model.cfg_text().replace("location=offset", "location=logistic"))
