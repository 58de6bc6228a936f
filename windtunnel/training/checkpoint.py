"""Where a run starts and how it saves: one interface over file and sharded checkpoints.

`Checkpointer.save` writes `step_N.pt` from rank 0 (`train.checkpoint_format: file`) or the sharded
`step_N/` folder from every rank (`sharded`, `windtunnel.training.checkpoint_sharded`); `load` reads either, so
a run can switch format, or number of processes, between sessions (a file checkpoint cannot be
loaded into an FSDP model: no rank holds the whole state). `start_state` decides fresh, resumed, or
a WSD decay branched off another run's checkpoint.

A resumed run honours this session's config: the checkpoint brings the weights, AdamW's moments and
the step, while each optimizer group's lr, weight decay, betas and eps are those built from the
config now (so `--set train.lr=...` or a changed schedule takes effect from the resumed step on).
Every setting that differs from the checkpoint's saved config is named in one line on stderr.

Example:
    >>> ckpt = Checkpointer(cfg, out=Path("runs/x"), ctx=ctx, mode="ddp")          # doctest: +SKIP
    >>> state = start_state(ckpt, model, optimizer, resume=True, decay_from=None)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, config_to_dict
from ..errors import WindtunnelError
from ..run_folder import CHECKPOINT_DIR
from .checkpoint_file import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore,
    save_checkpoint,
)
from .checkpoint_sharded import PendingSave, checkpoint_group, load_sharded, save_sharded
from .distributed import DistContext

__all__ = ["Checkpointer", "RunState", "start_state"]


@dataclass
class RunState:
    """What a checkpoint carries besides tensors: where the loop stands."""

    step: int = 0                      # optimizer steps done
    first_loss: float | None = None    # the divergence test's reference
    seconds: float = 0.0               # training time before this session
    decay_start: int | None = None     # set on a WSD decay branched off a stable checkpoint
    data_position: int | None = None   # sequential data: sequences of the stream consumed
    resumed_from: str | None = None
    decay_from: str | None = None

    def scalars(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "seconds": self.seconds, "decay_start": self.decay_start,
                "decay_from": self.decay_from, "data_position": self.data_position}


class Checkpointer:
    """Saves and loads a run's checkpoints in `train.checkpoint_format` (auto: sharded under FSDP)."""

    def __init__(self, cfg: RunConfig, *, out: Path, ctx: DistContext, mode: str):
        self.cfg, self.out, self.ctx, self.mode = cfg, out, ctx, mode
        fmt = cfg.train.checkpoint_format
        self.sharded = fmt == "sharded" or (fmt == "auto" and cfg.train.parallel == "fsdp")
        # background saves need a process group (their own): several processes only
        self.background = checkpoint_group() if self.sharded and cfg.train.async_checkpoint and ctx.world > 1 else None
        self.pending: PendingSave | None = None

    def save(self, model, optimizer, *, step: int, state: RunState) -> str:
        """Write step `step`'s checkpoint (all ranks call it); returns its path as text."""
        config_yaml = yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False)
        if not self.sharded:
            path = None
            if self.ctx.is_main:
                path = save_checkpoint(self.out, step=step, model=model, optimizer=optimizer,
                                       state=state.scalars(), config_yaml=config_yaml)
                prune_checkpoints(self.out, keep=self.cfg.train.keep_checkpoints)
            self.ctx.barrier()
            return str(path)
        self.finish()  # one save in flight at a time
        meta = {"format": "sharded", "state": state.scalars(), "config": config_yaml}
        self.pending = save_sharded(self.out, step=step, model=model, optimizer=optimizer, ctx=self.ctx,
                                    meta=meta, background=self.background)
        if self.background is None:
            self.finish()
        return str(self.pending.final if self.pending else self.out / CHECKPOINT_DIR / f"step_{step:08d}")

    def finish(self) -> None:
        """Publish a save still in flight (a no-op when none)."""
        if self.pending is not None:
            self.pending.finish()
            self.pending = None
            if self.ctx.is_main:
                prune_checkpoints(self.out, keep=self.cfg.train.keep_checkpoints)
            self.ctx.barrier()

    def close(self) -> None:
        """Publish a save in flight and release the background group (a run ends)."""
        self.finish()
        if self.background is not None:
            import torch.distributed as dist
            dist.destroy_process_group(self.background)
            self.background = None

    def load(self, path: Path, model, optimizer) -> tuple[int, dict, str]:
        """(step, scalars, saved config YAML) of checkpoint `path` (a file or a sharded folder), loaded
        into model/optimizer; the optimizer keeps this config's hyperparameters (lr, weight decay, ...)."""
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        if path.is_dir() or path.name.startswith(".step_"):
            meta = load_sharded(path, model=model, optimizer=optimizer)
            step, scalars, config = int(meta["step"]), meta["state"], meta.get("config", "")
        elif self.mode == "fsdp":
            raise WindtunnelError(f"{path}: a single-file checkpoint cannot be loaded into an FSDP model; "
                                  "resume it once with train.parallel=ddp, or save sharded checkpoints")
        else:
            ckpt = load_checkpoint(path, map_location=self.ctx.device)
            restore(ckpt, model=model, optimizer=optimizer, source=str(path))
            step, scalars, config = int(ckpt["step"]), ckpt["state"], ckpt.get("config", "")
        for group, built in zip(optimizer.param_groups, fresh):
            group.update(built)  # the checkpoint's param groups carry the old lr and peak_lr
        return step, scalars, config


def start_state(ckpt: Checkpointer, model, optimizer, *, resume, decay_from) -> RunState:
    """Fresh, resumed (the newest complete checkpoint of the run, or a given one) or branched off `decay_from`."""
    path = None
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(ckpt.out)
    if path is None and decay_from is not None:
        path = Path(decay_from)
    if path is None:
        if resume and os.environ.get("RANK", "0") == "0":
            print(f"windtunnel: no checkpoint in {ckpt.out}/checkpoints; starting from step 0", file=sys.stderr)
        return RunState()
    if not path.exists():
        raise WindtunnelError(f"{path}: no such checkpoint")
    step, s, saved_config = ckpt.load(path, model, optimizer)
    if resume and (changes := config_changes(saved_config, ckpt.cfg)) and ckpt.ctx.is_main:
        print(f"windtunnel: resuming {path} with changed settings, applied from step {step} on: "
              f"{'; '.join(changes)}", file=sys.stderr)
    state = RunState(step=step, first_loss=s.get("first_loss"), seconds=s.get("seconds", 0.0),
                     decay_start=s.get("decay_start"), data_position=s.get("data_position"),
                     decay_from=s.get("decay_from"))
    if resume:
        state.resumed_from = str(path)
    else:
        state.decay_start, state.decay_from = step, str(decay_from)
    return state


def config_changes(saved_yaml: str, cfg: RunConfig) -> list[str]:
    """`key: old -> new` for every setting of `cfg` that differs from a checkpoint's saved config.

    Example:
        >>> config_changes(saved, load_config("xs.yaml", overrides=["train.lr=0.002"]))   # doctest: +SKIP
        ['train.lr: 0.01 -> 0.002']
    """
    saved = yaml.safe_load(saved_yaml) if saved_yaml else None
    if not isinstance(saved, dict):
        return []
    old, new = _flatten(saved), _flatten(config_to_dict(cfg))
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(old.keys() | new.keys())
            if _comparable(old.get(k)) != _comparable(new.get(k))]


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value
