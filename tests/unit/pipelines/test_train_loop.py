"""Pieces of the per-worker loop that run without Ray: model building and the classifier loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.config import load_config
from pipelines.train.loop import (
    build_model,
    classify_loss,
    forward,
    prepare_for_training,
    schedule_of,
    train_precision,
)
from yolo_core.inference import Precision
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


def _cpu_has_native_bf16() -> bool:
    # Read here, apart from yolo_core.inference's own reading of the flags.
    with open("/proc/cpuinfo") as f:
        flags = {w for line in f if line.startswith("flags") for w in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def test_train_precision_is_bf16_only_where_the_cpu_computes_it_and_amp_is_on():
    cpu = torch.device("cpu")
    on = load_config("demo", ["train.amp=true"]).train
    off = load_config("demo", ["train.amp=false"]).train
    assert train_precision(off, cpu).dtype == torch.float32
    assert train_precision(on, cpu).dtype == (torch.bfloat16 if _cpu_has_native_bf16() else torch.float32)
    assert train_precision(on, cpu).reason  # said in the log and the run's tags


def test_forward_in_bf16_computes_in_bf16_and_trains_fp32_weights():
    cfg = load_config("demo", ["model.name=yolo9000", "model.width=0.0625"])
    torch.manual_seed(0)
    model = prepare_for_training(build_model(cfg.model, cfg.train, Tree(PARENTS), [[1.0, 2.0]]), cfg.train)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    x = torch.rand(2, 3, 64, 64)
    fp32 = forward(model, x, cfg.train, Precision(torch.float32, "test"))
    bf16 = forward(model, x, cfg.train, Precision(torch.bfloat16, "test"))
    assert fp32.dtype == bf16.dtype == torch.float32  # the loss always sees fp32
    # The input in either layout gives the same outputs (the batches arrive channels_last).
    assert torch.equal(forward(model, x.contiguous(memory_format=torch.channels_last), cfg.train,
                               Precision(torch.float32, "test")), fp32)
    with torch.no_grad():
        assert torch.equal(fp32, model(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(bf16, model(x.contiguous(memory_format=torch.channels_last)).float())
    # bf16 moves the outputs (its 8-bit mantissa), not more than that: ~0.1-0.17 of the norm for
    # this 2-to-64-channel network in train-mode batch norm over 2 images of 2x2 cells.
    rel = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert 0 < rel < 0.3, rel
    bf16.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
