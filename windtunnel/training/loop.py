"""The one training loop: proxies in a sweep, fused groups of them and the full run all call it.

`train` trains one config; `train_group` trains a group of K configs, one (K = 1: exactly `train`)
or several same-shape ones fused into one computation (K > 1: `model.fused`, `training.fused_optim`).
Everything that depends on K lives in `training.compute` (`Single`, `Fused`); each trial keeps its own
record, files and summary (`training.trial`). Per run folder the loop writes `config.yaml`,
`metrics.csv` (step, tokens, lr, loss, val_loss, seconds, tokens_per_s, mfu; `training.metrics`),
`summary.json` (val_loss, tokens, seconds, status) and, for K = 1, resumable checkpoints under
`checkpoints/` after the last step (`train.final_checkpoint`) and every `train.checkpoint_every`
steps (`training.checkpoint`: one file, or sharded through DCP). Fused groups do not checkpoint: an
interrupted group is run again from step 0.
A NaN/inf or exploding loss (or a non-finite gradient) ends a trial as `status: diverged` with
val_loss = inf, never a traceback; it is found on the device every step (`training.watch`, one flag
per trial), and a diverged state is never checkpointed. The host reads the losses only when it
writes a row (every `train.log_every` steps, at evaluations and at the end), and Python's garbage
collector runs every `GC_EVERY` steps instead of whenever allocations trigger it: both would stall
the GPU at 1.2B. A trial that diverges or is stopped by the caller (`on_eval` returns True, e.g.
ASHA) leaves a fused group: its slot is cut out of the weights and optimizer state, the others go
on unchanged. Precision follows one recipe in every mode (`training.precision`).
Started by torchrun, the same loop runs data-parallel (DDP) or sharded (FSDP2;
`training.wrapping`), rank 0 writing (K = 1 only).

Read top to bottom: `train` / `train_group` open the process group; `setup` builds a `Run` (trials,
computation, watch, checkpointer); `run_steps` loops over `train_step`, the evaluations, rows and
`save`; each trial's summary is written as soon as it finishes.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.sampling import StreamSampler
from ..errors import ConfigError, WindtunnelError
from ..model.fused import FusedTransformer
from ..model.parametrization import build_model, param_groups, param_roles
from ..model.transformer import flash_attn_available
from .checkpoint import Checkpointer, RunState, start_state
from .compute import Fused, Single, evaluate
from .distributed import DistContext, init_distributed
from .fusable import check_group
from .fused_optim import FusedAdamW
from .metrics import METRIC_FIELDS
from .optim import build_optimizer
from .trackers import Tracking, check_trackers, resolve_track
from .trial import Trial, attention_backend, open_outputs, open_trial, summarize, write_run_files
from .watch import DivergenceWatch
from .wrapping import check_parallel, wrap_model

GC_EVERY = 50
"""Steps between collections of Python's young generations (torchtitan's default cadence): the
automatic collector would otherwise pause a step at random, on one rank, and stall the others."""

__all__ = ["GC_EVERY", "METRIC_FIELDS", "Run", "evaluate", "run_steps", "setup", "train", "train_group",
           "train_step"]

OnEval = Callable[[int, dict[str, Any]], "bool | None"]
OnEnd = Callable[[int, dict[str, Any]], None]


@dataclass
class Run:
    """A training group, built once by `setup`: its trials, what computes them, the divergence watch."""

    trials: list[Trial]
    ctx: DistContext
    compute: Single | Fused
    watch: DivergenceWatch
    checkpointer: Checkpointer | None = None        # K = 1 only
    active: list[int] = field(default_factory=list)  # the trial index of each slot still training
    clock: float = 0.0                               # perf_counter of the last split of wall time

    def live(self) -> list[Trial]:
        return [self.trials[i] for i in self.active]


class _Reporter:
    """`train`'s on_eval(metrics) as the loop's on_eval(i, metrics): it reports, it never stops the run."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]):
        self.fn = fn

    def __call__(self, _index: int, metrics: dict[str, Any]) -> bool:
        self.fn(metrics)
        return False


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
    return _train([cfg], [out_dir], progress=progress, on_eval=_Reporter(on_eval) if on_eval else None,
                  on_eval_at_end=True, resume=resume, decay_from=decay_from, stop_after=stop_after,
                  tracking=[tracking] if tracking is not None else None)[0]


def train_group(cfgs: list[RunConfig], *, out_dirs: list[str | os.PathLike], on_eval: OnEval | None = None,
                on_end: OnEnd | None = None, tracking: list[Tracking] | None = None) -> list[dict[str, Any]]:
    """Train `cfgs` as one group and return one summary per config (in order); each trial writes the
    files a separate `train` would. One config runs exactly as `train`; several must fuse (the same
    shapes and loop: `training.fusable`) and train as one fused model, in one process.

    `on_eval(i, metrics)` is called after each held-out evaluation of trial i but the last, with
    {step, tokens, val_loss, train_loss, seconds, ...}; returning True stops that trial (status
    "pruned"). `on_end(i, summary)` is called as soon as trial i is finished (any status), its
    summary.json written. Each trial logs to its own trackers: `tracking[i]`, else its config's
    `train.track`. `seconds` of a fused trial is its share of the group's wall time.

    Example:
        >>> cfgs = [load_config("proxies/xs.yaml", overrides=[f"train.lr={lr}"]) for lr in (0.003, 0.01)]
        >>> summaries = train_group(cfgs, out_dirs=["runs/a", "runs/b"], on_eval=lambda i, m: m["val_loss"] > 9)
        >>> [s["status"] for s in summaries]
        ['ok', 'ok']
    """
    if not cfgs or len(cfgs) != len(out_dirs):
        raise ValueError(f"train_group needs one out_dir per config, got {len(cfgs)} configs, {len(out_dirs)} dirs")
    return _train(list(cfgs), list(out_dirs), on_eval=on_eval, on_end=on_end, on_eval_at_end=False, tracking=tracking)


def _train(cfgs: list[RunConfig], out_dirs: list, *, progress: bool = False, on_eval: OnEval | None = None,
           on_end: OnEnd | None = None, on_eval_at_end: bool, resume=False, decay_from=None,
           stop_after: int | None = None, tracking: list[Tracking] | None = None) -> list[dict[str, Any]]:
    if len(cfgs) > 1:
        check_group(cfgs)
    tracking = tracking or [Tracking(names=resolve_track(c.train.track)) for c in cfgs]
    for c, t, out in zip(cfgs, tracking, out_dirs):
        check_trackers(t.names, source=c.source, out_dir=out)
    ctx = init_distributed(cfgs[0].train.device, cfgs[0].source, timeout_s=cfgs[0].train.dist_timeout_s)
    try:
        run = setup(cfgs, [Path(d) for d in out_dirs], ctx, resume=resume, decay_from=decay_from, tracking=tracking)
        try:
            for trial in run.trials:
                open_outputs(trial, ctx, console=_console_mode(progress), banner=_banner(run, trial))
            run_steps(run, on_eval=on_eval, on_end=on_end, on_eval_at_end=on_eval_at_end, stop_after=stop_after)
        finally:
            for trial in run.trials:
                if trial.log is not None:
                    trial.log.close()
                if trial.trackers is not None:
                    trial.trackers.close()  # a trial left unfinished (the loop raised) is recorded as failed
        ctx.barrier()  # no rank tears the group down while another still has a collective in flight (gloo aborts)
        return [trial.summary for trial in run.trials]
    finally:
        ctx.close()


def setup(cfgs: list[RunConfig], outs: list[Path], ctx: DistContext, *, resume=False, decay_from=None,
          tracking: list[Tracking]) -> Run:
    """Build a group: models (one, or K fused), wrapping, optimizer, start state, schedules, data. Every
    input is checked before a run folder is touched, so a bad input leaves no files behind."""
    cfg, t, k = cfgs[0], cfgs[0].train, len(cfgs)
    if k > 1 and ctx.world > 1:
        raise WindtunnelError(f"a fused group of {k} trials runs in one process; torchrun started {ctx.world}")
    if k == 1:
        _check_world(cfg, ctx)
        check_parallel(cfg, ctx)
        _check_attention(cfg, ctx)
    if t.threads:
        torch.set_num_threads(t.threads)
    checkpointer = None
    if k == 1:
        model = build_model(cfg.model, seed=t.seed, device=ctx.device, source=cfg.source)
        roles = param_roles(model)  # by module type, before any wrapper renames or shards a parameter
        wrapped = wrap_model(model, cfg, ctx)
        optimizer = build_optimizer(model, cfg, roles=roles)
        checkpointer = Checkpointer(cfg, out=outs[0], ctx=ctx, mode=wrapped.mode)
        state = start_state(checkpointer, model, optimizer, resume=resume, decay_from=decay_from)
        trials = [open_trial(cfg, outs[0], state=state, model=model, tracking=tracking[0])]
        compute = Single(model, wrapped, optimizer, cfg=cfg, ctx=ctx)
    else:
        models = [build_model(c.model, seed=c.train.seed, device=ctx.device, source=c.source) for c in cfgs]
        trials = [open_trial(c, o, state=RunState(), model=m, tracking=tr)
                  for c, o, m, tr in zip(cfgs, outs, models, tracking)]
        fused = FusedTransformer(models)  # each trial starts from exactly the weights a separate run would
        optimizer = FusedAdamW(fused, [param_groups(m, c) for m, c in zip(models, cfgs)], betas=t.betas, eps=t.eps)
        del models  # the stacked copy is the only one kept
        compute = Fused(fused, optimizer, cfgs=cfgs, device=ctx.device)
    if ctx.is_main:
        for trial in trials:
            write_run_files(trial, continued=bool(resume))
    watch = DivergenceWatch(device=ctx.device, vocab_size=cfg.model.vocab_size,
                            factor=t.diverge_factor if k == 1 else [c.train.diverge_factor for c in cfgs],
                            first_loss=trials[0].state.first_loss if k == 1 else None, k=None if k == 1 else k)
    return Run(trials=trials, ctx=ctx, compute=compute, watch=watch, checkpointer=checkpointer,
               active=list(range(k)))


def run_steps(run: Run, *, on_eval: OnEval | None = None, on_end: OnEnd | None = None, on_eval_at_end: bool = True,
              stop_after: int | None = None) -> None:
    """Run the group's steps from where its trials stand, finishing each trial (summary written,
    `on_end` called) as soon as it ends."""
    start, end = run.trials[0].state.step, run.trials[0].schedule.total_steps
    run.clock = time.perf_counter()
    collecting = gc.isenabled()
    gc.disable()  # collected every GC_EVERY steps below, at the same step on every rank
    try:
        for step in range(start, end):
            live = run.live()
            run.compute.set_lr([trial.schedule.multiplier(step) for trial in live])
            losses = train_step(run, step)  # on the device; read below only when a row is written
            done = step + 1
            for trial in live:
                trial.steps = done
            _split_time(run)
            _after_step(run, live, losses, done, end, on_eval=on_eval, on_eval_at_end=on_eval_at_end)
            if run.checkpointer is not None and live[0].status == "running":
                _checkpoint(run, live[0], losses, done, end, stop_after)
            for trial in live:
                trial.status = "ok" if done == end and trial.status == "running" else trial.status
            if any(trial.status != "running" for trial in live):
                _leave(run, on_end)
            if not run.active:
                break
            if done % GC_EVERY == 0:
                gc.collect(1)
    finally:
        if collecting:
            gc.enable()
    if start >= end:  # nothing left to train (resumed at the end): still report a val loss
        live = run.live()
        for trial, val in zip(live, run.compute.evaluate([t.val_set for t in live], [True] * len(live))):
            trial.val_loss, trial.status = val, "ok"
        _leave(run, on_end)


def train_step(run: Run, step: int) -> torch.Tensor:
    """One optimizer step of every trial still training (over this rank's share of the `grad_accum`
    micro-batches); returns the mean training losses (all ranks; 0-d for one trial, (K,) for a group)
    on the device, no host sync, after folding them and the gradient norms into `run.watch`.

    Example:
        >>> loss = train_step(run, 0)          # doctest: +SKIP
    """
    return run.compute.step(step, [trial.sampler for trial in run.live()], run.watch)


def save(run: Run, step: int, seconds: float) -> None:
    """Checkpoint the (single) run at `step` (every rank calls it; the format decides who writes).

    Example:
        >>> save(run, 100, 42.0)               # doctest: +SKIP
    """
    trial, compute = run.trials[0], run.compute
    state = trial.state
    state.first_loss = run.watch.first_loss
    if isinstance(trial.sampler, StreamSampler):  # a sequential stream: where it stands
        state.data_position = trial.sampler.position(step * trial.cfg.train.grad_accum)
    scalars = RunState(**{**vars(state), "seconds": seconds})
    path = run.checkpointer.save(compute.model, compute.optimizer, step=step, state=scalars)
    trial.log.message(f"windtunnel: checkpoint {path}")


def _after_step(run: Run, live: list[Trial], losses: torch.Tensor, done: int, end: int, *, on_eval, on_eval_at_end):
    """Per trial: divergence, evaluation, its metrics row, progress, on_eval (which may stop it)."""
    flags = run.watch.flags()
    for trial, flag in zip(live, flags):
        trial.status = "diverged" if flag else trial.status
    evaluating = done % live[0].cfg.train.eval_every == 0 or done == end  # eval_every is shared in a group
    wanted = [evaluating and trial.status == "running" for trial in live]
    vals = run.compute.evaluate([t.val_set for t in live], wanted) if any(wanted) else [None] * len(live)
    lrs, values = run.compute.lrs(), None
    for slot, (trial, val) in enumerate(zip(live, vals)):
        if val is not None:
            trial.val_loss = val
            trial.status = trial.status if math.isfinite(val) else "diverged"
        if trial.status == "diverged" or val is not None or done % trial.cfg.train.log_every == 0 or done == end:
            values = values if values is not None else _host(losses)  # one host read for the whole group
            trial.loss = values[slot]
            trial.log.row(step=done, lr=lrs[slot], loss=trial.loss, seconds=trial.seconds, val_loss=val,
                          extra=trial.val_set.row() if val is not None else None)
        if trial.status == "diverged":
            continue
        trial.log.progress(step=done, loss=trial.loss, lr=lrs[slot], val_loss=trial.val_loss)
        if val is not None and on_eval is not None and (on_eval_at_end or done < end):
            metrics = {"step": done, "tokens": done * trial.cfg.tokens_per_step, "val_loss": trial.val_loss,
                       "train_loss": trial.loss, "seconds": trial.seconds, **trial.val_set.row()}
            if on_eval(run.active[slot], metrics) and done < end:
                trial.status, trial.message = "pruned", f"stopped at step {done} (early termination)"


def _checkpoint(run: Run, trial: Trial, losses: torch.Tensor, done: int, end: int, stop_after: int | None) -> None:
    t = trial.cfg.train
    stopping = stop_after is not None and done >= stop_after and done < end
    last = done == end and bool(t.checkpoint_every or t.final_checkpoint)
    if stopping or last or (t.checkpoint_every and done % t.checkpoint_every == 0):
        if run.watch.now():  # diverged since the last read: never checkpoint that state
            trial.status, trial.loss = "diverged", losses.item()
            trial.log.row(step=done, lr=run.compute.lrs()[0], loss=trial.loss, seconds=trial.seconds)
            return
        trial.loss = losses.item()  # the host waits for the save anyway: the summary gets this step's loss
        save(run, done, trial.seconds)
    if stopping:
        trial.status = "stopped"


def _leave(run: Run, on_end: OnEnd | None) -> None:
    """Finish the trials that stopped training; a fused group goes on with the others, smaller."""
    _split_time(run)  # the time since the step (evaluation, rows) is theirs too
    slots = []
    for slot, i in enumerate(run.active):
        trial = run.trials[i]
        if trial.status == "running":
            slots.append(slot)
            continue
        if trial.status == "diverged":
            trial.val_loss = math.inf
        if run.checkpointer is not None:
            run.checkpointer.close()
        trial.log.close()
        trial.summary = summarize(trial, ctx=run.ctx, parallel=run.compute.mode, fused=run.compute.fused,
                                  log=trial.log)
        trial.trackers.finish(trial.summary)
        if on_end is not None:
            on_end(i, trial.summary)
    if slots and len(slots) < len(run.active):
        run.compute.keep(slots)
        run.watch.keep(slots)
    run.active = [run.active[s] for s in slots]


def _split_time(run: Run) -> None:
    """Add the wall time since the last split to the trials still training, in equal shares."""
    now = time.perf_counter()
    share = (now - run.clock) / max(len(run.active), 1)
    for trial in run.live():
        trial.seconds += share
    run.clock = now


def _host(losses: torch.Tensor) -> list[float]:
    values = losses.tolist()
    return values if isinstance(values, list) else [values]


def _check_world(cfg: RunConfig, ctx: DistContext) -> None:
    if cfg.train.grad_accum % ctx.world:
        raise ConfigError(cfg.source, "train.grad_accum", f"must be a multiple of the number of processes "
                          f"({ctx.world}): it counts micro-batches per step across all of them, "
                          f"got {cfg.train.grad_accum}")


def _check_attention(cfg: RunConfig, ctx: DistContext) -> None:
    if cfg.model.attention == "flash_attn" and not (flash_attn_available() and ctx.device.type == "cuda"):
        raise ConfigError(cfg.source, "model.attention", "flash_attn needs the flash-attn package and a CUDA "
                          "device; use auto or sdpa here")


def _banner(run: Run, trial: Trial) -> str:
    cfg, ctx, state = trial.cfg, run.ctx, trial.state
    t, device = cfg.train, ctx.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = f"resuming at step {state.step}" if state.resumed_from else (
        f"decay branch from step {state.step}" if state.decay_from else "from step 0")
    fused = f" | fused x{len(run.trials)}" if run.compute.fused else ""
    return (f"windtunnel: {name} x{ctx.world} ({run.compute.mode}){fused} | {t.precision} | attention "
            f"{'sdpa' if run.compute.fused else attention_backend(cfg, device)} | compile "
            f"{'per block' if t.compile and not run.compute.fused else 'off'} | "
            f"{trial.params:,} params | {cfg.tokens_per_step:,} tokens/step | "
            f"{trial.schedule.total_steps} steps, {start}")


def _console_mode(progress: bool) -> str:
    if not progress:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"
