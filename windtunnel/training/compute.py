"""What a training group computes with: the only part of the loop that depends on K, its number of trials.

`Single` (K = 1) is one `Transformer`, compiled and wrapped for DDP/FSDP2 (`training.wrapping`),
under `torch.optim.AdamW`: the full run and every unfused proxy. `Fused` (K > 1) is a
`FusedTransformer` (stacked weights (K, ...)) under `FusedAdamW`: every trial keeps its own lr,
decay, schedule multiplier, gradient clip and data stream. Both answer the loop in one shape:

* `set_lr(mults)`: one schedule multiplier per trial for the next step;
* `step(step, samplers, watch)`: forward + backward over the `grad_accum` micro-batches, gradient
  clip, optimizer step; returns the losses (a 0-d tensor for K = 1, (K,) for a group) on the
  device, no host sync, after folding them and the gradient norms into the `DivergenceWatch`;
* `evaluate(val_sets, wanted)`: each wanted trial's held-out val_loss (its `ValSet` keeps the
  per-source losses);
* `lrs()`: the lr each trial's metrics row shows; `keep(slots)`: drop the trials that left.

Example:
    >>> compute = Single(model, wrap_model(model, cfg, ctx), build_optimizer(model, cfg), cfg=cfg, ctx=ctx)
    >>> compute.set_lr([1.0]); loss = compute.step(0, [sampler], watch)   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..model.fused import FusedTransformer
from ..model.transformer import attention_context
from .distributed import DistContext
from .fused_optim import FusedAdamW
from .optim import current_lr, set_lr
from .precision import Precision
from .watch import DivergenceWatch
from .wrapping import Wrapped

__all__ = ["Fused", "Single", "evaluate", "per_trial_loss"]


class Single:
    """K = 1: one model, wrapped as the run's world asks, and its AdamW."""

    fused = False

    def __init__(self, model: torch.nn.Module, wrapped: Wrapped, optimizer: torch.optim.Optimizer, *,
                 cfg: RunConfig, ctx: DistContext):
        self.model, self.wrapped, self.optimizer, self.cfg, self.ctx = model, wrapped, optimizer, cfg, ctx
        self.mode = wrapped.mode

    def amp(self):
        """The precision recipe's autocast: bf16 matmuls under `bf16` in every mode, none under fp32."""
        return Precision.of(self.cfg).autocast(self.ctx.device)

    def kernels(self):
        """The SDPA kernel choice of model.attention, held for a forward and its backward."""
        return attention_context(self.cfg.model.attention)

    def set_lr(self, mults: list[float]) -> None:
        set_lr(self.optimizer, mults[0])

    def lrs(self) -> list[float]:
        return [current_lr(self.optimizer)]

    def step(self, step: int, samplers: list, watch: DivergenceWatch) -> torch.Tensor:
        """One optimizer step over this rank's share of the micro-batches; the mean loss over all of them
        (all ranks) as a 0-d tensor."""
        t, ctx, sampler = self.cfg.train, self.ctx, samplers[0]
        micros = ctx.local_micro_batches(t.grad_accum)
        total = torch.zeros((), device=ctx.device)
        for i, micro in enumerate(micros):
            x, y = sampler.batch(step * t.grad_accum + micro)  # the global micro-batch index: same data on any world
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            # gradients are reduced across ranks only on this rank's last micro-batch
            with self.wrapped.sync(last=i == len(micros) - 1), self.kernels():
                with self.amp():
                    loss = self.wrapped.module(x, targets=y)  # mean cross-entropy, fp32
                (loss / len(micros)).backward()  # DDP/FSDP then average over ranks: the mean over all micro-batches
            total += loss.detach()
        mean = ctx.all_mean(total / len(micros))
        watch.record(mean, _grad_norm(self.model, t.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean

    def evaluate(self, val_sets: list, wanted: list[bool]) -> list[float | None]:
        """val_loss: the (weighted) mean over the run's sources of their held-out losses."""
        if not wanted[0]:
            return [None]
        module = self.model if self.mode != "ddp" else self.wrapped.module.module
        with self.kernels():
            return [val_sets[0].evaluate(lambda batches: evaluate(module, batches, device=self.ctx.device,
                                                                  amp=self.amp(), ctx=self.ctx))]

    def keep(self, slots: list[int]) -> None:
        """Nothing to shrink: a single run ends when its trial does."""


class Fused:
    """K > 1 same-shape trials as one `FusedTransformer` under `FusedAdamW` (one process)."""

    fused, mode = True, "single"

    def __init__(self, model: FusedTransformer, optimizer: FusedAdamW, *, cfgs: list[RunConfig],
                 device: torch.device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.shared = cfgs[0].train  # the keys a group shares: batch, grad_accum, precision
        self.clips = [c.train.grad_clip if c.train.grad_clip is not None else math.inf for c in cfgs]
        self.peak_lrs = [c.train.lr for c in cfgs]
        self.mults = [1.0] * len(cfgs)
        self._clip_tensor = None  # the clips on the device, built once per group shape
        self._amp = Precision(self.shared.precision)

    def set_lr(self, mults: list[float]) -> None:
        self.mults = list(mults)

    def lrs(self) -> list[float]:
        return [lr * m for lr, m in zip(self.peak_lrs, self.mults)]

    def step(self, step: int, samplers: list, watch: DivergenceWatch) -> torch.Tensor:
        """One optimizer step of every trial still in the group; (K,) mean losses."""
        t, device, dtype = self.shared, self.device, self.model.emb_mult.dtype
        total = torch.zeros(len(samplers), device=device, dtype=torch.float64)
        for micro in range(t.grad_accum):
            # each trial's own batch: a pure function of its seed and the global micro-batch index
            pairs = [s.batch(step * t.grad_accum + micro) for s in samplers]
            x = torch.stack([p[0] for p in pairs]).to(device, non_blocking=True)  # (K, B, T)
            y = torch.stack([p[1] for p in pairs]).to(device, non_blocking=True)
            with self._amp.autocast(device):
                logits = self.model(x)  # (K, B, T, vocab)
            losses = per_trial_loss(logits, y)
            (losses.sum() / t.grad_accum).backward()  # the sum: each trial's weights get its own gradient
            total += losses.detach().double()
        if self._clip_tensor is None:
            self._clip_tensor = torch.tensor(self.clips, device=device, dtype=dtype)
        norms = self.optimizer.clip(self._clip_tensor)
        mean = total / t.grad_accum
        watch.record(mean, norms)
        self.optimizer.step(lr_mults=torch.tensor(self.mults, device=device, dtype=dtype))
        return mean

    @torch.no_grad()
    def evaluate(self, val_sets: list, wanted: list[bool]) -> list[float | None]:
        """val_loss of the wanted trials. A group shares its held-out batches (same data, batch and
        seq_len), so each batch runs once through all slots; each trial weights sources its own way."""
        self.model.eval()
        K, amp = len(val_sets), self._amp.autocast(self.device)
        per_source: dict[str, list[float]] = {}
        for name, batches in val_sets[0].batches.items():
            total = torch.zeros(K, dtype=torch.float64, device=self.device)
            for x, y in batches:
                x, y = x.to(self.device), y.to(self.device)
                with amp:
                    logits = self.model(x.expand(K, *x.shape))
                total += per_trial_loss(logits, y.expand(K, *y.shape)).double()
            per_source[name] = (total / len(batches)).tolist()  # one host read per source
        self.model.train()
        return [val_set.evaluate(lambda _batches, it=iter([per_source[n][slot] for n in val_set.batches]): next(it))
                if want else None for slot, (val_set, want) in enumerate(zip(val_sets, wanted))]

    def keep(self, slots: list[int]) -> None:
        """Shrink the weights, the optimizer state and the per-trial settings to `slots`."""
        self.model.keep(slots)
        self.optimizer.keep(slots)
        self.clips, self.peak_lrs, self.mults = ([v[s] for s in slots] for v in (self.clips, self.peak_lrs, self.mults))
        self._clip_tensor = None


def per_trial_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B, T, vocab), (K, B, T) -> (K,) mean cross-entropy per trial (in fp32, as the single model's).

    Example:
        >>> per_trial_loss(torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, 3, dtype=torch.long))  # ln 8 each
        tensor([2.0794, 2.0794])
    """
    K = logits.shape[0]
    ce = F.cross_entropy(logits.float().flatten(0, 2), y.flatten(), reduction="none")
    return ce.view(K, -1).mean(1)


@torch.no_grad()
def evaluate(model, batches, device, amp, ctx: DistContext | None = None) -> float:
    """Mean cross-entropy (nats/token) over fixed held-out batches, shared out among the ranks.

    Every rank runs the same number of forwards (an FSDP forward is a collective); a rank without
    a batch of its own repeats batch 0 and does not count it.

    Example:
        >>> evaluate(model, val_set.batches["data"], device, contextlib.nullcontext())   # doctest: +SKIP
        5.41
    """
    was_training = model.training
    model.eval()
    world, rank = (ctx.world, ctx.rank) if ctx is not None else (1, 0)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, batches)
    for first in range(0, len(batches), world):
        index = first + rank
        x, y = batches[index if index < len(batches) else 0]
        with amp:
            loss = model(x.to(device), targets=y.to(device))
        if index < len(batches):
            total[0] += loss.double()
            total[1] += 1
    model.train(was_training)
    total = ctx.all_sum(total) if ctx is not None else total
    return (total[0] / total[1]).item()


def _grad_norm(model: torch.nn.Module, clip: float | None) -> torch.Tensor:
    """The global gradient norm (clipped to `clip` when set), a tensor on the device: over DTensor
    gradients too, FSDP reducing it across shards."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
