"""One Ray trial: a group of K >= 1 sweep trials, trained by the training side's `train_group`.

`run_group` is the sweep's one Ray Tune function trainable; K = 1 is an ordinary trial (the plain
training path), K > 1 trains same-shape trials as one fused model. Every sweep trial gets the folder,
files and results row a separate trial would (`trials/<id>/`: trial.json, config.yaml, metrics.csv,
summary.json), its own trackers' run, and is judged on its own by ASHA at each rung through the
sweep's rung file (`windtunnel.sweep.rungs`). Each report carries the rows of the trials that just
finished (`rows`, JSON) and their held-out values (`evals`), so the driver records each trial as it
ends and tells the study. A trial whose config is invalid, or whose training raises, is an `error`
row with the message: the group and the sweep go on. Trials of a TPE batch that differ in shape
(`model.d_model` values) train as one group per shape, one after the other.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.runs import SUMMARY_FILE, TRIAL_FILE
from ..errors import ConfigError
from ..fileio import write_json
from ..run_folder import ERROR_FILE, trial_dir
from .points import TrialPoint, trial_config, trial_id
from .results import make_row
from .rungs import RUNGS_FILE, RungFile
from .spec import SweepSpec, max_steps
from .tracking import trial_tracking

__all__ = ["GROUP_KEY", "TRIAL_NUMBER_KEY", "TrialContext", "run_group", "execute_group", "group_points",
           "rows_of", "evals_of", "point_from_config", "record_error", "trial_run_config"]

GROUP_KEY = "group"  # the Tune config key holding the sweep trials of a Ray trial
TRIAL_NUMBER_KEY = "trial_number"  # TPE: the Optuna trial number names the trial (t0007 = trial 7)


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
        return trial_dir(self.run_dir, tid)


def group_points(config: dict[str, Any]) -> list[TrialPoint]:
    """The sweep trials a Ray trial's config holds.

    Example:
        >>> group_points({"group": [{"trial_id": "t0003", "seed": 0, "params": {"train.lr": 0.01}}]})
        [TrialPoint(trial_id='t0003', seed=0, params={'train.lr': 0.01})]
    """
    return [TrialPoint.from_dict(p) for p in config.get(GROUP_KEY) or []]


def rows_of(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The results rows a group's report carries.

    Example:
        >>> rows_of({"rows": '[{"trial_id": "t0003", "status": "ok"}]'})
        [{'trial_id': 't0003', 'status': 'ok'}]
    """
    raw = (result or {}).get("rows")
    return json.loads(raw) if raw else []


def evals_of(result: dict[str, Any] | None) -> dict[str, list[list[float]]]:
    """{trial_id: [[step, value], ...]}: the held-out values of the trials a report finishes."""
    raw = (result or {}).get("evals")
    return json.loads(raw) if raw else {}


def point_from_config(params: dict[str, Any], spec: SweepSpec) -> TrialPoint:
    """The TPE trial an Optuna ask describes: its values and `TRIAL_NUMBER_KEY` (its number).

    Example:
        >>> point_from_config({"train.lr": 0.01, "trial_number": 7}, spec).trial_id
        't0007'
    """
    values = {key: _clean(spec, key, params[key]) for key in spec.param_keys}
    return TrialPoint(trial_id=trial_id(int(params[TRIAL_NUMBER_KEY])), seed=spec.seeds[0], params=values)


def run_group(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune trainable: train the group's trials, reporting rows as they finish.

    Example:
        >>> tune.Tuner(tune.with_parameters(run_group, ctx=ctx), param_space={GROUP_KEY: ...})  # doctest: +SKIP
    """
    from ray import tune
    execute_group(ctx, group_points(config), report=tune.report)


def execute_group(ctx: TrialContext, points: list[TrialPoint], *,
                  report: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train `points` (one group per shape), each into `runs/<name>/trials/<id>/`; returns their rows.

    Example:
        >>> rows = execute_group(ctx, [TrialPoint("t0000", 0, {"train.lr": 0.01})])   # doctest: +SKIP
        >>> rows[0]["status"], rows[0]["val_loss"]                                     # doctest: +SKIP
        ('ok', 2.31)
    """
    metric = ctx.spec.metric.name
    rows: dict[str, dict[str, Any]] = {}
    evals: dict[str, list[list[float]]] = {}

    def finished(point: TrialPoint, summary: dict[str, Any]) -> None:
        rows[point.trial_id] = make_row(point.to_dict(), summary)
        if report is not None:
            report({"rows": json.dumps([rows[point.trial_id]]),
                    "evals": json.dumps({point.trial_id: evals.get(point.trial_id, [])}),
                    "step": summary.get("steps") or 0, metric: _finite(summary.get(metric))})

    by_shape: dict[str, list[tuple[TrialPoint, Any]]] = {}
    for point in points:
        tdir = ctx.trial_dir(point.trial_id)
        tdir.mkdir(parents=True, exist_ok=True)
        write_json(tdir / TRIAL_FILE, point.to_dict())
        try:
            cfg = trial_run_config(ctx, point)
        except Exception as e:  # noqa: BLE001 - a broken trial is recorded, the group goes on
            finished(point, record_error(tdir, e))
            continue
        from ..training.fusable import fusion_key
        by_shape.setdefault(fusion_key(cfg), []).append((point, cfg))
    for members in by_shape.values():
        _train(ctx, members, finished, evals)
    return [rows[p.trial_id] for p in points if p.trial_id in rows]


def _train(ctx: TrialContext, members: list[tuple[TrialPoint, Any]], finished, evals) -> None:
    """One `train_group` call; its unfinished trials become `error` rows when it raises."""
    from ..training.loop import train_group
    points = [p for p, _ in members]
    metric, rungs, done = ctx.spec.metric.name, _rungs(ctx), set()

    def on_eval(i: int, metrics: dict[str, Any]) -> bool:
        tid, value, step = points[i].trial_id, _finite(metrics.get(metric)), int(metrics["step"])
        evals.setdefault(tid, []).append([step, value])
        last = step >= members[i][1].train.steps  # as Ray's ASHA: a trial at its end is never stopped
        return rungs is not None and not last and rungs.should_stop(tid, step=step, value=value)

    def on_end(i: int, summary: dict[str, Any]) -> None:
        done.add(points[i].trial_id)
        finished(points[i], summary)

    try:
        tracking = [trial_tracking(ctx.tracking, p, ctx.trial_dir(p.trial_id)) for p in points]
        train_group([c for _, c in members], out_dirs=[ctx.trial_dir(p.trial_id) for p in points],
                    on_eval=on_eval, on_end=on_end, tracking=tracking if ctx.tracking is not None else None)
    except Exception as e:  # noqa: BLE001 - the group's unfinished trials become errors, the sweep goes on
        for point in points:
            if point.trial_id not in done:
                finished(point, record_error(ctx.trial_dir(point.trial_id), e))


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


def _rungs(ctx: TrialContext) -> RungFile | None:
    """The sweep's ASHA rungs (None without `early_terminate`)."""
    et = ctx.spec.early_terminate
    if et is None:
        return None
    return RungFile(Path(ctx.run_dir) / RUNGS_FILE, grace_period=et.grace_period,
                    reduction_factor=et.reduction_factor, max_t=max_steps(ctx.spec, ctx.base["train"]["steps"]),
                    goal=ctx.spec.metric.goal)


def _clean(spec: SweepSpec, key: str, value: Any) -> Any:
    """Optuna's stepped floats (1 + 3 * 0.1 = 1.3000000000000003) as the grid value they stand for."""
    p = spec.parameters[key]
    if p.values is None and p.step is not None:
        k = round((value - p.min) / p.step)
        value = p.min + k * p.step
        return int(value) if p.distribution == "int_uniform" else round(float(value), 12)
    return value.item() if hasattr(value, "item") else value


def _finite(x: Any) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else math.nan
