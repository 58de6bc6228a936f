"""Read a sweep's run folder: the results table, the resolved spec, which keys were swept.

A run folder (`runs/<name>/`) holds `results.parquet` (or `results.csv`) with one row per trial
(`trial_id`, `status` ok|diverged|pruned|error, `val_loss`, `tokens`, `seconds`, `seed`, and one
column per swept parameter named by its dotted key) and `spec.yaml` (the resolved sweep spec).
Plots and checks read it through here, never through the sweep engine, so they work on any folder
in that format (a bench writes one by hand).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import WindtunnelError
from ..sweep.results import SPEC_FILE, read_results, read_spec_data, results_file

__all__ = ["RunResults", "load_run", "aggregate", "best_over", "with_parametrization", "is_log_spaced",
           "label_of", "SEED_KEYS", "WIDTH_KEY", "LR_KEY", "PARAM_KEY"]

REQUIRED = ("trial_id", "status", "val_loss")
STATUSES = ("ok", "diverged", "pruned", "error")
GOALS = {"minimize": "min", "maximize": "max", "min": "min", "max": "max"}
SEED_KEYS = ("seed", "train.seed")
WIDTH_KEY, LR_KEY, PARAM_KEY = "model.d_model", "train.lr", "model.parametrization"

# What a reader calls each swept key (titles and axes must make sense without the spec).
LABELS = {
    "train.lr": "peak learning rate",
    "model.init_std": "init std",
    "model.d_model": "width d_model",
    "model.scale_emb": "embedding multiplier",
    "model.scale_depth": "residual-branch scale",
    "model.dim_model_base": "muP base width",
    "model.parametrization": "parametrization",
    "model.attn_mult": "attention multiplier",
    "model.n_layers": "depth (layers)",
    "train.weight_decay": "weight decay",
    "train.batch_size": "batch size (sequences)",
    "train.warmup_steps": "warmup steps",
    "train.steps": "training steps",
}


@dataclass
class RunResults:
    """One run folder, read: the trial table plus what the spec says about its parameters."""

    run_dir: Path
    frame: Any  # pandas.DataFrame, one row per trial
    spec: dict = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    """Swept keys (seed keys excluded): the axes of every plot and check."""
    metric: str = "val_loss"
    goal: str = "min"
    """`min` or `max` (the spec's `minimize` / `maximize`)."""

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.run_dir.name)

    def sign(self) -> float:
        """+1 when lower is better, -1 when higher is (so `sign * metric` is always minimised)."""
        return 1.0 if self.goal == "min" else -1.0

    def log_spaced(self, key: str) -> bool:
        """Whether `key` was swept on a log scale (spec says so, or its values are geometric)."""
        p = self.spec.get("parameters", {}).get(key)
        if isinstance(p, dict) and p.get("distribution") == "log_uniform":
            return True
        if isinstance(p, dict) and p.get("distribution") in ("uniform", "int_uniform"):
            return False
        return is_log_spaced(self.frame[key].dropna().unique())


def load_run(run_dir: str | Path) -> RunResults:
    """Read `run_dir/results.parquet` (else `results.csv`) and `run_dir/spec.yaml`, and check them.

    Example:
        >>> res = load_run("runs/lr_init")
        >>> res.params
        ['train.lr', 'model.init_std']
    """
    import pandas as pd

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise WindtunnelError(f"{run_dir}: no such run folder")
    frame, table = read_results(run_dir), results_file(run_dir)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise WindtunnelError(f"{table}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)}")
    if frame.empty:
        raise WindtunnelError(f"{table}: no trials in the table")
    spec = _read_spec(run_dir)
    metric_cfg = spec.get("metric") or {}
    metric = metric_cfg.get("name", "val_loss") if isinstance(metric_cfg, dict) else "val_loss"
    goal = metric_cfg.get("goal", "minimize") if isinstance(metric_cfg, dict) else "minimize"
    if metric not in frame.columns:
        raise WindtunnelError(f"{table}: the spec's metric {metric!r} is not a column")
    if goal not in GOALS:
        raise WindtunnelError(f"{run_dir / SPEC_FILE}: metric.goal: expected minimize or maximize, got {goal!r}")
    frame = frame.copy()
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    bad = sorted(set(frame["status"].astype(str)) - set(STATUSES))
    if bad:
        raise WindtunnelError(f"{table}: status: expected one of {', '.join(STATUSES)}, got {bad[0]!r}")
    return RunResults(run_dir=run_dir, frame=frame, spec=spec, params=_swept(frame, spec, table),
                      metric=metric, goal=GOALS[goal])


def aggregate(res: RunResults, keys: list[str]) -> Any:
    """One row per distinct combination of `keys`: the metric averaged over the ok trials (seeds).

    Columns: the keys, `loss` (mean over ok trials, NaN when none is ok), `n_ok`, `n` (all trials)
    and `status` (`ok` when any trial is ok, else the commonest failure: diverged, pruned, error).
    Keys not listed are not averaged over: callers pick the best over them (see `best_over`).
    """
    import pandas as pd

    frame = res.frame
    rows = []
    for values, group in frame.groupby(keys, dropna=False, sort=True) if keys else [((), frame)]:
        values = values if isinstance(values, tuple) else (values,)
        ok = group[group["status"] == "ok"]
        losses = ok[res.metric][ok[res.metric].map(_finite)]
        status = "ok" if len(losses) else _commonest_failure(group["status"])
        row = dict(zip(keys, values))
        row.update(loss=float(losses.mean()) if len(losses) else math.nan, n_ok=len(losses), n=len(group),
                   status=status)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "loss", "n_ok", "n", "status"])


def best_over(res: RunResults, keys: list[str]) -> Any:
    """Per combination of `keys`: the best seed-averaged configuration over every other swept key.

    Example:
        >>> best_over(load_run("runs/lr_init"), ["train.lr"])  # best init_std for each lr
    """
    import pandas as pd

    unknown = [k for k in keys if k not in res.frame.columns]
    if unknown:
        raise WindtunnelError(f"{res.run_dir}: no column {unknown[0]!r}; swept: {', '.join(res.params)}")
    others = [k for k in res.params if k not in keys]
    full = aggregate(res, [*keys, *others])
    full["_score"] = res.sign() * full["loss"]
    rows = []
    for _, group in full.groupby(keys, dropna=False, sort=True):
        finite = group[group["_score"].map(_finite)]
        pick = finite.loc[finite["_score"].idxmin()] if len(finite) else group.iloc[0]
        row = pick.drop("_score").to_dict()
        if not len(finite):
            row["status"] = _commonest_failure(group["status"])
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *others, "loss", "n_ok", "n", "status"])


def with_parametrization(res: RunResults) -> RunResults:
    """`res` with a `model.parametrization` column for sure: from the table, else the spec's fixed
    `set`, else the first trial's config.yaml, else `mup` (the config default)."""
    frame = res.frame.copy()
    if PARAM_KEY not in frame.columns:
        fixed = res.spec.get("set") if isinstance(res.spec.get("set"), dict) else {}
        frame[PARAM_KEY] = fixed.get(PARAM_KEY) or _trial_parametrization(res.run_dir) or "mup"
    frame[PARAM_KEY] = frame[PARAM_KEY].astype(str)
    return dataclasses.replace(res, frame=frame)


def is_log_spaced(values) -> bool:
    """Numeric, positive values spread over >= 4x whose log-steps are more even than their steps."""
    try:
        xs = sorted(float(v) for v in values)
    except (TypeError, ValueError):
        return False
    if len(xs) < 2 or xs[0] <= 0 or xs[-1] / xs[0] < 4:
        return False
    if len(xs) == 2:
        return True
    lin = [b - a for a, b in zip(xs, xs[1:])]
    log = [math.log(b / a) for a, b in zip(xs, xs[1:])]
    return _spread(log) < _spread(lin)


def label_of(key: str) -> str:
    """`peak learning rate (train.lr)`: a reader's name and the key it comes from."""
    name = LABELS.get(key)
    return f"{name} ({key})" if name else key


# --- internals --------------------------------------------------------------------------------


def _read_spec(run_dir: Path) -> dict:
    spec = read_spec_data(run_dir)
    if not isinstance(spec.get("parameters") or {}, dict):
        raise WindtunnelError(f"{run_dir / SPEC_FILE}: parameters: expected a mapping of dotted keys")
    return spec


def _swept(frame, spec: dict, table: Path) -> list[str]:
    keys = list(spec.get("parameters") or {}) or [c for c in frame.columns if "." in c]
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise WindtunnelError(f"{table}: no column for swept parameter {missing[0]!r}")
    return [k for k in keys if k not in SEED_KEYS]


def _trial_parametrization(run_dir: Path) -> str | None:
    for cfg in sorted((run_dir / "trials").glob("*/config.yaml"))[:1]:
        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            return None
        return (data.get("model") or {}).get("parametrization")
    return None


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _commonest_failure(statuses) -> str:
    failures = [s for s in statuses if s != "ok"]
    if not failures:
        return "diverged"  # every trial said ok but none has a finite metric
    return max(("diverged", "pruned", "error"), key=failures.count)


def _spread(steps: list[float]) -> float:
    mean = sum(steps) / len(steps)
    if mean == 0:
        return math.inf
    return math.sqrt(sum((s - mean) ** 2 for s in steps) / len(steps)) / abs(mean)
