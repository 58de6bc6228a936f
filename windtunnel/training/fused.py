"""Train K same-shape trials as one fused computation (`train_fused`), each with the outputs a
separate `train` would write.

Every trial keeps its own config, run folder (`config.yaml`, `metrics.csv`, `summary.json`), data
stream (its batches are a pure function of its own seed and the step), muP init and per-role
learning rates, schedule multiplier, gradient clip, divergence test and held-out evaluation. A trial
that diverges or is stopped by the caller (`on_eval` returns True, e.g. ASHA) leaves the group: its
slot is cut out of the weights and the optimizer state, so the others go on, unchanged and faster.
`seconds` of a trial is its share of the group's wall time (each step's time split over the trials
still in it). Fused groups do not checkpoint: an interrupted group is run again from step 0.

Example:
    >>> cfgs = [load_config("proxies/xs.yaml", overrides=[f"train.lr={lr}"]) for lr in (0.003, 0.01)]
    >>> summaries = train_fused(cfgs, out_dirs=["runs/a", "runs/b"])
    >>> [s["status"] for s in summaries]
    ['ok', 'ok']
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import RunConfig, save_config
from ..data.mixture import build_samplers
from ..errors import ConfigError
from ..fileio import write_json
from ..model.accounting import flops_per_token, peak_flops
from ..model.fused import FusedTransformer
from ..model.parametrization import build_model, param_groups
from ..provenance import write_provenance
from .distributed import resolve_device
from .fusable import describe_key_difference, fusion_key
from .fused_optim import FusedAdamW
from .metrics import MetricsLog
from .precision import Precision
from .schedule import make_schedule
from .trackers import Trackers, Tracking, check_trackers, open_trackers, resolve_track

__all__ = ["train_fused"]

OnEval = Callable[[int, dict[str, Any]], bool]
OnEnd = Callable[[int, dict[str, Any]], None]


@dataclass
class _Trial:
    """One slot of the group: its own pieces and where it stands."""

    cfg: RunConfig
    out: Path
    schedule: Any
    sampler: Any
    val_set: Any
    log: MetricsLog
    trackers: Trackers
    params: int
    non_embedding_params: int
    first_loss: float | None = None
    loss: float = math.nan
    val_loss: float = math.nan
    seconds: float = 0.0
    steps: int = 0
    status: str = "running"
    message: str = ""


def train_fused(cfgs: list[RunConfig], *, out_dirs: list[str | os.PathLike], on_eval: OnEval | None = None,
                on_end: OnEnd | None = None, tracking: list[Tracking] | None = None) -> list[dict[str, Any]]:
    """Train same-shape `cfgs` as one fused model; returns one summary per config (in order).

    `on_eval(i, metrics)` is called after each held-out evaluation of trial i with {step, tokens,
    val_loss, train_loss, seconds}; returning True stops that trial (status "pruned").
    `on_end(i, summary)` is called as soon as trial i is finished (any status), its summary written.
    Each trial logs to its own trackers, as a separate `train` would: `tracking[i]`, else its
    config's `train.track`.
    """
    if not cfgs or len(cfgs) != len(out_dirs):
        raise ValueError(f"train_fused needs one out_dir per config, got {len(cfgs)} configs, {len(out_dirs)} dirs")
    _check_fusable(cfgs)
    tracking = tracking or [Tracking(names=resolve_track(c.train.track)) for c in cfgs]
    for c, t in zip(cfgs, tracking):
        check_trackers(t.names, source=c.source, out_dir=out_dirs[0])
    t0 = cfgs[0].train
    if t0.threads:
        torch.set_num_threads(t0.threads)
    device = resolve_device(t0.device)
    models = [build_model(c.model, seed=c.train.seed, device=device, source=c.source) for c in cfgs]
    fused = FusedTransformer(models)
    optimizer = FusedAdamW(fused, [param_groups(m, c) for m, c in zip(models, cfgs)], betas=t0.betas, eps=t0.eps)
    trials: list[_Trial] = []
    try:
        for c, d, m, t in zip(cfgs, out_dirs, models, tracking):
            trials.append(_open_trial(c, Path(d), m, device, t))
        del models
        _loop(fused, optimizer, trials, device, on_eval=on_eval, on_end=on_end)
    finally:
        for trial in trials:
            trial.log.close()
            trial.trackers.close()  # a trial left unfinished (the group raised) is recorded as failed
    return [_summary(t, device) for t in trials]


def _check_fusable(cfgs: list[RunConfig]) -> None:
    key = fusion_key(cfgs[0])
    for c in cfgs[1:]:
        if fusion_key(c) != key:
            differ = describe_key_difference(cfgs[0], c)
            raise ConfigError(c.source, differ[0] if differ else "(config)",
                              f"differs from {cfgs[0].source or 'the first trial'} in a key that changes "
                              f"shapes or the loop ({', '.join(differ)}); such trials cannot be fused")
    if cfgs[0].train.checkpoint_every:
        raise ConfigError(cfgs[0].source, "train.checkpoint_every", "fused trials do not checkpoint "
                          f"(an interrupted group restarts); set 0, got {cfgs[0].train.checkpoint_every}")


def _open_trial(cfg: RunConfig, out: Path, model, device, tracking: Tracking) -> _Trial:
    schedule = make_schedule(cfg)
    sampler, val_set = build_samplers(cfg, decay_start=schedule.decay_start)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    trackers = open_trackers(cfg, out_dir=out, tracking=tracking)
    write_provenance(out, kind="run", data=cfg.data)
    log = MetricsLog(out, total_steps=schedule.total_steps, tokens_per_step=cfg.tokens_per_step,
                     flops_per_token=flops_per_token(cfg.model, cfg.train.seq_len), peak_flops=peak_flops(device),
                     extra_fields=val_set.columns, trackers=trackers)
    return _Trial(cfg=cfg, out=out, schedule=schedule, sampler=sampler, val_set=val_set, log=log, trackers=trackers,
                  params=model.num_params(), non_embedding_params=model.num_params(non_embedding=True))


def _loop(fused: FusedTransformer, optimizer: FusedAdamW, trials: list[_Trial], device, *, on_eval, on_end) -> None:
    t0 = trials[0].cfg.train
    end = trials[0].schedule.total_steps
    active = list(range(len(trials)))  # trial index of each slot of the fused model
    amp = Precision(t0.precision).autocast(device)  # the one recipe of every run
    for step in range(end):
        started = time.perf_counter()
        mults = [trials[i].schedule.multiplier(step) for i in active]
        losses = _train_step(fused, optimizer, [trials[i] for i in active], step, mults, device, amp)
        done = step + 1
        for i, loss in zip(active, losses):
            trial = trials[i]
            trial.loss, trial.steps = loss, done
            trial.first_loss = loss if trial.first_loss is None else trial.first_loss
            if _diverged(loss, trial.first_loss, trial.cfg):
                trial.status = "diverged"
        evaluating = [i for i in active if trials[i].status == "running"] if (
            done % t0.eval_every == 0 or done == end) else []
        vals = _evaluate(fused, trials, active, evaluating, device, amp) if evaluating else {}
        share = (time.perf_counter() - started) / len(active)
        for slot, i in enumerate(active):
            trial = trials[i]
            trial.seconds += share
            _log_step(trial, done, end, mults[slot], vals.get(i))
            if i in vals and trial.status == "running" and on_eval is not None and done < end:
                metrics = {"step": done, "tokens": done * trial.cfg.tokens_per_step, "val_loss": trial.val_loss,
                           "train_loss": trial.loss, "seconds": trial.seconds, **trial.val_set.row()}
                if on_eval(i, metrics):
                    trial.status, trial.message = "pruned", f"stopped at step {done} (early termination)"
        if done == end:
            for i in active:
                trials[i].status = "ok" if trials[i].status == "running" else trials[i].status
        stopped = [i for i in active if trials[i].status != "running"]
        for i in stopped:
            _finish(trials[i], device, on_end, index=i)
        if stopped and done < end:
            active = _shrink(fused, optimizer, active, stopped)
        if not active:
            break


def _train_step(fused, optimizer: FusedAdamW, trials: list[_Trial], step: int, mults: list[float], device,
                amp) -> list[float]:
    """One optimizer step of every trial still in the group; returns their mean training losses."""
    t = trials[0].cfg.train
    total = torch.zeros(len(trials), device=device, dtype=torch.float64)
    for micro in range(t.grad_accum):
        # each trial's own batch: a pure function of its seed and the global micro-batch index
        pairs = [trial.sampler.batch(step * t.grad_accum + micro) for trial in trials]
        x = torch.stack([p[0] for p in pairs]).to(device, non_blocking=True)  # (K, B, T)
        y = torch.stack([p[1] for p in pairs]).to(device, non_blocking=True)
        with amp:
            logits = fused(x)  # (K, B, T, vocab)
        losses = _per_trial_loss(logits, y)
        (losses.sum() / t.grad_accum).backward()  # the sum: each trial's weights get its own gradient
        total += losses.detach().double()
    clip = torch.tensor([trial.cfg.train.grad_clip if trial.cfg.train.grad_clip is not None else math.inf
                         for trial in trials], device=device, dtype=fused.emb_mult.dtype)
    optimizer.clip(clip)
    optimizer.step(lr_mults=torch.tensor(mults, device=device, dtype=fused.emb_mult.dtype))
    return (total / t.grad_accum).tolist()


def _per_trial_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B, T, vocab), (K, B, T) -> (K,) mean cross-entropy per trial."""
    K = logits.shape[0]
    ce = F.cross_entropy(logits.float().flatten(0, 2), y.flatten(), reduction="none")
    return ce.view(K, -1).mean(1)


@torch.no_grad()
def _evaluate(fused, trials: list[_Trial], active: list[int], wanted: list[int], device, amp) -> dict[int, float]:
    """val_loss of the `wanted` trials. A group shares its held-out batches (same data, batch and
    seq_len), so each batch is run once through all slots; each trial weights sources its own way."""
    fused.eval()
    K = len(active)
    per_source: dict[str, torch.Tensor] = {}
    for name, batches in trials[active[0]].val_set.batches.items():
        total = torch.zeros(K, dtype=torch.float64, device=device)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with amp:
                logits = fused(x.expand(K, *x.shape))
            total += _per_trial_loss(logits, y.expand(K, *y.shape)).double()
        per_source[name] = total / len(batches)
    fused.train()
    out = {}
    for slot, i in enumerate(active):
        if i in wanted:
            losses = iter([per_source[name][slot].item() for name in trials[i].val_set.batches])
            out[i] = trials[i].val_set.evaluate(lambda _batches, it=losses: next(it))
    return out


def _log_step(trial: _Trial, done: int, end: int, mult: float, val: float | None) -> None:
    t = trial.cfg.train
    if val is not None:
        trial.val_loss = val
        if not math.isfinite(val):
            trial.status = "diverged"
    if trial.status == "diverged" or val is not None or done % t.log_every == 0 or done == end:
        trial.log.row(step=done, lr=t.lr * mult, loss=trial.loss, seconds=trial.seconds, val_loss=val,
                      extra=trial.val_set.row() if val is not None else None)


def _shrink(fused, optimizer: FusedAdamW, active: list[int], stopped: list[int]) -> list[int]:
    slots = [slot for slot, i in enumerate(active) if i not in stopped]
    if slots:
        fused.keep(slots)
        optimizer.keep(slots)
    return [active[s] for s in slots]


def _finish(trial: _Trial, device, on_end: OnEnd | None, *, index: int) -> None:
    if trial.status == "diverged":
        trial.val_loss = math.inf
    trial.log.close()
    summary = _summary(trial, device)
    write_json(trial.out / "summary.json", summary)
    trial.trackers.finish(summary)
    if on_end is not None:
        on_end(index, summary)


def _summary(trial: _Trial, device) -> dict[str, Any]:
    cfg = trial.cfg
    tokens = trial.steps * cfg.tokens_per_step
    return {"status": trial.status, "val_loss": trial.val_loss,
            "train_loss": trial.loss if math.isfinite(trial.loss) else math.inf,
            "steps": trial.steps, "tokens": tokens, "seconds": round(trial.seconds, 3),
            "tokens_per_s": round(tokens / max(trial.seconds, 1e-9), 1), "mfu": None,
            "params": trial.params, "non_embedding_params": trial.non_embedding_params,
            "flops_per_token": flops_per_token(cfg.model, cfg.train.seq_len), "width_mult": cfg.model.width_mult,
            "device": str(device), "world_size": 1, "attention": "sdpa", "fused": True,
            "message": trial.message, "resumed_from": None, "decay_from": None}


def _diverged(loss: float, first_loss: float, cfg: RunConfig) -> bool:
    # the training loop's rule: relative to the larger of the first loss and ln(vocab) (a uniform guess)
    reference = max(first_loss, math.log(cfg.model.vocab_size))
    return not math.isfinite(loss) or loss > cfg.train.diverge_factor * reference

