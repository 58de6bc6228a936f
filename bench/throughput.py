"""Proxy training throughput on CPU: tokens/s and model FLOPs utilisation (MFU) per width.

Times the real training loop (`windtunnel.training.loop.train`: forward, backward, grad clip, AdamW step;
fp32) on the CPU proxy ladder's shape (proxies/xs.yaml: 2 layers, 4 heads, batch 16 x seq 128) at
several widths. Achieved FLOP/s = tokens/s x `windtunnel.model.transformer.flops_per_token` (6N + causal
attention); the ceiling is the fp32 matmul peak measured in the same process on the same threads
(best of several large square `torch.matmul`), re-measured beside every width so that both sides of
the ratio see the same machine. Step time is the median step of the timed window; each width is
run `--rounds` times and the best round kept (as for the peak).

`--clock cpu` times both sides by this process's CPU time instead of the wall clock: on a machine
shared with other jobs it still measures the kernels' own efficiency. Use it with `--threads 1`
(with more threads, OpenMP's spin-waiting counts as CPU time). Step time is then the CPU time of
a run of skip + steps steps minus that of a run of skip steps (setup and evaluation cancel).

    PYTHONPATH=$PWD python bench/throughput.py --threads 2
    PYTHONPATH=$PWD python bench/throughput.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from windtunnel.config import load_config
from windtunnel.model.accounting import flops_per_token
from windtunnel.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(*, clock=time.perf_counter, sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best fp32 FLOP/s of a square matmul over `sizes`: the ceiling the MFU is measured against."""
    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.matmul(a, b, out=c)  # warm the kernels and the caches
        for _ in range(repeats):
            start = clock()
            torch.matmul(a, b, out=c)
            best = max(best, 2 * n**3 / max(clock() - start, 1e-9))
    return best


def proxy_config(config: Path, *, d_model: int, steps: int, threads: int, extra: list[str]):
    """The proxy at `d_model`, one evaluation batch at the very end, a metrics row every step."""
    return load_config(config, overrides=[
        f"model.d_model={d_model}", f"train.steps={steps}", "train.warmup_steps=1", f"train.eval_every={steps}",
        "train.eval_batches=1", "train.log_every=1", f"train.threads={threads}", "train.device=cpu",
        "train.precision=fp32", *extra])


def run(cfg, tmp: str) -> list[float]:
    """Train `cfg`; the `seconds` column of metrics.csv (stamped after each step, before evaluation)."""
    summary = train(cfg, out_dir=tmp)
    if summary["status"] != "ok":
        raise SystemExit(f"width {cfg.model.d_model}: run {summary['status']}; its timing would mean nothing")
    with open(Path(tmp) / "metrics.csv") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def step_seconds(args, d_model: int):
    """Seconds of one training step at `d_model` by `args.clock`, and the config it ran."""
    cfg = proxy_config(args.config, d_model=d_model, steps=args.skip + args.steps, threads=args.threads,
                       extra=args.extra)
    with tempfile.TemporaryDirectory() as tmp:
        if args.clock == "wall":
            seconds = run(cfg, tmp)
            return statistics.median(b - a for a, b in zip(seconds[args.skip - 1:], seconds[args.skip:])), cfg
        short = proxy_config(args.config, d_model=d_model, steps=args.skip, threads=args.threads, extra=args.extra)
        cpu = []
        for c in (short, cfg):
            start = time.process_time()
            run(c, tmp)
            cpu.append(time.process_time() - start)
    return (cpu[1] - cpu[0]) / args.steps, cfg


def measure(args, d_model: int) -> dict:
    """Best tokens/s and best peak over `args.rounds` rounds, each taken on its own: a round that
    caught another job's burst lowers one side only, and best-of discards it."""
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    peak, seconds = 0.0, math.inf
    for _ in range(args.rounds):
        peak = max(peak, matmul_peak(clock=clock))
        step, cfg = step_seconds(args, d_model)
        seconds = min(seconds, step)
        peak = max(peak, matmul_peak(clock=clock))
    tokens_per_s = cfg.tokens_per_step / seconds
    flops = tokens_per_s * flops_per_token(cfg.model, cfg.train.seq_len)
    return {"d_model": d_model, "tokens_per_s": tokens_per_s, "flops": flops, "peak": peak, "mfu": flops / peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "proxies" / "xs.yaml", help="proxy config (shape, batch)")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=15, help="timed steps per round")
    p.add_argument("--skip", type=int, default=3, help="untimed first steps (allocator, kernel warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="runs per width; the best is kept")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (robust to other jobs; --threads 1)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override, e.g. --set train.batch_size=32")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = [measure(args, w) for w in args.widths]
    print(f"{args.config.name}: fp32, {args.threads} threads, {args.clock} clock, torch {torch.__version__}, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'width':>6} {'tokens/s':>10} {'GFLOP/s':>9} {'peak GFLOP/s':>13} {'MFU':>6}")
    for r in rows:
        print(f"{r['d_model']:>6} {r['tokens_per_s']:>10.0f} {r['flops'] / 1e9:>9.1f} {r['peak'] / 1e9:>13.1f} "
              f"{r['mfu']:>6.1%}")
    if args.clock == "wall" and max(load_before, os.getloadavg()[0]) > 0.5 + args.threads:
        print("note: other processes were busy on this machine; the figures are lower bounds")


if __name__ == "__main__":
    main()
