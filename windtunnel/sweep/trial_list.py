"""The one pass from a spec to what the engine runs: expand, check, group and order the trials once.

Each trial's run config is built here once (for its cost, its validity and its fusion key); the
engine then consumes a plain list of groups, each one Ray trial of K >= 1 sweep trials. K is
`budget.fuse`: null or 1 is one trial per group, `auto` or a number groups trials that may train as
one fused model. Trials fuse when their run configs differ only in keys that keep every tensor's
shape and the loop (`windtunnel.training.fusable.FREE_KEYS`: lr, init, muP multipliers,
dim_model_base, weight decay, seed, schedule shape...); consecutive same-shape trials fill groups
of K, in plan order, and groups run in the order of their first trial. TPE chooses its trials as
it runs, so its groups are asked at run time (`windtunnel.sweep.searcher`), K at a time.

Rules:
- `fuse: K` with K > 1 when no two trials share a shape: ConfigError (exit 2): the user asked for
  fusing that cannot happen. `fuse: auto` then quietly runs one trial per group.
- A group of K that does not fit one trial's memory share (RAM x resources.cpu / CPU count, or the
  GPU's memory x resources.gpu): ConfigError naming K and the estimate. `auto` picks the largest K
  (at most 16) that fits, and no larger than keeps every concurrent slot busy.
- `auto` is K = 1 for trials that run on a CPU (`resources.gpu: 0` or `train.device: cpu`): there a
  fused step costs more than its K plain steps (the batched matmuls and per-trial multipliers run
  slower than the plain ones, `bench/fused_step.py`), and the per-trial start-up it saves is too small
  to make up for it: measured 0.99 / 0.88 / 0.79x the trials per hour at K = 4 / 8 / 16, width 64, 40
  steps, 2 idle cores (`bench/fused_sweep.py --repeats 3`). A fixed `fuse: K` still fuses on a CPU.

Example:
    >>> trials = plan_trials(spec, expand_points(spec), base=base_dict(spec))
    >>> k = fuse_limit(spec, trials, base=base_dict(spec))
    >>> k, groups = group_trials(spec, trials, k)
    >>> [[p.trial_id for p in g] for g in groups]                            # doctest: +SKIP
    [['t0000', 't0002'], ['t0001', 't0003']]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import RunConfig
from ..errors import ConfigError
from ..training.fusable import AUTO_MAX, FREE_KEYS, fusion_key, group_memory_bytes
from .growth import keep_trial_ids
from .points import TrialPoint, sample_points, trial_config, trial_cost
from .spec import SweepSpec

__all__ = ["PlannedTrial", "Pending", "plan_trials", "fuse_limit", "group_trials", "check_fusing",
           "pending_trials", "fusable_params", "slot_memory_bytes", "runs_on_cpu"]


@dataclass(frozen=True)
class PlannedTrial:
    """One trial with what its config says: tokens, FLOPs, `error` (its ConfigError, "" when valid)
    and its fusion key (None when invalid)."""

    point: TrialPoint
    cost: dict[str, Any]
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Pending:
    """What a session of the sweep still has to do (`pending_trials`)."""

    total: int
    """Trials in the sweep."""
    groups: list[list[TrialPoint]] | None
    """Grid/random: the groups to run, in order; None for TPE (asked as it runs)."""
    remaining: int
    """Trials left to run (the invalid ones included until they are recorded)."""
    k: int = 1
    """Trials per group (TPE: configurations asked per Ray trial)."""
    invalid: list[TrialPoint] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """Invalid trials to record as `error` rows without running: {trial_id: reason}."""


def plan_trials(spec: SweepSpec, points: list[TrialPoint], *, base: dict[str, Any]) -> list[PlannedTrial]:
    """Build each point's run config once: its cost, whether it is valid, its fusion key.

    Example:
        >>> [t.cost["error"] for t in plan_trials(spec, expand_points(spec), base=base_dict(spec))]  # doctest: +SKIP
        ['', 'model.d_model: d_head=30/2=15 must be even ...']
    """
    out = []
    for point in points:
        try:
            cfg = trial_config(spec, point, base=base)
        except ConfigError as e:
            out.append(PlannedTrial(point, {"tokens": 0, "flops": 0.0, "error": f"{e.key}: {e.message}"}))
            continue
        out.append(PlannedTrial(point, {**trial_cost(cfg), "error": ""}, fusion_key(cfg)))
    return out


def fuse_limit(spec: SweepSpec, trials: list[PlannedTrial] | None, *, base: dict[str, Any]) -> int:
    """K that fits one trial's resources (1: no fusing), sized on the first trial (TPE: one draw).
    Raises ConfigError when a fixed K does not fit (see the module docstring).

    Example:
        >>> fuse_limit(spec_with_fuse_auto, trials, base=base)                     # doctest: +SKIP
        16
    """
    if spec.budget.fuse in (None, 1):
        return 1
    first = trials[0].point if trials else sample_points(spec, 1)[0]
    try:
        cfg = trial_config(spec, first, base=base)
    except ConfigError:
        return 1  # the trial errors on its own; nothing to size
    return _fuse_size(spec, cfg)


def group_trials(spec: SweepSpec, trials: list[PlannedTrial], k: int) -> tuple[int, list[list[TrialPoint]]]:
    """(K, groups): `trials` in groups of at most K sharing one fusion key, ordered by their first
    trial; an invalid trial is a group of its own. Under `auto` K shrinks from `k` so that every
    concurrent slot gets a group; K is 1 when no group holds two trials."""
    if spec.budget.fuse == "auto" and trials:
        k = min(k, -(-len(trials) // _slots(spec)))  # small groups keep every slot busy
    k = max(k, 1)
    classes: dict[str, list[TrialPoint]] = {}
    for t in trials:
        classes.setdefault(t.key or f"invalid:{t.point.trial_id}", []).append(t.point)
    groups = [members[i:i + k] for members in classes.values() for i in range(0, len(members), k)]
    return (k if any(len(g) > 1 for g in groups) else 1), sorted(groups, key=lambda g: g[0].trial_id)


def check_fusing(spec: SweepSpec, groups: list[list[TrialPoint]] | None, k: int) -> None:
    """Refuse a fixed K > 1 that cannot fuse anything (see the module docstring).

    Example:
        >>> check_fusing(spec_fuse_4_over_widths, [[p0], [p1]], 4)                  # doctest: +SKIP
        ConfigError: s.yaml: budget.fuse: no two trials can be fused: they differ in model.d_model, ...
    """
    if not isinstance(spec.budget.fuse, int) or k <= 1:
        return
    shape_keys = [key for key in spec.param_keys if key not in fusable_params(spec)]
    if groups is not None and len(groups) > 1 and all(len(g) == 1 for g in groups):
        why = f"they differ in {', '.join(shape_keys)}" if shape_keys else "their configs differ in shape"
    elif groups is None and not fusable_params(spec):
        why = f"every swept key changes shapes ({', '.join(shape_keys)})"
    else:
        return
    raise ConfigError(spec.source, "budget.fuse", f"no two trials can be fused: {why}, and only trials "
                      "that differ in lr, init, muP multipliers, weight decay, seed or schedule shape fuse; "
                      "remove budget.fuse (or use auto, which then runs them unfused)")


def pending_trials(spec: SweepSpec, trials: list[PlannedTrial] | None, rows: Mapping[str, Any], *,
                   k: int) -> Pending:
    """What is left after the finished `rows` (trial id -> results row): grid/random trials keep the
    ids their rows have (a grown grid, `windtunnel.sweep.growth`), invalid ones are set apart, the
    rest grouped by K; TPE: the budget left.

    Example:
        >>> pending = pending_trials(spec, plan.trials, table.rows, k=plan.fuse_fit)
        >>> pending.remaining, [[p.trial_id for p in g] for g in pending.groups]
        (3, [['t0001'], ['t0002'], ['t0003']])
    """
    if trials is None:
        total = spec.budget.num_trials
        return Pending(total=total, groups=None, remaining=max(total - len(rows), 0), k=max(k, 1))
    points = keep_trial_ids([t.point for t in trials], rows)
    todo = [PlannedTrial(p, t.cost, t.key) for p, t in zip(points, trials) if p.trial_id not in rows]
    invalid = [t.point for t in todo if t.cost.get("error")]
    k, groups = group_trials(spec, [t for t in todo if not t.cost.get("error")], k)
    return Pending(total=len(points), groups=groups, remaining=len(todo), k=k, invalid=invalid,
                   reasons={t.point.trial_id: t.cost["error"] for t in todo if t.cost.get("error")})


def fusable_params(spec: SweepSpec) -> list[str]:
    """Swept keys whose values can differ inside a group (seeds count as one when there are several)."""
    keys = [k for k in spec.param_keys if k in FREE_KEYS or k.startswith(("data.mixture.", "data.val_mixture."))]
    return keys + (["seeds"] if len(spec.seeds) > 1 else [])


def slot_memory_bytes(spec: SweepSpec) -> float:
    """Memory one Ray trial may use: its share of the GPU, or of this machine's RAM by CPUs."""
    if spec.resources.gpu > 0:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory * min(spec.resources.gpu, 1.0)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram * min(spec.resources.cpu / (os.cpu_count() or 1), 1.0)


def _fuse_size(spec: SweepSpec, cfg: RunConfig) -> int:
    """K for this spec, checked against the memory of one trial's resources."""
    fuse = spec.budget.fuse
    if fuse == "auto" and runs_on_cpu(spec, cfg):
        return 1  # fusing loses on a CPU (see the module docstring)
    budget, one = slot_memory_bytes(spec), group_memory_bytes(cfg, 1)
    if fuse == "auto":
        return max(1, min(AUTO_MAX, int(budget // one)))
    if group_memory_bytes(cfg, fuse) > budget:
        raise ConfigError(spec.source, "budget.fuse", f"a group of K={fuse} trials needs about "
                          f"{_gib(group_memory_bytes(cfg, fuse))} ({_gib(one)} per trial), more than the "
                          f"{_gib(budget)} one trial's resources get here; lower fuse or use auto "
                          f"(largest that fits: {max(1, int(budget // one))})")
    return fuse


def runs_on_cpu(spec: SweepSpec, cfg: RunConfig | Mapping[str, Any]) -> bool:
    """Whether a trial of this spec trains on a CPU: no GPU in its resources (Ray then hides every GPU
    from it) or `train.device: cpu` (`cfg`: a run config or its plain-data form).

    Example:
        >>> runs_on_cpu(spec_without_gpus, base_dict(spec_without_gpus))          # doctest: +SKIP
        True
    """
    device = cfg["train"].get("device") if isinstance(cfg, Mapping) else cfg.train.device
    return spec.resources.gpu <= 0 or device == "cpu"


def _slots(spec: SweepSpec) -> int:
    """Ray trials that run at once on this machine."""
    by_cpu = max(1, int((os.cpu_count() or 1) // spec.resources.cpu))
    return min(spec.budget.max_concurrent or by_cpu, by_cpu)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"
