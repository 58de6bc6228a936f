"""The proxy a transfer starts from: the best trial of a sweep, a single run, or a proxy config.

A sweep folder (`runs/<sweep>/`) holds `results.parquet` or `results.csv` (one row per trial:
`trial_id`, `status`, `val_loss`, `tokens`, ..., one column per swept key such as `train.lr`),
`spec.yaml` (`base`, `set`, `parameters`: each `{values: [...]}` or `{distribution, min, max}`) and
`trials/<trial_id>/config.yaml`, the trial's resolved config. The best trial is the one
`windtunnel.analysis.runs.best_trial` names (the spec's metric and goal, seeds averaged) — the same
winner `sweep` and `results` report; its own config.yaml carries every HP it trained with.

Example:
    >>> proxy = load_proxy("runs/lr-grid")
    >>> proxy.config.train.lr, proxy.val_loss, proxy.edges
    (0.0125, 1.83, [])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.runs import SPEC_FILE, best_trial, load_run, results_file
from ..config import RunConfig, load_config
from ..errors import WindtunnelError
from ..provenance import check_format
from ..run_folder import config_path, read_summary, summary_path, trial_dir
from ..typecheck import is_finite

__all__ = ["Proxy", "load_proxy", "edge_messages"]

EDGE_FRACTION = 0.05  # a continuous range's best value within 5 % of an end counts as on the edge


@dataclass(frozen=True)
class Proxy:
    """The proxy's resolved config and what is known of how it did."""

    source: str                     # what was read, for the table's title
    config: RunConfig
    val_loss: float | None          # its held-out loss (None for a bare config)
    tokens: float                   # tokens it trained on
    swept: dict[str, dict] = field(default_factory=dict)   # the sweep's parameter specs
    best: dict[str, Any] = field(default_factory=dict)     # swept key -> the best trial's value
    edges: list[str] = field(default_factory=list)         # swept keys whose best is on the edge


def load_proxy(path: str | os.PathLike) -> Proxy:
    """Read a sweep folder (its best trial), a run folder (config.yaml + summary.json) or a config YAML."""
    path = Path(path)
    if path.is_file():
        cfg = load_config(path)
        return Proxy(source=str(path), config=cfg, val_loss=None, tokens=float(cfg.train.steps * cfg.tokens_per_step))
    if not path.is_dir():
        raise WindtunnelError(f"{path}: no such sweep folder, run folder or config file")
    if results_file(path) is not None:
        return _from_sweep(path)
    if config_path(path).is_file():
        return _from_run(path)
    raise WindtunnelError(f"{path}: expected a sweep folder (results.parquet or results.csv) or a run "
                          "folder (config.yaml)")


def _from_sweep(folder: Path) -> Proxy:
    res = load_run(folder)
    table = res.frame
    row = best_trial(res)
    if row is None:
        raise WindtunnelError(f"{results_file(folder)}: no trial finished with status ok and a finite {res.metric} "
                              f"({len(table)} trials: {table['status'].value_counts().to_dict()})")
    n_ok = int((table["status"] == "ok").sum())
    swept = {k: v for k, v in (res.spec.get("parameters") or {}).items() if isinstance(v, dict)}
    best = {k: _plain(row[k]) for k in swept if k in row}
    cfg = _trial_config(folder, str(row["trial_id"]), res.spec, best)
    tokens = float(row["tokens"]) if is_finite(row.get("tokens")) else float(cfg.train.steps * cfg.tokens_per_step)
    val = row.get("val_loss")
    return Proxy(source=f"{folder} (best of {n_ok} ok trials of {len(table)}: trial {row['trial_id']})",
                 config=cfg, val_loss=float(val) if is_finite(val) else None, tokens=tokens, swept=swept, best=best,
                 edges=edge_messages(swept, best))


def _from_run(folder: Path) -> Proxy:
    check_format(folder)  # a newer, unknown run-folder format: one line, not a misread
    cfg = load_config(config_path(folder))
    summary = read_summary(folder) or {}
    if summary and summary.get("status") != "ok":
        raise WindtunnelError(f"{summary_path(folder)}: the run ended with status {summary.get('status')!r}; "
                              "transfer from a run that finished ok")
    val = summary.get("val_loss")
    tokens = summary.get("tokens") or cfg.train.steps * cfg.tokens_per_step
    return Proxy(source=str(folder), config=cfg, val_loss=float(val) if is_finite(val) else None, tokens=float(tokens))


def _trial_config(folder: Path, trial_id: str, spec: dict, best: dict) -> RunConfig:
    """The trial's own resolved config; failing that, the spec's base with its `set` and the row's values."""
    path = config_path(trial_dir(folder, trial_id))
    if path.is_file():
        return load_config(path)
    base = spec.get("base")
    if not base:
        raise WindtunnelError(f"{path}: missing, and {folder / SPEC_FILE} names no `base` config to rebuild it from")
    base_path = Path(base) if Path(base).is_absolute() or Path(base).exists() else folder / base
    return load_config(base_path, overrides={**(spec.get("set") or {}), **best})


def edge_messages(swept: dict[str, dict], best: dict[str, Any]) -> list[str]:
    """One message per swept numeric parameter whose best value sits on the edge of its range.

    Example:
        >>> edge_messages({"train.lr": {"values": [0.001, 0.01, 0.1]}}, {"train.lr": 0.1})
        ['train.lr = 0.1 is the highest value of its grid [0.001, 0.01, 0.1]: the optimum may lie beyond it']
    """
    out = []
    for key, spec in swept.items():
        value = best.get(key)
        if not _is_number(value):
            continue
        if isinstance(spec.get("values"), list):
            values = sorted(v for v in spec["values"] if _is_number(v))
            if len(values) >= 2 and value in (values[0], values[-1]):
                side = "lowest" if value == values[0] else "highest"
                out.append(f"{key} = {value:g} is the {side} value of its grid {values}: the optimum may lie beyond it")
        elif _is_number(spec.get("min")) and _is_number(spec.get("max")) and spec["max"] > spec["min"]:
            log = "log" in str(spec.get("distribution", "")) and spec["min"] > 0 and value > 0
            f = math.log if log else (lambda x: x)
            where = (f(value) - f(spec["min"])) / (f(spec["max"]) - f(spec["min"]))
            if where < EDGE_FRACTION or where > 1 - EDGE_FRACTION:
                side = "low" if where < 0.5 else "high"
                out.append(f"{key} = {value:g} is at the {side} end of its range [{spec['min']:g}, {spec['max']:g}]: "
                           "the optimum may lie beyond it")
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalar -> Python


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
