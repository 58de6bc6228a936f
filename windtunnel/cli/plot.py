"""`windtunnel plot`: a sweep's heatmaps, loss curves and muTransfer plot."""

from __future__ import annotations


def register(sub) -> None:
    _add_plot(sub)


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
    for path in plot_sweep(args.run, out_dir=args.out, formats=image_formats(args.formats)):
        print(path)
    return 0


def image_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        from ..errors import WindtunnelError
        raise WindtunnelError(f"--formats: expected png, svg or pdf, got {text!r}")
    return formats
