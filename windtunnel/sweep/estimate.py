"""A dry run's wall-time estimate: time a few real training steps here, then scale by FLOPs.

Tokens and FLOPs say how big a sweep is, not how long it takes on this machine. The estimate trains
the sweep's costliest valid trial for 10 steps (into a temporary folder that is removed), reads the
seconds per step from its per-step log (steps 3 to 9: warm, before the final evaluation) and takes
the rest of its wall time as the fixed cost of a trial (start, data, model, the evaluation), scales
each trial by its FLOPs, and packs the trials on the concurrent slots the spec's `resources` (and
`budget.max_concurrent`) leave on this machine. It measures the machine as it is now:
on a loaded machine the estimate is longer, as the sweep would be.

    >>> plan = plan_sweep(load_sweep("sweeps/lr_init.yaml"))                        # doctest: +SKIP
    >>> estimate_wall_time(plan).seconds                                            # doctest: +SKIP
    151.2
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass

from ..config import config_from_dict, config_to_dict
from ..formatting import fmt_duration
from ..run_folder import METRICS_FILE
from .plan import SweepPlan
from .points import trial_config
from .spec import base_dict

__all__ = ["WallEstimate", "estimate_wall_time"]

PROBE_STEPS = 10
RAY_START_SECONDS = 15.0
"""Starting a private Ray instance, measured on a loaded 2-core machine (the sweep says so as it waits)."""


@dataclass(frozen=True)
class WallEstimate:
    """Seconds for the whole sweep, how they were found, and the measurements behind them."""

    seconds: float
    slots: int
    step_seconds: float
    trial_fixed_seconds: float
    probe_trial: str
    note: str = ""

    def describe(self) -> str:
        return (f"estimated wall time: about {fmt_duration(self.seconds)} on this machine ({self.slots} trial(s) at a "
                f"time; timed {PROBE_STEPS} training steps of {self.probe_trial} here: "
                f"{self.step_seconds:.3g} s/step plus {self.trial_fixed_seconds:.1f} s per trial, scaled by each "
                f"trial's FLOPs; plus ~{RAY_START_SECONDS:.0f} s to start Ray){self.note}")


def estimate_wall_time(plan: SweepPlan) -> WallEstimate | None:
    """Time the costliest valid trial for a few steps here and estimate the sweep's wall time; None when
    nothing can be timed here (no valid trial, or trials that need CUDA on a machine without it).

    Example:
        >>> print(estimate_wall_time(plan_sweep(load_sweep("sweeps/lr_init.yaml"))).describe())  # doctest: +SKIP
    """
    spec = plan.spec
    valid = [c for c in plan.costs if not c.get("error")]
    if not valid:
        return None
    base = base_dict(spec)
    if plan.points is not None:
        point, cost = max(((p, c) for p, c in zip(plan.points, plan.costs) if not c.get("error")),
                          key=lambda pc: pc[1]["flops"])
        cfg, name = trial_config(spec, point, base=base), point.trial_id
    else:  # TPE: its draws are not known yet; the base config stands for them
        cfg, name = config_from_dict(base, source=spec.source), "the base config"
        cost = {"flops": max(c["flops"] for c in valid), "tokens": 0}
    import torch
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        return None
    step_seconds, fixed = _timed_run(cfg)
    flops_per_step = cost["flops"] / cfg.train.steps
    per_trial = [fixed + step_seconds * c["flops"] / flops_per_step for c in valid]
    total = sum(per_trial) * (plan.num_trials / len(valid) if plan.points is None else 1.0)
    slots = _slots(spec, plan.num_trials)
    note = ""
    if plan.fuse > 1:
        note = "; fused groups are timed as separate trials, so this is an upper bound"
    return WallEstimate(seconds=RAY_START_SECONDS + total / slots, slots=slots, step_seconds=step_seconds,
                        trial_fixed_seconds=fixed, probe_trial=name, note=note)


def _timed_run(cfg) -> tuple[float, float]:
    """(seconds per training step, seconds of a trial's fixed cost) from one short run of `cfg`: the step
    time from its per-step log between steps 3 and 9 (warm, before the final evaluation), the rest of
    the run's wall time is the fixed cost (start, data, model, the evaluation)."""
    from ..training.loop import train
    from ..training.metrics import read_metrics
    steps = PROBE_STEPS
    data = config_to_dict(cfg)
    data["train"].update(steps=steps, warmup_steps=0, decay_steps=1, eval_every=steps, log_every=1,
                         checkpoint_every=0, final_checkpoint=False, track=[])  # a probe: no weights, no trackers
    probe = config_from_dict(data, source=cfg.source)
    with tempfile.TemporaryDirectory(prefix="windtunnel-estimate-") as tmp:
        started = time.perf_counter()
        train(probe, out_dir=os.path.join(tmp, "run"))
        wall = time.perf_counter() - started
        seconds = {int(r["step"]): float(r["seconds"]) for r in read_metrics(os.path.join(tmp, "run", METRICS_FILE))}
    step_seconds = (seconds[steps - 1] - seconds[3]) / (steps - 4)
    return step_seconds, max(wall - steps * step_seconds, 0.0)


def _slots(spec, n_trials: int) -> int:
    """Trials at a time on this machine: its CPUs (or GPUs) over what each trial asks for."""
    r = spec.resources
    if r.gpu > 0:
        import torch
        have = torch.cuda.device_count() / r.gpu
    else:
        have = (os.cpu_count() or 1) / max(r.cpu, 1e-9)
    if spec.budget.max_concurrent:
        have = min(have, spec.budget.max_concurrent)
    return max(1, min(n_trials, math.floor(have)))

