"""The one training loop: proxies in a sweep and the full run call the same `train`.

It writes, under the run folder: `config.yaml` (the resolved config), `metrics.csv` (step, tokens,
lr, loss, val_loss, seconds, tokens_per_s, mfu; see `windtunnel.training.metrics`), `summary.json`
(val_loss, tokens, seconds, status) and resumable checkpoints under `checkpoints/` after the last step
(`train.final_checkpoint`) and every `train.checkpoint_every` steps (`windtunnel.training.checkpoint`: one
file, or sharded through DCP).
A NaN/inf or exploding loss (or a non-finite gradient) ends the run as `status: diverged` with
val_loss = inf, never a traceback; it is found on the device every step (`training.watch`), and a
diverged state is never checkpointed. The host reads the loss only when it writes a row (every
`train.log_every` steps, at evaluations and at the end), and Python's garbage collector runs every
`GC_EVERY` steps instead of whenever allocations trigger it: both would stall the GPU at 1.2B.
Precision follows one recipe in every mode (`training.precision`).
Started by torchrun, the same loop runs data-parallel (DDP) or sharded (FSDP2;
`windtunnel.training.wrapping`), rank 0 writing.

Read top to bottom: `train` opens the process group; `setup` builds a `Run` (model, wrapping,
optimizer, start state, schedule, data, log); `run_steps` loops over `train_step`, `validate` and
`save`; `summarize` writes the summary.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, save_config
from ..data.mixture import ValSet, build_samplers
from ..data.sampling import StreamSampler
from ..errors import ConfigError, WindtunnelError
from ..fileio import write_json
from ..model.accounting import flops_per_token, peak_flops
from ..model.parametrization import build_model, param_roles, weight_decay_warning
from ..model.transformer import attention_context, flash_attn_available
from ..provenance import write_provenance
from .checkpoint import Checkpointer, RunState, start_state
from .distributed import DistContext, init_distributed
from .metrics import METRIC_FIELDS, MetricsLog
from .optim import build_optimizer, current_lr, set_lr
from .precision import Precision
from .schedule import Schedule, make_schedule
from .trackers import Tracking, check_trackers, open_trackers, resolve_track
from .watch import DivergenceWatch
from .wrapping import Wrapped, check_parallel, wrap_model

GC_EVERY = 50
"""Steps between collections of Python's young generations (torchtitan's default cadence): the
automatic collector would otherwise pause a step at random, on one rank, and stall the others."""

__all__ = ["GC_EVERY", "METRIC_FIELDS", "Run", "evaluate", "run_steps", "setup", "train", "train_step", "validate"]


@dataclass
class Run:
    """Everything one training session works with, built once by `setup`."""

    cfg: RunConfig
    out: Path
    ctx: DistContext
    model: torch.nn.Module          # the bare model (FSDP shards it in place)
    wrapped: Wrapped                # what the step calls (DDP / FSDP / the model)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    sampler: Any                    # BatchSampler, StreamSampler or MixtureSampler
    val_set: ValSet
    state: RunState
    checkpointer: Checkpointer
    watch: DivergenceWatch
    log: MetricsLog | None = None

    def amp(self):
        """The precision recipe's autocast: bf16 matmuls under `bf16` in every mode, none under fp32."""
        return Precision.of(self.cfg).autocast(self.ctx.device)

    def kernels(self):
        """The SDPA kernel choice of model.attention, held for a forward and its backward."""
        return attention_context(self.cfg.model.attention)


def train(cfg: RunConfig, *, out_dir: str | os.PathLike, progress: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None, resume: bool | str | os.PathLike = False,
          decay_from: str | os.PathLike | None = None, stop_after: int | None = None,
          tracking: Tracking | None = None) -> dict[str, Any]:
    """Train `cfg` and return its summary (also written to `out_dir/summary.json`).

    `on_eval` is called after every held-out evaluation with {step, tokens, val_loss, train_loss,
    seconds}; a sweep uses it to report to Ray Tune, which may stop the trial there.
    `resume`: True continues from the newest complete checkpoint in `out_dir` (from step 0 when there
    is none), a path from that checkpoint. `decay_from`: a stable-phase WSD checkpoint (of any run) to
    branch the decay from, MiniCPM-style; the branch runs `decay_steps` steps into `out_dir`.
    `stop_after`: stop (with a checkpoint, status "stopped") once this many steps are done, e.g. to
    fit a time-limited job. The run also logs to the trackers of `cfg.train.track` (TensorBoard by
    default, when installed; see `windtunnel.training.trackers`); a sweep passes `tracking` to name
    the trial and its sweep there. A tracker that is not installed, or an MLflow server that does
    not answer, stops the run before anything is written.

    Example:
        >>> summary = train(load_config("proxies/xs.yaml"), out_dir="runs/xs")
        >>> summary["status"], round(summary["val_loss"], 2)
        ('ok', 2.31)
        >>> train(cfg, out_dir="runs/xs", resume=True)    # continue from runs/xs/checkpoints
    """
    if stop_after is not None and stop_after < 1:
        raise WindtunnelError(f"stop_after must be >= 1, got {stop_after}")
    tracking = tracking or Tracking(names=resolve_track(cfg.train.track))
    check_trackers(tracking.names, source=cfg.source, out_dir=out_dir)
    ctx = init_distributed(cfg.train.device, cfg.source, timeout_s=cfg.train.dist_timeout_s)
    try:
        run = setup(cfg, Path(out_dir), ctx, resume=resume, decay_from=decay_from)
        with open_trackers(cfg, out_dir=run.out, tracking=tracking, enabled=ctx.is_main,
                           resume=run.state.resumed_from is not None) as trackers:
            run.log = _open_log(run, progress=progress, trackers=trackers)
            try:
                result = run_steps(run, on_eval=on_eval, stop_after=stop_after)
                run.checkpointer.close()
            finally:
                run.log.close()
            summary = summarize(run, result)
            trackers.finish(summary)
        ctx.barrier()  # no rank tears the group down while another still has a collective in flight (gloo aborts)
        return summary
    finally:
        ctx.close()


def setup(cfg: RunConfig, out: Path, ctx: DistContext, *, resume=False, decay_from=None) -> Run:
    """Build a run: model, wrapping, optimizer, start state, schedule, data. Every input is checked
    before the run folder is touched, so a bad input leaves no files behind."""
    t = cfg.train
    _check_world(cfg, ctx)
    check_parallel(cfg, ctx)
    _check_attention(cfg, ctx)
    if t.threads:
        torch.set_num_threads(t.threads)
    model = build_model(cfg.model, seed=t.seed, device=ctx.device, source=cfg.source)
    roles = param_roles(model)  # by module type, before any wrapper renames or shards a parameter
    wrapped = wrap_model(model, cfg, ctx)
    optimizer = build_optimizer(model, cfg, roles=roles)
    checkpointer = Checkpointer(cfg, out=out, ctx=ctx, mode=wrapped.mode)
    state = start_state(checkpointer, model, optimizer, resume=resume, decay_from=decay_from)
    schedule = make_schedule(cfg, decay_start=state.decay_start)
    sampler, val_set = build_samplers(cfg, decay_start=schedule.decay_start)  # one source, or a weighted mixture
    if isinstance(sampler, StreamSampler) and state.data_position is not None:
        sampler.resume(micro=state.step * t.grad_accum, sequence=state.data_position)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        write_provenance(out, kind="run", data=cfg.data, continued=bool(resume))
    watch = DivergenceWatch(device=ctx.device, vocab_size=cfg.model.vocab_size, factor=t.diverge_factor,
                            first_loss=state.first_loss)
    return Run(cfg=cfg, out=out, ctx=ctx, model=model, wrapped=wrapped, optimizer=optimizer, schedule=schedule,
               sampler=sampler, val_set=val_set, state=state, checkpointer=checkpointer, watch=watch)


def run_steps(run: Run, *, on_eval=None, stop_after: int | None = None) -> dict[str, Any]:
    """Run the steps from `run.state.step`; returns status, losses, and this session's steps and seconds."""
    cfg, state, log = run.cfg, run.state, run.log
    t, end = cfg.train, run.schedule.total_steps
    status, loss, val_loss, done = "ok", math.nan, math.nan, state.step
    started = time.perf_counter()
    collecting = gc.isenabled()
    gc.disable()  # collected every GC_EVERY steps below, at the same step on every rank
    try:
        for step in range(state.step, end):
            set_lr(run.optimizer, run.schedule.multiplier(step))
            step_loss = train_step(run, step)  # on the device; read below only when a row is written
            state.first_loss = run.watch.first_loss
            done = step + 1
            seconds = state.seconds + time.perf_counter() - started
            val = None
            if run.watch.diverged():
                status = "diverged"
            elif done % t.eval_every == 0 or done == end:
                val = validate(run)
                status = "ok" if math.isfinite(val) else "diverged"
            if status == "diverged" or val is not None or done % t.log_every == 0 or done == end:
                loss = step_loss.item()
                log.row(step=done, lr=current_lr(run.optimizer), loss=loss, seconds=seconds, val_loss=val,
                        extra=run.val_set.row() if val is not None else None)
            if status == "diverged":
                val_loss = math.inf
                break
            val_loss = val if val is not None else val_loss
            log.progress(step=done, loss=loss, lr=current_lr(run.optimizer), val_loss=val_loss)
            if val is not None and on_eval is not None:
                on_eval({"step": done, "tokens": done * cfg.tokens_per_step, "val_loss": val_loss,
                         "train_loss": loss, "seconds": seconds, **run.val_set.row()})
            stopping = stop_after is not None and done >= stop_after and done < end
            last = done == end and bool(t.checkpoint_every or t.final_checkpoint)
            if stopping or last or (t.checkpoint_every and done % t.checkpoint_every == 0):
                if run.watch.now():  # diverged since the last read: never checkpoint that state
                    status, val_loss, loss = "diverged", math.inf, step_loss.item()
                    log.row(step=done, lr=current_lr(run.optimizer), loss=loss, seconds=seconds)
                    break
                loss = step_loss.item()  # the host waits for the save anyway: the summary gets this step's loss
                save(run, done, seconds)
            if stopping:
                status = "stopped"
                break
            if done % GC_EVERY == 0:
                gc.collect(1)
    finally:
        if collecting:
            gc.enable()
    if done == state.step:  # nothing left to train (resumed at the end): still report a val loss
        val_loss = validate(run)
    return {"status": status, "loss": loss, "val_loss": val_loss, "steps": done,
            "session_steps": done - state.step, "session_seconds": time.perf_counter() - started}


def train_step(run: Run, step: int) -> torch.Tensor:
    """One optimizer step over this rank's share of the `grad_accum` micro-batches; returns the
    mean training loss over all of them (all ranks) as a 0-d tensor on the device, no host sync,
    after folding it and the gradient norm into `run.watch`."""
    t, ctx = run.cfg.train, run.ctx
    micros = ctx.local_micro_batches(t.grad_accum)
    total = torch.zeros((), device=ctx.device)
    for i, micro in enumerate(micros):
        x, y = run.sampler.batch(step * t.grad_accum + micro)  # the global micro-batch index: same data on any world
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        # gradients are reduced across ranks only on this rank's last micro-batch
        with run.wrapped.sync(last=i == len(micros) - 1), run.kernels():
            with run.amp():
                loss = run.wrapped.module(x, targets=y)  # mean cross-entropy, fp32
            (loss / len(micros)).backward()  # DDP/FSDP then average over ranks: the mean over all micro-batches
        total += loss.detach()
    mean = ctx.all_mean(total / len(micros))
    run.watch.record(mean, _grad_norm(run.model, t.grad_clip))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return mean


def validate(run: Run) -> float:
    """val_loss: the (weighted) mean over the run's sources of their held-out losses."""
    module = run.model if run.wrapped.mode != "ddp" else run.wrapped.module.module
    with run.kernels():
        return run.val_set.evaluate(lambda batches: evaluate(module, batches, device=run.ctx.device,
                                                             amp=run.amp(), ctx=run.ctx))


@torch.no_grad()
def evaluate(model, batches, device, amp, ctx: DistContext | None = None) -> float:
    """Mean cross-entropy (nats/token) over fixed held-out batches, shared out among the ranks.

    Every rank runs the same number of forwards (an FSDP forward is a collective); a rank without
    a batch of its own repeats batch 0 and does not count it.
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


def save(run: Run, step: int, seconds: float) -> None:
    """Checkpoint the run at `step` (every rank calls it; the format decides who writes)."""
    state = run.state
    if isinstance(run.sampler, StreamSampler):
        state.data_position = run.sampler.position(step * run.cfg.train.grad_accum)
    scalars = RunState(**{**vars(state), "seconds": seconds})
    path = run.checkpointer.save(run.model, run.optimizer, step=step, state=scalars)
    run.log.message(f"windtunnel: checkpoint {path}")


def summarize(run: Run, result: dict) -> dict:
    """The run's summary; rank 0 writes it to summary.json."""
    summary = {**_summary(run, result), **run.val_set.summary()}
    if run.ctx.is_main:
        write_json(run.out / "summary.json", summary)
    return summary


def _open_log(run: Run, *, progress: bool, trackers) -> MetricsLog:
    cfg, ctx, state = run.cfg, run.ctx, run.state
    log = MetricsLog(run.out, total_steps=run.schedule.total_steps, start_step=state.step,
                     start_seconds=state.seconds, tokens_per_step=cfg.tokens_per_step,
                     flops_per_token=flops_per_token(cfg.model, cfg.train.seq_len),
                     peak_flops=peak_flops(ctx.device), n_devices=ctx.world,
                     resume_step=state.step if state.resumed_from else None, console=_console_mode(progress),
                     trackers=trackers, enabled=ctx.is_main, extra_fields=run.val_set.columns)
    log.message(_banner(run))
    if (wd_warning := weight_decay_warning(run.cfg)) is not None:
        log.message(f"windtunnel: warning: {wd_warning}")
    return log


def _check_world(cfg: RunConfig, ctx: DistContext) -> None:
    if cfg.train.grad_accum % ctx.world:
        raise ConfigError(cfg.source, "train.grad_accum", f"must be a multiple of the number of processes "
                          f"({ctx.world}): it counts micro-batches per step across all of them, "
                          f"got {cfg.train.grad_accum}")


def _check_attention(cfg: RunConfig, ctx: DistContext) -> None:
    if cfg.model.attention == "flash_attn" and not (flash_attn_available() and ctx.device.type == "cuda"):
        raise ConfigError(cfg.source, "model.attention", "flash_attn needs the flash-attn package and a CUDA "
                          "device; use auto or sdpa here")


# --- small helpers ---------------------------------------------------------------------------


def _summary(run: Run, result: dict) -> dict:
    cfg, model, ctx, state, log = run.cfg, run.model, run.ctx, run.state, run.log
    t, steps = cfg.train, result["steps"]
    rate = result["session_steps"] * cfg.tokens_per_step / max(result["session_seconds"], 1e-9)
    return {
        "status": result["status"],
        "val_loss": result["val_loss"],
        "train_loss": result["loss"] if math.isfinite(result["loss"]) else math.inf,
        "steps": steps,
        "tokens": steps * cfg.tokens_per_step,
        "seconds": round(state.seconds + result["session_seconds"], 3),
        "tokens_per_s": round(rate, 1),
        "mfu": round(sum(log.mfu_values) / len(log.mfu_values), 4) if log.mfu_values else None,
        "mfu_counts_causal_attention": True,
        "params": model.num_params(),
        "non_embedding_params": model.num_params(non_embedding=True),
        "flops_per_token": flops_per_token(cfg.model, t.seq_len),
        "width_mult": cfg.model.width_mult,
        "device": str(ctx.device),
        "world_size": ctx.world,
        "parallel": run.wrapped.mode,
        "attention": _attention_backend(cfg, ctx.device),
        "resumed_from": state.resumed_from,
        "decay_from": state.decay_from,
        **({"data_epochs": round(run.sampler.epochs(steps * t.grad_accum), 6)}
           if isinstance(run.sampler, StreamSampler) else {}),
    }


def _banner(run: Run) -> str:
    cfg, ctx, state, model = run.cfg, run.ctx, run.state, run.model
    t, device = cfg.train, ctx.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = f"resuming at step {state.step}" if state.resumed_from else (
        f"decay branch from step {state.step}" if state.decay_from else "from step 0")
    return (f"windtunnel: {name} x{ctx.world} ({run.wrapped.mode}) | {t.precision} | attention "
            f"{_attention_backend(cfg, device)} | compile {'per block' if t.compile else 'off'} | "
            f"{model.num_params():,} params | {cfg.tokens_per_step:,} tokens/step | "
            f"{run.schedule.total_steps} steps, {start}")


def _console_mode(progress: bool) -> str:
    if not progress:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def _grad_norm(model: torch.nn.Module, clip: float | None) -> torch.Tensor:
    """The global gradient norm (clipped to `clip` when set), a tensor on the device: over DTensor
    gradients too, FSDP reducing it across shards."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def _attention_backend(cfg: RunConfig, device) -> str:
    choice = cfg.model.attention
    if choice == "flash_attn" or (choice == "auto" and device.type == "cuda" and cfg.train.precision == "bf16"
                                  and flash_attn_available()):
        return "flash-attn"
    return "sdpa" if choice in ("auto", "sdpa") else f"sdpa ({choice})"


# --- TEMPORARY (issue 22): a stand-in for the training loop's `train_group`, written on another branch;
# --- replaced by it at merge. Keep it small; nothing else in training/ depends on it.


class _StopTrial(Exception):
    """TEMPORARY: raised by the K = 1 `on_eval` adapter of `train_group` to stop a plain `train`."""

    def __init__(self, metrics: dict[str, Any]):
        super().__init__(f"stopped at step {metrics['step']}")
        self.metrics = metrics


def train_group(cfgs: list[RunConfig], *, out_dirs: list[str | os.PathLike], on_eval=None, on_end=None,
                tracking: list[Tracking | None] | None = None) -> list[dict[str, Any]]:
    """TEMPORARY stand-in: train K >= 1 trials, fused when K > 1 (`training.fused.train_fused`), the
    plain `train` when K = 1. `on_eval(i, metrics)` returning True stops trial i (status "pruned");
    `on_end(i, summary)` follows as soon as trial i is finished, its summary.json written.

    Example:
        >>> train_group([cfg], out_dirs=["runs/t0000"], on_eval=lambda i, m: m["step"] >= 50)  # doctest: +SKIP
        [{'status': 'pruned', 'steps': 50, ...}]
    """
    if len(cfgs) > 1:
        from .fused import train_fused
        return train_fused(cfgs, out_dirs=out_dirs, on_eval=on_eval, on_end=on_end, tracking=tracking)
    cfg, out = cfgs[0], Path(out_dirs[0])

    def stop_here(metrics: dict[str, Any]) -> None:
        if on_eval is not None and metrics["step"] < cfg.train.steps and on_eval(0, metrics):
            raise _StopTrial(metrics)

    try:
        summary = train(cfg, out_dir=out, on_eval=stop_here, tracking=tracking[0] if tracking else None)
    except _StopTrial as stop:
        m = stop.metrics
        summary = {"status": "pruned", "val_loss": m["val_loss"], "train_loss": m["train_loss"], "steps": m["step"],
                   "tokens": m["tokens"], "seconds": round(float(m["seconds"]), 3),
                   "flops_per_token": flops_per_token(cfg.model, cfg.train.seq_len),
                   "message": f"stopped at step {m['step']} (early termination)"}
        write_json(out / "summary.json", summary)
    if on_end is not None:
        on_end(0, summary)
    return [summary]
