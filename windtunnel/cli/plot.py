"""`windtunnel plot` and `windtunnel check coord|transfer|horizon`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..fileio import write_json
from .train import add_set_option


def register(sub) -> None:
    _add_plot(sub)
    p = sub.add_parser("check", help="check that the tunnel tells the truth: coord, transfer, horizon",
                       description="Checks that the proxies tell the truth about bigger models. Exit status 0 "
                                   "when muP passes, 1 when it fails or is inconclusive, 2 on bad input.")
    checks = p.add_subparsers(title="checks", metavar="CHECK")
    _add_coord(checks)
    _add_transfer(checks)
    _add_horizon(checks)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw a sweep's heatmaps, loss curves and muTransfer plot",
                       description="Read runs/<name>/results.* and spec.yaml; write PNG and SVG under "
                                   "runs/<name>/plots/.")
    p.add_argument("run", help="run folder of a sweep, e.g. runs/lr_init")
    p.add_argument("--out", help="where to write (default: RUN/plots)")
    p.add_argument("--formats", default="png,svg", help="comma-separated image formats (default png,svg)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args) -> int:
    from ..analysis.plots import plot_sweep
    for path in plot_sweep(args.run, out_dir=args.out, formats=_formats(args.formats)):
        print(path)
    return 0


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
    write_json(out / "coord_check.json", result.to_dict())
    plots = plot_coord(result, out)
    print(result.summary())
    print(f"wrote {out / 'coord_check.json'} and {len(plots)} plot files in {out}", file=sys.stderr)
    return 0 if result.passed in (True, None) else 1


def _add_transfer(sub) -> None:
    p = sub.add_parser("transfer", help="optimal lr per width (or depth) with intervals, drift, regret, verdict",
                       description="Per parametrization and width (or depth): the optimal lr from every seed "
                                   "(weighted quadratic in log2 lr around the best point, 95% bootstrap "
                                   "interval), its drift over the shapes with an interval, and the transfer "
                                   "regret (loss given up by carrying the smallest shape's winner). muP "
                                   "passes when the drift or the regret at the largest shape is within its "
                                   "tolerance and the best loss falls. Writes RUN/transfer_check.json. "
                                   "Exit 0 pass, 1 fail or inconclusive, 2 bad input.")
    p.add_argument("run", help="run folder of a width- or depth-transfer sweep, e.g. runs/width_transfer")
    p.add_argument("--max-drift", type=float, default=1.0, help="allowed muP drift in log2 units (default 1)")
    p.add_argument("--regret-tolerance", type=float, default=0.01,
                   help="allowed muP regret at the largest shape, in nats (default 0.01)")
    p.add_argument("--from-width", type=int, help="the shape whose winner is carried (default: the smallest)")
    p.add_argument("--shape-key", help="the swept shape key, when a run sweeps both model.d_model and model.n_layers")
    p.add_argument("--neighbors", type=int, default=2,
                   help="grid points each side of the best one in the quadratic fit (default 2)")
    p.set_defaults(func=_cmd_transfer)


def _cmd_transfer(args) -> int:
    from ..analysis.transfer_check import transfer_check
    report = transfer_check(args.run, neighbors=args.neighbors, max_drift=args.max_drift,
                            regret_tolerance=args.regret_tolerance, from_width=args.from_width,
                            shape_key=args.shape_key)
    print(report.table())
    print(f"wrote {Path(args.run) / 'transfer_check.json'}", file=sys.stderr)
    return 0 if report.verdict == "pass" else 1


def _add_horizon(sub) -> None:
    p = sub.add_parser("horizon", help="optimal lr per token budget, fit of log2 lr* vs log2 tokens, extrapolation",
                       description="Fit each budget's optimal lr (parabola vertex in log2 lr, seeds averaged), "
                                   "then a line log2 lr* = a + slope x log2 tokens with its 95% interval from "
                                   "the fit's standard error, and extrapolate to --tokens. Needs >= 3 budgets "
                                   "(train.steps swept) with >= 3 lr points each. Writes RUN/horizon_check.json; "
                                   "exit 0 when a slope is fitted, 1 when not.")
    p.add_argument("run", help="run folder of a horizon sweep, e.g. runs/horizon (sweeps/horizon.yaml)")
    p.add_argument("--tokens", type=float, help="extrapolate the optimal lr to this many tokens, e.g. 1.5e12")
    p.add_argument("--neighbors", type=int, default=1,
                   help="grid points each side of the best one in the parabola fit (default 1)")
    p.set_defaults(func=_cmd_horizon)


def _cmd_horizon(args) -> int:
    from ..analysis.horizon_check import HORIZON_FILE, horizon_check
    report = horizon_check(args.run, tokens=args.tokens, neighbors=args.neighbors)
    print(report.table())
    print(f"wrote {Path(args.run) / HORIZON_FILE}", file=sys.stderr)
    return 0 if report.fit is not None else 1


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,128,256, got {text!r}") from None


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        from ..errors import WindtunnelError
        raise WindtunnelError(f"--formats: expected png, svg or pdf, got {text!r}")
    return formats
