"""Optimizers, in a registry, over parameter groups: the transformers apart from the rest.

Every group carries ``lr_mult``; the schedule sets each group's rate to the scheduled rate
times its multiplier. The spatial transformers (every one :func:`torchstn.find_transformers`
finds, their localisation nets and regression heads) form one group with multiplier
``loc_lr_mult``; the rest of the model the other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchstn._registry import Registry
from torchstn.modules import find_transformers

__all__ = ["OPTIMIZERS", "build_optimizer", "parameter_groups"]

#: name -> factory(groups, cfg: OptimConfig) -> torch.optim.Optimizer
OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict[str, Any]], cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def parameter_groups(model: nn.Module, loc_lr_mult: float) -> list[dict[str, Any]]:
    """The model's parameters minus the transformers', then the transformers' (if any)."""
    seen: set[int] = set()
    loc = []
    for stn in find_transformers(model):
        for p in stn.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                loc.append(p)
    groups = [{"params": [p for p in model.parameters() if id(p) not in seen],
               "lr_mult": 1.0}]
    if loc:
        groups.append({"params": loc, "lr_mult": loc_lr_mult})
    return groups


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` (an :class:`~torchstn.experiments.config.OptimConfig`)
    over :func:`parameter_groups`."""
    return OPTIMIZERS.get(cfg.optimizer)(parameter_groups(model, cfg.loc_lr_mult), cfg)
