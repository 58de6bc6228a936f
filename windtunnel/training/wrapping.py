"""How the model meets several processes: DDP replicas or FSDP2 shards, each block compiled first.

`wrap_model` is the one place that decides. Order matters and follows torchtitan:
1. compile each block's forward (`fullgraph=True`: RoPE is real-valued and SDPA is one op, so a
   block is one graph; the flash-attn package >= 2.7 registers a custom op, so it does not break it),
   and the head (final norm + chunked cross-entropy, `Transformer.head_loss`) right after the last
   block, so the logits exist one chunk at a time inside one graph. Two graph kinds in all (block,
   head), each compiled once for training and once for evaluation: the blocks share one compiled
   graph (same code, parameters passed as inputs), far under dynamo's recompile limit (8);
2. FSDP2: `fully_shard` each block, then the root (embedding, final norm, the tied readout), with the
   gathers of `training.precision` (bf16 blocks, fp32 root, fp32 gradient reduction under bf16);
   or DDP around the whole.

Accumulation never re-gathers: with several micro-batches per rank, FSDP keeps the parameters
gathered from the first micro-batch's forward to the last one's backward
(`set_reshard_after_forward(False)`, `set_reshard_after_backward` on the last only) and reduces
gradients once, on the last (`set_requires_gradient_sync`); the unsharded fp32 gradients accumulate
in between (`model.accounting` counts both). DDP skips its all-reduce with `no_sync`.

μP survives sharding because nothing μP needs is read from the parameters afterwards: the roles (and
so each group's lr and weight decay) are computed by module type before wrapping
(`parametrization.param_roles`), and the readout's width multiplier is cached as a float
(`TiedReadout`), where mup would read `weight.infshape`, which FSDP's DTensors do not carry.

Example:
    >>> wrapped = wrap_model(model, cfg, ctx)                 # doctest: +SKIP
    >>> with wrapped.sync(last=False):                        # no gradient all-reduce yet
    ...     wrapped.module(x, targets=y).backward()
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..errors import ConfigError
from ..model.transformer import flash_attn_compiles
from .distributed import DistContext
from .precision import Precision

__all__ = ["Wrapped", "check_parallel", "parallel_mode", "wrap_model"]


@dataclass
class Wrapped:
    """The module the step calls, and how gradient synchronisation is skipped between micro-batches."""

    module: nn.Module
    mode: str                      # "single", "ddp" or "fsdp"
    ddp: Any = None

    def sync(self, *, last: bool):
        """Context for one micro-batch's forward and backward: gradients are reduced only on the last
        one; under FSDP the gathered parameters are freed only after the last one's backward."""
        if self.mode == "ddp" and not last:
            return self.ddp.no_sync()
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(last)
            self.module.set_reshard_after_backward(last)
        return contextlib.nullcontext()


def parallel_mode(cfg: RunConfig, ctx: DistContext) -> str:
    """`single` for one process (FSDP has nothing to shard on one GPU and runs unsharded), else
    `train.parallel`."""
    return "single" if ctx.world == 1 else cfg.train.parallel


def check_parallel(cfg: RunConfig, ctx: DistContext) -> None:
    """Refuse `parallel: fsdp` on a single CPU process: there is nothing to shard, and CPU FSDP runs
    only under torchrun with gloo (on one GPU, FSDP runs unsharded, so the 1.2b preset still works)."""
    if cfg.train.parallel == "fsdp" and ctx.world == 1 and ctx.device.type == "cpu":
        raise ConfigError(cfg.source, "train.parallel", "fsdp shards the model over several processes, and "
                          "this is one process on CPU; use parallel: ddp, or start it with "
                          "`torchrun --nproc-per-node=N`")


def wrap_model(model: nn.Module, cfg: RunConfig, ctx: DistContext) -> Wrapped:
    """Compile each block (train.compile), then wrap for DDP or FSDP2 (train.parallel) when world > 1."""
    if cfg.train.compile:
        fullgraph = cfg.model.attention not in ("auto", "flash_attn") or flash_attn_compiles()
        for block in model.blocks:
            # compile the forward, not the module: hooks (FSDP's gathers, checkpointing) stay outside
            # the graph and parameter names keep no `_orig_mod.` prefix
            block.forward = torch.compile(block.forward, fullgraph=fullgraph)
        model.head_loss = torch.compile(model.head_loss, fullgraph=True)
    mode = parallel_mode(cfg, ctx)
    if mode == "fsdp":
        _shard(model, cfg, ctx)
        return Wrapped(module=model, mode="fsdp")
    if mode == "ddp":
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        return Wrapped(module=ddp, mode="ddp", ddp=ddp)
    return Wrapped(module=model, mode="single")


def _shard(model: nn.Module, cfg: RunConfig, ctx: DistContext) -> None:
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
    recipe = Precision.of(cfg)
    offload = {"offload_policy": CPUOffloadPolicy()} if cfg.train.cpu_offload else {}
    for i, block in enumerate(model.blocks):
        # the last block's parameters are needed again at once by the backward: keep them gathered
        fully_shard(block, reshard_after_forward=i < len(model.blocks) - 1, **recipe.fsdp_policy(), **offload)
    # the root: embedding (tied to the readout) and the final norm, gathered in fp32
    fully_shard(model, **recipe.fsdp_policy(root=True), **offload)
    if len(ctx.local_micro_batches(cfg.train.grad_accum)) > 1:
        model.set_reshard_after_forward(False)  # accumulation: gather once per step, not per micro-batch
