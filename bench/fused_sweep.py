"""Fused sweeps: trials per hour of an lr x init grid, fused (K per model) against one trial per
process, at the same concurrency, measured in the same run.

    PYTHONPATH=$PWD nice -n 10 python bench/fused_sweep.py                 # ~4 min on 2 idle cores
    PYTHONPATH=$PWD python bench/fused_sweep.py --widths 64 --ks 4,8 --steps 20   # quicker

Both sides run the same trials (an 8 x 4 grid of train.lr x model.init_std on the xs proxy at each
width, `--steps` steps) on a pool of `--concurrency` worker processes that live for the whole run
(as Ray's reused actors do): the baseline hands each worker one trial at a time (`train`), the fused
side one group of K same-shape trials at a time (`train_group`). The pool is started and the data
prepared before the clock starts. ratio = fused trials/hour / baseline trials/hour; with
`--repeats N` each side is timed N times, interleaved, and the medians are compared.
Goal: >= 1.5x on a 2-core CPU at width <= 128 (>= 4x on a GPU).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128]
STDS = [0.02, 0.05, 0.1, 0.2]


def _configs(width: int, steps: int, device: str):
    from windtunnel.config import load_config
    common = [f"model.d_model={width}", f"train.steps={steps}", f"train.eval_every={steps}",
              "train.log_every=1000", "train.threads=1", f"train.device={device}",
              f"train.warmup_steps={max(1, steps // 10)}"]
    return [load_config(ROOT / "proxies" / "xs.yaml", overrides=common + [f"train.lr={lr}", f"model.init_std={s}"])
            for lr in LRS for s in STDS]


def _run_one(job):
    from windtunnel.training.loop import train
    cfg, out = job
    return train(cfg, out_dir=out)["status"]


def _run_group(job):
    from windtunnel.training.loop import train_group
    cfgs, outs = job
    return [s["status"] for s in train_group(cfgs, out_dirs=outs)]


def _warm(_):
    import torch  # noqa: F401 - import torch and the package once per worker, before the clock

    import windtunnel.training.loop  # noqa: F401
    return os.getpid()


def _timed(pool, fn, jobs) -> float:
    started = time.perf_counter()
    list(pool.imap_unordered(fn, jobs))
    return time.perf_counter() - started


def _fmt(seconds: list[float]) -> str:
    return " / ".join(f"{t:.1f}" for t in seconds) + " s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,128")
    ap.add_argument("--ks", default="4,8,16")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=1, help="time each side N times; compare the medians")
    args = ap.parse_args()
    from windtunnel.data.corpus import open_data
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="wt-fused-") as tmp, ctx.Pool(args.concurrency) as pool:
        pool.map(_warm, range(args.concurrency))
        for width in (int(w) for w in args.widths.split(",")):
            cfgs = _configs(width, args.steps, args.device)
            open_data(path=None, max_bytes=cfgs[0].data.embedded_bytes)  # prepared once, outside the clock
            ks = [int(k) for k in args.ks.split(",")]
            times: dict[int, list[float]] = {0: [], **{k: [] for k in ks}}  # 0: one trial per process
            for rep in range(args.repeats):  # interleaved, so a load change hits both sides alike
                outs = [str(Path(tmp) / f"w{width}-r{rep}-base" / f"t{i}") for i in range(len(cfgs))]
                times[0].append(_timed(pool, _run_one, list(zip(cfgs, outs))))
                for k in ks:
                    groups = [(cfgs[i:i + k], [str(Path(tmp) / f"w{width}-r{rep}-k{k}" / f"t{j}")
                                                for j in range(i, i + k)]) for i in range(0, len(cfgs), k)]
                    times[k].append(_timed(pool, _run_group, groups))
            base = statistics.median(times[0])
            base_rate = len(cfgs) / base * 3600
            print(f"width {width}: {len(cfgs)} trials x {args.steps} steps, concurrency {args.concurrency}: "
                  f"one trial per process {base:.1f} s = {base_rate:.0f} trials/hour "
                  f"(median of {args.repeats}: {_fmt(times[0])})", flush=True)
            for k in ks:
                fused = statistics.median(times[k])
                rate = len(cfgs) / fused * 3600
                print(f"width {width}: fused K={k} {fused:.1f} s = {rate:.0f} trials/hour, "
                      f"ratio {rate / base_rate:.2f}x (runs {_fmt(times[k])}; goal >= 1.5x on CPU)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
