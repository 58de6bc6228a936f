"""Sweeps: a YAML spec (grid / random / tpe over dotted config keys) run on Ray Tune and Optuna.

    >>> from windtunnel.sweep import run_sweep, read_results
    >>> result = run_sweep("sweeps/lr_init.yaml")          # runs/lr_init/
    >>> read_results("runs/lr_init").sort_values("val_loss").head()

Modules: `spec` (the YAML and its rules), `plan` (trials, configs, cost), `results` (the table),
`trial` (one trial, the Ray trainable), `ray_engine` (Ray Tune), `cluster` (joining a Ray cluster:
which one, token authentication), `study` (Optuna for TPE), `progress` (console lines), `run`
(run_sweep). Ray, Optuna and torch load only when a sweep runs.
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
