"""Learning-rate schedules, in a registry: the rate of each epoch from the run's config."""

from __future__ import annotations

import torch

from torchstn._registry import Registry

__all__ = ["SCHEDULES", "set_lr"]

#: name -> rate(base_lr, epoch, cfg: RunConfig) -> float
SCHEDULES: Registry = Registry("schedule")


@SCHEDULES.register("step")
def _step(base_lr: float, epoch: int, cfg) -> float:
    """Divided by 10 after each of ``schedule.lr_milestones`` (epochs)."""
    return base_lr * 0.1 ** sum(epoch >= m for m in cfg.schedule.lr_milestones)


def set_lr(opt: torch.optim.Optimizer, cfg, epoch: int) -> float:
    """Set every group's rate for ``epoch`` (scheduled rate times ``lr_mult``); return the
    scheduled rate."""
    lr = SCHEDULES.get(cfg.schedule.schedule)(cfg.optim.lr, epoch, cfg)
    for group in opt.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr
