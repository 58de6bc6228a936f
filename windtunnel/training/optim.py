"""The optimizer: a plain `torch.optim.AdamW` over the per-role groups of `parametrization.param_groups`."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..model.parametrization import Role, param_groups

__all__ = ["build_optimizer", "current_lr", "set_lr"]


def build_optimizer(model: nn.Module, cfg: RunConfig, *, roles: dict[str, Role] | None = None) -> torch.optim.AdamW:
    """AdamW whose groups show each role's lr and weight decay (hidden matrices: lr / m under muP).

    Example:
        >>> opt = build_optimizer(model, cfg)
        >>> [(g["role"], g["lr"]) for g in opt.param_groups]
        [('embedding', 0.01), ('hidden', 0.0025), ('vector', 0.01)]
    """
    t = cfg.train
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW(param_groups(model, cfg, roles=roles), lr=t.lr, betas=t.betas, eps=t.eps, **fused)


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Scale every group's peak lr by the schedule's multiplier for this step."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * multiplier


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr the optimizer applies now to the base-width groups (embedding; μP scales only hidden
    matrices): what metrics.csv logs, read from the optimizer itself rather than the config.

    Example:
        >>> set_lr(opt, 0.5); current_lr(opt)
        0.005
    """
    group = next((g for g in optimizer.param_groups if g.get("role") == "embedding"), optimizer.param_groups[0])
    return float(group["lr"])
