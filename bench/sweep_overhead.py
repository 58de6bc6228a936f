"""Sweep overhead: wall time of a 16-trial sweep against its trials' own training time.

    PYTHONPATH=$PWD python bench/sweep_overhead.py            # ~3-4 min on 2 idle cores

ratio = wall / (sum of the trials' training seconds / concurrency), both measured in this run.
The wall time covers everything `run_sweep` does: Ray start, Tune, worker start-up, data, model
builds, evaluation and the results table. Target: <= 1.10 for trials of >= 20 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from windtunnel.sweep import read_results, run_sweep  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=400, help="steps per trial (xs proxy: ~25 s on one idle core)")
    ap.add_argument("--concurrency", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="wt-bench-") as tmp:
        spec = Path(tmp) / "overhead.yaml"
        lrs = [round(0.002 * 1.25 ** i, 6) for i in range(args.trials)]
        spec.write_text(yaml.safe_dump({
            "name": "overhead", "base": str(ROOT / "proxies" / "xs.yaml"), "method": "grid",
            "set": {"train.steps": args.steps, "train.eval_every": 100},
            "parameters": {"train.lr": {"values": lrs}},
            "budget": {"max_concurrent": args.concurrency}, "resources": {"cpu": 1}}))
        started = time.perf_counter()
        run_sweep(spec, out_dir=Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - started
        df = read_results(Path(tmp) / "run")

    seconds = df["seconds"].astype(float)
    ideal = seconds.sum() / args.concurrency
    print(f"trials: {len(df)} ({(df['status'] == 'ok').sum()} ok), concurrency {args.concurrency}, "
          f"trial training time {seconds.min():.1f}-{seconds.max():.1f} s (mean {seconds.mean():.1f} s)")
    print(f"sweep wall time: {wall:.1f} s; sum of trial seconds / concurrency: {ideal:.1f} s")
    print(f"overhead ratio: {wall / ideal:.3f}x (target <= 1.10x for trials of >= 20 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
