"""Grid and random sweeps in the sweep's Optuna study, so optuna-dashboard shows every sweep.

TPE trials are the searcher's own (`windtunnel.sweep.study`). A grid or random trial is added to
the study when it starts (RUNNING, with its parameters and its folder) and told its outcome when it
ends: COMPLETE with its metric (a diverged trial: inf and `diverged: true`), PRUNED with its last
value at its step, FAIL for an error. `sync` adds the rows the study lacks (trials recorded as
errors without running, a folder swept before studies were kept), so the study always matches the
results table. Recording never stops a sweep: a failure is one warning and the record stops.

Example:
    >>> record = StudyRecord(run_dir, spec, warn=print)
    >>> record.trial_started("t0000", {"train.lr": 0.01}, seed=0)
    >>> record.trial_finished({"trial_id": "t0000", "status": "ok", "val_loss": 2.1, "train.lr": 0.01, ...})
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .spec import SweepSpec
from .study import open_study, optuna_space, outcome_attrs, study_state, study_trial_id, trial_attrs

__all__ = ["StudyRecord", "TrialEvents"]


class StudyRecord:
    """The study of a grid or random sweep, written as its trials start and end (in the driver)."""

    def __init__(self, run_dir: str | Path, spec: SweepSpec, *, warn: Callable[[str], None]):
        self.run_dir, self.spec, self.warn = Path(run_dir), spec, warn
        self.study = open_study(run_dir, spec)
        self.space = optuna_space(spec)
        self.live: dict[str, int] = {}  # trial id -> study trial number, while RUNNING
        self.recorded = {study_trial_id(t) for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def trial_started(self, tid: str, params: dict[str, Any], seed: int | None = None) -> None:
        self._guard(self._start, tid, params, seed)

    def trial_finished(self, row: dict[str, Any]) -> None:
        self._guard(self._finish, row)

    def trial_unfinished(self, tid: str) -> None:
        from optuna.trial import TrialState
        number = self.live.pop(tid, None)
        if number is not None:  # stopped by the time budget or an interrupt: it runs again on --resume
            self._guard(lambda: self.study.tell(number, state=TrialState.FAIL))

    def sync(self, rows: dict[str, dict[str, Any]]) -> None:
        """Add the finished rows the study does not hold yet."""
        for tid in sorted(set(rows) - self.recorded - set(self.live)):
            self.trial_finished(rows[tid])

    def _start(self, tid: str, params: dict[str, Any], seed: int | None) -> None:
        from optuna.trial import TrialState, create_trial
        params, dists = self._params(params)
        self.study.add_trial(create_trial(state=TrialState.RUNNING, params=params, distributions=dists,
                                          user_attrs=trial_attrs(self.run_dir, tid, seed)))
        self.live[tid] = len(self.study.get_trials(deepcopy=False)) - 1

    def _finish(self, row: dict[str, Any]) -> None:
        from optuna.trial import TrialState, create_trial
        tid, metric = str(row["trial_id"]), self.spec.metric.name
        state, value = study_state(row, metric)
        step = int(row.get("steps") or 0) if _number(row.get("steps")) else 0
        attrs = {**trial_attrs(self.run_dir, tid, _seed(row)), **outcome_attrs(row)}
        number = self.live.pop(tid, None)
        if number is None:  # never seen starting (recorded without running, or an older folder)
            params, dists = self._params({k: row.get(k) for k in self.spec.param_keys})
            inter = {step: value} if state == TrialState.PRUNED else None
            self.study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                              params=params, distributions=dists, user_attrs=attrs,
                                              intermediate_values=inter))
        else:
            trial = self.study.get_trials(deepcopy=False)[number]
            for key, attr in attrs.items():
                self.study._storage.set_trial_user_attr(trial._trial_id, key, attr)
            if state == TrialState.PRUNED:
                self.study._storage.set_trial_intermediate_value(trial._trial_id, step, value)
            self.study.tell(number, value if state == TrialState.COMPLETE else None, state=state)
        self.recorded.add(tid)

    def _params(self, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The swept values with their distributions; a value the spec's distribution cannot hold
        (a list, a rounded draw at the edge) gets a one-choice distribution of its text."""
        from optuna.distributions import CategoricalDistribution
        params, dists = {}, {}
        for key, value in values.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            value = value.item() if hasattr(value, "item") else value
            dist = self.space.get(key)
            try:
                if dist is None or not dist._contains(dist.to_internal_repr(value)):
                    raise ValueError(value)
            except (ValueError, TypeError):
                value = value if isinstance(value, (str, int, float, bool)) else str(value)
                dist = CategoricalDistribution([value])
            params[key], dists[key] = value, dist
        return params, dists

    def _guard(self, fn, *args, **kwargs) -> None:
        if self.study is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the study is a view of the sweep, never its end
            self.study = None
            self.warn(f"warning: study.db no longer recorded ({type(e).__name__}: {e}); results.parquet is complete")


class TrialEvents:
    """The sweep's trial events (started, finished, unfinished) told to the console progress and the
    study record; the engines call it as they would the progress alone."""

    def __init__(self, progress, record: StudyRecord | None):
        self.progress, self.record = progress, record

    def trial_started(self, tid: str, params: dict[str, Any]) -> None:
        self.progress.trial_started(tid, params)
        if self.record is not None:
            self.record.trial_started(tid, params)

    def trial_finished(self, row: dict[str, Any]) -> None:
        self.progress.trial_finished(row)
        if self.record is not None:
            self.record.trial_finished(row)

    def trial_unfinished(self, tid: str) -> None:
        self.progress.trial_unfinished(tid)
        if self.record is not None:
            self.record.trial_unfinished(tid)


def _number(x: Any) -> bool:
    try:
        return not math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def _seed(row: dict[str, Any]) -> int | None:
    return int(row["seed"]) if _number(row.get("seed")) else None
