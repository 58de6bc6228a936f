"""What a sweep will run: trial points (grid x seeds, or seeded random draws), each trial's run config,
and its cost in tokens and FLOPs. TPE is adaptive, so its plan has a count and a cost range, no points.

Trial ids are `t0000`, `t0001`, ... in expansion order (grid: row-major over the parameters as the spec
lists them, seeds innermost; random: draw order; tpe: the Optuna trial number), so a resumed sweep
knows which trials are done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, apply_overrides, config_from_dict
from ..errors import ConfigError
from .spec import Param, SweepSpec, base_dict

__all__ = ["TrialPoint", "SweepPlan", "plan_sweep", "describe", "expand_points", "sample_points", "trial_overrides",
           "trial_config", "trial_cost", "trial_id", "SHAPE_KEYS"]

# Keys that change the muP base shapes: a trial that sets one gets its own `.bsh` file
# (unless the spec sets model.base_shapes itself), so `dim_model_base` is sweepable.
SHAPE_KEYS = ("model.dim_model_base", "model.n_layers", "model.n_heads", "model.n_kv_heads",
              "model.ffn_mult", "model.vocab_size", "model.norm_gain")
SHAPES_FILE = "base_shapes.bsh"
_COST_SAMPLES = 64  # TPE dry runs estimate the cost range from this many random draws


@dataclass(frozen=True)
class TrialPoint:
    """One trial: its id, seed and the values of the swept keys."""

    trial_id: str
    seed: int
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "seed": self.seed, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialPoint":
        return cls(trial_id=data["trial_id"], seed=int(data["seed"]), params=dict(data["params"]))


@dataclass
class SweepPlan:
    """The expanded sweep. `points` is None for TPE, whose configurations are chosen as it runs."""

    spec: SweepSpec
    points: list[TrialPoint] | None
    num_trials: int
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Per point (or per sampled TPE draw): tokens, flops, and `error` when its config is invalid."""
    fuse: int = 1
    """Trials per fused group (`budget.fuse` resolved; 1: one trial per Ray trial)."""
    groups: list[list[TrialPoint]] | None = None
    """Grid/random with fuse > 1: the fused groups, each one Ray trial (see `windtunnel.sweep.fusion`)."""

    def frame(self):
        """The trials as a DataFrame: trial_id, seed, one column per swept key, tokens, flops, error."""
        import pandas as pd
        rows = []
        for point, cost in zip(self.points or [], self.costs):
            rows.append({"trial_id": point.trial_id, "seed": point.seed, **point.params, **cost})
        return pd.DataFrame(rows)

    def cost_summary(self) -> dict[str, float]:
        """Tokens and FLOPs per trial (min, max) and in total (TPE: the mean draw x num_trials)."""
        valid = [c for c in self.costs if not c.get("error")]
        if not valid:
            return {}
        tokens = [c["tokens"] for c in valid]
        flops = [c["flops"] for c in valid]
        scale = 1.0 if self.points is not None else self.num_trials / len(valid)
        return {"tokens_min": min(tokens), "tokens_max": max(tokens), "flops_min": min(flops),
                "flops_max": max(flops), "tokens_total": sum(tokens) * scale, "flops_total": sum(flops) * scale}


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Expand a spec into its trials with their costs; nothing runs and nothing is written.

    Example:
        >>> plan = plan_sweep(load_sweep("sweeps/lr_init.yaml"))
        >>> plan.num_trials, plan.points[0].trial_id
        (16, 't0000')
    """
    from .fusion import plan_groups
    base = base_dict(spec)
    if spec.method == "tpe":
        draws = sample_points(spec, _COST_SAMPLES)
        costs = [_cost_or_error(spec, p, base) for p in draws]
        k, _ = plan_groups(spec, None, base=base)
        return SweepPlan(spec=spec, points=None, num_trials=spec.budget.num_trials, costs=costs, fuse=k)
    points = expand_points(spec)
    k, groups = plan_groups(spec, points, base=base)
    return SweepPlan(spec=spec, points=points, num_trials=len(points),
                     costs=[_cost_or_error(spec, p, base) for p in points], fuse=k, groups=groups)


def expand_points(spec: SweepSpec) -> list[TrialPoint]:
    """Grid: every combination x every seed. Random: `num_trials` seeded draws x every seed."""
    if spec.method == "grid":
        combos = [{}]
        for key, p in spec.parameters.items():
            combos = [{**c, key: v} for c in combos for v in p.values]
    elif spec.method == "random":
        combos = [pt.params for pt in sample_points(spec, spec.budget.num_trials)]
    else:
        raise ValueError("tpe chooses its points while it runs; expand_points is for grid and random")
    points, index = [], 0
    for combo in combos:
        for seed in spec.seeds:
            points.append(TrialPoint(trial_id=trial_id(index), seed=seed, params=combo))
            index += 1
    return points


def sample_points(spec: SweepSpec, n: int) -> list[TrialPoint]:
    """`n` draws from the spec's space with Tune's samplers and a RandomState(search_seed).

    Draws are made point by point in a fixed order, so asking for more points keeps the first ones.
    """
    import numpy as np
    rng = np.random.RandomState(spec.search_seed)
    domains = {key: _tune_domain(p) for key, p in spec.parameters.items()}
    points = []
    for i in range(n):
        params = {key: _draw(spec.parameters[key], dom, rng) for key, dom in domains.items()}
        points.append(TrialPoint(trial_id=trial_id(i), seed=spec.seeds[0], params=params))
    return points


def trial_id(index: int) -> str:
    return f"t{index:04d}"


def trial_overrides(spec: SweepSpec, point: TrialPoint, *, trial_dir: str | Path | None = None) -> dict[str, Any]:
    """The dotted overrides of one trial: fixed `set`, its swept values, its seed and torch threads.

    A trial that changes the model's shape gets its own base-shapes file in its folder (written by
    the trial itself before training), so sweeping `model.dim_model_base` needs no manual step.
    """
    overrides = {**spec.set, **point.params, "train.seed": point.seed}
    touched = set(spec.set) | set(point.params)
    if "train.threads" not in touched:
        overrides["train.threads"] = max(1, int(spec.resources.cpu))
    if touched & set(SHAPE_KEYS) and "model.base_shapes" not in touched:
        overrides["model.base_shapes"] = str(Path(trial_dir) / SHAPES_FILE) if trial_dir else None
    return overrides


def trial_config(spec: SweepSpec, point: TrialPoint, *, base: dict | None = None,
                 trial_dir: str | Path | None = None) -> RunConfig:
    """The checked run config of one trial; an invalid combination raises ConfigError naming the trial.

    Example:
        >>> cfg = trial_config(spec, TrialPoint("t0000", 0, {"train.lr": 0.01}))
        >>> cfg.train.lr, cfg.train.seed
        (0.01, 0)
    """
    base = base if base is not None else base_dict(spec)
    source = f"{spec.source or spec.name} (trial {point.trial_id})"
    data = apply_overrides(base, trial_overrides(spec, point, trial_dir=trial_dir), source=source)
    return config_from_dict(data, source=source)


def trial_cost(cfg: RunConfig) -> dict[str, float]:
    """Tokens a trial trains on and its training FLOPs (6N per token plus attention)."""
    from ..model.transformer import flops_per_token  # pure arithmetic, but model.py imports torch
    tokens = cfg.train.steps * cfg.tokens_per_step
    return {"tokens": tokens, "flops": float(flops_per_token(cfg.model, cfg.train.seq_len) * tokens)}


def _cost_or_error(spec: SweepSpec, point: TrialPoint, base: dict) -> dict[str, Any]:
    try:
        return {**trial_cost(trial_config(spec, point, base=base)), "error": ""}
    except ConfigError as e:
        return {"tokens": 0, "flops": 0.0, "error": f"{e.key}: {e.message}"}


def _tune_domain(p: Param):
    """Tune's sampler for a parameter. Stepped draws pick an index, so values are min + k * step."""
    from ray import tune
    if p.values is not None:
        return tune.choice(list(range(len(p.values))))
    if p.distribution == "log_uniform":
        return tune.loguniform(p.min, p.max)
    if p.step is not None:
        return tune.randint(0, int(round((p.max - p.min) / p.step)) + 1)
    if p.distribution == "int_uniform":
        return tune.randint(int(p.min), int(p.max) + 1)
    return tune.uniform(p.min, p.max)


def _draw(p: Param, domain, rng) -> Any:
    x = domain.sample(random_state=rng)
    x = x.item() if hasattr(x, "item") else x
    if p.values is not None:
        return p.values[int(x)]
    if p.step is not None:
        x = p.min + int(x) * p.step
    if p.distribution == "int_uniform":
        return int(x)
    return float(f"{x:.6g}")  # readable columns; the rounded value is what the trial trains with


def describe(plan: SweepPlan) -> str:
    """The dry-run text: the trials, their count and their cost."""
    spec = plan.spec
    lines = [f"sweep {spec.name}: method {spec.method}, {plan.num_trials} trials, metric {spec.metric.name} "
             f"({spec.metric.goal}), base {spec.base}"]
    if spec.set:
        lines.append("fixed: " + ", ".join(f"{k}={v}" for k, v in spec.set.items()))
    if plan.points is None:
        for key, p in spec.parameters.items():
            rng = f"{list(p.values)}" if p.values is not None else f"{p.distribution} [{p.min}, {p.max}]" + (
                f" step {p.step}" if p.step is not None else "")
            lines.append(f"  {key}: {rng}")
    else:
        frame = plan.frame()
        if not frame["error"].any():
            frame = frame.drop(columns="error")
        lines.append(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    cost = plan.cost_summary()
    if cost:
        what = "per trial" if plan.points is not None else f"per trial (over {len(plan.costs)} sampled draws)"
        lines.append(f"cost {what}: {_span(cost['tokens_min'], cost['tokens_max'])} tokens, "
                     f"{_span(cost['flops_min'], cost['flops_max'])} FLOPs; total {_eng(cost['tokens_total'])} "
                     f"tokens, {_eng(cost['flops_total'])} FLOPs")
    lines += _describe_groups(plan)
    bad = sum(1 for c in plan.costs if c.get("error"))
    if bad:
        lines.append(f"{bad} of {len(plan.costs)} {'trials' if plan.points is not None else 'draws'} have an "
                     f"invalid config and would be recorded as `error`")
    return "\n".join(lines)


def _describe_groups(plan: SweepPlan) -> list[str]:
    if plan.fuse <= 1:
        return ["fused: no (no two trials share a shape)"] if plan.spec.budget.fuse not in (None, 1) else []
    if plan.groups is None:
        return [f"fused: TPE asks {plan.fuse} configurations at a time and trains each same-shape batch as one model"]
    lines = [f"fused: {len(plan.groups)} group(s) of up to {plan.fuse} same-shape trials, one Ray trial each"]
    lines += [f"  group {i}: {', '.join(p.trial_id for p in group)}" for i, group in enumerate(plan.groups)]
    return lines


def _span(lo: float, hi: float) -> str:
    return _eng(lo) if math.isclose(lo, hi) else f"{_eng(lo)}-{_eng(hi)}"


def _eng(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
