"""The one reader of a sweep's run folder, and the one rule for "the best trial".

A run folder (`runs/<name>/`) holds `results.parquet` (or `results.csv`) with one row per trial
(`trial_id`, `status` ok|diverged|pruned|error, `val_loss`, `tokens`, `seconds`, `seed`, and one
column per swept parameter named by its dotted key), `spec.yaml` (the resolved sweep spec) and
`trials/<id>/` (config.yaml, trial.json, summary.json, metrics.csv, provenance.json), `provenance.json`
(format version and, per session, package versions, git commit, hardware, corpus hash; see
`windtunnel.provenance`) and, while a sweep runs, `sweep.lock`. A folder without `provenance.json`
(written before it existed) reads as format 0; a newer format is refused. The sweep engine writes it
(`windtunnel.sweep.results`); `results`, plots, checks and transfer read it only through here, so
they work on any folder in this format (a bench writes one by hand). The file names and the layout are
`windtunnel.run_folder`'s; this module reads the table and the spec. No Ray, Optuna or torch here.

    >>> res = load_run("runs/lr_init")
    >>> best_trial(res)["train.lr"]          # honours the spec's metric and goal  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import WindtunnelError
from ..provenance import check_format
from ..run_folder import (  # re-exported: the sweep engine's branch still imports them from here
    RESULTS_CSV,
    RESULTS_PARQUET,
    SPEC_FILE,
    SUMMARY_FILE,
    TRIAL_FILE,
    trial_config_paths,
)
from ..typecheck import is_finite, read_yaml_mapping

__all__ = ["RunResults", "load_run", "read_results", "results_file", "read_spec_data", "sort_results",
           "best_row", "best_trial", "aggregate", "best_over", "with_parametrization", "is_log_spaced",
           "metric_of", "table_results", "STATUSES", "BASE_COLUMNS", "EXTRA_COLUMNS", "SPEC_FILE",
           "TRIAL_FILE", "SUMMARY_FILE", "RESULTS_PARQUET", "RESULTS_CSV", "SEED_KEYS", "WIDTH_KEY", "LR_KEY",
           "PARAM_KEY"]

# --- the format -------------------------------------------------------------------------------
STATUSES = ("ok", "diverged", "pruned", "error")
"""A trial's outcome: finished (`ok`), loss blew up (`diverged`), stopped early by ASHA (`pruned`),
or failed to run (`error`). A diverged trial's metric is inf, an error trial's NaN."""
BASE_COLUMNS = ["trial_id", "status", "val_loss", "tokens", "seconds", "seed"]
EXTRA_COLUMNS = ["steps", "train_loss", "n_params", "flops_per_token", "message"]
REQUIRED = ("trial_id", "status", "val_loss")
GOALS = {"minimize": "min", "maximize": "max", "min": "min", "max": "max"}
SEED_KEYS = ("seed", "train.seed")
WIDTH_KEY, LR_KEY, PARAM_KEY = "model.d_model", "train.lr", "model.parametrization"

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
    frame, table = read_results(run_dir), results_file(run_dir)  # read_results checks the format first
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise WindtunnelError(f"{table}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)}")
    if frame.empty:
        raise WindtunnelError(f"{table}: no trials in the table")
    spec = _read_spec(run_dir)
    metric, goal = metric_of(spec)
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


def read_results(run_dir: str | os.PathLike):
    """The results table of a sweep folder as a DataFrame (parquet, else CSV), unchecked.

    Both files read back alike: `trial_id` and `status` as strings, a diverged trial's `inf` as inf,
    a missing number as NaN and a missing message as "" (the CSV holds both as an empty field).
    `load_run` adds the checks and the spec; use this one for the bare table.

    Example:
        >>> df = read_results("runs/lr_init")
        >>> df.loc[df.status == "ok", ["train.lr", "model.init_std", "val_loss"]]   # doctest: +SKIP
    """
    path = results_file(run_dir)
    check_format(run_dir)  # a newer, unknown format: one line, before its table is misread
    if path is None:
        raise WindtunnelError(f"{run_dir}: no {RESULTS_PARQUET} or {RESULTS_CSV}; is this a sweep folder "
                              f"(runs/<name>) whose sweep has finished at least one trial?")
    import pandas as pd
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        # only "" is missing: a message reading "NA" or "None" stays text; "inf" parses as inf
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"trial_id": str, "status": str})
    except Exception as e:  # noqa: BLE001 - pandas/pyarrow raise many types for a bad file
        raise WindtunnelError(f"{path}: unreadable results table ({' '.join(str(e).split())[:200]})") from None
    if "message" in df.columns:
        df["message"] = df["message"].fillna("").astype(str)
    return df


def results_file(run_dir: str | os.PathLike) -> Path | None:
    """The table a sweep folder holds: `results.parquet`, else `results.csv`; None when it has neither.

    Example:
        >>> results_file("runs/lr_init")            # doctest: +SKIP
        PosixPath('runs/lr_init/results.parquet')
    """
    for name in (RESULTS_PARQUET, RESULTS_CSV):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def read_spec_data(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A sweep folder's `spec.yaml` as plain data, unchecked; {} when the folder has none.

    Example:
        >>> read_spec_data("runs/lr_init")["metric"]                # doctest: +SKIP
        {'name': 'val_loss', 'goal': 'minimize'}
    """
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        return {}
    check_format(run_dir)
    return read_yaml_mapping(path, expected="name, base, set, method, parameters")


def metric_of(spec: dict) -> tuple[str, str]:
    """(metric, goal) a spec names, as written (`minimize`/`maximize`); `val_loss`, `minimize` by default.

    Example:
        >>> metric_of({"metric": {"name": "train_loss", "goal": "minimize"}})
        ('train_loss', 'minimize')
    """
    cfg = spec.get("metric") or {}
    if not isinstance(cfg, dict):
        return "val_loss", "minimize"
    return str(cfg.get("name", "val_loss")), str(cfg.get("goal", "minimize"))


def sort_results(df, *, metric: str = "val_loss", goal: str = "minimize"):
    """Finished (ok) trials best first, then the rest (diverged, pruned, error) in id order.

    Example:
        >>> sort_results(read_results("runs/lr_init")).head(3)     # doctest: +SKIP
    """
    import pandas as pd
    ok = df[df["status"] == "ok"].sort_values(metric, ascending=GOALS[goal] == "min", kind="stable")
    rest = df[df["status"] != "ok"].sort_values("trial_id", kind="stable")
    return pd.concat([ok, rest]).reset_index(drop=True)


def best_row(df, *, metric: str = "val_loss", goal: str = "minimize") -> dict[str, Any] | None:
    """The best single `ok` row (finite metric) of a bare table as a dict, or None when none finished ok.

    Example:
        >>> best_row(read_results("runs/lr_init"))["trial_id"]     # doctest: +SKIP
        't0014'
    """
    ok = df[(df["status"] == "ok") & df[metric].map(is_finite)]
    if ok.empty:
        return None
    return sort_results(ok, metric=metric, goal=goal).iloc[0].to_dict()


def best_trial(res: RunResults) -> dict[str, Any] | None:
    """THE best trial of a run, by the spec's metric and goal: the configuration whose mean over its
    seeds is best (a cell with a diverged seed never wins; error/pruned seeds are left out; see
    `aggregate`), and of
    that configuration its best seed's row. None when no trial finished ok.

    The row gains `mean_<metric>` and `n_seeds_ok` / `n_seeds` so a caller can say how sure it is.

    Example:
        >>> row = best_trial(load_run("runs/lr_init"))
        >>> row["trial_id"], row["train.lr"], row["mean_val_loss"]           # doctest: +SKIP
        ('t0014', 0.008, 1.712)
    """
    cells = aggregate(res, res.params)
    cells = cells[cells["loss"].map(is_finite)]
    if cells.empty:
        return None
    cell = cells.loc[(res.sign() * cells["loss"]).idxmin()]
    frame = res.frame
    mask = (frame["status"] == "ok") & frame[res.metric].map(is_finite)
    for key in res.params:
        mask &= (frame[key] == cell[key]) | (frame[key].isna() & _isna(cell[key]))
    row = best_row(frame[mask], metric=res.metric, goal="minimize" if res.goal == "min" else "maximize")
    if row is None:
        return None
    row.update({f"mean_{res.metric}": float(cell["loss"]), "n_seeds_ok": int(cell["n_ok"]), "n_seeds": int(cell["n"])})
    return row


def table_results(frame, *, params: list[str], metric: str = "val_loss", goal: str = "minimize",
                  run_dir: str | os.PathLike = ".") -> RunResults:
    """A `RunResults` over an in-memory table (a sweep's running table): same rules as `load_run`.

    Example:
        >>> best_trial(table_results(df, params=["train.lr"]))     # doctest: +SKIP
    """
    return RunResults(run_dir=Path(run_dir), frame=frame, params=[k for k in params if k not in SEED_KEYS],
                      metric=metric, goal=GOALS[goal])


def aggregate(res: RunResults, keys: list[str], *, seed_losses: bool = False) -> Any:
    """One row per distinct combination of `keys`: the metric averaged over its seeds.

    A diverged seed counts against its cell: a configuration that blows up on one seed in three is
    not as good as its survivors, so the cell's `loss` is inf (diverged, or -inf under goal max) and
    its `status` `diverged`. Error and pruned trials are missing points (they say nothing about the
    configuration's loss) and are left out. Columns: the keys, `loss` (mean over ok trials; NaN when
    none finished), `n_ok`, `n` (all trials) and `status` (`ok`, or the commonest failure); with
    `seed_losses=True` also `seed_losses`, the tuple of the ok trials' finite metrics (for error bars
    and bootstraps over seeds). Keys not listed are not averaged over: callers pick the best over
    them (see `best_over`).

    Example:
        >>> aggregate(load_run("runs/width_transfer"), ["model.d_model", "train.lr"])   # doctest: +SKIP
    """
    import pandas as pd

    frame = res.frame
    rows = []
    for values, group in frame.groupby(keys, dropna=False, sort=True) if keys else [((), frame)]:
        values = values if isinstance(values, tuple) else (values,)
        ok = group[group["status"] == "ok"]
        losses = ok[res.metric][ok[res.metric].map(is_finite)]
        n_diverged = int((group["status"] == "diverged").sum()) + len(ok) - len(losses)
        status = "ok" if len(losses) and not n_diverged else _commonest_failure(group["status"], n_diverged)
        row = dict(zip(keys, values))
        loss = res.sign() * math.inf if n_diverged else (float(losses.mean()) if len(losses) else math.nan)
        row.update(loss=loss, n_ok=len(losses), n=len(group), status=status)
        if seed_losses:
            row["seed_losses"] = tuple(float(v) for v in losses)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "loss", "n_ok", "n", "status", *(["seed_losses"] if seed_losses else [])])


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
        finite = group[group["_score"].map(is_finite)]
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
    for cfg in trial_config_paths(run_dir)[:1]:
        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            return None
        return (data.get("model") or {}).get("parametrization")
    return None


def _isna(x) -> bool:
    try:
        return x is None or (isinstance(x, float) and math.isnan(x)) or type(x).__name__ == "NAType"
    except TypeError:
        return False


def _commonest_failure(statuses, n_diverged: int = 0) -> str:
    if n_diverged:
        return "diverged"  # a diverged seed (or an ok trial without a finite metric) sinks its cell
    failures = [s for s in statuses if s != "ok"]
    if not failures:
        return "diverged"
    return max(("diverged", "pruned", "error"), key=failures.count)


def _spread(steps: list[float]) -> float:
    mean = sum(steps) / len(steps)
    if mean == 0:
        return math.inf
    return math.sqrt(sum((s - mean) ** 2 for s in steps) / len(steps)) / abs(mean)
