"""Proxy training throughput on CPU: tokens/s and model FLOPs utilisation (MFU) per width.

Times the real training loop (`windtunnel.train.train`: forward, backward, grad clip, AdamW step;
fp32) on the proxy ladder's shape (2 layers, batch 16 x seq 128) at several widths, and divides the
achieved model FLOP/s (`windtunnel.model.flops_per_token`) by the fp32 matmul peak measured in the
same process on the same threads (best of several large square `torch.matmul`).

    PYTHONPATH=$PWD python bench/throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from windtunnel.config import load_config
from windtunnel.model import flops_per_token
from windtunnel.train import train

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(*, sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best fp32 FLOP/s of a square matmul over `sizes` (the ceiling an MFU is measured against)."""
    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.matmul(a, b, out=c)  # warm the kernels and the caches
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b, out=c)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def proxy_throughput(config: Path, *, d_model: int, steps: int, skip: int, threads: int,
                     extra: list[str]) -> dict:
    """Tokens/s of `steps` training steps at `d_model`, not counting the first `skip` steps."""
    overrides = [f"model.d_model={d_model}", f"train.steps={skip + steps}", "train.warmup_steps=1",
                 f"train.eval_every={skip + steps}", "train.eval_batches=1", "train.log_every=1",
                 f"train.threads={threads}", "train.device=cpu", "train.precision=fp32", *extra]
    cfg = load_config(config, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, out_dir=tmp)
        with open(Path(tmp) / "metrics.csv") as f:
            rows = {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(f)}
    # metrics.csv `seconds` is taken before the final evaluation, so this window is training only
    seconds = rows[skip + steps] - rows[skip]
    tokens_per_s = steps * cfg.tokens_per_step / seconds
    flops = flops_per_token(cfg.model, cfg.train.seq_len)
    return {"d_model": d_model, "tokens_per_s": tokens_per_s, "flops": tokens_per_s * flops,
            "params": None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "proxies" / "xs.yaml")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="timed steps per width")
    p.add_argument("--skip", type=int, default=3, help="untimed first steps (allocator, kernels)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    results = [proxy_throughput(args.config, d_model=w, steps=args.steps, skip=args.skip,
                                threads=args.threads, extra=args.extra) for w in args.widths]
    peak = max(peak, matmul_peak())  # measured before and after: the better figure is the ceiling
    print(f"threads={args.threads}  config={args.config.name}  fp32")
    print(f"{'width':>6} {'tokens/s':>10} {'GFLOP/s':>9} {'peak GFLOP/s':>13} {'MFU':>6}")
    for r in results:
        print(f"{r['d_model']:>6} {r['tokens_per_s']:>10.0f} {r['flops'] / 1e9:>9.1f} {peak / 1e9:>13.1f} "
              f"{r['flops'] / peak:>6.1%}")


if __name__ == "__main__":
    main()
