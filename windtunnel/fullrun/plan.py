"""The plan of a full run, as data: the target's resolved config, its batch, and the rows and warnings
the transfer table shows. `windtunnel.fullrun.transfer.transfer` builds one; `table.format_plan` prints it;
`write_plan` writes its config.

Example:
    >>> plan = transfer(target="1.2b", source="runs/lr-grid", tokens=1.5e12)
    >>> write_plan(plan, "runs/1.2b.yaml")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, config_to_dict
from ..fileio import write_text
from ..model.accounting import MemoryEstimate
from .horizon import HorizonCorrection
from .presets import Target
from .proxy import Proxy

__all__ = ["Row", "BatchPlan", "TransferPlan", "write_plan"]


@dataclass(frozen=True)
class Row:
    """One line of the transfer table: a quantity at the proxy and at the target."""

    section: str
    label: str
    proxy: Any
    target: Any
    note: str = ""


@dataclass(frozen=True)
class BatchPlan:
    """How the target's batch was chosen and how it splits into micro-batches."""

    requested: float      # tokens per step asked for
    source: str           # where that number came from
    micro_batch: int      # sequences per micro-batch per GPU
    seq_len: int
    grad_accum: int       # micro-batches per step, across all GPUs
    nproc: int

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len * self.grad_accum


@dataclass
class TransferPlan:
    """The full run's resolved config, and everything the transfer table shows."""

    target: Target
    proxy: Proxy | None
    config: RunConfig
    batch: BatchPlan
    tokens: float
    memory: MemoryEstimate
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    set_keys: tuple[str, ...] = ()
    horizon: HorizonCorrection | None = None
    """The horizon correction of the carried lr (`--horizon RUN`), else None."""


def write_plan(plan: TransferPlan, path: str | os.PathLike) -> Path:
    """Write the full run's config (YAML, every value resolved) with a provenance header, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [f"# written by `windtunnel transfer` for target {plan.target.name} ({plan.target.path})",
            f"# HPs from: {plan.proxy.source if plan.proxy else 'the preset (no proxy)'}",
            f"# {plan.tokens:.4g} tokens = {plan.config.train.steps} steps x {plan.batch.tokens:,} tokens; "
            f"grad_accum counts micro-batches across all {plan.batch.nproc} GPU(s)"]
    text = "\n".join(head) + "\n" + yaml.safe_dump(config_to_dict(plan.config), sort_keys=False)
    return write_text(path, text, mode=0o644)
