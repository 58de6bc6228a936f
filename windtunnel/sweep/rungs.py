"""ASHA for every sweep: the rungs live in a file of the run folder, shared by every group.

Ray Tune's ASHA decides per Ray trial; a Ray trial is a group of K >= 1 sweep trials, so the same
rule (asynchronous successive halving, as `ray.tune.schedulers.ASHAScheduler` applies it) is
applied here per sweep trial, K = 1 included. Rungs sit at grace_period x reduction_factor^k steps below max_t;
a configuration reaching a rung is stopped when its metric is worse than the best
1/reduction_factor of those recorded there so far (the first one at a rung always goes on). The
file (`asha.json`, guarded by a lock file) is read and written by every group of the sweep, on any
node that shares the run folder, and survives a resume.

Example:
    >>> rungs = RungFile("runs/x/asha.json", grace_period=50, reduction_factor=3, max_t=300)
    >>> rungs.should_stop("t0003", step=50, value=2.41)
    False
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..fileio import write_json
from ..run_folder import RUNGS_FILE

__all__ = ["RUNGS_FILE", "RungFile", "milestones"]


def milestones(*, grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The rungs' steps, highest first (Ray's ASHA with one bracket)."""
    n = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor ** k) for k in reversed(range(n))]


class RungFile:
    """The rungs of one sweep, stored as {milestone: {trial_id: value}}."""

    def __init__(self, path: str | os.PathLike, *, grace_period: int, reduction_factor: float, max_t: int,
                 goal: str = "minimize"):
        self.path = Path(path)
        self.rf = reduction_factor
        self.sign = -1.0 if goal == "minimize" else 1.0  # rewards: larger is better
        self.milestones = milestones(grace_period=grace_period, reduction_factor=reduction_factor, max_t=max_t)

    def should_stop(self, trial_id: str, *, step: int, value: float) -> bool:
        """Record `value` of `trial_id` at the highest rung `step` reached; True when it should stop."""
        reward = self.sign * value if math.isfinite(value) else -math.inf
        with self._locked():
            rungs = self._read()
            for milestone in self.milestones:
                recorded = rungs.setdefault(str(milestone), {})
                if step < milestone or trial_id in recorded:
                    continue
                values = [v for v in recorded.values() if math.isfinite(v)]
                stop = bool(values) and reward < np.nanpercentile(values, (1 - 1 / self.rf) * 100)
                recorded[trial_id] = reward
                write_json(self.path, rungs)
                return stop
        return False

    def _read(self) -> dict[str, dict[str, float]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
