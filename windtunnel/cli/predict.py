"""`windtunnel predict`: fit a loss law to a proxy ladder and predict a target's loss (or a held-out rung's)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict a target's loss from a ladder of proxies (scaling-law fit with a bootstrap)",
        description="Fit L = E + A N^-alpha + B D^-beta (N non-embedding params, D tokens) to the finished trials "
                    "of ladder folders (bench/ladder.py: widths x token budgets by WSD decay branches), with a "
                    "bootstrap over the points; print the exponents with intervals and the target's loss at its "
                    "token budget with an interval, and draw the fit. --holdout largest fits without the widest "
                    "rung and reports the error of predicting it. A prediction holds for the ladder's data and "
                    "tokenizer: a target with another vocabulary or data is refused unless --allow-other-data. "
                    "Exit 1 when the fit cannot carry a prediction (an exponent's interval reaches zero).",
        epilog="examples:\n  windtunnel predict runs/ladder --holdout largest\n"
               "  windtunnel predict runs/ladder --target cpu --tokens 2e6\n"
               "  windtunnel predict runs/ladder --target 1.2b --allow-other-data --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="ladder or sweep folders (results table + trials/<id>/)")
    p.add_argument("--target", help="preset name (1.2b, cpu, ...) or a target YAML file")
    p.add_argument("--tokens", type=float, help="the target's training tokens (default: the preset's)")
    p.add_argument("--holdout", metavar="WIDTH", help="'largest' or a width: fit without it, report the error on it")
    p.add_argument("--allow-other-data", action="store_true",
                   help="predict a target whose vocabulary or data differ from the ladder's (the loss is then in "
                        "the ladder's units: a guess, not a prediction)")
    p.add_argument("--min-tokens", type=float, metavar="D",
                   help="leave out points trained on fewer tokens (the first steps after warmup fall faster "
                        "than a power law in D)")
    p.add_argument("--reps", type=int, default=200, help="bootstrap refits (default 200)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling")
    p.add_argument("--plot", metavar="BASE",
                   help="where to draw the fit (BASE.png; default: <first RUN>/predict[_<target>])")
    p.add_argument("--no-plot", action="store_true", help="draw nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from ..errors import WindtunnelError
    from ..fullrun.predict import predict
    from ..fullrun.predict_report import format_prediction, plot_prediction, prediction_dict
    if args.reps < 20:
        raise WindtunnelError(f"--reps: expected at least 20 bootstrap refits for an interval, got {args.reps}")
    if not 0.5 <= args.level < 1:
        raise WindtunnelError(f"--level: expected a coverage in [0.5, 1), got {args.level}")
    pred = predict(args.runs, target=args.target, tokens=args.tokens, holdout=args.holdout,
                   allow_other_data=args.allow_other_data, min_tokens=args.min_tokens, reps=args.reps,
                   level=args.level, seed=args.seed)
    print(json.dumps(prediction_dict(pred), indent=2, default=float) if args.json else format_prediction(pred))
    if not args.no_plot:
        suffix = f"_{pred.target.name}" if pred.target else "_holdout"
        paths = plot_prediction(pred, args.plot or Path(args.runs[0]) / f"predict{suffix}")
        if not args.json:
            print(f"plot: {', '.join(map(str, paths))}")
    return 1 if pred.refusal else 0
