"""Tracker overhead: what each tracker adds to one sweep trial, against that trial's own seconds.

    PYTHONPATH=$PWD python bench/tracker_overhead.py            # ~3 min on 2 idle cores

A trial pays a tracker three times: opening it (a run created, params logged), one log call per
metrics row, closing it with the summary. Each is timed directly (`--repeats` times, after one
warm-up that pays the imports, as a sweep worker does once), with the rows of an `lr_init` trial
(300 steps, a row every 10 steps and at each of the 6 evaluations: 36 rows). The same run trains
that trial untracked once for its own seconds. Printed per tracker: open, per-row and close times
(medians), the seconds added per trial and the ratio (trial + added) / trial. W&B runs offline;
MLflow writes to one SQLite store that all runs share, as a sweep's trials do (a plain run's first
open also creates its store's tables: seconds more, once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from windtunnel.config import load_config  # noqa: E402
from windtunnel.training.loop import train  # noqa: E402
from windtunnel.training.trackers import Tracking, open_trackers  # noqa: E402

TRACKERS = ("tensorboard", "mlflow", "wandb")


def time_tracker(name: str, cfg, out: Path, rows: int) -> tuple[float, float, float]:
    """(open seconds, seconds per row, close seconds) of one run logging `rows` rows."""
    started = time.perf_counter()
    # MLflow: one store for every run, as a sweep's trials share the sweep's (made once, by the driver)
    store = f"sqlite:///{out.parent / 'mlflow.db'}"
    trackers = open_trackers(cfg, out_dir=out, tracking=Tracking(names=(name,), mlflow_uri=store))
    opened = time.perf_counter()
    for i in range(rows):
        step = 10 * (i + 1)
        trackers.log(step, {"step": step, "tokens": step * 2048, "lr": 0.01, "loss": 3.0 - i / rows,
                            "val_loss": 3.1 if i % 6 == 0 else "", "tokens_per_s": 12000.0, "mfu": ""})
    logged = time.perf_counter()
    trackers.finish({"status": "ok", "val_loss": 2.0, "train_loss": 2.1, "steps": 300, "tokens": 614400,
                     "seconds": 60.0})
    return opened - started, (logged - opened) / rows, time.perf_counter() - logged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=36, help="metrics rows of one lr_init trial")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=["train.steps=300", "train.eval_every=50",
                                                               "train.log_every=10", "train.threads=1",
                                                               "train.track=[]"])
    with tempfile.TemporaryDirectory() as tmp:
        trial = train(cfg, out_dir=Path(tmp) / "trial")["seconds"]
        print(f"one lr_init trial (xs, 300 steps) untracked: {trial:.1f} s of training (the machine may be shared)")
        print(f"{'tracker':<12} {'open s':>7} {'row ms':>7} {'close s':>8} {'added s':>8} {'ratio':>6}")
        for name in TRACKERS:
            times = [time_tracker(name, cfg, Path(tmp) / f"{name}-{i}", args.rows) for i in range(args.repeats + 1)]
            opened, row, closed = (statistics.median(t[k] for t in times[1:]) for k in range(3))
            added = opened + row * args.rows + closed
            ratio = (trial + added) / trial
            print(f"{name:<12} {opened:7.3f} {row * 1e3:7.2f} {closed:8.3f} {added:8.2f} {ratio:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
