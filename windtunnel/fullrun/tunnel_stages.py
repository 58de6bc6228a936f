"""The stages of a tunnel plan and the types they fill (tier, stage, plan): each stage's sweep spec (or command),
trials, tokens, FLOPs and GPU-hours.

`tunnel_plan.plan_tunnel` calls `build_stages` once per tier; every cost comes from
`model.accounting.run_flops` on the proxy's own resolved config, the one FLOP count `transfer` uses.

Example:
    >>> build_stages(plan, ratio=1300.0, peak=989.5e12, mfu=0.2, target_tokens=1.5e12)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig, config_to_dict
from ..formatting import fmt_bytes
from ..model.accounting import count_params, memory_per_gpu, run_flops
from .presets import Target

__all__ = ["build_stages", "Stage", "Tier", "TunnelPlan", "width_unit", "ASHA_FRACTION", "PROXY_SEQ",
           "PROXY_BATCH_TOKENS", "MIN_STEPS"]

PROXY_SEQ = 1024
"""Proxy context (or the target's, if shorter): long enough for the attention FLOPs to be a fair share."""
PROXY_BATCH_TOKENS = 2 ** 18
"""~0.26M tokens per step, as Xmodel-2's nano proxy (0.2M)."""
MIN_STEPS = 200
"""A trial shorter than this is mostly warmup."""
ASHA_RUNGS, ASHA_FACTOR = 4, 3


def _asha_fraction(rungs: int = ASHA_RUNGS, eta: int = ASHA_FACTOR) -> float:
    """Mean share of a full trial's tokens a trial spends under ASHA with rungs at T/eta^k: the share
    reaching each rung times the length of the stretch before it (synchronous halving's arithmetic)."""
    cuts = [eta ** -(rungs - 1 - k) for k in range(rungs)]            # 1/27, 1/9, 1/3, 1
    reach = [eta ** -k for k in range(rungs)]                          # 1, 1/3, 1/9, 1/27
    return sum(r * (c - (cuts[k - 1] if k else 0)) for k, (c, r) in enumerate(zip(cuts, reach)))


ASHA_FRACTION = _asha_fraction()


@dataclass(frozen=True)
class Tier:
    """How thorough a tunnel is: proxy tokens per parameter, search trials, seeds of the checks."""

    name: str
    tokens_per_param: float | None     # None: the target's own ratio
    search_trials: int
    check_seeds: int
    lrs: int = 7                        # lr grid points of each check (factor 2 apart)


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    trials: int
    tokens: float          # tokens all its trials train, in total
    flops: float
    gpu_hours: float
    file: str | None       # the sweep YAML written for it, or the command that runs it
    run: str


@dataclass
class TunnelPlan:
    target: Target
    tier: Tier
    budget_gpu_hours: float
    nproc: int
    gpu: str
    widths: list[int]
    depths: list[int]
    proxy_tokens: float            # tokens of a full search trial at the smallest width
    target_gpu_hours: float
    stages: list[Stage] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """File name -> YAML data: proxy.yaml (the base config) and a sweep spec per stage."""
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages)

    @property
    def share(self) -> float:
        """The tunnel's cost as a share of the target's training."""
        return self.gpu_hours / self.target_gpu_hours


def width_unit(target: Target) -> int:
    """The target's d_head: a proxy width is a whole number of heads of it.

    Example:
        >>> width_unit(load_target("1.2b"))
        64
    """
    m = target.sections["model"]
    d = int(m["d_model"])
    return int(m["head_dim"]) if m.get("head_dim") else d // int(m.get("n_heads") or 4)




def build_stages(plan: TunnelPlan, *, ratio: float, peak: float, mfu: float, target_tokens: float) -> None:
    """Fill `plan.stages`, `plan.files` and `plan.proxy_tokens` for `plan.tier`."""
    t, tier, ws, depths = plan.target, plan.tier, plan.widths, plan.depths
    per_param = tier.tokens_per_param or ratio
    seq = min(PROXY_SEQ, int(t.sections["train"].get("seq_len", PROXY_SEQ)))
    batch_seqs = max(PROXY_BATCH_TOKENS // seq, 1)
    base = _proxy(plan, width=ws[0], depth=depths[1], steps=MIN_STEPS, seq=seq, batch_seqs=batch_seqs)
    n0 = count_params(base.model).non_embedding
    steps = max(MIN_STEPS, math.ceil(per_param * n0 / (seq * batch_seqs)))
    base = _proxy(plan, width=ws[0], depth=depths[1], steps=steps, seq=seq, batch_seqs=batch_seqs)
    tokens = steps * base.tokens_per_step
    plan.proxy_tokens = float(tokens)

    def hours(flops: float) -> float:
        return flops / (peak * mfu) / 3600

    def cost(width: int, depth: int, n_tokens: float) -> float:
        cfg = _proxy(plan, width=width, depth=depth, steps=steps, seq=seq, batch_seqs=batch_seqs)
        return run_flops(cfg, n_tokens)

    lrs = _lr_grid(float(t.sections["train"].get("lr", 0.01)), tier.lrs)
    seeds = list(range(tier.check_seeds))
    grid = {"budget": {"max_concurrent": plan.nproc, "fuse": "auto"}, "resources": {"cpu": 4, "gpu": 1},
            "metric": {"name": "val_loss", "goal": "minimize"}, "seeds": seeds}
    fl = tier.search_trials * ASHA_FRACTION * cost(ws[0], depths[1], tokens)
    grace = max(steps // 27, 1)
    search = {"name": "search", "description": f"muP search for {t.name}: TPE + ASHA at width {ws[0]}",
              "base": "proxy.yaml", "method": "tpe", "metric": grid["metric"],
              "parameters": {"train.lr": {"distribution": "log_uniform", "min": 2.0 ** -10, "max": 2.0 ** -4},
                             "model.init_std": {"distribution": "log_uniform", "min": 0.01, "max": 0.4},
                             "model.scale_emb": {"distribution": "uniform", "min": 2, "max": 20, "step": 1},
                             "model.scale_depth": {"distribution": "uniform", "min": 1, "max": 5, "step": 0.1}},
              "seeds": [0], "search_seed": 0,
              "budget": {"num_trials": tier.search_trials, "max_concurrent": plan.nproc, "fuse": "auto"},
              "early_terminate": {"type": "asha", "grace_period": grace, "reduction_factor": 3},
              "resources": grid["resources"]}
    stages = [Stage("search", f"TPE {tier.search_trials} trials + ASHA (~{ASHA_FRACTION:.2f} of a trial each), "
                              f"width {ws[0]}, {depths[1]} layers", tier.search_trials,
                    tier.search_trials * ASHA_FRACTION * tokens, fl, hours(fl), "search.yaml",
                    "windtunnel sweep search.yaml")]
    specs = {"search.yaml": search}
    checks = (("width_check", "model.d_model", ws, "widths (heads at fixed d_head)", "windtunnel check transfer"),
              ("depth_check", "model.n_layers", depths, "depths", "windtunnel check transfer"))
    for name, key, values, label, check in checks:
        n = len(lrs) * len(values) * len(seeds)
        fl = sum(cost(v if key == "model.d_model" else ws[0], v if key == "model.n_layers" else depths[1], tokens)
                 for v in values) * len(lrs) * len(seeds)
        specs[f"{name}.yaml"] = {"name": name, "description": f"lr x {label} for {t.name}", "base": "proxy.yaml",
                                 "method": "grid", **grid,
                                 "parameters": {key: {"values": values}, "train.lr": {"values": lrs}}}
        stages.append(Stage(name, f"{len(lrs)} lrs x {label} {values} x {len(seeds)} seeds", n, n * tokens, fl,
                            hours(fl), f"{name}.yaml", f"windtunnel sweep {name}.yaml && {check} runs/{name}"))
    horizon = [max(steps // 8, 1), max(steps // 4, 1), max(steps // 2, 1), steps]
    n = len(lrs) * len(horizon) * len(seeds)
    fl = cost(ws[0], depths[1], sum(horizon) * base.tokens_per_step) * len(lrs) * len(seeds)
    specs["horizon.yaml"] = {"name": "horizon", "description": f"lr x token budget for {t.name}",
                             "base": "proxy.yaml", "method": "grid", **grid,
                             "parameters": {"train.steps": {"values": horizon}, "train.lr": {"values": lrs}}}
    stages.append(Stage("horizon", f"{len(lrs)} lrs x budgets {horizon} steps x {len(seeds)} seeds", n,
                        n * tokens, fl, hours(fl), "horizon.yaml",
                        f"windtunnel sweep horizon.yaml && windtunnel check horizon runs/horizon "
                        f"--tokens {target_tokens:.3g}"))
    budgets = sorted({max(round(steps * f), 1) for f in (0.25, 0.35, 0.5, 0.7, 1.0)})
    decay = float(t.sections["train"].get("decay_fraction", 0.1))
    trunk_steps = budgets[-1] + sum(round(decay * b) for b in budgets[:-1])  # trunk + each branch's decay
    fl = sum(cost(w, depths[1], trunk_steps * base.tokens_per_step) for w in ws)
    stages.append(Stage("ladder", f"widths {ws} x budgets {budgets} steps by WSD decay branches",
                        len(ws) * len(budgets),
                        len(ws) * trunk_steps * base.tokens_per_step, fl, hours(fl), None,
                        f"python bench/ladder.py --config proxy.yaml --widths {','.join(map(str, ws))} --budgets "
                        f"{','.join(map(str, budgets))} --decay-fraction {decay} --extra-seeds= "
                        f"--out runs/ladder && windtunnel predict runs/ladder "
                        f"--holdout largest"))
    plan.stages = stages
    # the largest proxies: the widest at the proxy depth (width check), the smallest at twice it (depth check)
    mems = [(memory_per_gpu(_proxy(plan, width=w, depth=L, steps=steps, seq=seq, batch_seqs=batch_seqs)).total, w, L)
            for w, L in ((ws[-1], depths[1]), (ws[0], depths[-1]))]
    mem, w, L = max(mems)
    plan.notes = [f"the largest proxy (width {w}, {L} layers, micro-batch {min(batch_seqs, 32)} x {seq}) needs "
                  f"~{fmt_bytes(mem)} per GPU by the memory accounting `transfer` uses; a smaller "
                  f"micro-batch (train.batch_size, with grad_accum) fits a smaller GPU"]
    head = (f"# written by `windtunnel plan` for target {t.name} ({plan.tier.name} tier); run from this folder.\n"
            f"# set the search's winner here before the checks and the ladder (`windtunnel results runs/search`)\n")
    plan.files = {"proxy.yaml": (head, config_to_dict(base))}
    for name, spec in specs.items():
        plan.files[name] = (f"# written by `windtunnel plan` for target {t.name}: stage {name[:-5]}\n", spec)


def _proxy(plan: TunnelPlan, *, width: int, depth: int, steps: int, seq: int, batch_seqs: int) -> RunConfig:
    """The target's recipe at a proxy's shape and length: heads of the target's d_head, plain
    multi-head attention (what `model.head_dim` takes), shapes computed in memory, one GPU."""
    t = plan.target
    warmup = min(int(t.sections["train"].get("warmup_steps", 0) or 0), max(steps // 10, 1))
    micro = min(batch_seqs, 32)
    overrides: dict[str, Any] = {
        "model.d_model": width, "model.n_layers": depth, "model.head_dim": width_unit(t), "model.n_kv_heads": None,
        "model.n_heads": width // width_unit(t), "model.base_shapes": None, "model.n_layers_base": depth,
        "model.max_seq_len": seq, "train.seq_len": seq, "train.batch_size": micro, "train.warmup_steps": warmup,
        "train.eval_every": max(steps // 8, 1), "train.parallel": "ddp", "train.checkpoint_format": "auto",
        "train.checkpoint_every": 0}
    return t.config(steps=steps, grad_accum=max(batch_seqs // micro, 1), overrides=overrides)


def _lr_grid(center: float, k: int) -> list[float]:
    """k lrs a factor 2 apart around the power of two nearest `center`."""
    e = round(math.log2(center))
    return [2.0 ** (e + i - k // 2) for i in range(k)]
