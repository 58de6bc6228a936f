"""Carry a sweep's winner to a target and plan the full run: `transfer(...)` returns a `TransferPlan`.

The proxy's width-independent HPs (`hparams.CARRIED`) and its optimizer and schedule shape
(`hparams.RECIPE`) are copied to the target, with a warning wherever the target preset says
otherwise; `--set` wins over both. The target keeps its own shape, batch, length, warmup,
clipping, precision and data. Steps and gradient accumulation follow from the token budget, the
batch and the GPU count.

Weight decay carries unchanged in both modes, because both are defined width-free: `independent`
shrinks every matrix by wd x schedule(t) per step, `coupled` by lr(t) x wd with the base lr; the
per-group AdamW value differs by width (hidden: x m) so that lr_group x wd_group stays the same.

Example:
    >>> plan = transfer(target="1.2b", source="runs/lr-grid", tokens=1.5e12)
    >>> plan.config.train.lr == plan.proxy.config.train.lr
    True
    >>> print(format_plan(plan))
    >>> write_plan(plan, "runs/1.2b.yaml")
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

from ..config import RunConfig, parse_overrides
from ..errors import ConfigError, WindtunnelError
from ..model.accounting import count_params, memory_per_gpu
from ..training.schedule import make_schedule
from .axes import axis_rows, depth_warnings, horizon_rows
from .horizon import HorizonCorrection, horizon_correction
from .hparams import RECIPE, get_value, minicpm_batch_tokens, proxy_hparams
from .plan import BatchPlan, TransferPlan
from .presets import Target, load_target
from .proxy import Proxy, load_proxy
from .table import plan_rows, plan_warnings

__all__ = ["transfer"]


def transfer(*, target: str | os.PathLike, source: str | os.PathLike | None = None, tokens: float | None = None,
             batch_tokens: float | None = None, nproc: int = 1,
             overrides: Mapping[str, Any] | Sequence[str] = (),
             horizon: str | os.PathLike | None = None) -> TransferPlan:
    """Plan the full run of `target` with the HPs of `source` (a sweep folder's best trial, a run
    folder or a proxy config; None: the preset's own HPs). `overrides` (`--set`) win over both.
    `horizon` (a run folder with a horizon fit, see `windtunnel check horizon`) corrects the carried
    lr from the proxy's tokens per parameter to the target's.

    Example:
        >>> plan = transfer(target="1.2b", source="runs/lr-grid", nproc=8)
        >>> plan.config.train.steps, plan.batch.grad_accum
        (381470, 480)
    """
    if nproc < 1:
        raise WindtunnelError(f"--nproc must be >= 1, got {nproc}")
    tgt = load_target(target)
    proxy = load_proxy(source) if source is not None else None
    sets = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides, source="--set")
    for key in ("train.steps", "train.grad_accum"):
        if key in sets:
            raise ConfigError("--set", key, "is computed from --tokens and --batch-tokens; set those instead")
    carried, warnings = _carry(tgt, proxy, sets)
    total_tokens = float(tokens) if tokens is not None else tgt.tokens
    if not total_tokens > 0:
        raise WindtunnelError(f"--tokens must be > 0, got {tokens}")
    try:
        preview = tgt.config(steps=_placeholder_steps(tgt, carried), overrides=carried)
    except ConfigError as e:  # a bad --set value is the command line's fault, not the target file's
        from_set = any(k == e.key or k.startswith(e.key + ".") for k in sets)
        raise (ConfigError("--set", e.key, e.message) if from_set else e) from None
    batch = _batch_plan(tgt, proxy, preview, batch_tokens, nproc)
    steps = max(1, round(total_tokens / batch.tokens))
    correction = None
    if horizon is not None:
        correction = _horizon(horizon, proxy, preview, steps * batch.tokens, applied="train.lr" not in sets)
        if correction.applied:
            carried["train.lr"] = correction.lr
    cfg = _final_config(tgt, carried, steps, batch, proxy)
    plan = TransferPlan(target=tgt, proxy=proxy, config=cfg, batch=batch, tokens=steps * batch.tokens,
                        memory=memory_per_gpu(cfg, nproc=nproc), warnings=warnings, set_keys=tuple(sets),
                        horizon=correction)
    plan.rows = plan_rows(plan) + horizon_rows(plan) + axis_rows(plan)
    plan.warnings += plan_warnings(plan) + depth_warnings(plan)
    return plan


def _horizon(run, proxy: Proxy | None, preview: RunConfig, tokens: float, *, applied: bool) -> HorizonCorrection:
    if proxy is None:
        raise WindtunnelError(f"--horizon {run}: needs --from (the proxy whose lr and tokens per parameter "
                              "the correction starts from)")
    proxy_tpp = proxy.tokens / count_params(proxy.config.model).non_embedding
    target_tpp = tokens / count_params(preview.model).non_embedding
    correction = horizon_correction(run, raw_lr=proxy.config.train.lr, proxy_tpp=proxy_tpp, target_tpp=target_tpp)
    return replace(correction, applied=applied)


def _carry(tgt: Target, proxy: Proxy | None, sets: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Dotted-key values for the target: the proxy's carried and recipe HPs, then --set."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    if proxy is None:
        warnings.append("no --from: the HPs are the target preset's own (and --set); nothing was tuned here")
    else:
        for key, value in proxy_hparams(proxy.config).items():
            out[key] = value
            preset = _preset_value(tgt, key)
            if key in RECIPE and preset is not None and not _same(preset, value) and key not in sets:
                warnings.append(f"{key}: the target preset says {_show(preset)}, "
                                f"the proxy trained with {_show(value)}; "
                                f"carrying the proxy's (the optimum was found with it); --set {key}=... to override")
        if tgt.sections["data"].get("path") is None and proxy.config.data.path is not None:
            out["data.path"] = proxy.config.data.path
    out.update(sets)
    return out, warnings



def _final_config(tgt: Target, carried: dict, steps: int, batch: BatchPlan, proxy: Proxy | None) -> RunConfig:
    values = dict(carried)
    values["train.batch_size"] = batch.micro_batch
    if proxy is not None and "train.half_life" not in carried:
        values["train.half_life"] = _half_life(proxy.config, tgt, steps, carried)
    try:
        return tgt.config(steps=steps, grad_accum=batch.grad_accum, overrides=values)
    except ConfigError as e:
        if e.key == "train.warmup_steps":
            raise ConfigError(e.source, e.key, f"{e.message}; the steps come from the tokens / batch "
                              "tokens: lower it with --set train.warmup_steps=N or raise --tokens") from None
        raise


def _half_life(proxy_cfg: RunConfig, tgt: Target, steps: int, carried: dict) -> float | None:
    """An explicit exponential half-life carries as a fraction of the decay; null stays null (D / 4)."""
    t = proxy_cfg.train
    if t.decay != "exponential" or t.half_life is None or carried.get("train.decay") != "exponential":
        return None
    fraction = t.half_life / make_schedule(proxy_cfg).decay_steps
    return fraction * max(1, round(carried["train.decay_fraction"] * steps))


def _batch_plan(tgt: Target, proxy: Proxy | None, cfg: RunConfig, batch_tokens, nproc: int) -> BatchPlan:
    if batch_tokens is not None:
        requested, source = float(batch_tokens), "given (--batch-tokens)"
    elif tgt.batch_tokens is not None:
        requested, source = float(tgt.batch_tokens), f"target preset ({tgt.path.name})"
    elif proxy is not None and proxy.val_loss is not None:
        requested = minicpm_batch_tokens(proxy.val_loss)
        source = (f"MiniCPM's law 1.21e9 / L^6.24 at the proxy's val loss L = {proxy.val_loss:.3f} "
                  "(the law was fitted to C4 loss: indicative only)")
    else:
        raise ConfigError(str(tgt.path), "transfer.batch_tokens", "is null and there is no proxy loss for "
                          "MiniCPM's batch law; give --batch-tokens")
    if not requested > 0:
        raise WindtunnelError(f"--batch-tokens must be > 0, got {batch_tokens}")
    per_pass = cfg.train.batch_size * cfg.train.seq_len * nproc  # one micro-batch on every GPU
    accum = max(1, round(requested / per_pass)) * nproc
    return BatchPlan(requested=requested, source=source, micro_batch=cfg.train.batch_size,
                     seq_len=cfg.train.seq_len, grad_accum=accum, nproc=nproc)


def _placeholder_steps(tgt: Target, carried: dict) -> int:
    warmup = carried.get("train.warmup_steps", tgt.sections["train"].get("warmup_steps", 0))
    return 100 * (int(warmup or 0) + 1)  # room for the warmup and any decay: only the other keys are checked


# --- small helpers ----------------------------------------------------------------------------


def _preset_value(tgt: Target, key: str) -> Any:
    """The preset's value of a key, defaults included (what the preset means where it is silent)."""
    warmup = int(tgt.sections["train"].get("warmup_steps", 0) or 0)
    return get_value(tgt.config(steps=100 * (warmup + 1)), key)  # a placeholder length with room for the decay


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)
