"""A sweep's results table as a person asks for it: filtered, seeds grouped, sorted, columns chosen, and
printed with fixed decimals per column (so 1.9, 1.95 and 2.832 read 1.9000, 1.9500, 2.8320).

pandas does the work; `windtunnel results` is a thin shell over `select_results` and `format_results`.

    >>> res = load_run("runs/lr_init")                                                  # doctest: +SKIP
    >>> df = select_results(res, filters=["status=ok"], group_seeds=True, sort=["-seconds"])  # doctest: +SKIP
    >>> print(format_results(df, metric=res.metric))                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
import operator
import re
from typing import Any, Sequence

from ..errors import WindtunnelError
from ..typecheck import is_finite, maybe_number, suggest
from .runs import SEED_KEYS, RunResults, aggregate, sort_results

__all__ = ["select_results", "format_results", "HIDDEN_COLUMNS"]

HIDDEN_COLUMNS = ("message", "flops_per_token", "n_params", "train_loss")
"""Columns the plain table leaves out unless asked for with `columns` (message shows when non-empty)."""

_OPS = {"!=": operator.ne, "<=": operator.le, ">=": operator.ge, "=": operator.eq, "<": operator.lt,
        ">": operator.gt}
_FILTER = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$")


def select_results(res: RunResults, *, filters: Sequence[str] = (), group_seeds: bool = False,
                   sort: Sequence[str] = (), columns: Sequence[str] | None = None, top: int | None = None):
    """The rows and columns of a run's table a user asked for, in this order: `filters` (each
    `KEY=VALUE`, `KEY!=VALUE`, `KEY<VALUE`, `<=`, `>`, `>=`; all must hold) on the trials; then, with
    `group_seeds`, one row per configuration (`mean_<metric>` over its ok seeds, `std_<metric>`,
    `n_ok`, `n`, `status` and the mean `seconds`, by the same rule as the best trial: a diverged seed
    makes the cell diverged); then `sort` (column names, `-name` for descending; default: finished
    rows best first, then the rest); then `columns`; then the first `top` rows.

    Bad input (an unknown column, a filter without an operator) raises `WindtunnelError` naming it.

    Example:
        >>> select_results(load_run("runs/lr_init"), filters=["status=ok"], columns=["trial_id", "val_loss"],
        ...                top=3)                                                       # doctest: +SKIP
    """
    frame = res.frame
    for text in filters:
        frame = frame[_filter_mask(frame, text)]
    if group_seeds:
        frame = _group_seeds(res, frame)
    metric = f"mean_{res.metric}" if group_seeds else res.metric
    if sort:
        keys = [k.lstrip("-") for k in sort]
        _check_columns(frame, keys, "--sort")
        frame = frame.sort_values(keys, ascending=[not k.startswith("-") for k in sort], kind="stable",
                                  na_position="last").reset_index(drop=True)
    elif group_seeds:
        frame = _best_first(frame, metric, res.goal, tie="n")
    else:
        frame = sort_results(frame, metric=metric, goal="minimize" if res.goal == "min" else "maximize")
    if columns:
        _check_columns(frame, list(columns), "--columns")
        frame = frame[list(columns)]
    return frame.head(top) if top is not None else frame


def format_results(df, *, metric: str = "val_loss", columns_given: bool = False) -> str:
    """The table as text, each float column with one number of decimals for all its rows: the metric
    columns (losses) 4, seconds 1, other floats the fewest that write them all exactly, at most 4
    significant digits of the smallest (scientific notation below 1e-4, where decimals would run long). Without
    `columns_given`, `HIDDEN_COLUMNS` are left out (message only when some trial has one).

    Example:
        >>> print(format_results(pd.DataFrame({"val_loss": [1.9, 1.95, 2.832]})))        # doctest: +SKIP
         val_loss
           1.9000
           1.9500
           2.8320
    """
    if not columns_given:
        shown = [c for c in df.columns if c not in HIDDEN_COLUMNS]
        if "message" in df.columns and (df["message"].fillna("").astype(str) != "").any():
            shown.append("message")
        df = df[shown]
    if df.empty:
        return "(no rows)"
    losses = {metric, f"mean_{metric}", f"std_{metric}", "train_loss"}
    formatters = {c: _formatter(df[c], loss=c in losses, seconds=c == "seconds") for c in df.columns}
    return df.to_string(index=False, na_rep="-", formatters={c: f for c, f in formatters.items() if f is not None})


# --- internals --------------------------------------------------------------------------------


def _filter_mask(frame, text: str):
    match = _FILTER.match(text)
    if not match:
        raise WindtunnelError(f"--filter {text!r}: expected KEY=VALUE (or !=, <, <=, >, >=), e.g. status=ok")
    key, op, raw = match.groups()
    _check_columns(frame, [key], "--filter")
    column, value = frame[key], maybe_number(raw)
    numeric = column.dtype.kind in "iufb"
    if numeric and not isinstance(value, (int, float)):
        raise WindtunnelError(f"--filter {text!r}: {key} holds numbers, got {raw!r}")
    if not numeric:
        column, value = column.astype(str), raw
    try:
        return _OPS[op](column, value)
    except TypeError as e:
        raise WindtunnelError(f"--filter {text!r}: cannot compare {key} with {raw!r} ({e})") from None


def _check_columns(frame, keys: list[str], flag: str) -> None:
    for key in keys:
        if key not in frame.columns:
            raise WindtunnelError(f"{flag}: no column {key!r}{suggest(key, list(frame.columns))}; the table has "
                                  f"{', '.join(map(str, frame.columns))}")


def _group_seeds(res: RunResults, frame):
    keys = [k for k in res.params if k not in SEED_KEYS]
    sub = RunResults(run_dir=res.run_dir, frame=frame, spec=res.spec, params=keys, metric=res.metric,
                     goal=res.goal)
    cells = aggregate(sub, keys, seed_losses=True)
    cells.insert(len(keys) + 1, f"std_{res.metric}", [_std(v) for v in cells["seed_losses"]])
    cells = cells.drop(columns="seed_losses").rename(columns={"loss": f"mean_{res.metric}"})
    if "seconds" in frame.columns and len(frame):  # same groups in the same order as `aggregate`
        groups = frame.groupby(keys, dropna=False, sort=True) if keys else [((), frame)]
        cells["seconds"] = [float(g["seconds"].mean()) for _, g in groups]
    return cells


def _std(values: tuple[float, ...]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _best_first(frame, metric: str, goal: str, *, tie: str):
    import pandas as pd
    finite = frame[metric].map(is_finite)
    ok = frame[finite].sort_values([metric, tie], ascending=[goal == "min", False], kind="stable")
    return pd.concat([ok, frame[~finite]]).reset_index(drop=True)


def _formatter(column, *, loss: bool, seconds: bool):
    if column.dtype.kind != "f":
        return None
    finite = [abs(float(v)) for v in column if is_finite(v) and v != 0]
    if loss:
        spec = ".4f"
    elif seconds:
        spec = ".1f"
    elif finite and all(float(v).is_integer() for v in finite):
        spec = ".0f"
    elif finite and min(finite) < 1e-4:
        spec = ".3e"
    else:
        spec = f".{_decimals(finite)}f"
    return lambda v: _fmt(v, spec)


def _decimals(values: list[float]) -> int:
    """The fewest decimals that write every value exactly, at most enough for 4 significant digits of
    the smallest (0.001 and 0.01 -> 3; 0.0078125 -> 6)."""
    if not values:
        return 4
    most = min(6, max(1, 3 - math.floor(math.log10(min(values)))))
    for d in range(1, most):
        if all(abs(round(v, d) - v) <= 1e-9 * v for v in values):
            return d
    return most


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(float(v), spec)
