"""Tokens/s and MFU of the 1.2B target on one CUDA GPU, measured with the training loop itself.

For each attention backend (flash-attn when installed, then SDPA) it trains the target for a few
steps through `windtunnel.training.loop.train` (bf16 autocast, fused AdamW, torch.compile unless
--no-compile) and reads the speed of the steps after the warm-up from the run's metrics.csv.
MFU = achieved FLOP/s / the device's dense bf16 peak (`windtunnel.model.accounting.PEAK_TFLOPS_BF16`, or
WINDTUNNEL_PEAK_TFLOPS), both measured and known in this run; the goal is >= 50 % on H100/H200.
It also prints the peak memory next to the estimate `windtunnel transfer` shows.

    python bench/full_run.py                      # 1.2b, micro-batch 2 x 4096, 8 micro-batches per step
    python bench/full_run.py --micro-batch 4 --activation-checkpointing
    python bench/full_run.py --smoke              # check this script on CPU with the `cpu` target (no figures)

Without a CUDA device it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    args = parse_args()
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("bench/full_run.py: no CUDA device here; it measures the 1.2B model on a GPU (try --smoke on CPU)",
              file=sys.stderr)
        return 2
    from windtunnel.model.accounting import count_params, memory_per_gpu, peak_flops
    from windtunnel.model.transformer import flash_attn_available, flops_per_token

    device = "cpu" if args.smoke else "cuda"
    peak = peak_flops(device)
    backends = ["sdpa"] if args.smoke or not flash_attn_available() else ["flash", "sdpa"]
    if args.attention != "both":
        backends = [b for b in backends if b == args.attention] or _missing(args.attention)
    cfg = bench_config(args, backends[0], device)
    fpt = flops_per_token(cfg.model, cfg.train.seq_len)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak_text = f"{peak / 1e12:.1f} TFLOP/s" if peak else "unknown (set WINDTUNNEL_PEAK_TFLOPS)"
    print(f"device: {name}; dense bf16 peak: {peak_text}")
    print(f"target {Path(cfg.source).stem}: {count_params(cfg.model).total / 1e9:.3f}B params, "
          f"{fpt / 1e9:.2f} GFLOP/token, "
          f"micro-batch {cfg.train.batch_size} x {cfg.train.seq_len}, {cfg.train.grad_accum} per step, "
          f"{cfg.train.precision}, compile {'on' if cfg.train.compile else 'off'}, "
          f"activation checkpointing {'on' if cfg.model.activation_checkpointing else 'off'}")
    print(f"{'attention':<12}{'tokens/s':>12}{'MFU':>9}{'peak mem':>12}{'estimate':>12}")
    results = {}
    for backend in backends:
        cfg = bench_config(args, backend, device)
        rate, memory = measure(cfg, args.warmup)
        util = fpt * rate / peak if peak else None
        results[backend] = rate
        estimate = memory_per_gpu(cfg).total / 2**30
        print(f"{_label(backend):<12}{rate:>12,.0f}{f'{util:.1%}' if util else 'n/a':>9}"
              f"{f'{memory:.1f} GiB' if memory else 'n/a':>12}{estimate:>8.1f} GiB", flush=True)
    if len(results) == 2:
        print(f"flash-attn / SDPA tokens/s: {results['flash'] / results['sdpa']:.2f}x")
    if peak:
        best = max(results.values()) * fpt / peak
        print(f"best MFU {best:.1%}: {'meets' if best >= 0.5 else 'below'} the 50 % goal")
    return 0


def bench_config(args, backend: str, device: str):
    from windtunnel.target.presets import load_target
    target = load_target("cpu" if args.smoke else args.target)
    overrides = {"model.attention": backend, "model.activation_checkpointing": args.activation_checkpointing,
                 "train.schedule": "constant", "train.warmup_steps": 1, "train.log_every": 1,
                 "train.eval_every": 10**6, "train.eval_batches": 1, "train.checkpoint_every": 0,
                 "train.compile": not args.no_compile and not args.smoke, "train.device": device}
    if args.micro_batch:
        overrides["train.batch_size"] = args.micro_batch
    if args.smoke:
        overrides.update({"train.threads": 2, "data.embedded_bytes": 400_000,
                          "train.batch_size": args.micro_batch or 4})
    return target.config(steps=args.warmup + args.steps, grad_accum=args.accum, overrides=overrides)


def measure(cfg, warmup: int) -> tuple[float, float | None]:
    """(tokens/s over the steps after `warmup`, peak GiB allocated) of a short real training run."""
    import torch

    from windtunnel.training.metrics import read_metrics
    from windtunnel.training.loop import train
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, out_dir=out)
        rows = read_metrics(Path(out) / "metrics.csv")
    if summary["status"] != "ok":
        raise SystemExit(f"bench/full_run.py: the run ended {summary['status']}")
    start, end = rows[warmup - 1], rows[-1]  # rows are per step (log_every 1); warm-up includes compilation
    rate = (end["tokens"] - start["tokens"]) / (end["seconds"] - start["seconds"])
    memory = torch.cuda.max_memory_allocated() / 2**30 if cfg.train.device == "cuda" else None
    return rate, memory


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="1.2b", help="target preset or YAML (default 1.2b)")
    p.add_argument("--steps", type=int, default=6, help="measured optimizer steps (default 6)")
    p.add_argument("--warmup", type=int, default=3, help="steps not measured: compilation, allocator (default 3)")
    p.add_argument("--accum", type=int, default=8, help="micro-batches per optimizer step (default 8)")
    p.add_argument("--micro-batch", type=int, help="sequences per micro-batch (default: the target's)")
    p.add_argument("--attention", choices=["both", "flash", "sdpa"], default="both")
    p.add_argument("--no-compile", action="store_true", help="eager mode (torch.compile is on by default)")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--smoke", action="store_true", help="run this script's logic on CPU with the `cpu` target")
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    return args


def _label(backend: str) -> str:
    return "flash-attn" if backend == "flash" else "SDPA"


def _missing(backend: str):
    raise SystemExit(f"bench/full_run.py: attention backend {backend!r} is not available here "
                     "(flash-attn not installed?)")


if __name__ == "__main__":
    sys.exit(main())
