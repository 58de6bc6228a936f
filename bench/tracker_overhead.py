"""Tracker overhead: the wall time of one proxy run per tracker set, against the same run untracked.

    PYTHONPATH=$PWD python bench/tracker_overhead.py            # ~3 min on 2 idle cores

One process (a sweep worker also keeps its imports between trials): each tracker set is imported
and run once to warm up, then `--rounds` rounds run every set in turn on the same config (xs proxy,
`lr_init`'s 300 steps, a row every `--log-every` steps). Per set: the median wall seconds of
`train()` (opening, logging to and closing the trackers included) and the ratio to the untracked
run of the same rounds. W&B runs offline; MLflow writes to a SQLite store in each run folder.
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

SETS = {"none": [], "tensorboard": ["tensorboard"], "mlflow": ["mlflow"], "wandb": ["wandb"],
        "all three": ["tensorboard", "mlflow", "wandb"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    overrides = [f"train.steps={args.steps}", f"train.log_every={args.log_every}", "train.eval_every=50",
                 "train.threads=1"]
    seconds: dict[str, list[float]] = {name: [] for name in SETS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds + 1):  # round 0 warms up imports and the corpus
            for name, track in SETS.items():
                cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*overrides, f"train.track={track}"])
                started = time.perf_counter()
                train(cfg, out_dir=Path(tmp) / f"{name.replace(' ', '_')}-{round_}")
                if round_:
                    seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["none"])
    print(f"xs proxy, {args.steps} steps, a row every {args.log_every} steps, {args.rounds} rounds "
          f"(median; the machine may be shared: see the spread)")
    print(f"{'trackers':<12} {'seconds':>8} {'spread':>14} {'ratio':>6} {'added s':>8}")
    for name, values in seconds.items():
        med = statistics.median(values)
        print(f"{name:<12} {med:8.2f} {min(values):6.2f}-{max(values):<7.2f} {med / base:6.3f} {med - base:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
