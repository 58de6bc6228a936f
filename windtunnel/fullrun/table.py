"""The transfer table: each quantity at the proxy and at the target, and the warnings a plan earns.

The rows hold raw values (numbers, strings; `GiB` for bytes); `format_plan` prints them.

Example:
    >>> print(format_plan(transfer(target="1.2b", source="runs/lr-grid")))
"""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..formatting import fmt_bytes, fmt_number
from ..model.accounting import count_params, flops_per_token, memory_per_gpu, run_flops
from ..model.parametrization import weight_decay_warning
from ..training.schedule import make_schedule
from .hparams import CARRIED, RECIPE, effective_hparams, get_value, minicpm_batch_tokens, proxy_hparams
from .plan import Row, TransferPlan

__all__ = ["Row", "GiB", "plan_rows", "plan_warnings", "format_plan", "HORIZON_RATIO", "REFERENCE_GPU"]

HORIZON_RATIO = 4.0     # warn when tokens per parameter differ by more than this factor
REFERENCE_GPU = ("H100 SXM", 989.5e12, 80 * 2**30)  # for GPU-hours at 50 % MFU and the memory warning


class GiB(float):
    """A byte count, printed in GiB."""


def plan_rows(plan: TransferPlan) -> list[Row]:
    cfg, proxy = plan.config, plan.proxy
    pc = proxy.config if proxy else None
    rows = _shape_rows(pc, cfg) + _hparam_rows(plan) + _effective_rows(pc, cfg)
    rows += _size_rows(plan) + _batch_rows(plan) + _memory_rows(plan)
    return rows


def _shape_rows(pc: RunConfig | None, cfg: RunConfig) -> list[Row]:
    def shape(c: RunConfig | None, f):
        return f(c) if c is not None else None
    items = [
        ("d_model", lambda c: c.model.d_model),
        ("layers", lambda c: c.model.n_layers),
        ("heads / kv heads / d_head", lambda c: f"{c.model.n_heads} / {c.model.kv_heads} / {c.model.d_head}"),
        ("d_ffn", lambda c: c.model.d_ffn),
        ("vocab", lambda c: c.model.vocab_size),
        ("sequence length", lambda c: c.train.seq_len),
        ("width multiplier m = d_model / dim_model_base", lambda c: c.model.width_mult),
    ]
    return [Row("shape", label, shape(pc, f), f(cfg)) for label, f in items]


def _hparam_rows(plan: TransferPlan) -> list[Row]:
    rows = []
    pc = plan.proxy.config if plan.proxy else None
    proxy_values = proxy_hparams(pc) if pc is not None else {}
    for key in CARRIED + RECIPE:
        target = get_value(plan.config, key)
        proxy = proxy_values.get(key)
        if key in plan.set_keys:
            note = "--set"
        elif pc is None:
            note = "preset"
        else:
            note = "carried" if key in CARRIED else "carried (recipe)"
            if key == "train.lr" and plan.horizon is not None and plan.horizon.applied:
                note += ", horizon-corrected (see the horizon section)"
            if key == "model.attn_mult" and pc.model.attn_mult is None:
                note += ", the default (null) written out"
        rows.append(Row("hyperparameters", key, proxy, target, note))
    return rows


def _effective_rows(pc: RunConfig | None, cfg: RunConfig) -> list[Row]:
    target = effective_hparams(cfg)
    proxy = effective_hparams(pc) if pc is not None else {}
    labels = [
        ("lr_embedding", "lr, embedding and norms (lr)"), ("lr_hidden", "lr, hidden matrices (lr / m)"),
        ("init_std_embedding", "init std, embedding"),
        ("init_std_hidden", "init std, hidden (hidden_init_std / sqrt m)"),
        ("wd_hidden", "AdamW weight_decay, hidden group"), ("shrink_hidden", "weight shrink / step at peak (lr x wd)"),
        ("eps_hidden", "Adam eps, hidden (completep: x L_base / L)"),
        ("emb_mult", "embedding multiplier"), ("residual_mult", "residual multiplier (model.depth_scaling)"),
        ("logit_mult", "logit multiplier (1 / m)"), ("attn_scale", "attention scale (attn_mult / d_head)"),
    ]
    return [Row("effective, per tensor", label, proxy.get(key), target[key]) for key, label in labels]


def _size_rows(plan: TransferPlan) -> list[Row]:
    cfg, proxy = plan.config, plan.proxy
    tp = count_params(cfg.model)
    pp = count_params(proxy.config.model) if proxy else None
    fpt = flops_per_token(cfg.model, cfg.train.seq_len)
    rows = [
        Row("size and compute", "parameters, total", pp.total if pp else None, tp.total),
        Row("size and compute", "parameters, non-embedding", pp.non_embedding if pp else None, tp.non_embedding),
        Row("size and compute", "training tokens", int(proxy.tokens) if proxy else None, plan.tokens),
        Row("size and compute", "tokens per non-embedding parameter",
            proxy.tokens / pp.non_embedding if proxy else None, plan.tokens / tp.non_embedding),
        Row("size and compute", "FLOPs per token (6N + attention)",
            flops_per_token(proxy.config.model, proxy.config.train.seq_len) if proxy else None, fpt),
        Row("size and compute", "FLOPs, whole run",
            run_flops(proxy.config, proxy.tokens) if proxy else None, run_flops(cfg, plan.tokens)),
    ]
    name, peak, _ = REFERENCE_GPU
    hours = run_flops(cfg, plan.tokens) / (0.5 * peak) / 3600
    if cfg.train.device != "cpu" and cfg.model.vocab_size > 256:  # a GPU-sized target
        rows.append(Row("size and compute", f"GPU-hours at 50 % MFU ({name}, {peak / 1e12:g} TFLOP/s bf16)",
                        None, hours, f"{hours / plan.batch.nproc / 24:.1f} days on {plan.batch.nproc} GPU(s)"))
    return rows


def _batch_rows(plan: TransferPlan) -> list[Row]:
    cfg, b, proxy = plan.config, plan.batch, plan.proxy
    s = make_schedule(cfg)
    stable = s.decay_start - s.warmup_steps
    per = b.tokens
    rows = [
        Row("batch and schedule", "batch tokens per step", proxy.config.tokens_per_step if proxy else None,
            b.tokens, f"asked {b.requested:,.0f}: {b.source}"),
        Row("batch and schedule", "micro-batch x seq x accum (all GPUs)", None,
            f"{b.micro_batch} x {b.seq_len} x {b.grad_accum}", f"{b.grad_accum // b.nproc} per GPU on {b.nproc}"),
        Row("batch and schedule", "steps", proxy.config.train.steps if proxy else None, cfg.train.steps),
        Row("batch and schedule", "warmup steps (tokens)", None, f"{s.warmup_steps} ({s.warmup_steps * per:.3g})"),
        Row("batch and schedule", "stable steps (tokens)", None, f"{stable} ({stable * per:.3g})"),
        Row("batch and schedule", f"decay steps (tokens), {cfg.train.decay}", None,
            f"{s.decay_steps} ({s.decay_steps * per:.3g})", "branch it off any stable checkpoint with --decay-from"),
    ]
    if proxy is not None and proxy.val_loss is not None:
        rows.append(Row("batch and schedule", "MiniCPM law batch (1.21e9 / L^6.24)", None,
                        minicpm_batch_tokens(proxy.val_loss),
                        f"L = proxy val loss {proxy.val_loss:.3f}; fitted to C4 loss, indicative only"))
    return rows


def _memory_rows(plan: TransferPlan) -> list[Row]:
    m, t, n = plan.memory, plan.config.train, plan.batch.nproc
    ckpt = ", activation checkpointing" if plan.config.model.activation_checkpointing else ""
    split = f" / {n} GPUs" if m.parallel == "fsdp" else ""
    chunk = plan.config.model.loss_chunk_tokens
    items = [(f"weights (fp32{split})", m.weights), (f"gradients (fp32{split})", m.grads),
             (f"AdamW states (fp32{split})", m.optimizer),
             (f"activations ({t.batch_size} x {t.seq_len}, {t.precision}{ckpt})", m.activations),
             (f"logits and loss ({f'chunks of {chunk} tokens' if chunk else 'whole'})", m.logits)]
    if m.parallel == "fsdp":
        items.append((f"gathered parameters ({m.gathered_what})", m.gathered))
        items.append(("unsharded fp32 gradients (before reduce-scatter)", m.unsharded_grads))
    if m.casts:
        items.append(("bf16 copies of the matrices (autocast, eager)", m.casts))
    rows = [Row("memory per GPU", label, None, GiB(value)) for label, value in items]
    for mode in ("ddp", "fsdp"):  # both, so the choice of train.parallel can be read off the table
        total = memory_per_gpu(plan.config, nproc=n, parallel=mode).total
        chosen = " <- train.parallel" if mode == m.parallel or (n == 1 and mode == t.parallel) else ""
        note = "one GPU: nothing to shard" if n == 1 and mode == "fsdp" else ""
        rows.append(Row("memory per GPU", f"total under {mode}{chosen}", None, GiB(total), note))
    return rows


def plan_warnings(plan: TransferPlan) -> list[str]:
    out, cfg, proxy = [], plan.config, plan.proxy
    if proxy is not None:
        out += [f"edge of the sweep: {msg}" for msg in proxy.edges]
        out += _horizon_warnings(plan)
        if proxy.config.model.parametrization == "sp" and proxy.config.model.d_model != cfg.model.d_model:
            out.append("the proxy uses SP: its optimal lr does not transfer across width "
                       "(under SP the optimal Adam lr falls roughly by half per doubling of width); "
                       "expect the target's optimum to be lower")
    if abs(plan.batch.tokens - plan.batch.requested) > 0.01 * plan.batch.requested:
        out.append(f"the batch is {plan.batch.tokens:,} tokens, not the {plan.batch.requested:,.0f} asked for: "
                   "micro-batch x seq x GPUs does not divide it")
    if cfg.data.path is None and cfg.model.vocab_size > 256:
        out.append("data.path is null: the run would train on the embedded byte-level corpus; "
                   "--set data.path=<prepared folder>")
    if (wd_warning := weight_decay_warning(cfg)) is not None:
        out.append(wd_warning)
    name, _, gpu_memory = REFERENCE_GPU
    if plan.memory.total > gpu_memory:
        out.append(f"estimated {fmt_bytes(plan.memory.total, digits=2)} per GPU exceeds an 80 GB {name}: lower "
                   "train.batch_size or set model.activation_checkpointing=true")
    return out


def _horizon_warnings(plan: TransferPlan) -> list[str]:
    proxy, cfg = plan.proxy, plan.config
    p_ratio = proxy.tokens / count_params(proxy.config.model).non_embedding
    t_ratio = plan.tokens / count_params(cfg.model).non_embedding
    out = []
    if not 1 / HORIZON_RATIO <= t_ratio / p_ratio <= HORIZON_RATIO:
        head = (f"horizon: the proxy saw {p_ratio:.3g} tokens per parameter, the target {t_ratio:.3g} "
                f"({t_ratio / p_ratio:.3g}x): the optimal lr moves with the horizon (LR* ~ D^slope, lower for "
                "longer runs); ")
        c = plan.horizon
        if c is None:
            out.append(head + "measure it with `windtunnel sweep sweeps/horizon.yaml` and `windtunnel check "
                       "horizon runs/horizon`, then pass --horizon runs/horizon to correct the carried lr")
        elif c.doublings_beyond > 0:
            out.append(head + f"corrected x{c.factor:.3g} by {c.run}'s fit, extrapolated {c.doublings_beyond:.1f} "
                       "doublings beyond its budgets: indicative, the interval assumes the line holds")
    p_eff, t_eff = effective_hparams(proxy.config), effective_hparams(cfg)
    if p_eff["shrink_hidden"] > 0 and t_eff["shrink_hidden"] > 0:
        p_tau = 1 / (p_eff["shrink_hidden"] * proxy.config.train.steps)
        t_tau = 1 / (t_eff["shrink_hidden"] * cfg.train.steps)
        if not 1 / HORIZON_RATIO <= t_tau / p_tau <= HORIZON_RATIO:
            out.append(f"weight decay: its timescale 1 / (lr x wd) is {p_tau:.3g} of the proxy's run but {t_tau:.3g} "
                       "of the target's; the same wd regularises the long run far more (Wang & Aitchison 2024)")
    return out

def format_plan(plan: TransferPlan) -> str:
    """The transfer table and the warnings, as text for a terminal."""
    lines = [f"transfer: {plan.proxy.source if plan.proxy else '(no proxy)'} -> target {plan.target.name}",
             f"  {plan.target.description}"]
    width = max(len(r.label) for r in plan.rows)
    section = None
    for row in plan.rows:
        if row.section != section:
            section = row.section
            lines += ["", f"{section:{width + 2}}{'proxy':>14}  {'target':>18}"]
        note = f"  {row.note}" if row.note else ""
        lines.append(f"  {row.label:{width}}{_fmt(row.proxy):>14}  {_fmt(row.target):>18}{note}")
    if plan.warnings:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in plan.warnings]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, GiB):
        return fmt_bytes(value)
    return fmt_number(value)

