"""One sweep trial: build its run config, train it with the shared loop, report to Ray Tune.

`run_trial` is the Ray Tune function trainable. It reports `val_loss` (and `step`) at every held-out
evaluation, so ASHA can stop it there, and ends with one `final` report carrying the outcome. A trial
whose config is invalid, or whose training raises, is an `error` trial with the message: the sweep goes on.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..analysis.runs import SUMMARY_FILE, TRIAL_FILE
from ..errors import ConfigError
from ..fileio import write_json
from .points import TrialPoint, trial_config, trial_id
from .spec import SweepSpec
from .tracking import trial_tracking

__all__ = ["TrialContext", "run_trial", "execute_trial", "point_from_config", "final_metrics",
           "TRIAL_NUMBER_KEY", "record_error", "trial_run_config"]

TRIAL_NUMBER_KEY = "trial_number"  # TPE: the Optuna trial number, added to the config by the searcher
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (sent once to the workers by `tune.with_parameters`)."""

    spec: SweepSpec
    base: dict[str, Any]
    """The base run config with the fixed overrides, as plain data with absolute paths."""
    run_dir: str
    tracking: Any = None
    """The sweep's trackers (`windtunnel.training.trackers.Tracking`); None: each trial's config decides."""

    def trial_dir(self, tid: str) -> Path:
        return Path(self.run_dir) / "trials" / tid


def point_from_config(config: dict[str, Any], spec: SweepSpec) -> TrialPoint:
    """The trial a Tune config describes: grid/random carry the point; TPE carries values + number."""
    if "trial" in config:
        return TrialPoint.from_dict(config["trial"])
    params = {key: _clean(spec, key, config[key]) for key in spec.param_keys}
    return TrialPoint(trial_id=trial_id(int(config[TRIAL_NUMBER_KEY])), seed=spec.seeds[0], params=params)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune trainable: train one point, reporting as it goes, then a final report."""
    from ray import tune
    point = point_from_config(config, ctx.spec)
    summary = execute_trial(ctx, point, report=tune.report)
    tune.report(final_metrics(summary))


def execute_trial(ctx: TrialContext, point: TrialPoint, *,
                  report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one trial into `runs/<name>/trials/<id>/` and return its summary (never raises for the
    trial's own failures: they become `status: error`)."""
    tdir = ctx.trial_dir(point.trial_id)
    tdir.mkdir(parents=True, exist_ok=True)
    write_json(tdir / TRIAL_FILE, point.to_dict())
    try:
        cfg = trial_run_config(ctx, point)
        from ..training.loop import train
        return train(cfg, out_dir=tdir, on_eval=_reporter(report, cfg.train.steps),
                     tracking=trial_tracking(ctx.tracking, point, tdir))
    except Exception as e:  # noqa: BLE001 - a broken trial is recorded, the sweep goes on
        return record_error(tdir, e)


def trial_run_config(ctx: TrialContext, point: TrialPoint):
    """The trial's run config (a trial that changes the model's shape gets its base shapes derived)."""
    cfg = trial_config(ctx.spec, point, base=ctx.base)
    if ctx.tracking is not None:  # config.yaml records what the trial logged to
        cfg.train.track = ctx.tracking.names
    return cfg


def record_error(tdir: Path, e: Exception) -> dict[str, Any]:
    """Write the traceback and an `error` summary.json into a trial folder; returns the summary.
    Call it inside the `except` block that caught `e`."""
    message = f"{e.key}: {e.message}" if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
    (tdir / ERROR_FILE).write_text(traceback.format_exc())
    summary = {"status": "error", "val_loss": math.nan, "train_loss": math.nan, "steps": 0,
               "tokens": 0, "seconds": 0.0, "message": " ".join(message.split())[:500]}
    write_json(tdir / SUMMARY_FILE, summary)
    return summary


def final_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The last report of a trial: its outcome, flagged `final` (a trial ASHA stops never sends it)."""
    keys = ("status", "val_loss", "train_loss", "steps", "tokens", "seconds", "params", "flops_per_token",
            "message")
    out = {k: summary.get(k) for k in keys}
    out["n_params"] = out.pop("params")
    out["message"] = out["message"] or ""
    out.update(final=True, step=summary.get("steps") or 0)
    return out


def _reporter(report, total_steps: int):
    """train's on_eval -> tune.report, except at the last step: the final report carries that one."""
    if report is None:
        return None

    def on_eval(m: dict[str, Any]) -> None:
        if m["step"] < total_steps:
            report({**m, "final": False})
    return on_eval


def _clean(spec: SweepSpec, key: str, value: Any) -> Any:
    """Optuna's stepped floats (1 + 3 * 0.1 = 1.3000000000000003) as the grid value they stand for."""
    p = spec.parameters[key]
    if p.values is None and p.step is not None:
        k = round((value - p.min) / p.step)
        value = p.min + k * p.step
        return int(value) if p.distribution == "int_uniform" else round(float(value), 12)
    return value.item() if hasattr(value, "item") else value
