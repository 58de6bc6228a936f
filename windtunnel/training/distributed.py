"""Devices and data parallelism: one process per GPU under `torchrun`, or a single plain process.

`train.grad_accum` counts micro-batches per optimizer step across *all* processes, and rank r runs
micro-batches r, r + world, r + 2 world, ... of each step. So a config means the same global batch
and the same data on one GPU or eight, and a run can resume on a different number of GPUs.

Example:
    >>> ctx = init_distributed("auto")      # world 1 unless started by torchrun
    >>> ctx.world, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError, WindtunnelError

__all__ = ["DistContext", "init_distributed", "resolve_device", "torchrun_command", "under_torchrun"]


@dataclass
class DistContext:
    """Where this process sits: its rank among `world` processes and its device."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we started the process group (it ends when the process exits)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints; the others only compute."""
        return self.rank == 0

    def local_micro_batches(self, grad_accum: int) -> range:
        """This rank's micro-batch indices within a step (of `grad_accum` in all)."""
        return range(self.rank, grad_accum, self.world)

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over the processes (identity for one)."""
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """End of a run. After a clean run the group is kept for the next run of this process and ended
        at exit (`init_distributed`); while an exception is on its way out it is ended now, as the peers
        may be anywhere (torchrun then stops them)."""
        if self.owns_group and sys.exc_info()[0] is not None and dist.is_initialized():
            dist.destroy_process_group()


def _destroy_group() -> None:
    if dist.is_initialized():  # still up: every run ended cleanly, so every rank comes here
        dist.barrier()  # all ranks at exit first: gloo aborts a rank whose peer has already torn down
        dist.destroy_process_group()


def under_torchrun() -> bool:
    """True in a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str, source: str | None = None, *, timeout_s: float = 1800) -> DistContext:
    """Resolve the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU).

    Each rank takes GPU `LOCAL_RANK`. The process group, once started, serves every later run of the
    process (a script may call `train` twice) and ends at exit. A collective that waits longer than `timeout_s`
    (`train.dist_timeout_s`) fails the run rather than hanging it.
    """
    if not under_torchrun():
        return DistContext(device=resolve_device(device, source))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    resolved = resolve_device(device, source)
    if resolved.type == "cuda":
        if local >= torch.cuda.device_count():
            raise WindtunnelError(f"torchrun started {world} processes per node but only "
                                  f"{torch.cuda.device_count()} CUDA devices are visible")
        resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        # Kept for the life of the process and destroyed at exit, never between two runs: a re-created
        # default group reuses the first one's keys in torchrun's store, so a rank could read a peer's
        # stale address and be refused (gloo's connectFullMesh), depending on timing.
        atexit.register(_destroy_group)
    return DistContext(device=resolved, rank=rank, world=world, local_rank=local, owns_group=owns)


def resolve_device(name: str, source: str | None = None) -> torch.device:
    """`auto` -> CUDA when available, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(source, "train.device", "cuda was asked for but no CUDA device is available")
    return torch.device(name)


def torchrun_command(config: str | os.PathLike, *, out: str | os.PathLike, nproc: int, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, max_restarts: int = 0,
                     train_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The torchrun command that runs `windtunnel train` on `nproc` processes per node.

    One node: `--standalone`. Several (`nnodes` > 1): the same command on every node, meeting at
    `rdzv_endpoint` (host:port of one of them, c10d rendezvous). With `max_restarts` > 0 torchrun
    restarts all processes after a failure, and they continue from the newest complete checkpoint
    (`--resume` is always passed then; it starts at step 0 when there is none).

    Example:
        >>> torchrun_command("runs/1.2b.yaml", out="runs/1.2b", nproc=8)[3:5]
        ['--standalone', '--nproc-per-node=8']
    """
    if nproc < 1 or nnodes < 1 or max_restarts < 0:
        raise WindtunnelError(f"--nproc and --nnodes must be >= 1 and --max-restarts >= 0, got "
                              f"{nproc}, {nnodes}, {max_restarts}")
    if nnodes > 1 and not rdzv_endpoint:
        raise WindtunnelError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (one node's address, the "
                              "same on every node)")
    if nnodes == 1 and not rdzv_endpoint:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                 f"--rdzv-id={Path(out).name}"]
    args = list(train_args)
    if max_restarts and "--resume" not in args:
        args.append("--resume")
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "windtunnel", "train", str(Path(config)),
            "--out", str(Path(out)), *args]
