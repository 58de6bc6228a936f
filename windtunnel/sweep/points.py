"""A sweep's trials: their ids, seeds and swept values (grid x seeds, or seeded random draws), and each
trial's run config and cost. `trial_list` builds each config once, and groups and orders the trials.

Trial ids are `t0000`, `t0001`, ... in expansion order (grid: row-major over the parameters as the spec
lists them, seeds innermost; random: draw order; tpe: the Optuna trial number), so a resumed sweep
knows which trials are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import SHAPE_KEYS, RunConfig, apply_overrides, config_from_dict, derive_shapes
from .spec import Param, SweepSpec, base_dict

__all__ = ["TrialPoint", "expand_points", "sample_points", "trial_overrides", "trial_config", "trial_cost",
           "trial_id", "SHAPE_KEYS"]


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


def trial_overrides(spec: SweepSpec, point: TrialPoint) -> dict[str, Any]:
    """The dotted overrides of one trial: fixed `set`, its swept values, its seed and torch threads.

    A trial that changes the model's shape (a `SHAPE_KEYS` key) gets base shapes derived for its own
    model, by the same rule as `train --set` (`windtunnel.config.derive_shapes`), so sweeping
    `model.dim_model_base` or `model.n_layers` needs no manual step. Trials keep no weights
    (`train.final_checkpoint` false: hundreds of trials would keep hundreds of checkpoints) unless
    the spec sets it.
    """
    overrides = derive_shapes({**spec.set, **point.params, "train.seed": point.seed})
    if "train.threads" not in overrides:
        overrides["train.threads"] = max(1, int(spec.resources.cpu))
    overrides.setdefault("train.final_checkpoint", False)
    return overrides


def trial_config(spec: SweepSpec, point: TrialPoint, *, base: dict | None = None) -> RunConfig:
    """The checked run config of one trial; an invalid combination raises ConfigError naming the trial.

    Example:
        >>> cfg = trial_config(spec, TrialPoint("t0000", 0, {"train.lr": 0.01}))
        >>> cfg.train.lr, cfg.train.seed
        (0.01, 0)
    """
    base = base if base is not None else base_dict(spec)
    source = f"{spec.source or spec.name} (trial {point.trial_id})"
    data = apply_overrides(base, trial_overrides(spec, point), source=source)
    return config_from_dict(data, source=source)


def trial_cost(cfg: RunConfig) -> dict[str, float]:
    """Tokens a trial trains on and its training FLOPs (6N per token plus attention)."""
    from ..model.accounting import flops_per_token  # pure arithmetic: no torch
    tokens = cfg.train.steps * cfg.tokens_per_step
    return {"tokens": tokens, "flops": float(flops_per_token(cfg.model, cfg.train.seq_len) * tokens)}


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
