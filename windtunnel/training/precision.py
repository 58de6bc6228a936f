"""The one precision recipe of every run (proxy, one GPU, DDP, FSDP), switched by `train.precision`.

`fp32`: every tensor in fp32 (the CPU proxies: bf16 matmuls are no faster there).

`bf16`, the same in every mode:
* matmuls (attention projections, SwiGLU, the readout) compute in bf16 under autocast;
* master weights, gradients as reduced across ranks, and AdamW's moments stay fp32;
* the residual stream, RMSNorm (`model.transformer.RMSNorm` computes in fp32), RoPE (fp32 tables,
  rotation in fp32) and the loss (log-softmax of fp32 logits) stay fp32.

FSDP2 gathers each block's parameters in bf16 (`MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32, cast_forward_inputs=False)`): the rounding autocast would apply to each matmul
weight, done once per gather at half the traffic. `cast_forward_inputs=False` (as torchtitan) leaves
a block's inputs alone: the fp32 residual stream and the fp32 RoPE table are not cast to bf16. The
root (embedding, tied readout, final norm) is gathered in fp32, so the embedding lookup reads the
same fp32 weights as on one GPU. The one difference left between modes: under FSDP a block's
RMSNorm gains are read at bf16 rounding (the norm itself still computes in fp32).

Example:
    >>> recipe = Precision.of(cfg)                        # doctest: +SKIP
    >>> with recipe.autocast(device):                     # every mode, one path
    ...     loss = model(x, targets=y)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Precision"]


@dataclass(frozen=True)
class Precision:
    """`train.precision` turned into the contexts and policies the run needs."""

    name: str  # "fp32" or "bf16"

    @classmethod
    def of(cls, cfg) -> Precision:
        return cls(cfg.train.precision)

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def autocast(self, device: torch.device):
        """bf16 autocast for matmuls (bf16), nothing (fp32); entered around every forward."""
        if self.name != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def fsdp_policy(self, *, root: bool = False) -> dict[str, Any]:
        """`fully_shard` keyword arguments: bf16 gathers for a block, fp32 for the root; fp32 reduction."""
        if self.name != "bf16":
            return {}
        from torch.distributed.fsdp import MixedPrecisionPolicy
        return {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.float32 if root else torch.bfloat16,
                                                  reduce_dtype=torch.float32, cast_forward_inputs=False)}
