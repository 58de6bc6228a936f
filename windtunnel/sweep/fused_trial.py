"""One Ray trial that trains a group of sweep trials as fused models (`budget.fuse`).

`run_group` is the Tune function trainable. Its config holds the group's points; each point gets the
folder, files and results row a separate trial would (`trials/<id>/`, its own status, val_loss,
tokens and seconds: its share of the group's time). Points whose configs differ in shape (a TPE batch
may mix `model.d_model` values) train as one fused model per shape, one after the other. Every report
carries the rows of the trials that just finished (`rows`, JSON), so the table fills as they end;
ASHA is applied per trial through the sweep's rung file (`windtunnel.sweep.rungs`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..analysis.runs import TRIAL_FILE
from ..fileio import write_json
from .points import TrialPoint
from .results import make_row
from .rungs import RUNGS_FILE, RungFile
from .spec import max_steps
from .tracking import trial_tracking
from .trial import TrialContext, record_error, trial_run_config

__all__ = ["GROUP_KEY", "execute_group", "rows_of", "run_group"]

GROUP_KEY = "group"  # the Tune config key holding the points of a fused group


def rows_of(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The results rows a group's report carries."""
    raw = (result or {}).get("rows")
    return json.loads(raw) if raw else []


def run_group(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune trainable: train the group's points fused, reporting rows as trials finish."""
    from ray import tune
    points = [TrialPoint.from_dict(p) for p in config[GROUP_KEY]]
    execute_group(ctx, points, report=tune.report)


def execute_group(ctx: TrialContext, points: list[TrialPoint], *,
                  report: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train `points` fused (per shape), each into `runs/<name>/trials/<id>/`; returns their rows.

    A point whose config is invalid, or a fused run that raises, gives `error` rows; the others go on.
    """
    rows: dict[str, dict[str, Any]] = {}

    def finished(point: TrialPoint, summary: dict[str, Any]) -> None:
        rows[point.trial_id] = make_row(point.to_dict(), summary)
        if report is not None:
            report({"rows": json.dumps([rows[point.trial_id]]), "final": False, "step": summary.get("steps") or 0,
                    "val_loss": _finite(summary.get("val_loss"))})

    by_shape: dict[str, list[tuple[TrialPoint, Any]]] = {}
    for point in points:
        tdir = ctx.trial_dir(point.trial_id)
        tdir.mkdir(parents=True, exist_ok=True)
        write_json(tdir / TRIAL_FILE, point.to_dict())
        try:
            cfg = trial_run_config(ctx, point)
        except Exception as e:  # noqa: BLE001 - a broken trial is recorded, the group goes on
            finished(point, record_error(ctx.trial_dir(point.trial_id), e))
            continue
        from ..training.fusable import fusion_key
        by_shape.setdefault(fusion_key(cfg), []).append((point, cfg))
    for members in by_shape.values():
        _train_members(ctx, members, finished)
    if report is not None:
        report({"rows": json.dumps([]), "final": True, "step": 0, "val_loss": math.nan})
    return [rows[p.trial_id] for p in points if p.trial_id in rows]


def _train_members(ctx: TrialContext, members: list[tuple[TrialPoint, Any]], finished) -> None:
    from ..training.fused import train_fused
    points = [p for p, _ in members]
    done: set[str] = set()
    asha = _rungs(ctx)

    def on_eval(i: int, metrics: dict[str, Any]) -> bool:
        if asha is None:
            return False
        return asha.should_stop(points[i].trial_id, step=metrics["step"], value=metrics[ctx.spec.metric.name])

    def on_end(i: int, summary: dict[str, Any]) -> None:
        done.add(points[i].trial_id)
        finished(points[i], summary)

    try:
        tracking = [trial_tracking(ctx.tracking, p, ctx.trial_dir(p.trial_id)) for p in points]
        train_fused([c for _, c in members], out_dirs=[ctx.trial_dir(p.trial_id) for p in points],
                    on_eval=on_eval, on_end=on_end, tracking=tracking if ctx.tracking is not None else None)
    except Exception as e:  # noqa: BLE001 - the group's unfinished trials become errors, the sweep goes on
        for point in points:
            if point.trial_id not in done:
                finished(point, record_error(ctx.trial_dir(point.trial_id), e))


def _rungs(ctx: TrialContext) -> RungFile | None:
    et = ctx.spec.early_terminate
    if et is None:
        return None
    return RungFile(Path(ctx.run_dir) / RUNGS_FILE, grace_period=et.grace_period,
                    reduction_factor=et.reduction_factor, max_t=max_steps(ctx.spec, ctx.base["train"]["steps"]),
                    goal=ctx.spec.metric.goal)


def _finite(x: Any) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else math.nan
