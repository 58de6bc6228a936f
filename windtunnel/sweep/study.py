"""The Optuna side of sweeps: a study in SQLite under the run folder, and Ray Tune's `OptunaSearch`
pointed at it for TPE.

Every sweep has its study (`runs/<name>/study.db`, study name = sweep name), so
`optuna-dashboard sqlite:///runs/<name>/study.db` shows it: TPE's trials are the searcher's own,
grid and random trials are recorded as they start and end (`windtunnel.sweep.study_record`). Each
trial carries user attributes: `trial_id`, `trial_dir` (its folder), `seed`, and once finished
`status` and `diverged`. A resumed sweep continues the study: trials the killed sweep left RUNNING
are closed first (COMPLETE when their folder shows they finished, else FAIL), and TPE asks only for
the rest of the budget.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .spec import Param, SweepSpec
from .trial import TRIAL_NUMBER_KEY

__all__ = ["STUDY_FILE", "storage_url", "open_study", "close_stale_trials", "optuna_space", "make_searcher",
           "make_group_searcher", "enqueue_first_trials", "trial_attrs", "outcome_attrs", "study_trial_id"]

STUDY_FILE = "study.db"


def storage_url(run_dir: str | Path) -> str:
    """The SQLAlchemy URL of a sweep's study, e.g. for `optuna-dashboard`."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def open_study(run_dir: str | Path, spec: SweepSpec):
    """Create the sweep's study, or load it when it exists (resume).

    Example:
        >>> study = open_study("runs/mup_space", load_sweep("sweeps/mup_space.yaml"))
        >>> len(study.trials)                                             # doctest: +SKIP
        42
    """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress lines say the same
    direction = "minimize" if spec.metric.goal == "minimize" else "maximize"
    return optuna.create_study(storage=storage_url(run_dir), study_name=spec.name, direction=direction,
                               load_if_exists=True)


def trial_attrs(run_dir: str | Path, trial_id: str, seed: int | None = None) -> dict[str, Any]:
    """The user attributes a study trial gets when it starts: its id, its folder, its seed."""
    attrs = {"trial_id": trial_id, "trial_dir": str(Path(run_dir).resolve() / "trials" / trial_id)}
    return {**attrs, "seed": int(seed)} if seed is not None else attrs


def outcome_attrs(row: dict[str, Any]) -> dict[str, Any]:
    """The user attributes a study trial gets when it ends: status, the diverged flag, steps."""
    steps = row.get("steps")
    return {"status": str(row.get("status")), "diverged": row.get("status") == "diverged",
            "steps": int(steps) if steps is not None and not _nan(steps) else 0}


def study_trial_id(trial) -> str:
    """Which sweep trial a study trial is: its `trial_id` attribute (grid, random), else its number (tpe)."""
    return str(trial.user_attrs.get("trial_id") or f"t{trial.number:04d}")


def close_stale_trials(study, finished: dict[str, dict[str, Any]]) -> int:
    """Close trials a killed sweep left RUNNING; `finished` maps trial id -> its results row.

    Returns how many were closed. A trial whose row exists gets its value (or FAIL for error rows,
    PRUNED for pruned ones); one without a row is FAIL, and the resumed sweep asks for a new trial.
    """
    from optuna.trial import TrialState
    closed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        row = finished.get(study_trial_id(t))
        value = None if row is None else float(row.get("val_loss", math.nan))
        if row is not None:
            for key, attr in outcome_attrs(row).items():
                study._storage.set_trial_user_attr(t._trial_id, key, attr)
        if row is None or row["status"] == "error" or math.isnan(value):
            study.tell(t.number, state=TrialState.FAIL)
        elif row["status"] == "pruned":
            study.tell(t.number, state=TrialState.PRUNED)
        else:
            study.tell(t.number, value)
        closed += 1
    return closed


def enqueue_first_trials(study, spec: SweepSpec) -> int:
    """Queue the spec's `first_trials` in a new study, so TPE tries them before its own (a resumed
    study already has them); returns how many were queued."""
    if study.trials:
        return 0
    for params in spec.first_trials:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return len(spec.first_trials)


def optuna_space(spec: SweepSpec) -> dict[str, Any]:
    """Optuna distributions for the spec's parameters (values -> categorical)."""
    return {key: _distribution(p) for key, p in spec.parameters.items()}


def _distribution(p: Param):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    if p.values is not None:
        return CategoricalDistribution(list(p.values))
    if p.distribution == "int_uniform":
        return IntDistribution(int(p.min), int(p.max), step=int(p.step or 1))
    return FloatDistribution(float(p.min), float(p.max), log=p.distribution == "log_uniform",
                             step=float(p.step) if p.step is not None else None)


def make_searcher(run_dir: str | Path, spec: SweepSpec, *, pruned: set[str]):
    """Ray Tune's OptunaSearch on the sweep's SQLite study, with a TPE sampler.

    `pruned` is filled by the scheduler with the Tune ids of trials it stopped; those are told to
    the study as PRUNED (their intermediate losses are already there), not as finished.
    """
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class _SweepOptunaSearch(OptunaSearch):
        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            if config is not None:  # the Optuna trial number names the trial (t0007 = trial 7)
                ot = self._ot_trials[trial_id]
                config[TRIAL_NUMBER_KEY] = ot.number
                _set_attrs(ot, trial_attrs(run_dir, f"t{ot.number:04d}", spec.seeds[0]))
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if not result.get("final") and trial_id in self._ot_trials:
                value = result.get(self.metric)
                if value is not None and math.isfinite(value):
                    self._ot_trials[trial_id].report(float(value), int(result.get("step", 0)))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or trial_id in self._completed_trials:
                return
            result = result or {}
            value = result.get(self.metric)
            status = (result.get("status") if result.get("final") else "error" if error
                      else "pruned" if trial_id in pruned else "unfinished")
            _set_attrs(ot_trial, outcome_attrs({**result, "status": status}))
            if result.get("final") and result.get("status") != "error" and value is not None \
                    and not math.isnan(value):
                self._ot_study.tell(ot_trial, float(value))
            elif not error and trial_id in pruned:
                # Tune hands the stopping result to on_trial_complete, not on_trial_result
                if value is not None and math.isfinite(value) and "step" in result:
                    ot_trial.report(float(value), int(result["step"]))
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:  # error, or stopped for another reason (time budget, interrupt)
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)

    study = open_study(run_dir, spec)
    # a fresh seed per session, so a resumed sweep does not replay the first session's random start
    sampler = optuna.samplers.TPESampler(seed=spec.search_seed + len(study.trials))
    enqueue_first_trials(study, spec)
    return _SweepOptunaSearch(space=optuna_space(spec), metric=spec.metric.name, mode=spec.metric.mode,
                              sampler=sampler, study_name=spec.name, storage=RDBStorage(storage_url(run_dir)))


def make_group_searcher(run_dir: str | Path, spec: SweepSpec, *, k: int, total: int):
    """A Ray Tune searcher for fused TPE sweeps: each suggestion is a group of `k` configurations
    asked from the sweep's study at once (TPE with a constant liar, so the k differ), `total` in all.

    Rows arrive in the group's reports (`fused_trial.rows_of`); each is told to the study as it
    comes: its value, PRUNED (after reporting its last value at its step) or FAIL.
    """
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    from .fused_trial import GROUP_KEY, rows_of
    from .trial import point_from_config

    study = open_study(run_dir, spec)
    sampler = optuna.samplers.TPESampler(seed=spec.search_seed + len(study.trials), constant_liar=True)
    enqueue_first_trials(study, spec)  # after the seed: queued trials do not shift it
    study.sampler = sampler
    space = optuna_space(spec)

    class _GroupSearcher(Searcher):
        def __init__(self):
            super().__init__(metric=spec.metric.name, mode=spec.metric.mode)
            self.asked = 0
            self.live: dict[str, dict[str, Any]] = {}  # Tune trial id -> {our trial id: optuna trial}

        def suggest(self, trial_id: str):
            n = min(k, total - self.asked)
            if n <= 0:
                return Searcher.FINISHED
            asked = [study.ask(space) for _ in range(n)]
            self.asked += n
            points = [point_from_config({**t.params, TRIAL_NUMBER_KEY: t.number}, spec) for t in asked]
            for t, p in zip(asked, points):
                _set_attrs(t, trial_attrs(run_dir, p.trial_id, p.seed))
            self.live[trial_id] = {p.trial_id: t for p, t in zip(points, asked)}
            return {GROUP_KEY: [p.to_dict() for p in points]}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._tell(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self._tell(trial_id, result)
            for ot in self.live.pop(trial_id, {}).values():  # never reported: crashed or interrupted
                study.tell(ot, state=TrialState.FAIL)

        def _tell(self, trial_id: str, result: dict | None) -> None:
            live = self.live.get(trial_id, {})
            for row in rows_of(result):
                ot = live.pop(row["trial_id"], None)
                if ot is not None:
                    _tell_row(study, ot, row, spec.metric.name)

    return _GroupSearcher()


def _tell_row(study, ot, row: dict[str, Any], metric: str) -> None:
    from optuna.trial import TrialState
    _set_attrs(ot, outcome_attrs(row))
    value = row.get(metric)
    finite = value is not None and math.isfinite(float(value))
    if row["status"] == "pruned" and finite:
        ot.report(float(value), int(row.get("steps") or 0))
        study.tell(ot, state=TrialState.PRUNED)
    elif row["status"] in ("ok", "diverged") and value is not None and not math.isnan(float(value)):
        study.tell(ot, float(value))
    else:
        study.tell(ot, state=TrialState.FAIL)


def _set_attrs(trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _nan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True
