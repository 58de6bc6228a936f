"""Sharded checkpoints through torch.distributed.checkpoint (DCP): every rank writes its own shards.

A checkpoint is the folder `<run>/checkpoints/step_XXXXXXXX/`: DCP's files and `.metadata`, plus
`meta.pt` (step, the loop's scalars, rank 0's RNG states, the resolved config). All ranks write into
`.step_XXXXXXXX.partial/`; once every rank is done, rank 0 adds `meta.pt` and renames the folder,
so a crash during the save leaves a `.partial` folder that is never taken for a checkpoint.

States go through `get_state_dict` / `set_state_dict`, which name every tensor by its module path
whatever wraps the model (DDP, FSDP2, compile), and DCP reshards on load: a checkpoint written by
8 FSDP ranks resumes on 4, or on one process.
With several processes (`train.async_checkpoint`), `dcp.async_save` copies the state to CPU memory and
writes it in the background while training continues, its collectives on a gloo group of their own
(sharing the training's group from a thread aborts the process); the rename happens when the next
checkpoint starts or the run ends.

Example:
    >>> pending = save_sharded("runs/x", step=100, model=model, optimizer=opt, ctx=ctx, meta={...})
    >>> pending.finish()                       # wait, then publish step_00000100/
    >>> meta = load_sharded(latest_checkpoint("runs/x"), model=model, optimizer=opt)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WindtunnelError
from ..run_folder import publish_folder
from .checkpoint_file import (
    CHECKPOINT_DIR,
    SHARDED_MARKER,
    is_complete_folder,
    rng_state,
    set_rng_state,
)
from .distributed import DistContext

__all__ = ["PendingSave", "checkpoint_group", "load_sharded", "save_sharded"]


@dataclass
class PendingSave:
    """A sharded save in progress; `finish()` waits for it and publishes the folder (all ranks call it)."""

    partial: Path
    final: Path
    meta: dict[str, Any]
    ctx: DistContext
    future: Any = None

    def finish(self) -> Path:
        if self.future is not None:
            self.future.result()
            self.future = None
        self.ctx.barrier()  # every rank's shards are on disk
        if self.ctx.is_main:
            torch.save(self.meta, self.partial / SHARDED_MARKER)
            # replace=True: a same-step checkpoint of an earlier attempt is replaced, never lost first
            publish_folder(self.partial, self.final, replace=True)
        self.ctx.barrier()
        return self.final


def save_sharded(run_dir: str | os.PathLike, *, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 ctx: DistContext, meta: dict[str, Any], background: Any = None) -> PendingSave:
    """Start writing `step_XXXXXXXX/` (every rank calls it). `background`: a process group of its own
    (`checkpoint_group()`) for `dcp.async_save`, whose collectives run in a thread and must not share
    the training's group; None saves now."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    folder = Path(run_dir) / CHECKPOINT_DIR
    partial, final = folder / f".step_{step:08d}.partial", folder / f"step_{step:08d}"
    if ctx.is_main:
        if partial.exists():  # left by a crash: start clean so no stale shard is mixed in
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    payload = {**meta, "step": int(step), "rng": rng_state()}
    pending = PendingSave(partial=partial, final=final, meta=payload, ctx=ctx)
    with _single_process_quiet():
        if background is not None:
            pending.future = dcp.async_save(state, checkpoint_id=str(partial), process_group=background)
        else:
            dcp.save(state, checkpoint_id=str(partial))
    return pending


def checkpoint_group():
    """A gloo process group for background saves (all ranks call it once, together)."""
    import torch.distributed as dist
    return dist.new_group(backend="gloo")


def load_sharded(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load a sharded checkpoint into `model` (and `optimizer`), resharding to this run's processes;
    returns its `meta.pt` (step, state, config). A partial folder or a shape mismatch is a WindtunnelError."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    path = Path(path)
    if not is_complete_folder(path):
        raise WindtunnelError(f"{path}: not a complete sharded checkpoint (no .metadata or {SHARDED_MARKER}: "
                              "a save that crashed midway?); resume from an earlier step_XXXXXXXX folder")
    meta = torch.load(path / SHARDED_MARKER, weights_only=True)
    model_sd, optim_sd = get_state_dict(model, optimizer) if optimizer is not None else (
        get_state_dict(model, [])[0], None)
    state = {"model": model_sd} if optim_sd is None else {"model": model_sd, "optim": optim_sd}
    from torch.distributed.checkpoint.api import CheckpointException
    try:
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=str(path))
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP's exception is a BaseException
        raise WindtunnelError(f"{path}: does not fit this model ({_first_failure(e)}); was it "
                              "written with a different model shape?") from None
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        set_state_dict(model, [], model_state_dict=state["model"], optim_state_dict={})
    set_rng_state(meta["rng"])
    return meta


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns on every call without a process group; one process is a supported case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _first_failure(error: BaseException) -> str:
    """The underlying reason of a DCP failure (it wraps each rank's exception with its traceback)."""
    failures = getattr(error, "failures", None)
    if failures:
        error = getattr(next(iter(failures.values())), "exc", error)
    return " ".join(str(error).split())[:300]
