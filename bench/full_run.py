"""The full run measured with the training loop itself: tokens/s, MFU and peak memory per GPU.

For each combination of `--parallel` (ddp, fsdp), `--ac` (activation checkpointing off, on) and
`--attention` (every SDPA kernel and flash-attn that this machine has), it trains the target for
`--steps` steps through `windtunnel.training.loop.train` in two sessions: the first stops at
`--stop-at` with a (sharded) checkpoint, the second resumes from it — so each combination also
exercises one checkpoint and one resume. Speed is read from metrics.csv over the steps after
`--warmup` (compilation), leaving out the first step of the resumed session; MFU is achieved FLOP/s
over the devices' dense bf16 peak (`windtunnel.model.accounting.PEAK_TFLOPS_BF16` or
WINDTUNNEL_PEAK_TFLOPS), counting causal attention FLOPs. Peak memory is the largest of the ranks'
`torch.cuda.max_memory_allocated`, printed beside the estimate that `windtunnel transfer` shows.
The goal: >= 50 % MFU for the 1.2B on one H100/H200-class GPU.

    torchrun --standalone --nproc-per-node=8 bench/full_run.py            # 1.2b on 8 GPUs
    python bench/full_run.py --parallel ddp --attention flash_attn,cudnn  # one GPU
    torchrun --standalone --nproc-per-node=2 bench/full_run.py --smoke    # this script's logic on CPU (gloo)

On CPU (`--smoke`) it runs the tiny `cpu` target and prints no MFU or memory: those need a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    args = parse_args()
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("bench/full_run.py: no CUDA device here; it measures the full run on GPUs (try --smoke on CPU)",
              file=sys.stderr)
        return 2
    from windtunnel.training.distributed import init_distributed
    ctx = init_distributed("cpu" if args.smoke else "cuda")
    try:
        return run_all(args, ctx)
    finally:
        ctx.close()


def run_all(args, ctx) -> int:
    import torch

    from windtunnel.model.accounting import count_params, flops_per_token, peak_flops
    peak = peak_flops(ctx.device)
    combos = [(p, ac, a) for p, ac, a in itertools.product(args.parallel, args.ac, attention_choices(args))
              if not (p == "fsdp" and ctx.world == 1 and ctx.device.type == "cpu")]
    cfg = bench_config(args, ctx, *combos[0])
    fpt = flops_per_token(cfg.model, cfg.train.seq_len)
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu"
    say(ctx, f"device: {name} x{ctx.world}; dense bf16 peak: "
             f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown (set WINDTUNNEL_PEAK_TFLOPS)'}")
    say(ctx, f"target {Path(cfg.source).stem}: {count_params(cfg.model).total / 1e6:,.1f}M params, "
             f"{fpt / 1e9:.3f} GFLOP/token (causal attention counted), micro-batch {cfg.train.batch_size} x "
             f"{cfg.train.seq_len}, {cfg.train.grad_accum} per step, {cfg.train.precision}, "
             f"compile {'per block' if cfg.train.compile else 'off'}, loss chunk {cfg.model.loss_chunk_tokens}")
    say(ctx, f"{'parallel':<9}{'act.ckpt':<9}{'attention':<11}{'tokens/s':>11}{'per GPU':>10}{'MFU':>8}"
             f"{'peak mem':>11}{'estimate':>11}  checkpoint+resume")
    results = {}
    for combo in combos:
        try:
            rate, memory, resumed = measure(bench_config(args, ctx, *combo), ctx, args)
        except RuntimeError as e:  # e.g. an SDPA kernel that does not take this shape (GQA) on this GPU
            say(ctx, f"{combo[0]:<9}{combo[1]:<9}{combo[2]:<11}unavailable: {' '.join(str(e).split())[:100]}")
            continue
        util = fpt * rate / (peak * ctx.world) if peak else None
        results[combo] = rate
        say(ctx, f"{combo[0]:<9}{combo[1]:<9}{combo[2]:<11}{rate:>11,.0f}{rate / ctx.world:>10,.0f}"
                 f"{f'{util:.1%}' if util else 'n/a':>8}{f'{memory:.1f} GiB' if memory else 'n/a':>11}"
                 f"{estimate(combo, args, ctx):>7.2f} GiB  {'ok' if resumed else 'FAILED'}")
    for parallel, ac in itertools.product(args.parallel, args.ac):
        mine = {a: r for (p, c, a), r in results.items() if (p, c) == (parallel, ac)}
        if len(mine) > 1:
            best = max(mine, key=mine.get)
            others = ", ".join(f"{a} {mine[best] / r:.2f}x" for a, r in mine.items() if a != best)
            say(ctx, f"{parallel}, act.ckpt {ac}: fastest attention {best} ({others})")
    if peak and results:
        best = max(results, key=results.get)
        util = fpt * results[best] / (peak * ctx.world)
        say(ctx, f"best: {' / '.join(best)} at MFU {util:.1%}: {'meets' if util >= 0.5 else 'below'} the 50 % goal")
    return 0


def attention_choices(args) -> list[str]:
    """The requested attention backends this machine can run (flash-attn and cuDNN need CUDA)."""
    from windtunnel.model.transformer import flash_attn_available
    wanted = args.attention or (["sdpa", "math"] if args.smoke else ["flash_attn", "cudnn", "flash", "efficient"])
    usable = {"sdpa", "math", "auto"} | ({"flash_attn"} if flash_attn_available() else set())
    if not args.smoke:
        usable |= {"cudnn", "flash", "efficient"}
    return [a for a in wanted if a in usable] or ["sdpa"]


def bench_config(args, ctx, parallel: str, ac: str, attention: str):
    from windtunnel.target.presets import load_target
    target = load_target("cpu" if args.smoke else args.target)
    accum = max(ctx.world, round(args.accum / ctx.world) * ctx.world)
    overrides = {"model.attention": attention, "model.activation_checkpointing": ac == "on",
                 "train.parallel": parallel, "train.checkpoint_format": "sharded", "train.schedule": "constant",
                 "train.warmup_steps": 1, "train.log_every": 1, "train.eval_every": 10**6, "train.eval_batches": 1,
                 "train.checkpoint_every": 0, "train.keep_checkpoints": 1,
                 "train.compile": not args.no_compile and not args.smoke,
                 "train.device": ctx.device.type}
    if args.micro_batch:
        overrides["train.batch_size"] = args.micro_batch
    if args.smoke:
        overrides.update({"train.threads": 1, "data.embedded_bytes": 400_000, "train.batch_size": 4,
                          "train.seq_len": 64, "model.n_layers": 2, "model.loss_chunk_tokens": 64})
    return target.config(steps=args.steps, grad_accum=accum, overrides=overrides)


def measure(cfg, ctx, args) -> tuple[float, float | None, bool]:
    """(tokens/s, peak GiB allocated on the fullest rank, whether the resume continued) of one combination."""
    import torch
    import torch.distributed as dist

    from windtunnel.training.loop import train
    from windtunnel.training.metrics import read_metrics
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        out = [tmp]
        if ctx.world > 1:  # every rank writes into rank 0's folder
            dist.broadcast_object_list(out, src=0)
        run = Path(out[0]) / "run"
        first = train(cfg, out_dir=run, stop_after=args.stop_at)
        second = train(cfg, out_dir=run, resume=True)
        rows = read_metrics(run / "metrics.csv") if ctx.is_main else []
        ctx.barrier()
    resumed = first["status"] == "stopped" and second["status"] == "ok" and second["steps"] == cfg.train.steps
    memory = None
    if ctx.device.type == "cuda":
        peak = torch.tensor(torch.cuda.max_memory_allocated(ctx.device) / 2**30, device=ctx.device)
        if ctx.world > 1:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        memory = peak.item()
    return steady_rate(rows, warmup=args.warmup, resume_step=args.stop_at), memory, resumed


def steady_rate(rows: list[dict], *, warmup: int, resume_step: int) -> float:
    """Tokens/s over consecutive steps after `warmup`, without the step that follows the resume
    (it pays for compilation again and for loading the checkpoint)."""
    tokens = seconds = 0.0
    for before, after in itertools.pairwise(rows):
        if after["step"] <= warmup or after["step"] == resume_step + 1 or after["step"] != before["step"] + 1:
            continue
        tokens += after["tokens"] - before["tokens"]
        seconds += after["seconds"] - before["seconds"]
    return tokens / seconds if seconds > 0 else float("nan")


def estimate(combo, args, ctx) -> float:
    from windtunnel.model.accounting import memory_per_gpu
    return memory_per_gpu(bench_config(args, ctx, *combo), nproc=ctx.world, parallel=combo[0]).total / 2**30


def say(ctx, text: str) -> None:
    if ctx.is_main:
        print(text, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def csv(s):
        return [x for x in s.split(",") if x]

    p.add_argument("--target", default="1.2b", help="target preset or YAML (default 1.2b)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per combination (default 20)")
    p.add_argument("--stop-at", type=int, default=10, help="checkpoint and restart after this step (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="steps not measured: compilation, allocator (default 3)")
    p.add_argument("--accum", type=int, default=8, help="micro-batches per optimizer step, all GPUs (default 8)")
    p.add_argument("--micro-batch", type=int, help="sequences per micro-batch (default: the target's)")
    p.add_argument("--parallel", type=csv, default=["ddp", "fsdp"], help="ddp,fsdp (default both)")
    p.add_argument("--ac", type=csv, default=["off", "on"], help="activation checkpointing: off,on (default both)")
    p.add_argument("--attention", type=csv, help="backends to compare (default: flash_attn,cudnn,flash,efficient "
                                                 "where available; sdpa,math with --smoke)")
    p.add_argument("--no-compile", action="store_true", help="eager mode (per-block compile is on by default)")
    p.add_argument("--smoke", action="store_true", help="run this script's logic on CPU with the tiny `cpu` target")
    args = p.parse_args()
    if not 1 <= args.warmup < args.stop_at < args.steps:
        p.error("need 1 <= --warmup < --stop-at < --steps")
    bad = [x for x in args.parallel if x not in ("ddp", "fsdp")] + [x for x in args.ac if x not in ("off", "on")]
    if bad:
        p.error(f"--parallel takes ddp,fsdp and --ac off,on; got {bad}")
    return args


if __name__ == "__main__":
    sys.exit(main())
