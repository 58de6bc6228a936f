"""The results table of a sweep: one row per finished trial, written atomically as trials finish.
Also the one reader of a sweep folder's files (`read_results`, `read_spec_data`) that plots, checks
and transfer share: no Ray, Optuna or torch here.

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
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..errors import WindtunnelError
from ..typecheck import read_yaml_mapping

__all__ = ["STATUSES", "BASE_COLUMNS", "EXTRA_COLUMNS", "SPEC_FILE", "ResultsTable", "read_results",
           "results_file", "read_spec_data", "best_row", "sort_results", "row_from_trial_dir", "make_row",
           "write_json", "atomic_write"]

STATUSES = ("ok", "diverged", "pruned", "error")
BASE_COLUMNS = ["trial_id", "status", "val_loss", "tokens", "seconds", "seed"]
EXTRA_COLUMNS = ["steps", "train_loss", "n_params", "flops_per_token", "message"]
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
TRIAL_FILE = "trial.json"
SUMMARY_FILE = "summary.json"
SPEC_FILE = "spec.yaml"


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
        return best_row(self.frame(), metric=self.metric, goal=self.goal)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for row in self.rows.values():
            out[row["status"]] += 1
        return out


def read_results(run_dir: str | os.PathLike):
    """The results table of a sweep folder as a DataFrame (parquet, else CSV).

    Both files read back alike: `trial_id` and `status` as strings, a diverged trial's `inf` as inf,
    a missing number as NaN and a missing message as "" (the CSV holds both as an empty field).

    Example:
        >>> df = read_results("runs/lr_init")
        >>> df.loc[df.status == "ok", ["train.lr", "model.init_std", "val_loss"]]   # doctest: +SKIP
    """
    path = results_file(run_dir)
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
    """The table a sweep folder holds: `results.parquet`, else `results.csv`; None when it has neither."""
    for name in (RESULTS_PARQUET, RESULTS_CSV):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def read_spec_data(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A sweep folder's `spec.yaml` as plain data, unchecked; {} when the folder has none.

    Plots, checks and transfer read it so (a hand-written folder's spec need only be a mapping);
    `windtunnel.sweep.read_spec` builds the checked `SweepSpec` from it.

    Example:
        >>> read_spec_data("runs/lr_init")["metric"]                # doctest: +SKIP
        {'name': 'val_loss', 'goal': 'minimize'}
    """
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        return {}
    return read_yaml_mapping(path, expected="name, base, set, method, parameters")


def sort_results(df, *, metric: str = "val_loss", goal: str = "minimize"):
    """Finished (ok) trials best first, then the rest (diverged, pruned, error) in id order."""
    ok = df[df["status"] == "ok"].sort_values(metric, ascending=goal == "minimize", kind="stable")
    rest = df[df["status"] != "ok"].sort_values("trial_id", kind="stable")
    import pandas as pd
    return pd.concat([ok, rest]).reset_index(drop=True)


def best_row(df, *, metric: str = "val_loss", goal: str = "minimize") -> dict[str, Any] | None:
    """The best `ok` row as a dict, or None when no trial finished ok."""
    ok = df[(df["status"] == "ok") & df[metric].map(lambda v: v is not None and math.isfinite(float(v)))]
    if ok.empty:
        return None
    return sort_results(ok, metric=metric, goal=goal).iloc[0].to_dict()


def row_from_trial_dir(trial_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A row rebuilt from a trial folder's trial.json + summary.json; None if the trial did not finish."""
    trial_dir = Path(trial_dir)
    try:
        ident = json.loads((trial_dir / TRIAL_FILE).read_text())
        summary = json.loads((trial_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") not in STATUSES:
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


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """JSON via a temp file and os.replace (inf and nan are written as Infinity / NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(payload, indent=2, default=_plain)))


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else str(x)


def _float(x: Any) -> float:
    return float("nan") if x is None or x == "" else float(x)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(temp_path)` beside `path`, then rename it into place: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
