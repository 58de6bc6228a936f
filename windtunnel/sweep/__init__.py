"""Sweeps: a YAML spec (grid / random / tpe over dotted config keys) run on Ray Tune and Optuna.

    >>> from windtunnel.sweep import run_sweep, read_results
    >>> result = run_sweep("sweeps/lr_init.yaml")          # runs/lr_init/
    >>> read_results("runs/lr_init").sort_values("val_loss").head()

Modules, in the order a sweep passes through them: `run` (run_sweep), `spec` (the YAML and its rules),
`plan` (the plan and the dry run) from `trial_list` (the one pass: trials from `points`, checked,
grouped by shape, ordered), `ray_engine` (Ray Tune: each Ray trial a group of K >= 1 trials),
`searcher` (TPE asks the study K at a time), `trial` (the one trainable; ASHA per trial through
`rungs`), `recorder` (a results row per trial as it ends), `results` (the table), `study` (the Optuna
study), `cluster` (joining a Ray cluster), `progress` (console lines). Ray, Optuna and torch load only
when a sweep runs.
"""

from __future__ import annotations

from ..analysis.runs import best_row, best_trial, read_results, sort_results
from .plan import SweepPlan, TrialPoint, describe, plan_sweep
from .results import ResultsTable
from .run import SweepResult, read_spec, run_sweep
from .spec import SweepSpec, load_sweep, spec_from_dict

__all__ = ["SweepSpec", "load_sweep", "spec_from_dict", "SweepPlan", "TrialPoint", "plan_sweep", "describe",
           "ResultsTable", "read_results", "best_row", "best_trial", "sort_results", "SweepResult", "run_sweep",
           "read_spec"]
