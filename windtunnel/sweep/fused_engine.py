"""Ray Tune pieces of a fused sweep (`budget.fuse` > 1): one Ray trial per group of trials.

Grid and random sweeps hand Tune their planned groups (`SweepPlan.groups`); TPE hands it a searcher
that asks the study for K configurations per Ray trial (`study.make_group_searcher`). Tune's ASHA is
not used: it would stop whole groups, so each trial is judged at each rung inside its group
(`windtunnel.sweep.rungs`). A driver-side callback turns the rows that groups report into table rows
as each trial ends, so the table stays one row per configuration, complete even across nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..analysis.runs import SUMMARY_FILE
from ..fileio import write_json
from .fused_trial import GROUP_KEY, rows_of, run_group
from .points import TrialPoint
from .progress import Progress
from .results import ResultsTable, make_row
from .trial import TrialContext

__all__ = ["GroupSetup", "group_points_of", "group_setup"]


@dataclass
class GroupSetup:
    """What `run_tune` needs to run groups instead of single trials."""

    trainable: Any
    param_space: dict[str, Any]
    search_alg: Any
    num_samples: int
    callback: Any


def group_points_of(config: dict[str, Any]) -> list[TrialPoint]:
    return [TrialPoint.from_dict(p) for p in config.get(GROUP_KEY) or []]


def group_setup(ctx: TrialContext, *, table: ResultsTable, progress: Progress,
                groups: list[list[TrialPoint]] | None, k: int, remaining: int) -> GroupSetup:
    """The trainable, search space, searcher and recorder of a fused sweep.

    Example:
        >>> setup = group_setup(ctx, table=table, progress=show, groups=plan.groups, k=4, remaining=28)
    """
    from ray import tune
    if groups is not None:
        space = {GROUP_KEY: tune.grid_search([[p.to_dict() for p in g] for g in groups])}
        search_alg, num_samples = None, 1
    else:
        from .study import make_group_searcher
        space, num_samples = {}, math.ceil(remaining / k)
        search_alg = make_group_searcher(ctx.run_dir, ctx.spec, k=k, total=remaining)
    return GroupSetup(trainable=run_group, param_space=space, search_alg=search_alg, num_samples=num_samples,
                      callback=_group_recorder(ctx, table, progress))


def _group_recorder(ctx: TrialContext, table: ResultsTable, progress: Progress):
    from ray.tune import Callback

    class _GroupRecorder(Callback):
        def __init__(self):
            self.open: dict[str, set[str]] = {}  # Tune trial id -> our trial ids not yet recorded

        def on_trial_start(self, iteration, trials, trial, **info):
            points = group_points_of(trial.config)
            self.open[trial.trial_id] = {p.trial_id for p in points}
            for p in points:
                progress.trial_started(p.trial_id, p.params)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._record_rows(trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record_rows(trial, trial.last_result)
            for tid in sorted(self.open.pop(trial.trial_id, set())):
                progress.trial_unfinished(tid)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = trial.get_error()
            message = " ".join(str(error).split())[:500] if error else "the group's worker failed"
            left = self.open.pop(trial.trial_id, set())
            for p in group_points_of(trial.config):
                if p.trial_id in left:
                    outcome = {"status": "error", "message": message, "steps": 0, "tokens": 0, "seconds": 0.0}
                    tdir = ctx.trial_dir(p.trial_id)
                    if tdir.is_dir():
                        write_json(tdir / SUMMARY_FILE, outcome)
                    self._add(make_row(p.to_dict(), outcome))

        def on_experiment_end(self, trials, **info):
            for left in self.open.values():  # stopped by the time budget or an interrupt
                for tid in sorted(left):
                    progress.trial_unfinished(tid)
            self.open.clear()

        def _record_rows(self, trial, result) -> None:
            left = self.open.get(trial.trial_id, set())
            for row in rows_of(result):
                if row["trial_id"] in left:
                    left.discard(row["trial_id"])
                    self._add(row)

        def _add(self, row: dict[str, Any]) -> None:
            table.add(row)
            progress.trial_finished(row)

    return _GroupRecorder()
