"""Learning-rate schedules, in a registry: the rate at each step from the run's config."""

from __future__ import annotations

import math

import torch

from torchstn._registry import Registry

__all__ = ["SCHEDULES", "set_lr"]

#: name -> rate(base_lr, t, cfg: RunConfig) -> float, where t is the training time in
#: epochs (epoch + step / steps, from 0).
SCHEDULES: Registry = Registry("schedule")


@SCHEDULES.register("step")
def _step(base_lr: float, t: float, cfg) -> float:
    """Divided by 10 after each of ``schedule.lr_milestones`` (epochs)."""
    return base_lr * 0.1 ** sum(t >= m for m in cfg.schedule.lr_milestones)


@SCHEDULES.register("onecycle")
def _onecycle(base_lr: float, t: float, cfg) -> float:
    """Linear warm-up from ``base_lr / 25`` over ``schedule.warmup_epochs``, then half a
    cosine down to 0 at the last step."""
    epochs = cfg.train.epochs
    warm = min(cfg.schedule.warmup_epochs, epochs)
    if t < warm:
        return base_lr * (0.04 + 0.96 * t / warm)
    rest = epochs - warm
    done = 1.0 if rest <= 0 else min(1.0, (t - warm) / rest)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * done))


def set_lr(opt: torch.optim.Optimizer, cfg, t: float) -> float:
    """Set every group's rate for time ``t`` in epochs (scheduled rate times
    ``lr_mult``); return the scheduled rate."""
    lr = SCHEDULES.get(cfg.schedule.schedule)(cfg.optim.lr, t, cfg)
    for group in opt.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr
