"""Build synthetic sweep run folders (results table + spec) in the sweep engine's format, for tests."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml


def write_run(run_dir: Path, rows: list[dict], parameters: dict, *, name: str | None = None,
              csv: bool = False) -> Path:
    """Write `results.parquet` (or `.csv`) and `spec.yaml`; fill the contract's bookkeeping columns."""
    run_dir.mkdir(parents=True, exist_ok=True)
    full = []
    for i, row in enumerate(rows):
        full.append({"trial_id": f"t{i:04d}", "status": "ok", "tokens": 1000, "seconds": 1.0, "seed": 0, **row})
    frame = pd.DataFrame(full)
    if csv:
        frame.to_csv(run_dir / "results.csv", index=False)
    else:
        frame.to_parquet(run_dir / "results.parquet", index=False)
    spec = {"name": name or run_dir.name, "base": "proxies/xs.yaml", "set": {}, "method": "grid",
            "metric": {"name": "val_loss", "goal": "minimize"}, "parameters": parameters}
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return run_dir


def transfer_rows(vertex_of, widths=(64, 128, 256, 512), exps=range(-12, -3),
                  params=("mup", "sp"), floor_of=None) -> list[dict]:
    """Loss curves that are exact parabolas in log2(lr) with a chosen vertex per (param, width)."""
    rows = []
    for p in params:
        for w in widths:
            v = vertex_of(p, w)
            floor = floor_of(p, w) if floor_of else 3.0 - 0.1 * math.log2(w / 64)
            for e in exps:
                rows.append({"model.parametrization": p, "model.d_model": w, "train.lr": 2.0**e,
                             "val_loss": floor + 0.05 * (e - v) ** 2})
    return rows


TRANSFER_PARAMETERS = {"model.parametrization": {"values": ["mup", "sp"]},
                       "model.d_model": {"values": [64, 128, 256, 512]},
                       "train.lr": {"values": [2.0**e for e in range(-12, -3)]}}
