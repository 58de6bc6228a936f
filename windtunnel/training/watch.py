"""Divergence found on the device, every step, without making the host wait for the step.

Each step folds "loss non-finite, or above `train.diverge_factor` x max(first loss, ln vocab), or
gradient norm non-finite" into one boolean tensor on the device (the flag only ever turns on). On a
GPU the flag is copied to pinned host memory behind the step's kernels, and the host reads it one
step late: after queueing step s + 1 it waits for step s only, which the GPU finished while the host
was queueing, so the GPU never idles on the check. A diverged run therefore stops at most one step
after the bad one. Before a checkpoint the flag is read at once (`now`), so a non-finite state is
never saved. On a CPU every op is synchronous anyway: the flag is read at once, every step.

The gradient norm is part of the flag because a finite loss with an infinite gradient still writes
infinite weights in the optimizer step that follows.

A fused group of K trials (`k=K`) keeps one flag per trial: the same rule on (K,) losses and
gradient norms, each trial against its own first loss; `keep` follows the group as trials leave.

Example:
    >>> watch = DivergenceWatch(device=device, vocab_size=256, factor=3.0, first_loss=None)
    >>> watch.record(loss, grad_norm)     # every step; no host sync after the first
    >>> watch.diverged()                  # the flag as of the previous step (GPU) or this one (CPU)
    False
    >>> group = DivergenceWatch(device=device, vocab_size=256, factor=3.0, first_loss=None, k=4)
    >>> group.record(losses, grad_norms)  # (4,) each
    >>> group.flags()
    [False, False, False, False]
"""

from __future__ import annotations

import math

import torch

__all__ = ["DivergenceWatch"]


class DivergenceWatch:
    """An on-device divergence flag (one per trial of a fused group) and its lagged host copy."""

    def __init__(self, *, device: torch.device, vocab_size: int, factor: float | list[float],
                 first_loss: float | list[float] | None, k: int | None = None):
        self.device, self.factor, self.floor = device, factor, math.log(vocab_size)
        self.first_loss = first_loss  # a float (one run, `k` None) or one per trial
        shape = () if k is None else (k,)
        self.flag = torch.zeros(shape, dtype=torch.bool, device=device)
        self._cuda = device.type == "cuda"
        self._host = torch.zeros(shape, dtype=torch.bool, pin_memory=self._cuda)
        self._pending: list = []  # CUDA events of copies not yet waited for, oldest first
        self._limit = None if first_loss is None else self._limit_tensor()

    def limit(self) -> float | list[float]:
        """The loss above which a run counts as exploding (relative to a uniform guess at least, so a
        run that starts high but learns is not called diverged); one per trial for a group."""
        if isinstance(self.first_loss, list):
            factors = self.factor if isinstance(self.factor, list) else [self.factor] * len(self.first_loss)
            return [x * max(f, self.floor) for x, f in zip(factors, self.first_loss)]
        return self.factor * max(self.first_loss, self.floor)

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Fold one step's loss (all ranks' mean; (K,) for a group) and gradient norm into the flag."""
        if self.first_loss is None:  # a fresh run's first step: the one host read of the reference
            self.first_loss = loss.tolist()
            self._limit = self._limit_tensor()
        bad = ~torch.isfinite(loss) | (loss > self._limit) | ~torch.isfinite(grad_norm)
        torch.logical_or(self.flag, bad, out=self.flag)
        if self._cuda:
            self._host.copy_(self.flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append(event)

    def diverged(self) -> bool:
        """The flag as of the step before the newest (GPU: waits for that step only) or the newest (CPU)."""
        return any(self.flags())

    def flags(self) -> list[bool]:
        """`diverged` per trial (one entry for a single run)."""
        if not self._cuda:
            return _as_list(self.flag.tolist())
        while len(self._pending) > 1:
            self._pending.pop(0).synchronize()
        return _as_list(self._host.tolist())

    def now(self) -> bool:
        """The flag as of the newest step (waits for it): before a checkpoint and at the end."""
        if self._cuda:
            torch.cuda.current_stream(self.device).synchronize()
            self._pending.clear()
        return bool(self.flag.any().item())

    def keep(self, slots: list[int]) -> None:
        """Keep the trials in `slots` (in that order), as the fused model and optimizer do."""
        self.now()  # no copy in flight into the host buffer about to be replaced
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        self.flag = self.flag.index_select(0, index)
        self._host = torch.zeros(self.flag.shape, dtype=torch.bool, pin_memory=self._cuda)
        if isinstance(self.factor, list):
            self.factor = [self.factor[s] for s in slots]
        if self.first_loss is not None:
            self.first_loss = [self.first_loss[s] for s in slots]
            self._limit = self._limit_tensor()

    def _limit_tensor(self) -> torch.Tensor | float:
        limit = self.limit()
        return torch.tensor(limit, device=self.device) if isinstance(limit, list) else limit


def _as_list(value) -> list[bool]:
    return value if isinstance(value, list) else [value]
