"""Transfer fidelity: does the optimal lr hold across widths under μP, and move under SP?

A scaled-down `width_transfer` sweep run directly through `windtunnel.training.loop.train` (no sweep
engine): widths 64..512 (8x), μP at lr 2^-11..2^-5 and SP at 2^-13..2^-7, 3 seeds, on the embedded
corpus. SP's grid sits two log2 units lower (`--sp-shift`) because its optimum falls about one unit
per doubling of width: on the shared grid SP's width-512 optimum lay below 2^-11, off the grid. The run
folder is written in the sweep's results format (rewritten as trials finish, so a killed bench leaves
what it ran), and `windtunnel check transfer` and `windtunnel plot` read it.

Verdict: the transfer check's own (`windtunnel check transfer` on the same folder says the same): μP
passes when its optimum holds (drift or regret) and its best loss falls with width; the drift, the
regret of carrying width 64's lr to width 512 and SP's figures are printed beside it. Exit status 0
on pass, 1 otherwise (as the CLI). Printed as measured, never tuned.

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
import sys
import time
from pathlib import Path

from proxy_trials import ROOT, base_overrides, ints, prepare_data, run_trials, write_results


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    trials = plan(args)
    base = base_overrides(args.steps, batch_size=args.batch_size, seq_len=args.seq_len, eval_batches=args.eval_batches)
    prepare_data(args.config, base)  # prepare the corpus once, not per worker
    print(f"{len(trials)} trials: widths {args.widths}, lr 2^{min(args.lrs)}..2^{max(args.lrs)} "
          f"(sp shifted by -{args.sp_shift}), "
          f"seeds {args.seeds}, {args.steps} steps x {args.batch_size * args.seq_len} tokens, "
          f"{args.workers} workers", flush=True)
    started = time.perf_counter()
    rows = run_trials(args.config, base, trials, out=out, workers=args.workers,
                      checkpoint=lambda r: write_run(out, r, args, base))
    write_run(out, rows, args, base)
    minutes = (time.perf_counter() - started) / 60
    return report(out, minutes)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "proxies" / "xs.yaml"))
    p.add_argument("--out", default=str(ROOT / "runs" / "transfer_fidelity"))
    p.add_argument("--widths", type=ints, default=[64, 128, 256, 512])
    p.add_argument("--lrs", type=ints, default=list(range(-11, -4)), help="log2 learning rates, e.g. -12,-11,...")
    p.add_argument("--parametrizations", type=lambda s: s.split(","), default=["mup", "sp"])
    p.add_argument("--sp-shift", type=int, default=2, help="SP's lrs are --lrs minus this many log2 units")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2], help="train.seed values (default 0,1,2)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def plan(args) -> list[dict]:
    """Every (parametrization, width, lr, seed), widest first so the two workers finish together."""
    trials = [{"trial_id": f"{p}_w{w}_lr2^{e}_s{s}", "model.parametrization": p, "model.d_model": w,
               "train.lr": 2.0**e, "train.seed": s}
              for s in args.seeds for p in args.parametrizations for w in args.widths for e in lrs_of(args, p)]
    return sorted(trials, key=lambda t: (t["train.seed"], -t["model.d_model"]))


def lrs_of(args, parametrization: str) -> list[int]:
    """The log2 lrs swept for one parametrization (SP's grid shifted down by --sp-shift)."""
    return [e - args.sp_shift for e in args.lrs] if parametrization == "sp" else list(args.lrs)


def write_run(out: Path, rows: list[dict], args, base: list[str]) -> None:
    """The run folder in the sweep engine's format (`windtunnel check transfer` and `plot` read it)."""
    spec = {"name": out.name, "base": str(args.config), "set": dict(o.split("=", 1) for o in base),
            "method": "grid", "seeds": args.seeds, "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {"model.parametrization": {"values": args.parametrizations},
                           "model.d_model": {"values": args.widths},
                           "train.lr": {"values": sorted({2.0**e for p in args.parametrizations
                                                          for e in lrs_of(args, p)})}}}
    write_results(out, rows, spec, sort_keys=["model.parametrization", "model.d_model", "train.lr", "seed"])


def report(out: Path, minutes: float) -> int:
    from windtunnel.analysis.mutransfer_check import mutransfer_check
    from windtunnel.analysis.plots import plot_sweep
    from windtunnel.errors import WindtunnelError

    try:
        rep = mutransfer_check(out)
    except WindtunnelError as e:  # e.g. a partial run (one width): the trials are kept, the check says why
        print(f"no transfer check: {e}")
        return 2
    print(rep.table())
    plots = plot_sweep(out)
    print(f"plots: {', '.join(p.name for p in plots if p.suffix == '.png')} in {out / 'plots'}")
    fig = {k: _figures(rep.summaries.get(k)) for k in ("mup", "sp")}
    mup, sp = fig["mup"], fig["sp"]
    print(json.dumps({"mup": mup, "sp": sp, "verdict": rep.verdict, "seeds": rep.n_seeds,
                      "minutes": round(minutes, 1)}))
    widths = rep.summaries[next(iter(rep.summaries))].widths
    for name, f in (("muP", mup), ("SP", sp)):
        print(f"{name}: drift {_fmt(f['drift'])} [{_fmt(f['drift_low'])}, {_fmt(f['drift_high'])}] log2 over widths "
              f"{widths}; regret at {widths[-1]} {f['regret_text']} nats ({rep.n_seeds} seeds)")
    # one run, one verdict: the transfer check's own (drift or regret, and the best loss falling with width)
    reasons = "; ".join(rep.summaries["mup"].reasons) if "mup" in rep.summaries else ""
    print(f"verdict (windtunnel check transfer, muP): {rep.verdict}" + (f": {reasons}" if reasons else ""))
    return 0 if rep.verdict == "pass" else 1


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
