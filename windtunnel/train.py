"""The one training loop: proxies in a sweep and the full run call the same `train`.

It writes, under the run folder: `config.yaml` (the resolved config), `metrics.csv` (step, tokens,
lr, loss, val_loss, seconds, tokens_per_s) and `summary.json` (val_loss, tokens, seconds, status).
A NaN/inf or exploding loss ends the run as `status: diverged` with val_loss = inf, never a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .config import RunConfig, save_config
from .data import BatchSampler, TokenData
from .errors import ConfigError
from .mixture import SINGLE, build_samplers, load_run_sources
from .model import flops_per_token
from .optim import build_optimizer, set_lr
from .parametrization import build_model
from .schedule import Schedule, build_schedule

__all__ = ["train", "make_schedule", "resolve_device", "load_run_data", "evaluate"]

METRIC_FIELDS = ["step", "tokens", "lr", "loss", "val_loss", "seconds", "tokens_per_s"]


def train(cfg: RunConfig, *, out_dir: str | os.PathLike, progress: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train `cfg` and return its summary (also written to `out_dir/summary.json`).

    `on_eval` is called after every held-out evaluation with {step, tokens, val_loss, train_loss,
    seconds}; a sweep uses it to report to Ray Tune, which may stop the trial there.

    Example:
        >>> summary = train(load_config("proxies/xs.yaml"), out_dir="runs/xs")
        >>> summary["status"], round(summary["val_loss"], 2)
        ('ok', 2.31)
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, cfg.source)
    sampler, val_set = build_samplers(cfg, schedule=make_schedule(cfg))
    model = build_model(cfg.model, seed=t.seed, device=device, source=cfg.source)
    optimizer = build_optimizer(model, cfg)
    schedule = make_schedule(cfg)
    step_fn = torch.compile(model) if t.compile else model
    amp = _autocast(device, t.precision)

    tokens_per_step = cfg.tokens_per_step
    first_loss, status, loss, val_loss = None, "ok", float("nan"), float("nan")
    started = time.perf_counter()
    bar = _progress_bar(t.steps, enabled=progress, desc=Path(out).name)
    with open(out / "metrics.csv", "w", newline="", buffering=1) as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS + val_set.columns)
        writer.writeheader()
        for step in range(t.steps):
            lr_mult = schedule.multiplier(step)
            set_lr(optimizer, lr_mult)
            loss = _train_step(step_fn, optimizer, sampler, step, cfg, device, amp)
            if first_loss is None:
                first_loss = loss
            done = step + 1
            seconds = time.perf_counter() - started
            row = {"step": done, "tokens": done * tokens_per_step, "lr": t.lr * lr_mult, "loss": loss,
                   "val_loss": "", "seconds": round(seconds, 3),
                   "tokens_per_s": round(done * tokens_per_step / max(seconds, 1e-9), 1)}
            if _diverged(loss, first_loss, cfg):
                status, val_loss = "diverged", math.inf
                writer.writerow(row)
                break
            if done % t.eval_every == 0 or done == t.steps:
                val_loss = val_set.evaluate(lambda batches: evaluate(model, batches, device, amp))
                row.update(val_loss=val_loss, **val_set.row())
                if not math.isfinite(val_loss):
                    status, val_loss = "diverged", math.inf
                    writer.writerow(row)
                    break
            if done % t.log_every == 0 or row["val_loss"] != "" or done == t.steps:
                writer.writerow(row)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{t.lr * lr_mult:.2e}",
                            val=f"{val_loss:.3f}" if math.isfinite(val_loss) else "-", refresh=False)
            if row["val_loss"] != "" and on_eval is not None:
                on_eval({"step": done, "tokens": done * tokens_per_step, "val_loss": val_loss,
                         "train_loss": loss, "seconds": seconds, **val_set.row()})
    bar.close()

    seconds = time.perf_counter() - started
    steps_done = done if status == "ok" else step + 1
    summary = {
        "status": status,
        "val_loss": val_loss,
        "train_loss": loss if math.isfinite(loss) else math.inf,
        "steps": steps_done,
        "tokens": steps_done * tokens_per_step,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(steps_done * tokens_per_step / max(seconds, 1e-9), 1),
        "params": model.num_params(),
        "non_embedding_params": model.num_params(non_embedding=True),
        "flops_per_token": flops_per_token(cfg.model, t.seq_len),
        "width_mult": cfg.model.width_mult,
        "device": str(device),
        "attention": _attention_backend(model, device, t.precision),
        **val_set.summary(),
    }
    _write_json(out / "summary.json", summary)
    return summary


def _train_step(model, optimizer, sampler: BatchSampler, step: int, cfg: RunConfig, device, amp) -> float:
    """One optimizer step over `grad_accum` micro-batches; returns the mean training loss."""
    t = cfg.train
    total = 0.0
    for micro in range(t.grad_accum):
        x, y = sampler.batch(step * t.grad_accum + micro)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp:
            logits = model(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        (loss / t.grad_accum).backward()
        total += loss.item()
    if t.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / t.grad_accum


@torch.no_grad()
def evaluate(model, batches, device, amp) -> float:
    """Mean cross-entropy (nats/token) over fixed held-out batches."""
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with amp:
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).item()
    model.train(was_training)
    return total / len(batches)


def make_schedule(cfg: RunConfig) -> Schedule:
    """The lr schedule of `cfg.train`; a rule it breaks becomes a ConfigError naming the key."""
    t = cfg.train
    kwargs = {"kind": t.schedule, "total_steps": t.steps, "warmup_steps": t.warmup_steps,
              "min_ratio": t.min_lr_ratio}
    if t.schedule == "wsd":
        kwargs.update(decay=t.decay, decay_fraction=t.decay_fraction, decay_steps=t.decay_steps,
                      half_life=t.half_life if t.decay == "exponential" else None)
    try:
        return build_schedule(**kwargs)
    except ValueError as e:
        key = next((k for k in ("decay_steps", "half_life", "warmup_steps", "min_ratio", "decay_fraction")
                    if k in str(e)), "schedule")
        raise ConfigError(cfg.source, f"train.{key.replace('min_ratio', 'min_lr_ratio')}", str(e)) from None


def load_run_data(cfg: RunConfig) -> TokenData:
    """Open the run's token data (one source, not a mixture) and check it fits the model."""
    if cfg.data.sources is not None:
        raise ConfigError(cfg.source, "data.sources", "a mixture has several sources; use "
                          "windtunnel.mixture.load_run_sources")
    return load_run_sources(cfg)[SINGLE]


def resolve_device(name: str, source: str | None = None) -> torch.device:
    """`auto` -> CUDA when available, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(source, "train.device", "cuda was asked for but no CUDA device is available")
    return torch.device(name)


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
    from .model import flash_attn_available
    if model.cfg.attention == "sdpa" or device.type != "cuda" or precision != "bf16":
        return "sdpa"
    return "flash-attn" if flash_attn_available() else "sdpa"


def _progress_bar(total: int, *, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc=desc, unit="step", file=sys.stderr,
                dynamic_ncols=True, leave=True)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
