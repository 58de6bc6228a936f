"""Transfer fidelity: does the optimal lr hold across widths under μP, and move under SP?

A scaled-down `width_transfer` sweep run directly through `windtunnel.training.loop.train` (no sweep
engine): widths 64..512 (8x), μP at lr 2^-11..2^-5 and SP at 2^-13..2^-7, 3 seeds, on the embedded
corpus. SP's grid sits two log2 units lower (`--sp-shift`) because its optimum falls about one unit
per doubling of width: on the shared grid SP's width-512 optimum lay below 2^-11, off the grid. The run
folder is written in the sweep's results format (rewritten as trials finish, so a killed bench leaves
what it ran), and `windtunnel check transfer` and `windtunnel plot` read it.

Target: μP drift <= 0.5 log2 with its interval's upper bound <= 1, SP drift >= 2, and the regret of
carrying width 64's lr to width 512 printed for both. Printed as measured, never tuned.

Budget: 3 seeds for 1.4x the one-seed bench (72 trials x 250 steps, ~20 min on 2 idle cores), traded
for 7 lrs instead of 9 (2^-12 and 2^-4 lay two or more units from every optimum seen at 250 steps)
and 150 steps instead of 250 (short runs favour slightly larger lrs at every width alike; the drift is
what is checked): 168 trials, about 28 min on 2 idle cores (scaled, not measured). Widths 32..256
span the same 8x at about a third of the cost, for a loaded machine.

    PYTHONPATH=$PWD python bench/transfer_fidelity.py --out /work/runs/fidelity
    PYTHONPATH=$PWD python bench/transfer_fidelity.py --widths 32,64,128,256 --out /work/runs/fidelity
    PYTHONPATH=$PWD python bench/transfer_fidelity.py --steps 60 --widths 64,128 --lrs=-8,-7,-6,-5 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from windtunnel.fileio import atomic_write  # noqa: E402 - after the path line above


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    trials = plan(args)
    base = [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.seq_len={args.seq_len}",
            f"train.warmup_steps={max(1, args.steps // 10)}", f"train.eval_every={args.steps}",
            f"train.eval_batches={args.eval_batches}", "train.log_every=10", "train.threads=1"]
    from windtunnel.config import load_config
    from windtunnel.data.mixture import load_run_data
    load_run_data(load_config(args.config, overrides=base))  # prepare the corpus once, not per worker
    print(f"{len(trials)} trials: widths {args.widths}, lr 2^{min(args.lrs)}..2^{max(args.lrs)} "
          f"(sp shifted by -{args.sp_shift}), "
          f"seeds {args.seeds}, {args.steps} steps x {args.batch_size * args.seq_len} tokens, "
          f"{args.workers} workers", flush=True)
    started = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_trial, args.config, base, t, str(out / "trials" / t["trial_id"])) for t in trials]
        for i, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            print(f"[{i}/{len(trials)} {time.perf_counter() - started:6.0f}s] {row['trial_id']:<22} "
                  f"{row['status']:<8} val_loss {row['val_loss']:.4f}", flush=True)
            if i % 8 == 0:  # a killed bench still leaves a readable run folder
                write_run(out, rows, args, base)
    write_run(out, rows, args, base)
    minutes = (time.perf_counter() - started) / 60
    return report(out, minutes)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "proxies" / "xs.yaml"))
    p.add_argument("--out", default=str(ROOT / "runs" / "transfer_fidelity"))
    p.add_argument("--widths", type=_ints, default=[64, 128, 256, 512])
    p.add_argument("--lrs", type=_ints, default=list(range(-11, -4)), help="log2 learning rates, e.g. -12,-11,...")
    p.add_argument("--parametrizations", type=lambda s: s.split(","), default=["mup", "sp"])
    p.add_argument("--sp-shift", type=int, default=2, help="SP's lrs are --lrs minus this many log2 units")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="train.seed values (default 0,1,2)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def plan(args) -> list[dict]:
    """Every (parametrization, width, lr, seed), widest first so the two workers finish together."""
    trials = [{"trial_id": f"{p}_w{w}_lr2^{e}_s{s}", "model.parametrization": p, "model.d_model": w,
               "train.lr": 2.0**e, "train.seed": s}
              for s in args.seeds for p in args.parametrizations for w in args.widths for e in lrs_of(args, p)]
    return sorted(trials, key=lambda t: (t["train.seed"], -t["model.d_model"]))


def lrs_of(args, parametrization: str) -> list[int]:
    """The log2 lrs swept for one parametrization (SP's grid shifted down by --sp-shift)."""
    return [e - args.sp_shift for e in args.lrs] if parametrization == "sp" else list(args.lrs)


def run_trial(config: str, base: list[str], trial: dict, out_dir: str) -> dict:
    """One proxy through the shared training loop; a crash is recorded as status `error`."""
    import torch
    torch.set_num_threads(1)
    from windtunnel.config import load_config
    from windtunnel.training.loop import train

    keys = {k: v for k, v in trial.items() if k not in ("trial_id", "train.seed")}
    base = base + [f"train.seed={trial['train.seed']}"]
    cfg = load_config(config, overrides=base + [f"{k}={v}" for k, v in keys.items()])
    try:
        s = train(cfg, out_dir=out_dir)
        status, loss, tokens, seconds = s["status"], s["val_loss"], s["tokens"], s["seconds"]
    except Exception as e:  # noqa: BLE001 - the bench reports every trial, broken ones included
        print(f"{trial['trial_id']}: {type(e).__name__}: {e}", file=sys.stderr)
        status, loss, tokens, seconds = "error", math.inf, 0, 0.0
    return {"trial_id": trial["trial_id"], "status": status, "val_loss": loss, "tokens": tokens,
            "seconds": seconds, "seed": cfg.train.seed, **keys}


def write_run(out: Path, rows: list[dict], args, base: list[str]) -> None:
    """results.parquet/.csv and spec.yaml in the sweep engine's format, each written atomically."""
    import pandas as pd

    frame = pd.DataFrame(sorted(rows, key=lambda r: (r["model.parametrization"], r["model.d_model"],
                                                     r["train.lr"], r["seed"])))
    spec = {"name": out.name, "base": str(args.config), "set": dict(o.split("=", 1) for o in base),
            "method": "grid", "seeds": args.seeds, "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {"model.parametrization": {"values": args.parametrizations},
                           "model.d_model": {"values": args.widths},
                           "train.lr": {"values": sorted({2.0**e for p in args.parametrizations
                                                          for e in lrs_of(args, p)})}}}
    out.mkdir(parents=True, exist_ok=True)
    for name, write in (("results.parquet", lambda p: frame.to_parquet(p, index=False)),
                        ("results.csv", lambda p: frame.to_csv(p, index=False)),
                        ("spec.yaml", lambda p: Path(p).write_text(yaml.safe_dump(spec, sort_keys=False)))):
        atomic_write(out / name, write)


def report(out: Path, minutes: float) -> int:
    from windtunnel.analysis.plots import plot_sweep
    from windtunnel.analysis.transfer_check import transfer_check
    from windtunnel.errors import WindtunnelError

    try:
        rep = transfer_check(out)
    except WindtunnelError as e:  # e.g. a partial run (one width): the trials are kept, the check says why
        print(f"no transfer check: {e}")
        return 2
    print(rep.table())
    plots = plot_sweep(out)
    print(f"plots: {', '.join(p.name for p in plots if p.suffix == '.png')} in {out / 'plots'}")
    fig = {k: _figures(rep.summaries.get(k)) for k in ("mup", "sp")}
    mup, sp = fig["mup"], fig["sp"]
    target = (mup["drift"] is not None and mup["drift"] <= 0.5 and mup["drift_high"] is not None
              and mup["drift_high"] <= 1.0 and sp["drift"] is not None and sp["drift"] >= 2.0)
    print(json.dumps({"mup": mup, "sp": sp, "mup_verdict": rep.verdict, "seeds": rep.n_seeds,
                      "target_met": target, "minutes": round(minutes, 1)}))
    widths = rep.summaries[next(iter(rep.summaries))].widths
    for name, f in (("muP", mup), ("SP", sp)):
        print(f"{name}: drift {_fmt(f['drift'])} [{_fmt(f['drift_low'])}, {_fmt(f['drift_high'])}] log2 over widths "
              f"{widths}; regret at {widths[-1]} {f['regret_text']} nats ({rep.n_seeds} seeds)")
    print(f"target (muP drift <= 0.5 with upper bound <= 1, SP drift >= 2): {'met' if target else 'NOT met'}")
    return 0


def _figures(s) -> dict:
    if s is None:
        return {"drift": None, "drift_low": None, "drift_high": None, "regret": None, "regret_text": "n/a"}
    g = s.regret_widest
    return {"drift": s.drift, "drift_low": s.drift_low, "drift_high": s.drift_high, "verdict": s.verdict,
            "regret": g.value if g else None, "regret_low": g.low if g else None,
            "regret_high": g.high if g else None, "regret_text": g.text() if g else "n/a"}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
