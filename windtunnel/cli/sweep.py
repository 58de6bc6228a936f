"""`windtunnel sweep` and `windtunnel results`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Callable

from ..formatting import fmt_loss, fmt_params
from ..run_folder import RESULTS_CSV


def register(sub) -> None:
    _add_sweep(sub)
    _add_results(sub)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a hyperparameter sweep (grid / random / tpe) on Ray Tune",
                       description="Run a sweep spec on Ray Tune; results go to runs/<name>/ "
                                   "(results.parquet, results.csv, one folder per trial).")
    p.add_argument("spec", help="sweep spec YAML, e.g. sweeps/lr_init.yaml")
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--address", help="join an existing Ray cluster: `auto` or HOST:PORT (default: a private "
                                     "Ray instance on this machine); uses the head's token authentication, "
                                     "with the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep in its run folder; finished trials are kept")
    p.add_argument("--break-lock", action="store_true",
                   help="take over the folder's sweep.lock even if its holder may be alive (one on another "
                        "host is taken over by itself after 10 min without a heartbeat); only for a holder "
                        "known to be dead")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded trials, their count and cost (tokens, FLOPs, and the wall time "
                        "estimated by timing a few steps of the costliest trial here); run and keep nothing")
    p.add_argument("--no-estimate", action="store_true",
                   help="with --dry-run: skip the wall-time estimate (it trains a few steps, seconds)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots at the end")
    p.add_argument("--track", metavar="LIST",
                   help="experiment trackers every trial logs to, comma-separated: tensorboard, mlflow "
                        "(windtunnel[mlflow]), wandb (windtunnel[wandb], offline unless WANDB_MODE=online), or "
                        "none; overrides the spec's track (default: tensorboard when installed)")
    p.set_defaults(func=_cmd_sweep)


def exit_on_sigterm() -> Callable[[], None]:
    """SIGTERM (a scheduler's preemption or requeue) exits through Python's cleanup, as Ctrl-C does, so the
    sweep's lock is removed and the requeued job need not wait for it to go stale. Only over the default
    handler, in the main thread; returns the call that puts the old handler back."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _cmd_sweep(args) -> int:
    from ..sweep import describe, run_sweep
    from ..training.trackers import parse_track
    track = parse_track(args.track) if args.track is not None else None
    restore = exit_on_sigterm() if not args.dry_run else (lambda: None)
    try:
        out = run_sweep(args.spec, out_dir=args.out, address=args.address, resume=args.resume,
                        dry_run=args.dry_run, progress=not args.quiet, plots=not args.no_plots, track=track,
                        break_lock=args.break_lock)
    finally:
        restore()
    if args.dry_run:
        print(describe(out))
        if not args.no_estimate:
            from ..sweep.estimate import estimate_wall_time
            estimate = estimate_wall_time(out)
            print(estimate.describe() if estimate else "estimated wall time: not measurable here (no valid trial, "
                  "or the trials need CUDA and this machine has none)")
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in out.counts.items() if n)
    print(f"sweep {out.spec.name}: {sum(out.counts.values())} trials finished ({counts or 'none'}) "
          f"in {out.wall_seconds:.0f}s; table: {out.run_dir / RESULTS_CSV}")
    if out.plots:
        print(f"plots: {', '.join(str(p) for p in out.plots if p.suffix == '.png')}")
    from ..sweep.tracking import viewer_commands
    for command in viewer_commands(out.run_dir):
        print(f"view: {command}")
    if out.unfinished:
        print(f"{out.unfinished} trials unfinished; continue with: windtunnel sweep {args.spec} --resume"
              + (f" --out {args.out}" if args.out else ""))
    if out.best is None:
        print("no trial finished ok")
        return 1
    metric, best = out.spec.metric.name, out.best
    params = fmt_params({k: best[k] for k in out.spec.param_keys})
    seeds = ""
    if best.get("n_seeds", 1) > 1:  # the winner is the best configuration by its mean over seeds
        seeds = f" (mean {fmt_loss(best[f'mean_{metric}'])} over {best['n_seeds_ok']}/{best['n_seeds']} seeds ok)"
    print(f"best: {best['trial_id']} {metric}={fmt_loss(best[metric])}{seeds}  {params}  seed={best['seed']}")
    return 0


def _add_results(sub) -> None:
    p = sub.add_parser("results", help="print a sweep's results table, best first",
                       description="Print runs/<name>/results: finished trials best first, then diverged, "
                                   "pruned and error trials. Steps, in order: --filter, --group-seeds, --sort, "
                                   "--columns, --top.",
                       epilog="examples:\n"
                              "  windtunnel results runs/lr_init --filter status=ok --group-seeds --top 5\n"
                              "  windtunnel results runs/lr_init --filter 'train.lr<0.01' --sort=-seconds\n"
                              "  windtunnel results runs/lr_init --columns trial_id,train.lr,val_loss --format csv",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a sweep's run folder, e.g. runs/lr_init")
    p.add_argument("--top", type=int, metavar="K", help="only the first K rows")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="KEY=VALUE",
                   help="keep rows where the column matches: KEY=VALUE, or !=, <, <=, >, >= (quote it); "
                        "repeatable, all must hold; e.g. --filter status=ok")
    p.add_argument("--group-seeds", action="store_true",
                   help="one row per configuration: mean and std of the metric over its ok seeds, n_ok/n, "
                        "status (a diverged seed makes the configuration diverged), mean seconds")
    p.add_argument("--sort", metavar="COL[,COL]",
                   help="sort by these columns, ascending; -COL descending (write --sort=-seconds); "
                        "default: finished rows best first, then the rest")
    p.add_argument("--columns", metavar="COL[,COL]", help="show only these columns, in this order")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=_cmd_results)


def _cmd_results(args) -> int:
    from ..analysis.results_table import format_results, select_results
    from ..analysis.runs import load_run
    from ..errors import WindtunnelError
    if args.top is not None and args.top <= 0:
        raise WindtunnelError(f"--top: expected a positive number of rows, got {args.top}")
    res = load_run(args.run_dir)
    columns = _names(args.columns)
    df = select_results(res, filters=args.filters, group_seeds=args.group_seeds, sort=_names(args.sort),
                        columns=columns, top=args.top)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        records = [{k: _json_value(v) for k, v in row.items()} for row in df.to_dict("records")]
        print(json.dumps(records, indent=2))
    else:
        print(format_results(df, metric=res.metric, columns_given=bool(columns)))
    return 0


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _json_value(v):
    """JSON has no inf/nan: a missing value (nan) is null, a diverged loss the string "inf"."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and math.isinf(v):
        return str(v)
    if v is not None and type(v).__name__ == "NAType":
        return None
    return v

