"""AdamW over stacked trial weights: every trial keeps its own per-role lr, weight decay, schedule
multiplier and gradient clip.

The update is torch's AdamW written out (decoupled decay, bias-corrected moments) with the learning
rate and decay as (K,) tensors, so slot k moves exactly as a separate run's `torch.optim.AdamW` over
`parametrization.param_groups` would. Each trial's (role -> peak lr, weight decay) comes from
`param_groups` itself: the muP rules live in one place.

Example:
    >>> opt = FusedAdamW(fused, [param_groups(m, c) for m, c in zip(models, cfgs)], betas=(0.9, 0.95), eps=1e-8)
    >>> opt.step(lr_mults=torch.tensor([1.0, 0.5]), grad_clip=torch.tensor([1.0, math.inf]))
"""

from __future__ import annotations

import math

import torch

from ..model.fused import FusedTransformer

__all__ = ["FusedAdamW"]


class FusedAdamW:
    """AdamW state for a `FusedTransformer`; `keep` shrinks it with the model."""

    def __init__(self, model: FusedTransformer, groups_per_trial: list[list[dict]], *,
                 betas: tuple[float, float], eps: float):
        self.model, self.betas, self.eps = model, betas, eps
        self.steps = 0
        dev, dtype = model.emb_mult.device, model.emb_mult.dtype
        by_role = [{g["role"]: g for g in groups} for groups in groups_per_trial]
        roles = by_role[0].keys()
        self.peak_lr = {r: torch.tensor([t[r]["peak_lr"] for t in by_role], device=dev, dtype=dtype) for r in roles}
        self.decay = {r: torch.tensor([t[r]["weight_decay"] for t in by_role], device=dev, dtype=dtype)
                      for r in roles}
        self.exp_avg = {n: torch.zeros_like(p) for n, p in model.named_weights()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in model.named_weights()}

    def lr(self, role: str, lr_mults: torch.Tensor) -> torch.Tensor:
        """(K,) learning rates of a role at this step."""
        return self.peak_lr[role] * lr_mults

    @torch.no_grad()
    def clip(self, grad_clip: torch.Tensor) -> torch.Tensor:
        """Per-trial gradient-norm clipping (torch's clip_grad_norm_ rule); returns the (K,) norms."""
        weights = self.model.named_weights()
        sq = sum(p.grad.flatten(1).pow(2).sum(1) for _, p in weights)  # (K,)
        norms = sq.sqrt()
        coef = torch.clamp(grad_clip / (norms + 1e-6), max=1.0)
        for _, p in weights:
            p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
        return norms

    @torch.no_grad()
    def step(self, *, lr_mults: torch.Tensor) -> None:
        """One AdamW step, slot k at lr peak_lr[role][k] * lr_mults[k]; grads are then cleared."""
        self.steps += 1
        b1, b2 = self.betas
        bc1, bc2_sqrt = 1 - b1 ** self.steps, math.sqrt(1 - b2 ** self.steps)
        for name, p in self.model.named_weights():
            role = self.model.roles[name]
            shape = (-1, *([1] * (p.dim() - 1)))
            lr = self.lr(role, lr_mults).view(shape)
            p.mul_(1 - lr * self.decay[role].view(shape))
            m, v, g = self.exp_avg[name], self.exp_avg_sq[name], p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            p.sub_(lr / bc1 * m / denom)
            p.grad = None

    def keep(self, slots: list[int]) -> None:
        """Keep the optimizer state of the trials in `slots` (call with the model's `keep`)."""
        index = torch.tensor(slots, dtype=torch.long, device=self.model.emb_mult.device)
        for table in (self.peak_lr, self.decay, self.exp_avg, self.exp_avg_sq):
            for key in table:
                table[key] = table[key].index_select(0, index)
