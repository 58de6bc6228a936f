"""What a sweep will run, for the dry run and for the engine: its trials with their cost in tokens and
FLOPs and their groups, from the one pass of `windtunnel.sweep.trial_list`. TPE is adaptive, so its
plan has a count and a cost range, no points. `describe` is the dry-run text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .points import (
    SHAPE_KEYS,
    TrialPoint,
    expand_points,
    sample_points,
    trial_config,
    trial_cost,
    trial_id,
    trial_overrides,
)
from .spec import SweepSpec, base_dict
from .trial_list import (
    Pending,
    PlannedTrial,
    check_fusing,
    fuse_limit,
    group_trials,
    pending_trials,
    plan_trials,
    runs_on_cpu,
)

__all__ = ["TrialPoint", "SweepPlan", "plan_sweep", "describe", "expand_points", "sample_points", "trial_overrides",
           "trial_config", "trial_cost", "trial_id", "SHAPE_KEYS"]

_COST_SAMPLES = 64  # TPE dry runs estimate the cost range from this many random draws


@dataclass
class SweepPlan:
    """The expanded sweep: its trials (grid/random), or for TPE, whose configurations are chosen as it
    runs, a count and the sampled draws its cost range is estimated from."""

    spec: SweepSpec
    num_trials: int
    trials: list[PlannedTrial] | None = None
    """Grid/random: each point with its cost and fusion key, planned once (`windtunnel.sweep.trial_list`)."""
    draws: list[PlannedTrial] = field(default_factory=list)
    """TPE: random draws of its space with their costs (the dry run's cost range)."""
    fuse: int = 1
    """Trials per fused group (`budget.fuse` resolved; 1: one trial per Ray trial)."""
    groups: list[list[TrialPoint]] | None = None
    """Grid/random with fuse > 1: the fused groups, each one Ray trial."""
    fuse_fit: int = 1
    """The largest K one trial's resources hold (`fuse` before `auto` shrinks it to the slots)."""
    on_cpu: bool = False
    """Whether the trials train on a CPU (where `fuse: auto` is one trial per group)."""

    @property
    def points(self) -> list[TrialPoint] | None:
        """The grid/random trials in plan order; None for TPE."""
        return None if self.trials is None else [t.point for t in self.trials]

    @property
    def costs(self) -> list[dict[str, Any]]:
        """Per point (or per sampled TPE draw): tokens, flops, and `error` when its config is invalid."""
        return [t.cost for t in (self.trials if self.trials is not None else self.draws)]

    def pending(self, rows: Mapping[str, Any]) -> Pending:
        """What a session still runs once `rows` (trial id -> results row) are finished.

        Example:
            >>> plan.pending(table.rows).groups                                    # doctest: +SKIP
            [[TrialPoint(trial_id='t0002', ...)], ...]
        """
        return pending_trials(self.spec, self.trials, rows, k=self.fuse_fit)

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
    """Expand a spec into its trials with their costs and groups; nothing runs and nothing is written.
    Raises ConfigError for a `budget.fuse` that cannot fuse or fit (`windtunnel.sweep.trial_list`).

    Example:
        >>> plan = plan_sweep(load_sweep("sweeps/lr_init.yaml"))
        >>> plan.num_trials, plan.points[0].trial_id
        (16, 't0000')
    """
    base = base_dict(spec)
    if spec.method == "tpe":
        draws = plan_trials(spec, sample_points(spec, _COST_SAMPLES), base=base)
        k = fuse_limit(spec, None, base=base)
        check_fusing(spec, None, k)
        return SweepPlan(spec=spec, num_trials=spec.budget.num_trials, draws=draws, fuse=k, fuse_fit=k,
                         on_cpu=runs_on_cpu(spec, base))
    trials = plan_trials(spec, expand_points(spec), base=base)
    fit = fuse_limit(spec, trials, base=base)
    k, groups = group_trials(spec, trials, fit)
    check_fusing(spec, groups, fit)
    return SweepPlan(spec=spec, num_trials=len(trials), trials=trials, fuse=k, groups=groups if k > 1 else None,
                     fuse_fit=fit, on_cpu=runs_on_cpu(spec, base))


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
        if plan.spec.budget.fuse == "auto" and plan.on_cpu:
            return ["fused: no (fuse: auto on a CPU, where a fused step costs more than its K plain steps)"]
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
