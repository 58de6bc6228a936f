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

Example:
    >>> watch = DivergenceWatch(device=device, vocab_size=256, factor=3.0, first_loss=None)
    >>> watch.record(loss, grad_norm)     # every step; no host sync after the first
    >>> watch.diverged()                  # the flag as of the previous step (GPU) or this one (CPU)
    False
"""

from __future__ import annotations

import math

import torch

__all__ = ["DivergenceWatch"]


class DivergenceWatch:
    """An on-device divergence flag and its lagged host copy."""

    def __init__(self, *, device: torch.device, vocab_size: int, factor: float, first_loss: float | None):
        self.device, self.factor, self.floor = device, factor, math.log(vocab_size)
        self.first_loss = first_loss
        self.flag = torch.zeros((), dtype=torch.bool, device=device)
        self._cuda = device.type == "cuda"
        self._host = torch.zeros((), dtype=torch.bool, pin_memory=self._cuda)
        self._pending: list = []  # CUDA events of copies not yet waited for, oldest first

    def limit(self) -> float:
        """The loss above which a run counts as exploding (relative to a uniform guess at least, so a
        run that starts high but learns is not called diverged)."""
        return self.factor * max(self.first_loss, self.floor)

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Fold one step's loss (a 0-d tensor, all ranks' mean) and gradient norm into the flag."""
        if self.first_loss is None:  # a fresh run's first step: the one host read of the reference
            self.first_loss = loss.item()
        bad = ~torch.isfinite(loss) | (loss > self.limit()) | ~torch.isfinite(grad_norm)
        torch.logical_or(self.flag, bad, out=self.flag)
        if self._cuda:
            self._host.copy_(self.flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append(event)

    def diverged(self) -> bool:
        """The flag as of the step before the newest (GPU: waits for that step only) or the newest (CPU)."""
        if not self._cuda:
            return bool(self.flag.item())
        while len(self._pending) > 1:
            self._pending.pop(0).synchronize()
        return bool(self._host.item())

    def now(self) -> bool:
        """The flag as of the newest step (waits for it): before a checkpoint and at the end."""
        if self._cuda:
            torch.cuda.current_stream(self.device).synchronize()
            self._pending.clear()
        return bool(self.flag.item())
