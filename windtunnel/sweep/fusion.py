"""`budget.fuse`: which trials of a sweep train together as one fused model, and how many.

Trials fuse when their run configs differ only in keys that keep every tensor's shape and the loop
(`windtunnel.training.fusable.FREE_KEYS`: lr, init, muP multipliers, dim_model_base, weight decay,
seed, schedule shape...). Grid and random points are grouped in plan order: consecutive same-shape
points fill groups of K. Sweeping a shape key such as `model.d_model` splits the points into one
class per value; each class is grouped on its own.

Rules (decided here, stated in the README):
- `fuse: K` with K > 1 when no two trials share a shape: ConfigError (exit 2): the user asked for
  fusing that cannot happen. `fuse: auto` then quietly runs one trial per Ray trial.
- A group of K that does not fit one trial's memory share (RAM x resources.cpu / CPU count, or the
  GPU's memory x resources.gpu): ConfigError naming K and the estimate. `auto` picks the largest K
  (at most 16) that fits, and no larger than keeps every concurrent slot busy.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..training.fusable import AUTO_MAX, FREE_KEYS, fusion_key, group_memory_bytes
from .points import TrialPoint, trial_config
from .spec import SweepSpec

__all__ = ["check_fusing", "fusable_params", "fuse_size", "group_points", "plan_groups", "slot_memory_bytes"]


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


def fuse_size(spec: SweepSpec, cfg: RunConfig) -> int:
    """K for this spec (1: no fusing), checked against the memory of one trial's resources."""
    fuse = spec.budget.fuse
    if fuse is None or fuse == 1:
        return 1
    budget, one = slot_memory_bytes(spec), group_memory_bytes(cfg, 1)
    if fuse == "auto":
        return max(1, min(AUTO_MAX, int(budget // one)))
    if group_memory_bytes(cfg, fuse) > budget:
        raise ConfigError(spec.source, "budget.fuse", f"a group of K={fuse} trials needs about "
                          f"{_gib(group_memory_bytes(cfg, fuse))} ({_gib(one)} per trial), more than the "
                          f"{_gib(budget)} one trial's resources get here; lower fuse or use auto "
                          f"(largest that fits: {max(1, int(budget // one))})")
    return fuse


def group_points(spec: SweepSpec, points: list[TrialPoint], *, base: dict[str, Any],
                 k: int) -> list[list[TrialPoint]]:
    """Points in groups of at most `k` sharing one fusion key, in plan order; a point whose config
    is invalid gets a group of its own (it is recorded as an error there)."""
    classes: dict[str, list[TrialPoint]] = {}
    for point in points:
        try:
            key = fusion_key(trial_config(spec, point, base=base))
        except ConfigError:
            key = f"invalid:{point.trial_id}"
        classes.setdefault(key, []).append(point)
    groups = [members[i:i + k] for members in classes.values() for i in range(0, len(members), k)]
    return sorted(groups, key=lambda g: g[0].trial_id)


def check_fusing(spec: SweepSpec, groups: list[list[TrialPoint]] | None, k: int) -> None:
    """Refuse a fixed K > 1 that cannot fuse anything (see the module docstring)."""
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


def plan_groups(spec: SweepSpec, points: list[TrialPoint] | None, *,
                base: dict[str, Any]) -> tuple[int, list[list[TrialPoint]] | None]:
    """(K, groups) of a sweep: groups of the grid/random `points`, None for TPE (grouped as it asks)
    or when K is 1. Raises ConfigError for the refusals in the module docstring."""
    from .points import sample_points
    first = (points or sample_points(spec, 1))[0]
    try:
        cfg = trial_config(spec, first, base=base)
    except ConfigError:
        return 1, None  # the trial errors on its own; nothing to size
    k = fuse_size(spec, cfg)
    if spec.budget.fuse == "auto" and points is not None:
        k = min(k, -(-len(points) // _slots(spec)))  # small groups keep every slot busy
    if k <= 1:
        return 1, None
    groups = group_points(spec, points, base=base, k=k) if points is not None else None
    check_fusing(spec, groups, k)
    if groups is not None and all(len(g) == 1 for g in groups):
        return 1, None  # auto with nothing to fuse: run unfused
    return k, groups


def _slots(spec: SweepSpec) -> int:
    """Ray trials that run at once on this machine."""
    by_cpu = max(1, int((os.cpu_count() or 1) // spec.resources.cpu))
    return min(spec.budget.max_concurrent or by_cpu, by_cpu)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"
