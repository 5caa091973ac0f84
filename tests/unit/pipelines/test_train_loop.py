"""Pieces of the per-worker loop that run without Ray: model building and the classifier loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.config import load_config
from pipelines.train.loop import build_model, classify_loss, schedule_of
from yolo_core.tree import Tree

PARENTS = [-1, 0, 0, 1, 1, 1]  # root, two children, three grandchildren under node 1


def test_build_model_sizes_the_head_from_the_tree_and_anchors():
    cfg = load_config("demo", ["model.name=yolo9000", "model.width=0.0625"])
    tree = Tree(PARENTS)
    model = build_model(cfg.model, cfg.train, tree, [[1.0, 2.0], [3.0, 4.0]])
    assert model.num_classes == 6 and model.num_anchors == 2
    assert torch.equal(model.anchors, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2 * (5 + 6), 2, 2)
    clf_cfg = load_config("demo", ["model.name=darknet19", "model.width=0.0625", "train.mode=classify"])
    clf = build_model(clf_cfg.model, clf_cfg.train, tree, [[1.0, 2.0]])
    assert clf(torch.rand(2, 3, 64, 64)).shape == (2, 6)


def test_classify_loss_is_hierarchical_with_a_tree_and_flat_without():
    tree = Tree(PARENTS)
    logits = torch.randn(4, 6, requires_grad=True)
    label = torch.tensor([3, 4, 2, 5])
    parts = classify_loss(logits, label, tree)
    assert torch.allclose(parts["total"], tree.nll(logits, label).mean())
    parts["total"].backward()
    # Only groups on the label paths get gradient: the root group {0} has a single member.
    assert logits.grad[:, 0].abs().max() < 1e-7
    flat = classify_loss(logits.detach(), label, None)
    assert torch.allclose(flat["total"], F.cross_entropy(logits.detach(), label))


def test_schedule_of_holds_what_gives_a_step_its_lr():
    cfg = load_config("demo")
    s = schedule_of(cfg.train)
    assert s["lr"] == cfg.train.lr and s["steps"] == cfg.train.steps and s["max_steps"] == cfg.train.max_steps
    assert schedule_of(load_config("demo", ["train.lr=0.5"]).train)["lr"] == 0.5
    assert schedule_of(load_config("demo", ["train.optimizer=sgd"]).train)["optimizer"] == "sgd"


def test_controller_poll_reaches_ray_trains_controller_env_and_a_users_value_wins(monkeypatch):
    """ray.train_poll_s is handed to the controller through Ray Train's own list of variables it
    passes on (get_env_vars_to_propagate), only during the fit; a value set by the user stays."""
    import os

    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    from pipelines.train.stage import _controller_poll

    name = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    monkeypatch.delenv(name, raising=False)
    cfg = load_config("demo", ["ray.train_poll_s=0.25"])
    with _controller_poll(cfg.ray.train_poll_s):
        assert get_env_vars_to_propagate()[name] == "0.25"
    assert name not in os.environ and name not in get_env_vars_to_propagate()
    monkeypatch.setenv(name, "3")
    with _controller_poll(cfg.ray.train_poll_s):
        assert get_env_vars_to_propagate()[name] == "3"
    assert os.environ[name] == "3"
