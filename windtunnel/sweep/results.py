"""The results table of a sweep: one row per finished trial, written atomically as trials finish.
This module writes; `windtunnel.analysis.runs` owns the folder's format and is its one reader.

Columns: `trial_id`, `status` (ok | diverged | pruned | error), `val_loss`, `tokens`, `seconds`, `seed`,
one column per swept parameter named by its dotted key (`train.lr`), then `steps`, `train_loss`,
`n_params`, `flops_per_token`, `message`. A diverged trial has val_loss = inf; an error trial NaN.

The table lives in `runs/<name>/results.parquet` and `results.csv`; each write goes to a temp file
renamed into place, so a killed sweep always leaves a readable table. Each trial folder also holds
`trial.json` (its id, seed and parameters) and `summary.json` (its outcome), from which a row the
table missed (the sweep was killed between a trial's end and the table write) is rebuilt on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..analysis.runs import (
    BASE_COLUMNS,
    EXTRA_COLUMNS,
    STATUSES,
    best_trial,
    read_results,
    results_file,
    table_results,
)
from ..errors import WindtunnelError
from ..fileio import atomic_write
from ..run_folder import RESULTS_CSV, RESULTS_PARQUET, TRIAL_FILE, read_summary

__all__ = ["ResultsTable", "row_from_trial_dir", "make_row"]


class ResultsTable:
    """Rows by trial id, written to parquet and CSV after every change.

    Example:
        >>> table = ResultsTable("runs/lr_init", param_keys=["train.lr"])
        >>> table.add({"trial_id": "t0000", "status": "ok", "val_loss": 1.9, "tokens": 1000,
        ...            "seconds": 3.2, "seed": 0, "train.lr": 0.01})
        >>> table.frame().shape
        (1, 12)
    """

    def __init__(self, run_dir: str | os.PathLike, *, param_keys: Iterable[str], metric: str = "val_loss",
                 goal: str = "minimize"):
        self.run_dir = Path(run_dir)
        self.param_keys = list(param_keys)
        self.metric, self.goal = metric, goal
        self.rows: dict[str, dict[str, Any]] = {}

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + self.param_keys + EXTRA_COLUMNS

    def load(self) -> "ResultsTable":
        """Read the rows already on disk (resume); a missing table is an empty one."""
        if results_file(self.run_dir) is not None:
            for row in read_results(self.run_dir).to_dict("records"):
                self.rows[str(row["trial_id"])] = row
        return self

    def add(self, row: dict[str, Any], *, write: bool = True) -> None:
        if row.get("status") not in STATUSES:
            raise ValueError(f"row {row.get('trial_id')}: status must be one of {STATUSES}, got {row.get('status')!r}")
        self.rows[str(row["trial_id"])] = {c: row.get(c) for c in self.columns}
        if write:
            self.write()

    def frame(self):
        import pandas as pd
        rows = [self.rows[k] for k in sorted(self.rows)]
        df = pd.DataFrame(rows, columns=self.columns)
        for col in ("val_loss", "seconds", "train_loss", "flops_per_token"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        for col in ("tokens", "seed", "steps", "n_params"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        df["message"] = df["message"].fillna("").astype(str)
        return df

    def write(self) -> None:
        """Parquet then CSV, each via a temp file and os.replace."""
        df = self.frame()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / RESULTS_PARQUET, lambda p: df.to_parquet(p, index=False))
        atomic_write(self.run_dir / RESULTS_CSV, lambda p: df.to_csv(p, index=False))

    def best(self) -> dict[str, Any] | None:
        """The best trial so far, by the one rule of `windtunnel.analysis.runs.best_trial`."""
        return best_trial(table_results(self.frame(), params=self.param_keys, metric=self.metric,
                                        goal=self.goal, run_dir=self.run_dir))

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for row in self.rows.values():
            out[row["status"]] += 1
        return out


def row_from_trial_dir(trial_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A row rebuilt from a trial folder's trial.json + summary.json; None if the trial did not finish."""
    trial_dir = Path(trial_dir)
    try:
        ident = json.loads((trial_dir / TRIAL_FILE).read_text())
        summary = read_summary(trial_dir)
    except (OSError, ValueError, WindtunnelError):  # half-written by a killed trial: it runs again
        return None
    if summary is None or summary.get("status") not in STATUSES:
        return None
    return make_row(ident, summary)


def make_row(ident: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """A table row from a trial's identity (id, seed, params) and its outcome (train's summary)."""
    return {"trial_id": ident["trial_id"], "seed": ident["seed"], **ident["params"],
            "status": outcome.get("status"), "val_loss": _float(outcome.get("val_loss")),
            "tokens": outcome.get("tokens"), "seconds": outcome.get("seconds"),
            "steps": outcome.get("steps"), "train_loss": _float(outcome.get("train_loss")),
            "n_params": outcome.get("params", outcome.get("n_params")),
            "flops_per_token": outcome.get("flops_per_token"), "message": outcome.get("message") or ""}


def _float(x: Any) -> float:
    return float("nan") if x is None or x == "" else float(x)
