"""`windtunnel check coord|transfer|horizon`: does the tunnel tell the truth about bigger models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..fileio import write_json
from ..run_folder import COORD_CHECK_FILE, MUTRANSFER_CHECK_FILE
from .train import add_set_option


def register(sub) -> None:
    p = sub.add_parser("check", help="check that the tunnel tells the truth: coord, transfer, horizon",
                       description="Checks that the proxies tell the truth about bigger models. Exit status 0 "
                                   "when muP passes, 1 when it fails or is inconclusive, 2 on bad input.")
    checks = p.add_subparsers(title="checks", metavar="CHECK")
    _add_coord(checks)
    _add_transfer(checks)
    _add_horizon(checks)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_coord(sub) -> None:
    p = sub.add_parser("coord", help="activation size vs width over the first steps, muP and SP",
                       description="Train each width a few steps on one fixed batch per seed (constant lr, no "
                                   "clip) and record mean |x| (size) and mean |x_t - x_1| (update) of the embedding "
                                   "output, every attention logit matrix, attention and MLP output, and the logits. "
                                   "Judged where muP's theory is sharp, by growth exponents (slope of log mean|x| "
                                   "against log width, mean over seeds): muP passes when no size at init scales "
                                   "more than width^--threshold beyond muP's prediction (width^-1/2 for logits and "
                                   "attention logits, width^0 elsewhere), no first update grows faster than "
                                   "width^threshold and the embedding's first update does not vanish faster than "
                                   "width^-threshold. Later steps are drawn, not judged.")
    p.add_argument("config", help="proxy config YAML, e.g. proxies/xs.yaml")
    add_set_option(p)
    p.add_argument("--widths", type=_int_list, default=[32, 64, 128, 256, 512],
                   help="default 32,64,128,256,512 (below to above the xs base, 64)")
    p.add_argument("--steps", type=int, default=5, help="training steps per width (default 5)")
    p.add_argument("--lr", type=float, help="constant lr (default: the config's train.lr)")
    p.add_argument("--seeds", type=_int_list, default=[0, 1],
                   help="each seed draws its own init and batch; exponents are averaged (default 0,1)")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="largest allowed excess of a judged growth exponent (default 0.25: half the 1/2 "
                        "that the smallest broken width rule moves it; see README)")
    p.add_argument("--parametrizations", default="mup,sp", help="default mup,sp")
    p.add_argument("--out", help="folder for coord_check.json and plots (default runs/coord_<config name>)")
    p.set_defaults(func=_cmd_coord)


def _cmd_coord(args) -> int:
    from ..analysis.coord_check import coord_check
    from ..analysis.coord_plot import plot_coord
    from ..config import load_config
    cfg = load_config(args.config, overrides=args.overrides)
    result = coord_check(cfg, widths=args.widths, steps=args.steps, lr=args.lr, seeds=args.seeds,
                         parametrizations=[p for p in args.parametrizations.split(",") if p],
                         threshold=args.threshold)
    out = Path(args.out or Path("runs") / f"coord_{Path(args.config).stem}")
    write_json(out / COORD_CHECK_FILE, result.to_dict())
    plots = plot_coord(result, out)
    print(result.summary())
    print(f"wrote {out / COORD_CHECK_FILE} and {len(plots)} plot files in {out}", file=sys.stderr)
    return 0 if result.passed in (True, None) else 1


def _add_transfer(sub) -> None:
    p = sub.add_parser("transfer", help="optimal lr per width (or depth) with intervals, drift, regret, verdict",
                       description="Per parametrization and width (or depth): the optimal lr from every seed "
                                   "(weighted quadratic in log2 lr around the best point, 95% bootstrap "
                                   "interval; each lr takes the best value of any other swept key, re-chosen "
                                   "per resample), the drift as a slope of log2 lr* per doubling of the shape "
                                   "with its interval, and the transfer regret (loss given up by carrying the "
                                   "smallest shape's winner). muP passes when the drift's interval lies within "
                                   "±--drift-pass or the regret's upper bound at the largest shape is within "
                                   "--regret-tolerance, the best loss falls with the shape (its slope per "
                                   "doubling below 0), no shape's optimum sits on the grid's edge and the carried "
                                   "configuration diverges nowhere. Writes RUN/mutransfer_check.json. "
                                   "Exit 0 pass, 1 fail or inconclusive, 2 bad input.")
    p.add_argument("run", help="run folder of a width- or depth-transfer sweep, e.g. runs/width_transfer")
    p.add_argument("--drift-pass", type=float, default=0.15,
                   help="the drift passes when its 95%% interval lies within ± this, log2 lr* per doubling "
                        "(default 0.15: about 1 log2 over the 6-7 doublings to a 1.2B)")
    p.add_argument("--drift-fail", type=float, default=0.5,
                   help="the drift fails when its interval lies wholly beyond ± this (default 0.5, half of SP's 1)")
    p.add_argument("--max-drift", type=float,
                   help="deprecated (a max - min in log2 units): read as --drift-pass = value / doublings spanned")
    p.add_argument("--regret-tolerance", type=float, default=0.01,
                   help="allowed muP regret at the largest shape, in nats (default 0.01)")
    p.add_argument("--loss-flat", type=float, default=0.01,
                   help="a best-loss slope within ± this, nats per doubling, is flat: fail (default 0.01)")
    p.add_argument("--from-width", type=int, help="the shape whose winner is carried (default: the smallest)")
    p.add_argument("--shape-key", help="the swept shape key, when a run sweeps both model.d_model and model.n_layers")
    p.add_argument("--neighbors", type=int, default=2,
                   help="grid points each side of the best one in the quadratic fit (default 2)")
    p.set_defaults(func=_cmd_transfer)


def _cmd_transfer(args) -> int:
    import warnings

    from ..analysis.mutransfer_check import mutransfer_check
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        report = mutransfer_check(args.run, neighbors=args.neighbors, max_drift=args.max_drift,
                                regret_tolerance=args.regret_tolerance, from_width=args.from_width,
                                shape_key=args.shape_key, drift_pass=args.drift_pass, drift_fail=args.drift_fail,
                                loss_flat=args.loss_flat)
    for w in caught:
        print(f"warning: {str(w.message).replace('drift_pass / ', '')}", file=sys.stderr)
    print(report.table())
    print(f"wrote {Path(args.run) / MUTRANSFER_CHECK_FILE}", file=sys.stderr)
    return 0 if report.verdict == "pass" else 1


def _add_horizon(sub) -> None:
    p = sub.add_parser("horizon", help="optimal lr per token budget, fit of log2 lr* vs log2 tokens, extrapolation",
                       description="Fit each budget's optimal lr from every seed (weighted quadratic in log2 lr "
                                   "over up to 5 points, bootstrap interval), then a line log2 lr* = a + slope x "
                                   "log2 tokens, its 95% interval from the same resamples (widened when the optima "
                                   "stray from the line more than their intervals allow), and extrapolate with the "
                                   "number of doublings beyond the largest budget. Needs >= 3 budgets "
                                   "(train.steps swept) with >= 3 lr points each. Writes RUN/horizon_check.json; "
                                   "exit 0 when a slope is fitted, 1 when not.")
    p.add_argument("run", help="run folder of a horizon sweep, e.g. runs/horizon (sweeps/horizon.yaml)")
    to = p.add_mutually_exclusive_group()
    to.add_argument("--target", help="extrapolate to a target preset's horizon (e.g. 1.2b): its tokens per "
                                     "non-embedding parameter, carried to this sweep's model")
    to.add_argument("--tokens-per-param", type=float, metavar="X",
                    help="extrapolate to X tokens per non-embedding parameter (the full run's tokens / its "
                         "parameters; 1.2b: 1.5e12 / 1.151e9 = 1303)")
    to.add_argument("--proxy-tokens", type=float, metavar="N",
                    help="extrapolate to N tokens of this sweep's own model (not the target's)")
    to.add_argument("--tokens", type=float, help=argparse.SUPPRESS)  # deprecated: was --proxy-tokens
    p.add_argument("--neighbors", type=int, default=2,
                   help="grid points each side of the best one in the quadratic fit (default 2)")
    p.set_defaults(func=_cmd_horizon)


def _cmd_horizon(args) -> int:
    from ..analysis.horizon_check import HORIZON_FILE, horizon_check
    tpp, tokens = args.tokens_per_param, args.proxy_tokens
    if args.tokens is not None:
        print(f"warning: --tokens is deprecated: it was read as {args.tokens:g} tokens of the horizon sweep's own "
              "model, not the target's; say --proxy-tokens for that, or --target NAME / --tokens-per-param X "
              "for the target's horizon", file=sys.stderr)
        tokens = args.tokens
    if args.target is not None:
        tpp = _target_tokens_per_param(args.target)
    report = horizon_check(args.run, tokens=tokens, tokens_per_param=tpp, neighbors=args.neighbors)
    print(report.table())
    print(f"wrote {Path(args.run) / HORIZON_FILE}", file=sys.stderr)
    return 0 if report.fit is not None else 1


def _target_tokens_per_param(name: str) -> float:
    from ..fullrun.presets import load_target
    from ..model.accounting import count_params
    t = load_target(name)
    model = t.config(steps=10**9).model  # the shape is what counts; any valid length will do
    return t.tokens / count_params(model).non_embedding


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,128,256, got {text!r}") from None
