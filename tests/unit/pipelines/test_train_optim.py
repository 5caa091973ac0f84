"""Darknet's learning-rate policies and SGD parameter groups."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pipelines.config import ConfigError, TrainConfig
from pipelines.train.optim import base_lr, build_optimizer, learning_rate, param_groups, set_lr


def darknet_rate(batch_num: int, lr: float, burn_in: int, power: float, policy: str,
                 steps: list[int], scales: list[float], max_batches: int) -> float:
    """src/network.c get_current_rate, transcribed line by line."""
    if batch_num < burn_in:
        return lr * pow(batch_num / burn_in, power)
    if policy == "constant":
        return lr
    if policy == "steps":
        rate = lr
        for s, sc in zip(steps, scales):
            if s > batch_num:
                return rate
            rate *= sc
        return rate
    if policy == "poly":
        return lr * pow(1 - batch_num / max_batches, power)
    raise AssertionError(policy)


def test_yolov2_schedule_known_values():
    t = TrainConfig()  # yolov2 / yolo9000 HEAD: lr .001, burn_in 1000, steps 400k 450k x .1
    assert learning_rate(0, t) == 0.0
    assert learning_rate(500, t) == pytest.approx(0.001 * 0.5**4)
    assert learning_rate(1000, t) == pytest.approx(0.001)
    assert learning_rate(399_999, t) == pytest.approx(0.001)
    assert learning_rate(400_000, t) == pytest.approx(0.0001)
    assert learning_rate(450_000, t) == pytest.approx(0.00001)


@pytest.mark.parametrize("policy", ["steps", "poly", "constant"])
def test_matches_darknet_formula_everywhere(policy):
    t = TrainConfig(lr=0.1, burn_in=20, policy=policy, steps=[50, 80], scales=[0.5, 0.2], power=4.0,
                    max_steps=100, scale_lr_with_workers=False)
    for step in range(0, 100):
        expected = darknet_rate(step, 0.1, 20, 4.0, policy, [50, 80], [0.5, 0.2], 100)
        assert learning_rate(step, t) == pytest.approx(expected, rel=1e-12, abs=1e-15), step


def test_classifier_poly_value():
    t = TrainConfig(lr=0.1, burn_in=0, policy="poly", power=4.0, max_steps=1000)
    assert learning_rate(500, t) == pytest.approx(0.1 * 0.5**4)
    assert learning_rate(1000, t) == 0.0


def test_lr_scales_linearly_with_workers():
    t = TrainConfig(lr=0.001, burn_in=0, policy="constant")
    assert base_lr(t, 8) == pytest.approx(0.008)
    assert learning_rate(10, t, world_size=4) == pytest.approx(0.004)
    off = TrainConfig(lr=0.001, burn_in=0, policy="constant", scale_lr_with_workers=False)
    assert learning_rate(10, off, world_size=4) == pytest.approx(0.001)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
                         nn.Conv2d(4, 6, 1, bias=True))


def test_decay_only_on_conv_weights():
    net = _net()
    groups = param_groups(net, 0.0005)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.0005 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(net[0].weight), id(net[3].weight)}
    others = {id(p) for p in groups[1]["params"]}
    assert others == {id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert len(decayed) + len(others) == len(list(net.parameters()))


def test_sgd_step_decays_conv_weights_only():
    net = _net()
    t = TrainConfig(momentum=0.9, weight_decay=0.01)
    opt = build_optimizer(param_groups(net, t.weight_decay), t)
    set_lr(opt, 0.1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # no loss gradient: only weight decay moves anything
    opt.step()
    after = dict(net.named_parameters())
    assert torch.allclose(after["0.weight"], before["0.weight"] * (1 - 0.1 * 0.01))
    assert torch.allclose(after["3.weight"], before["3.weight"] * (1 - 0.1 * 0.01))
    for name in ("1.weight", "1.bias", "3.bias"):
        assert torch.equal(after[name], before[name]), name


def test_adamw_decays_conv_weights_only_and_follows_the_gradient():
    net = _net()
    t = TrainConfig(optimizer="adamw", momentum=0.9, weight_decay=0.01)
    opt = build_optimizer(param_groups(net, t.weight_decay), t)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.999)
    set_lr(opt, 0.1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net[3].bias.grad = torch.ones_like(net[3].bias)
    opt.step()
    after = dict(net.named_parameters())
    # Decoupled decay on conv weights only: w *= 1 - lr * decay (a zero gradient adds no Adam step).
    assert torch.allclose(after["0.weight"], before["0.weight"] * (1 - 0.1 * 0.01))
    for name in ("1.weight", "1.bias"):
        assert torch.equal(after[name], before[name]), name
    # Adam's first step moves a parameter by lr against the sign of its gradient.
    assert torch.allclose(after["3.bias"], before["3.bias"] - 0.1, atol=1e-6)


def test_unknown_optimizer_is_refused_by_name():
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="lamb")



@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fused_optimizer_matches_the_per_tensor_one_and_resumes_across_them(optimizer):
    """build_optimizer uses the fused kernels: the same updates as torch's per-tensor loop, and
    a checkpoint's optimizer state loads into either (checkpoints written before it was fused
    still resume)."""
    t = TrainConfig(optimizer=optimizer, momentum=0.9, weight_decay=0.01)
    fused_net, loop_net = _net(), _net()
    loop_net.load_state_dict(fused_net.state_dict())
    start = copy.deepcopy(fused_net.state_dict())
    fused = build_optimizer(param_groups(fused_net, t.weight_decay), t)
    assert fused.defaults["fused"] is True
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD
    kw = {"betas": (0.9, 0.999)} if optimizer == "adamw" else {"momentum": 0.9}
    loop = cls(param_groups(loop_net, t.weight_decay), lr=0.0, foreach=False, **kw)
    assert not loop.defaults["fused"]
    gen = torch.Generator().manual_seed(0)

    def steps(n: int) -> None:
        for _ in range(n):
            for p, q in zip(fused_net.parameters(), loop_net.parameters()):
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = p.grad.clone()
            for opt in (fused, loop):
                set_lr(opt, 0.05)
                opt.step()

    def assert_same() -> None:
        for (name, a), b in zip(fused_net.named_parameters(), loop_net.parameters()):
            assert not torch.equal(a, start[name]), name  # it moved
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)

    steps(3)
    assert_same()
    # Cross-resume: each optimizer continues from the other's state.
    fused_state, loop_state = copy.deepcopy(fused.state_dict()), copy.deepcopy(loop.state_dict())
    fused.load_state_dict(loop_state)
    loop.load_state_dict(fused_state)
    steps(2)
    assert_same()
