"""`windtunnel plot` and `windtunnel check coord|transfer`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .train import add_set_option
from ..fileio import write_json


def register(sub) -> None:
    _add_plot(sub)
    p = sub.add_parser("check", help="check that the tunnel tells the truth: coord check, transfer check",
                       description="Checks that the proxies tell the truth about bigger models. Exit status 0 "
                                   "when muP passes, 1 when it fails or is inconclusive, 2 on bad input.")
    checks = p.add_subparsers(title="checks", metavar="CHECK")
    _add_coord(checks)
    _add_transfer(checks)
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
                       description="Train each width a few steps on one fixed batch (constant lr, no clip) "
                                   "and record mean |activation| of the embedding output, every attention "
                                   "and MLP output, and the logits. muP passes when each stays within "
                                   "--tolerance x over the widths (logits at init excepted).")
    p.add_argument("config", help="proxy config YAML, e.g. proxies/xs.yaml")
    add_set_option(p)
    p.add_argument("--widths", type=_int_list, default=[64, 128, 256, 512], help="default 64,128,256,512")
    p.add_argument("--steps", type=int, default=5, help="training steps per width (default 5)")
    p.add_argument("--lr", type=float, help="constant lr (default: the config's train.lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=2.0, help="allowed max/min over widths (default 2)")
    p.add_argument("--parametrizations", default="mup,sp", help="default mup,sp")
    p.add_argument("--out", help="folder for coord_check.json and plots (default runs/coord_<config name>)")
    p.set_defaults(func=_cmd_coord)


def _cmd_coord(args) -> int:
    from ..analysis.coord_check import coord_check, plot_coord
    from ..config import load_config
    cfg = load_config(args.config, overrides=args.overrides)
    result = coord_check(cfg, widths=args.widths, steps=args.steps, lr=args.lr, seed=args.seed,
                         parametrizations=[p for p in args.parametrizations.split(",") if p],
                         tolerance=args.tolerance)
    out = Path(args.out or Path("runs") / f"coord_{Path(args.config).stem}")
    write_json(out / "coord_check.json", result.to_dict())
    plots = plot_coord(result, out)
    print(result.summary())
    print(f"wrote {out / 'coord_check.json'} and {len(plots)} plot files in {out}", file=sys.stderr)
    return 0 if result.passed in (True, None) else 1


def _add_transfer(sub) -> None:
    p = sub.add_parser("transfer", help="optimal lr per width (or depth) with intervals, drift, regret, verdict",
                       description="Per parametrization and width (or depth): the optimal lr from every seed "
                                   "(weighted quadratic in log2 lr around the best point, 95%% bootstrap "
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
