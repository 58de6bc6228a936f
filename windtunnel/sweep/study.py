"""The Optuna side of sweeps: a study in SQLite under the run folder (TPE asks it through
`windtunnel.sweep.searcher`), and the one mapping of a trial's status to Optuna (`study_state`).

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

from ..run_folder import STUDY_FILE, trial_dir
from .spec import Param, SweepSpec

__all__ = ["STUDY_FILE", "storage_url", "open_study", "close_stale_trials", "optuna_space", "study_state",
           "tell_row", "enqueue_first_trials", "trial_attrs", "outcome_attrs", "study_trial_id"]



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
    attrs = {"trial_id": trial_id, "trial_dir": str(trial_dir(Path(run_dir).resolve(), trial_id))}
    return {**attrs, "seed": int(seed)} if seed is not None else attrs


def outcome_attrs(row: dict[str, Any]) -> dict[str, Any]:
    """The user attributes a study trial gets when it ends: status, the diverged flag, steps."""
    steps = row.get("steps")
    return {"status": str(row.get("status")), "diverged": row.get("status") == "diverged",
            "steps": int(steps) if steps is not None and not _nan(steps) else 0}


def study_trial_id(trial) -> str:
    """Which sweep trial a study trial is: its `trial_id` attribute (grid, random), else its number (tpe)."""
    return str(trial.user_attrs.get("trial_id") or f"t{trial.number:04d}")


def close_stale_trials(study, finished: dict[str, dict[str, Any]], metric: str = "val_loss") -> int:
    """Close trials a killed sweep left RUNNING; `finished` maps trial id -> its results row.

    Returns how many were closed. A trial whose row exists gets its state by `study_state`; one
    without a row is FAIL, and the resumed sweep asks for a new trial.
    """
    from optuna.trial import TrialState
    closed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        row = finished.get(study_trial_id(t))
        if row is not None:
            for key, attr in outcome_attrs(row).items():
                study._storage.set_trial_user_attr(t._trial_id, key, attr)
        state, value = study_state(row, metric)
        study.tell(t.number, value if state == TrialState.COMPLETE else None, state=state)
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


def study_state(row: dict[str, Any] | None, metric: str):
    """The one mapping of a sweep trial's status to Optuna: (TrialState, value or None).

    ok and diverged with a value: COMPLETE (a diverged trial's value is inf); pruned with a finite
    value: PRUNED (the value is its last, at its step); anything else (error, unfinished, no row): FAIL.

    Example:
        >>> study_state({"status": "pruned", "val_loss": 2.4, "steps": 50}, "val_loss")
        (<TrialState.PRUNED: 2>, 2.4)
    """
    from optuna.trial import TrialState
    value = None if row is None else row.get(metric)
    status = None if row is None else row.get("status")
    if status in ("ok", "diverged") and not _nan(value):
        return TrialState.COMPLETE, float(value)
    if status == "pruned" and not _nan(value) and math.isfinite(float(value)):
        return TrialState.PRUNED, float(value)
    return TrialState.FAIL, None


def tell_row(study, trial, row: dict[str, Any] | None, metric: str, *, evals=()) -> None:
    """Tell the study how a trial it asked ended: its outcome attributes, its held-out values
    (`evals`: [step, value] pairs), then its state by `study_state` (None: it never finished).

    Example:
        >>> tell_row(study, study.ask(space), {"status": "ok", "val_loss": 2.1, "steps": 300}, "val_loss",
        ...          evals=[[100, 2.6], [200, 2.3]])                                  # doctest: +SKIP
    """
    from optuna.trial import TrialState
    _set_attrs(trial, outcome_attrs(row if row is not None else {"status": "unfinished"}))
    for step, value in evals:
        if not _nan(value) and math.isfinite(float(value)):
            trial.report(float(value), int(step))
    state, value = study_state(row, metric)
    if state == TrialState.PRUNED:
        trial.report(value, int(row.get("steps") or 0))
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def _set_attrs(trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _nan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True
