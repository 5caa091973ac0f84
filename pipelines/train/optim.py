"""Optimization as darknet does it: SGD with momentum, decay on conv weights only, and a
learning rate that is a pure function of the step.

Darknet's update is ``w += lr/batch * (sum of gradients - decay*batch*w)`` with momentum on
the update. With a loss averaged over the images of a batch (RegionLoss normalizes per
image) this is exactly ``torch.optim.SGD(lr, momentum, weight_decay)``. Darknet applies the
decay only to convolution weights (not biases, batch-norm scales or shifts): see
:func:`param_groups`.

Workers: with DDP each worker keeps ``batch_size`` images and gradients are averaged over
all of them, so the global batch is ``num_workers * batch_size``. Following the linear
scaling rule (Goyal et al. 2017) the base learning rate is multiplied by the number of
workers when ``train.scale_lr_with_workers`` is set; burn-in is what keeps that stable early.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pipelines.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: conv weights (decayed) and everything else (no decay)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decayed_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            decay.append(module.weight)
            decayed_ids.add(id(module.weight))
    for p in model.parameters():
        if id(p) not in decayed_ids:
            no_decay.append(p)
    return [
        {"params": [p for p in decay if p.requires_grad], "weight_decay": weight_decay},
        {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0},
    ]


def base_lr(tcfg: TrainConfig, world_size: int = 1) -> float:
    """The configured learning rate, scaled linearly with the number of workers when enabled."""
    return tcfg.lr * (world_size if tcfg.scale_lr_with_workers else 1)


def learning_rate(step: int, tcfg: TrainConfig, world_size: int = 1) -> float:
    """Darknet's ``get_current_rate`` for iteration ``step`` (0-based, counts optimizer steps).

    burn-in: lr * (step / burn_in) ** power while step < burn_in; then
    steps:   lr times every scale whose step boundary is <= step;
    poly:    lr * (1 - step / max_steps) ** power;
    constant: lr.
    """
    lr = base_lr(tcfg, world_size)
    if step < tcfg.burn_in:
        return lr * (step / tcfg.burn_in) ** tcfg.power
    if tcfg.policy == "constant":
        return lr
    if tcfg.policy == "poly":
        return lr * max(0.0, 1.0 - step / tcfg.max_steps) ** tcfg.power
    rate = lr
    for boundary, scale in zip(tcfg.steps, tcfg.scales):
        if boundary > step:
            break
        rate *= scale
    return rate


def build_optimizer(params: Iterable[dict], tcfg: TrainConfig) -> torch.optim.Optimizer:
    """darknet's SGD, or AdamW (beta1 = momentum) for short from-scratch runs; the groups'
    weight decay is kept (conv weights only)."""
    # lr is set before every step by set_lr; 0 here so that nothing moves before that. fused: one
    # kernel over all parameters instead of a few ops per tensor (CPU and GPU; the per-tensor AdamW
    # took ~5% of the demo's training thread on 2 CPU cores; same update up to rounding).
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(list(params), lr=0.0, betas=(tcfg.momentum, 0.999), fused=True)
    return torch.optim.SGD(list(params), lr=0.0, momentum=tcfg.momentum, fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
