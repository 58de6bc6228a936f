"""One trial of a training group, alone (K = 1) or fused with others: its record, files and summary.

A group's trials share the loop and the computation (`training.compute`) but nothing a separate run
would own: each has its own config, run folder (`config.yaml`, `metrics.csv`, `summary.json`,
provenance), schedule, data stream, held-out set, trackers, status and losses. The summary is built
here, once, for both kinds, so a fused trial reports every key a single run does (plus `fused` and
`message`). `seconds` of a trial is its share of the group's wall time: each interval is split over
the trials still training in it (all of it, for a single run).

Example:
    >>> trial = open_trial(cfg, Path("runs/xs"), state=RunState(), model=model, tracking=Tracking())
    >>> trial.status, trial.steps
    ('running', 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, save_config
from ..data.mixture import ValSet, build_samplers
from ..data.sampling import StreamSampler
from ..fileio import write_json
from ..model.accounting import flops_per_token, peak_flops
from ..model.parametrization import weight_decay_warning
from ..model.transformer import flash_attn_available
from ..provenance import write_provenance
from ..run_folder import config_path, summary_path
from .checkpoint import RunState
from .distributed import DistContext
from .metrics import MetricsLog
from .schedule import Schedule, make_schedule
from .trackers import Trackers, Tracking, open_trackers

__all__ = ["Trial", "attention_backend", "open_outputs", "open_trial", "summarize", "write_run_files"]


@dataclass
class Trial:
    """One trial's pieces and where it stands; `steps` and `seconds` count from the run's start."""

    cfg: RunConfig
    out: Path
    schedule: Schedule
    sampler: Any                    # BatchSampler, StreamSampler or MixtureSampler
    val_set: ValSet
    state: RunState                 # where this session started (a resumed or branched run: not 0)
    tracking: Tracking
    params: int
    non_embedding_params: int
    log: MetricsLog | None = None
    trackers: Trackers | None = None
    status: str = "running"         # then ok, diverged, pruned or stopped
    message: str = ""
    loss: float = math.nan          # the last training loss read from the device
    val_loss: float = math.nan
    steps: int = 0
    seconds: float = 0.0
    summary: dict[str, Any] | None = None  # once finished

    def __post_init__(self):
        self.steps, self.seconds = self.state.step, self.state.seconds


def open_trial(cfg: RunConfig, out: Path, *, state: RunState, model: torch.nn.Module, tracking: Tracking) -> Trial:
    """A trial's schedule and data (its stream continued at `state`); no file is written yet."""
    schedule = make_schedule(cfg, decay_start=state.decay_start)
    sampler, val_set = build_samplers(cfg, decay_start=schedule.decay_start)  # one source, or a weighted mixture
    if isinstance(sampler, StreamSampler) and state.data_position is not None:
        sampler.resume(micro=state.step * cfg.train.grad_accum, sequence=state.data_position)
    return Trial(cfg=cfg, out=out, schedule=schedule, sampler=sampler, val_set=val_set, state=state, tracking=tracking,
                 params=model.num_params(), non_embedding_params=model.num_params(non_embedding=True))


def write_run_files(trial: Trial, *, continued: bool) -> None:
    """The run folder with its config and provenance (rank 0 only: the caller decides)."""
    trial.out.mkdir(parents=True, exist_ok=True)
    save_config(trial.cfg, config_path(trial.out))
    write_provenance(trial.out, kind="run", data=trial.cfg.data, continued=continued)


def open_outputs(trial: Trial, ctx: DistContext, *, console: str, banner: str) -> None:
    """Open the trial's trackers and metrics log (rank 0; the others get ones that do nothing) and greet.

    Example:
        >>> open_outputs(trial, ctx, console="lines", banner="windtunnel: cpu x1 ...")   # doctest: +SKIP
    """
    state, cfg = trial.state, trial.cfg
    trial.trackers = open_trackers(cfg, out_dir=trial.out, tracking=trial.tracking, enabled=ctx.is_main,
                                   resume=state.resumed_from is not None)
    trial.log = MetricsLog(trial.out, total_steps=trial.schedule.total_steps, start_step=state.step,
                           start_seconds=state.seconds, tokens_per_step=cfg.tokens_per_step,
                           flops_per_token=flops_per_token(cfg.model, cfg.train.seq_len),
                           peak_flops=peak_flops(ctx.device), n_devices=ctx.world,
                           resume_step=state.step if state.resumed_from else None, console=console,
                           trackers=trial.trackers, enabled=ctx.is_main, extra_fields=trial.val_set.columns)
    trial.log.message(banner)
    if (wd_warning := weight_decay_warning(cfg)) is not None:
        trial.log.message(f"windtunnel: warning: {wd_warning}")


def summarize(trial: Trial, *, ctx: DistContext, parallel: str, fused: bool, log: MetricsLog) -> dict[str, Any]:
    """The trial's summary (rank 0 writes it to summary.json): the same keys for a single and a fused trial.

    Example:
        >>> summarize(trial, ctx=ctx, parallel="single", fused=False, log=trial.log)["status"]   # doctest: +SKIP
        'ok'
    """
    cfg, state = trial.cfg, trial.state
    t, steps = cfg.train, trial.steps
    session = trial.seconds - state.seconds
    rate = (steps - state.step) * cfg.tokens_per_step / max(session, 1e-9)
    summary = {
        "status": trial.status,
        "val_loss": trial.val_loss,
        "train_loss": trial.loss if math.isfinite(trial.loss) else math.inf,
        "steps": steps,
        "tokens": steps * cfg.tokens_per_step,
        "seconds": round(trial.seconds, 3),
        "tokens_per_s": round(rate, 1),
        "mfu": round(sum(log.mfu_values) / len(log.mfu_values), 4) if log.mfu_values else None,
        "mfu_counts_causal_attention": True,
        "params": trial.params,
        "non_embedding_params": trial.non_embedding_params,
        "flops_per_token": flops_per_token(cfg.model, t.seq_len),
        "width_mult": cfg.model.width_mult,
        "device": str(ctx.device),
        "world_size": ctx.world,
        "parallel": parallel,
        "attention": "sdpa" if fused else attention_backend(cfg, ctx.device),  # the fused model calls SDPA
        "resumed_from": state.resumed_from,
        "decay_from": state.decay_from,
        **({"data_epochs": round(trial.sampler.epochs(steps * t.grad_accum), 6)}
           if isinstance(trial.sampler, StreamSampler) else {}),
        **trial.val_set.summary(),
    }
    if fused:
        summary["fused"] = True
    if fused or trial.message:
        summary["message"] = trial.message
    if ctx.is_main:
        write_json(summary_path(trial.out), summary)
    return summary


def attention_backend(cfg: RunConfig, device: torch.device) -> str:
    """The attention kernel a single model runs: flash-attn when chosen or (auto) usable, else SDPA."""
    choice = cfg.model.attention
    if choice == "flash_attn" or (choice == "auto" and device.type == "cuda" and cfg.train.precision == "bf16"
                                  and flash_attn_available()):
        return "flash-attn"
    return "sdpa" if choice in ("auto", "sdpa") else f"sdpa ({choice})"
