"""model.table2 in the pipeline: the config section, the sizes and modes each switch fixes, the model built."""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.job import adapt_config_to_model
from pipelines.train.loop import build_model
from yolo_core import table2

SMALL = ["model.name=table2", "model.width=0.0625", "model.table2.yolo_input_size=128", "model.table2.input_size=64",
         "model.table2.hires_test_size=96", "train.multiscale_min=32", "train.multiscale_max=96"]


def cfg_for(step: str, *more: str):
    sw = table2.settings(step).switches()
    return load_config("demo", [*SMALL, *(f"model.table2.{k}={str(v).lower()}" for k, v in sw.items()), *more])


def test_bad_switches_are_a_config_error_naming_the_section():
    with pytest.raises(ConfigError, match="config section 'model.table2'.*passthrough need"):
        load_config("demo", ["model.table2.passthrough=true"])


@pytest.mark.parametrize("step, train_size, multiscale, eval_size", [
    ("yolo", 128, False, 128), ("hires_classifier", 128, False, 128), ("convolutional", 64, False, 64),
    ("passthrough", 64, False, 64), ("multiscale", 64, True, 64), ("hires_detector", 64, True, 96),
])
def test_switches_fix_the_sizes_and_modes(step, train_size, multiscale, eval_size):
    cfg = cfg_for(step)
    notes = adapt_config_to_model(cfg)
    assert notes and "model.table2" in notes[0]
    assert (cfg.train.mode, cfg.train.input_size, cfg.train.multiscale, cfg.eval.input_size,
            cfg.anchors.input_size) == ("detect", train_size, multiscale, eval_size, 64)
    assert adapt_config_to_model(cfg) == []  # applied once, nothing left to change


def test_the_classifier_phase_keeps_classify_mode_at_the_training_size():
    cfg = cfg_for("hires_classifier", "train.mode=classify")
    adapt_config_to_model(cfg)
    assert (cfg.train.mode, cfg.train.input_size, cfg.train.multiscale) == ("classify", 128, False)

    class Tree:
        num_nodes = 30

    model = build_model(cfg.model, cfg.train, Tree(), None)
    assert model.is_classifier and model.num_classes == 30 and model.net.width == 128


def test_build_model_builds_the_switches_detector_on_the_flat_classes():
    cfg = cfg_for("dimension_priors")
    adapt_config_to_model(cfg)
    model = build_model(cfg.model, cfg.train, None, [[1.0, 1.5], [2.0, 1.0]], [4, 7, 9])
    assert model.num_classes == 3 and model.num_anchors == 2 and model.region.spec.location is None
    cfg = cfg_for("convolutional")
    adapt_config_to_model(cfg)
    model = build_model(cfg.model, cfg.train, None, [[1.0, 1.5]], [4, 7, 9])
    assert model.num_anchors == 9 and model.region.spec.location == "offset"  # hand-picked, not the k-means ones
    with pytest.raises(ValueError, match="flat class list"):
        build_model(cfg.model, cfg.train, None, None)


def test_hires_classifier_phase_is_shared_by_columns_with_the_same_trunk():
    from pipelines.ablation import classifier_config, column_config, trunk_kind

    base = load_config("demo", [*SMALL, "ablation.classifier_steps=7", "ablation.classifier_lr=0.002",
                                "ablation.pretrained={darknet19: /w/darknet19.weights}"])
    phases = {step: classifier_config(column_config(base, step)) for step in table2.STEP_NAMES[2:]}
    keys = {step: c.hash("model", "train") for step, c in phases.items()}
    # Columns 5-9 share Darknet-19; columns 3 (YOLOv1, FC head) and 4 (one max pool fewer, 416) differ.
    assert len({keys[s] for s in ("new_network", "dimension_priors", "passthrough", "multiscale",
                                  "hires_detector")}) == 1
    assert len({keys["hires_classifier"], keys["convolutional"], keys["passthrough"]}) == 3
    c = phases["passthrough"]
    assert (c.train.mode, c.train.max_steps, c.train.lr, c.train.policy, c.train.input_size) == \
        ("classify", 7, 0.002, "poly", 64)
    assert c.model.init_weights == "/w/darknet19.weights"  # the 224 classifier of its trunk
    assert trunk_kind(column_config(base, "yolo").model.table2) == "yolov1"
    assert trunk_kind(column_config(base, "batch_norm").model.table2) == "yolov1_bn"
    with pytest.raises(ConfigError, match="ablation.pretrained.resnet"):
        load_config("demo", ["ablation.pretrained={resnet: x}"])


@pytest.mark.parametrize("step", ["hires_classifier", "passthrough"])
def test_the_detector_starts_from_the_classifiers_trunk(step, tmp_path):
    # The classifier's first layers, saved as a partial darknet .weights file (darknet's `partial`),
    # are the detector's first layers: a warm start fills exactly the trunk.
    import torch

    from yolo_core.weights import load_weights, save_weights

    sw = table2.settings(step, table2.Table2(yolo_input_size=128, input_size=64, hires_test_size=96))
    torch.manual_seed(0)
    clf = table2.build_classifier(sw, 5, 1 / 16)
    trunk = len(table2.trunk_layers(sw, 1 / 16))
    save_weights(clf, tmp_path / "trunk.weights", cutoff=trunk)
    det = table2.build_detector(sw, 3, 1 / 16, [[1.0, 1.0], [2.0, 2.0]])
    head_before = {k: v.clone() for k, v in det.state_dict().items() if not k.startswith(tuple(
        f"layers.{i}." for i in range(trunk)))}
    load_weights(det, tmp_path / "trunk.weights")
    mine, theirs = det.state_dict(), clf.state_dict()
    trunk_keys = [k for k in theirs if int(k.split(".")[1]) < trunk]
    assert trunk_keys and all(torch.equal(mine[k], theirs[k]) for k in trunk_keys)
    assert all(torch.equal(mine[k], v) for k, v in head_before.items())  # the head keeps its own weights
