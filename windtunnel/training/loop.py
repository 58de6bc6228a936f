"""The one training loop: proxies in a sweep and the full run call the same `train`.

It writes, under the run folder: `config.yaml` (the resolved config), `metrics.csv` (step, tokens,
lr, loss, val_loss, seconds, tokens_per_s, mfu; see `windtunnel.training.metrics`), `summary.json`
(val_loss, tokens, seconds, status) and, with `train.checkpoint_every > 0`, resumable checkpoints
under `checkpoints/` (`windtunnel.training.checkpoint`).
A NaN/inf or exploding loss ends the run as `status: diverged` with val_loss = inf, never a traceback.
Started by torchrun, the same loop runs data-parallel (DDP; `windtunnel.training.distributed`), rank 0 writing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data.sampling import BatchSampler
from .checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, restore, save_checkpoint
from ..config import RunConfig, config_to_dict, save_config
from ..data.prepared import TokenData
from .distributed import DistContext, init_distributed, resolve_device
from ..errors import ConfigError, WindtunnelError
from ..model.accounting import peak_flops
from .metrics import METRIC_FIELDS, MetricsLog
from ..data.mixture import SINGLE, ValSet, build_samplers, load_run_sources
from ..model.transformer import flops_per_token
from .optim import build_optimizer, set_lr
from ..model.parametrization import build_model
from .schedule import Schedule, build_schedule

__all__ = ["train", "make_schedule", "resolve_device", "load_run_data", "evaluate", "METRIC_FIELDS"]


@dataclass
class _State:
    """What a checkpoint carries besides tensors: where the loop stands."""

    step: int = 0                      # optimizer steps done (also the data position)
    first_loss: float | None = None    # the divergence test's reference
    seconds: float = 0.0               # training time before this session
    decay_start: int | None = None     # set on a WSD decay branched off a stable checkpoint
    resumed_from: str | None = None
    decay_from: str | None = None


def train(cfg: RunConfig, *, out_dir: str | os.PathLike, progress: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None, resume: bool | str | os.PathLike = False,
          decay_from: str | os.PathLike | None = None, stop_after: int | None = None,
          tensorboard: bool = False) -> dict[str, Any]:
    """Train `cfg` and return its summary (also written to `out_dir/summary.json`).

    `on_eval` is called after every held-out evaluation with {step, tokens, val_loss, train_loss,
    seconds}; a sweep uses it to report to Ray Tune, which may stop the trial there.
    `resume`: True continues from the newest checkpoint in `out_dir` (from step 0 when there is
    none), a path from that checkpoint. `decay_from`: a stable-phase WSD checkpoint (of any run) to
    branch the decay from, MiniCPM-style; the branch runs `decay_steps` steps into `out_dir`.
    `stop_after`: stop (with a checkpoint, status "stopped") once this many steps are done, e.g. to
    fit a time-limited job. `tensorboard`: also log to `out_dir/tensorboard` when installed.

    Example:
        >>> summary = train(load_config("proxies/xs.yaml"), out_dir="runs/xs")
        >>> summary["status"], round(summary["val_loss"], 2)
        ('ok', 2.31)
        >>> train(cfg, out_dir="runs/xs", resume=True)    # continue from runs/xs/checkpoints
    """
    if stop_after is not None and stop_after < 1:
        raise WindtunnelError(f"stop_after must be >= 1, got {stop_after}")
    ctx = init_distributed(cfg.train.device, cfg.source)
    try:
        return _train(cfg, Path(out_dir), ctx, progress=progress, on_eval=on_eval, resume=resume,
                      decay_from=decay_from, stop_after=stop_after, tensorboard=tensorboard)
    finally:
        ctx.close()


def _train(cfg: RunConfig, out: Path, ctx: DistContext, *, progress, on_eval, resume, decay_from,
           stop_after, tensorboard) -> dict[str, Any]:
    t = cfg.train
    _check_world(cfg, ctx)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = ctx.device
    model = build_model(cfg.model, seed=t.seed, device=device, source=cfg.source)
    optimizer = build_optimizer(model, cfg)
    state = _start_state(cfg, out, model, optimizer, resume=resume, decay_from=decay_from, device=device)
    schedule = make_schedule(cfg, decay_start=state.decay_start)
    sampler, val_set = build_samplers(cfg, schedule=schedule)  # one source, or a weighted mixture
    step_fn, ddp = _wrap(model, cfg, ctx)
    amp = _autocast(device, t.precision)
    # only now, with config, data, model and checkpoint known good, touch the run folder:
    # a bad input leaves no files behind
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = MetricsLog(out, total_steps=schedule.total_steps, start_step=state.step, start_seconds=state.seconds,
                     tokens_per_step=cfg.tokens_per_step, flops_per_token=flops_per_token(cfg.model, t.seq_len),
                     peak_flops=peak_flops(device), n_devices=ctx.world,
                     resume_step=state.step if state.resumed_from else None,
                     console=_console_mode(progress), tensorboard=tensorboard, enabled=ctx.is_main,
                     extra_fields=val_set.columns)
    log.message(_banner(cfg, model, ctx, state, schedule))
    try:
        result = _loop(cfg, out, ctx, model, step_fn, ddp, optimizer, schedule, sampler, val_set, amp, log,
                       state, on_eval=on_eval, stop_after=stop_after)
    finally:
        log.close()
    summary = {**_summary(cfg, model, ctx, state, result, log), **val_set.summary()}
    if ctx.is_main:
        _write_json(out / "summary.json", summary)
    return summary


def _loop(cfg, out, ctx, model, step_fn, ddp, optimizer, schedule, sampler, val_set, amp, log, state, *,
          on_eval, stop_after) -> dict[str, Any]:
    """Run the steps from `state.step`; returns status, losses, and the steps and seconds of this session."""
    t, end = cfg.train, schedule.total_steps
    status, loss, val_loss, done = "ok", math.nan, math.nan, state.step
    started = time.perf_counter()
    for step in range(state.step, end):
        lr_mult = schedule.multiplier(step)
        set_lr(optimizer, lr_mult)
        loss = _train_step(step_fn, ddp, model, optimizer, sampler, step, cfg, ctx, amp)
        state.first_loss = loss if state.first_loss is None else state.first_loss
        done = step + 1
        seconds = state.seconds + time.perf_counter() - started
        val = None
        if _diverged(loss, state.first_loss, cfg):
            status = "diverged"
        elif done % t.eval_every == 0 or done == end:
            val = _validate(model, val_set, ctx, amp)
            status = "ok" if math.isfinite(val) else "diverged"
        if status == "diverged" or val is not None or done % t.log_every == 0 or done == end:
            log.row(step=done, lr=t.lr * lr_mult, loss=loss, seconds=seconds, val_loss=val,
                    extra=val_set.row() if val is not None else None)
        if status == "diverged":
            val_loss = math.inf
            break
        val_loss = val if val is not None else val_loss
        log.progress(step=done, loss=loss, lr=t.lr * lr_mult, val_loss=val_loss)
        if val is not None and on_eval is not None:
            on_eval({"step": done, "tokens": done * cfg.tokens_per_step, "val_loss": val_loss,
                     "train_loss": loss, "seconds": seconds, **val_set.row()})
        stopping = stop_after is not None and done >= stop_after and done < end
        if stopping or (t.checkpoint_every and (done % t.checkpoint_every == 0 or done == end)):
            _checkpoint(cfg, out, ctx, model, optimizer, state, done, seconds, log)
        if stopping:
            status = "stopped"
            break
    if done == state.step:  # nothing left to train (resumed at the end): still report a val loss
        val_loss = _validate(model, val_set, ctx, amp)
    return {"status": status, "loss": loss, "val_loss": val_loss, "steps": done,
            "session_steps": done - state.step, "session_seconds": time.perf_counter() - started}


def _train_step(step_fn, ddp, model, optimizer, sampler: BatchSampler, step: int, cfg: RunConfig,
                ctx: DistContext, amp) -> float:
    """One optimizer step over this rank's share of the `grad_accum` micro-batches; returns the
    mean training loss over all of them (all ranks)."""
    t = cfg.train
    micros = ctx.local_micro_batches(t.grad_accum)
    total = torch.zeros((), device=ctx.device)
    for i, micro in enumerate(micros):
        x, y = sampler.batch(step * t.grad_accum + micro)  # the global micro-batch index: same data on any world
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        # DDP all-reduces gradients only on this rank's last micro-batch
        sync = contextlib.nullcontext() if ddp is None or i == len(micros) - 1 else ddp.no_sync()
        with sync:
            with amp:
                logits = step_fn(x)  # (B, T, vocab)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            (loss / len(micros)).backward()  # DDP then averages over ranks: the mean over all micro-batches
        total += loss.detach()
    if t.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return ctx.all_mean(total / len(micros)).item()


def _validate(model, val_set: ValSet, ctx: DistContext, amp) -> float:
    """val_loss: the (weighted) mean over the run's sources of their held-out losses."""
    return val_set.evaluate(lambda batches: evaluate(model, batches, device=ctx.device, amp=amp, ctx=ctx))


@torch.no_grad()
def evaluate(model, batches, device, amp, ctx: DistContext | None = None) -> float:
    """Mean cross-entropy (nats/token) over fixed held-out batches (shared out among DDP ranks)."""
    was_training = model.training
    model.eval()
    world, rank = (ctx.world, ctx.rank) if ctx is not None else (1, 0)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, batches)
    for x, y in batches[rank::world]:
        x, y = x.to(device), y.to(device)
        with amp:
            logits = model(x)
        total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        total[1] += 1
    model.train(was_training)
    total = ctx.all_sum(total) if ctx is not None else total
    return (total[0] / total[1]).item()


def _start_state(cfg: RunConfig, out: Path, model, optimizer, *, resume, decay_from, device) -> _State:
    """Fresh, resumed (the newest checkpoint of `out`, or a given one) or branched off `decay_from`."""
    path = None
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(out)
    if path is not None:
        ckpt = load_checkpoint(path, map_location=device)
        restore(ckpt, model=model, optimizer=optimizer, source=str(path))
        s = ckpt["state"]
        return _State(step=ckpt["step"], first_loss=s.get("first_loss"), seconds=s.get("seconds", 0.0),
                      decay_start=s.get("decay_start"), resumed_from=str(path), decay_from=s.get("decay_from"))
    if decay_from is not None:
        ckpt = load_checkpoint(decay_from, map_location=device)
        restore(ckpt, model=model, optimizer=optimizer, source=str(decay_from))
        s = ckpt["state"]
        return _State(step=ckpt["step"], first_loss=s.get("first_loss"), seconds=s.get("seconds", 0.0),
                      decay_start=ckpt["step"], decay_from=str(decay_from))
    if resume and os.environ.get("RANK", "0") == "0":
        print(f"windtunnel: no checkpoint in {out}/checkpoints; starting from step 0", file=sys.stderr)
    return _State()


def _checkpoint(cfg, out, ctx, model, optimizer, state: _State, step: int, seconds: float, log) -> None:
    """Rank 0 writes the checkpoint and prunes old ones; the others wait for it."""
    if ctx.is_main:
        import yaml
        scalars = {"first_loss": state.first_loss, "seconds": seconds, "decay_start": state.decay_start,
                   "decay_from": state.decay_from}
        path = save_checkpoint(out, step=step, model=model, optimizer=optimizer, state=scalars,
                               config_yaml=yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        prune_checkpoints(out, keep=cfg.train.keep_checkpoints)
        log.message(f"windtunnel: checkpoint {path}")
    ctx.barrier()


def _wrap(model, cfg: RunConfig, ctx: DistContext):
    """(what the step calls, the DDP module or None): DDP when several processes, then torch.compile."""
    ddp = None
    wrapped = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = ddp = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
    if cfg.train.compile:
        wrapped = torch.compile(wrapped)
    return wrapped, ddp


def _check_world(cfg: RunConfig, ctx: DistContext) -> None:
    if cfg.train.grad_accum % ctx.world:
        raise ConfigError(cfg.source, "train.grad_accum", f"must be a multiple of the number of processes "
                          f"({ctx.world}): it counts micro-batches per step across all of them, "
                          f"got {cfg.train.grad_accum}")


# --- small helpers ---------------------------------------------------------------------------


def _summary(cfg: RunConfig, model, ctx: DistContext, state: _State, result: dict, log: MetricsLog) -> dict:
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
        "params": model.num_params(),
        "non_embedding_params": model.num_params(non_embedding=True),
        "flops_per_token": flops_per_token(cfg.model, t.seq_len),
        "width_mult": cfg.model.width_mult,
        "device": str(ctx.device),
        "world_size": ctx.world,
        "attention": _attention_backend(model, ctx.device, t.precision),
        "resumed_from": state.resumed_from,
        "decay_from": state.decay_from,
    }


def _banner(cfg: RunConfig, model, ctx: DistContext, state: _State, schedule: Schedule) -> str:
    t, device = cfg.train, ctx.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = f"resuming at step {state.step}" if state.resumed_from else (
        f"decay branch from step {state.step}" if state.decay_from else "from step 0")
    return (f"windtunnel: {name} x{ctx.world} | {t.precision} | attention "
            f"{_attention_backend(model, device, t.precision)} | compile {'on' if t.compile else 'off'} | "
            f"{model.num_params():,} params | {cfg.tokens_per_step:,} tokens/step | "
            f"{schedule.total_steps} steps, {start}")


def _console_mode(progress: bool) -> str:
    if not progress:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _diverged(loss: float, first_loss: float, cfg: RunConfig) -> bool:
    # Relative to the larger of the first loss and ln(vocab) (a uniform guess), so a run that
    # starts high but learns is not called diverged.
    reference = max(first_loss, math.log(cfg.model.vocab_size))
    return not math.isfinite(loss) or loss > cfg.train.diverge_factor * reference


def _attention_backend(model, device, precision) -> str:
    from ..model.transformer import flash_attn_available
    if model.cfg.attention == "sdpa" or device.type != "cuda" or precision != "bf16":
        return "sdpa"
    return "flash-attn" if flash_attn_available() else "sdpa"


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
