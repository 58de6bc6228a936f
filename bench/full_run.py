"""The full run measured with the training loop itself: tokens/s, MFU and peak memory per GPU.

For each combination of `--parallel` (ddp, fsdp), `--ac` (activation checkpointing off, on) and
`--attention` (every SDPA kernel and flash-attn that this machine has), it trains the target for
`--steps` steps through `windtunnel.training.loop.train` in two sessions: the first stops at
`--stop-at` with a (sharded) checkpoint, the second resumes from it — so each combination also
exercises one checkpoint and one resume. Every step accumulates `--accum-per-gpu` micro-batches on
each GPU (default 4), so gradient synchronisation is skipped on all but the last (DDP `no_sync`,
FSDP keeping its parameters gathered across them). With `--reference` the same steps also run
uninterrupted, and the resumed losses are compared with it (they must continue exactly).

Speed is read from metrics.csv over the steps after `--warmup` (compilation), leaving out the first
step of the resumed session; MFU is achieved FLOP/s over the devices' dense bf16 peak
(`windtunnel.model.accounting.PEAK_TFLOPS_BF16` or WINDTUNNEL_PEAK_TFLOPS), counting causal
attention FLOPs; `--matmul-peak` also measures what a large bf16 matmul reaches on this GPU and
prints MFU against that too. Peak memory is the largest of the ranks' `torch.cuda.max_memory_allocated`
over both sessions, printed beside the estimate that `windtunnel transfer` shows.
A combination that fails (an SDPA kernel that does not take this shape, out of memory, dynamo's
recompile limit) is reported as skipped with its reason, and the next one runs; between
combinations dynamo's caches are reset and the previous model collected, so no peak includes it.
The goal: >= 50 % MFU for the 1.2B on one H100/H200-class GPU.

    torchrun --standalone --nproc-per-node=8 bench/full_run.py            # 1.2b on 8 GPUs
    python bench/full_run.py --parallel ddp --attention flash_attn,cudnn  # one GPU
    torchrun --standalone --nproc-per-node=2 bench/full_run.py --smoke    # this script's logic on CPU (gloo)

On CPU (`--smoke`) it runs the tiny `cpu` target and prints no MFU or memory: those need a GPU
(`torch.cuda.max_memory_allocated` has nothing to measure on a CPU).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import sys
import tempfile
import time
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
    matmul = matmul_tflops(ctx.device) if args.matmul_peak and ctx.device.type == "cuda" else None
    if matmul:
        say(ctx, f"measured bf16 matmul peak (8192^3, one GPU): {matmul:.0f} TFLOP/s")
    say(ctx, f"micro-batches per GPU per step: {cfg.train.grad_accum // ctx.world} (gradients reduced once per "
             f"step; memory: {'measured' if ctx.device.type == 'cuda' else 'not measurable on CPU'})")
    say(ctx, f"{'parallel':<9}{'act.ckpt':<9}{'attention':<11}{'tokens/s':>11}{'per GPU':>10}{'MFU':>8}"
             f"{'peak mem':>11}{'estimate':>11}  checkpoint+resume")
    results, report = {}, []
    for combo in combos:
        release(ctx)  # the previous combination's compiled graphs and model: out of this one's peak
        try:
            got = measure(bench_config(args, ctx, *combo), ctx, args)
        except Exception as e:  # noqa: BLE001 - any failure of one combination (dynamo's recompile-limit
            # error is no RuntimeError) skips it, with its reason, and the others still run
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
            say(ctx, f"{combo[0]:<9}{combo[1]:<9}{combo[2]:<11}skipped: {reason}")
            report.append({"combination": list(combo), "skipped": reason})
            continue
        rate, memory = got["tokens_per_s"], got["peak_gib"]
        util = fpt * rate / (peak * ctx.world) if peak else None
        est = estimate(combo, args, ctx)
        results[combo] = rate
        say(ctx, f"{combo[0]:<9}{combo[1]:<9}{combo[2]:<11}{rate:>11,.0f}{rate / ctx.world:>10,.0f}"
                 f"{f'{util:.1%}' if util else 'n/a':>8}{f'{memory:.1f} GiB' if memory else 'n/a':>11}"
                 f"{est:>7.2f} GiB  {resume_text(got)}")
        if matmul and rate == rate:
            say(ctx, f"{'':<29}MFU against the measured matmul peak: {fpt * rate / (matmul * 1e12 * ctx.world):.1%}")
        if memory:
            say(ctx, f"{'':<29}estimate / measured peak memory: {est / memory:.2f}")
        report.append({"combination": list(combo), **got, "mfu": util, "estimate_gib": est,
                       "mfu_vs_matmul_peak": fpt * rate / (matmul * 1e12 * ctx.world) if matmul else None})
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
    if args.json and ctx.is_main:
        Path(args.json).write_text(json.dumps({"device": name, "world": ctx.world, "peak_tflops": peak and peak / 1e12,
                                               "matmul_tflops": matmul, "flops_per_token": fpt,
                                               "results": report}, indent=1))
    failed = [r for r in report if "skipped" in r or not r["resumed"] or r.get("first_step_equal") is False]
    return 1 if failed and args.strict else 0


def release(ctx) -> None:
    """Forget dynamo's compiled graphs (a compiled block's forward holds the model it was compiled
    for in a reference cycle) and collect, so the next combination starts with nothing alive."""
    import torch
    torch._dynamo.reset()
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def resume_text(got: dict) -> str:
    if not got["resumed"]:
        return "FAILED"
    if got.get("continues_exactly") is None:
        return "ok"
    same = "exactly" if got["continues_exactly"] else "NOT exactly"
    return (f"ok, continues {same} (first step equal: {got['first_step_equal']}, "
            f"max rel. diff {got['max_rel_diff']:.1e})")


def matmul_tflops(device, n: int = 8192, reps: int = 20) -> float:
    """What a large bf16 matmul reaches on this GPU (TFLOP/s), the practical ceiling beside the nominal peak."""
    import torch
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e12


def attention_choices(args) -> list[str]:
    """The requested attention backends this machine can run (flash-attn and cuDNN need CUDA)."""
    from windtunnel.model.transformer import flash_attn_available
    wanted = args.attention or (["sdpa", "math"] if args.smoke else ["flash_attn", "cudnn", "flash", "efficient"])
    usable = {"sdpa", "math", "auto"} | ({"flash_attn"} if flash_attn_available() else set())
    if not args.smoke:
        usable |= {"cudnn", "flash", "efficient"}
    return [a for a in wanted if a in usable] or ["sdpa"]


def bench_config(args, ctx, parallel: str, ac: str, attention: str):
    from windtunnel.fullrun.presets import load_target
    target = load_target("cpu" if args.smoke else args.target)
    accum = args.accum_per_gpu * ctx.world  # several micro-batches on every GPU: accumulation without sync
    overrides = {"model.attention": attention, "model.activation_checkpointing": ac == "on",
                 "train.parallel": parallel, "train.checkpoint_format": "sharded", "train.schedule": "constant",
                 "train.warmup_steps": 1, "train.log_every": 1, "train.eval_every": 10**6, "train.eval_batches": 1,
                 "train.checkpoint_every": 0, "train.keep_checkpoints": 1,
                 "train.compile": args.compile if args.compile is not None else not args.smoke,
                 "train.device": ctx.device.type}
    if args.micro_batch:
        overrides["train.batch_size"] = args.micro_batch
    if args.precision:
        overrides["train.precision"] = args.precision
    if args.smoke:
        overrides.update({"train.threads": 1, "data.embedded_bytes": 400_000, "train.batch_size": 4,
                          "train.seq_len": 64, "model.n_layers": 2, "model.loss_chunk_tokens": 64})
    return target.config(steps=args.steps, grad_accum=accum, overrides=overrides)


def measure(cfg, ctx, args) -> dict:
    """tokens/s, peak GiB allocated on the fullest rank (None on CPU), whether the resume continued and,
    with `--reference`, whether its losses equal an uninterrupted run's."""
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
        memory = None
        if ctx.device.type == "cuda":
            peak = torch.tensor(torch.cuda.max_memory_allocated(ctx.device) / 2**30, device=ctx.device)
            if ctx.world > 1:
                dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            memory = peak.item()
        got = {"resumed": first["status"] == "stopped" and second["status"] == "ok"
               and second["steps"] == cfg.train.steps,
               "tokens_per_s": steady_rate(rows, warmup=args.warmup, resume_step=args.stop_at), "peak_gib": memory,
               "final_loss": second["train_loss"]}
        if args.reference:
            train(cfg, out_dir=Path(out[0]) / "reference")
            if ctx.is_main:
                got.update(compare_losses(rows, read_metrics(Path(out[0]) / "reference" / "metrics.csv"),
                                          resume_step=args.stop_at))
        ctx.barrier()
    return got


def compare_losses(resumed: list[dict], reference: list[dict], *, resume_step: int) -> dict:
    """Losses of the resumed steps against the uninterrupted run: the first resumed step's must be equal
    to the last digit (a forward of the restored state); later ones too on CPU. On a GPU, kernels with
    atomic adds in the backward (flash attention's) may change the last bits of later steps."""
    after = {r["step"]: r["loss"] for r in resumed if r["step"] > resume_step}
    ref = {r["step"]: r["loss"] for r in reference if r["step"] in after}
    rel = [abs(after[s] - ref[s]) / abs(ref[s]) for s in ref if ref[s]]
    first = min(after) if after else None
    return {"first_step_equal": first is not None and after[first] == ref.get(first),
            "max_rel_diff": max(rel) if rel else math.nan,
            "continues_exactly": bool(ref) and all(after[s] == ref[s] for s in ref)}


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
    p.add_argument("--accum-per-gpu", type=int, default=4,
                   help="micro-batches per GPU per optimizer step (default 4: gradients synchronised on the last)")
    p.add_argument("--micro-batch", type=int, help="sequences per micro-batch (default: the target's)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="train.precision (default: the target's)")
    p.add_argument("--parallel", type=csv, default=["ddp", "fsdp"], help="ddp,fsdp (default both)")
    p.add_argument("--ac", type=csv, default=["off", "on"], help="activation checkpointing: off,on (default both)")
    p.add_argument("--attention", type=csv, help="backends to compare (default: flash_attn,cudnn,flash,efficient "
                                                 "where available; sdpa,math with --smoke)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="per-block compile (default: on, off with --smoke)")
    p.add_argument("--smoke", "--cpu", action="store_true",
                   help="run this script's logic on CPU with the tiny `cpu` target")
    p.add_argument("--reference", action="store_true",
                   help="also train each combination uninterrupted and compare the resumed losses with it")
    p.add_argument("--matmul-peak", action="store_true", help="measure a bf16 matmul's TFLOP/s (GPU)")
    p.add_argument("--json", help="also write the results to this JSON file (rank 0)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a combination is skipped, fails to resume, or (--reference) its first "
                        "resumed loss differs from the uninterrupted run's")
    args = p.parse_args()
    if not 1 <= args.warmup < args.stop_at < args.steps:
        p.error("need 1 <= --warmup < --stop-at < --steps")
    bad = [x for x in args.parallel if x not in ("ddp", "fsdp")] + [x for x in args.ac if x not in ("off", "on")]
    if bad:
        p.error(f"--parallel takes ddp,fsdp and --ac off,on; got {bad}")
    return args


if __name__ == "__main__":
    sys.exit(main())
