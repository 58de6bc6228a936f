"""Pictures of a sweep: loss heatmaps per pair of swept parameters, loss curves, the μTransfer plot.

`plot_sweep(run_dir)` reads `runs/<name>/results.*` and `spec.yaml` and writes PNG and SVG under
`runs/<name>/plots/`:

- `heatmap_<a>__<b>`: for each pair of swept parameters, the best loss per cell (seed-averaged,
  best over the other parameters), values printed, the best cell framed, failed cells hatched.
  Continuous (TPE) parameters are binned (log bins for log-spaced ones). When the parametrization
  is swept, each figure has one panel per parametrization instead of a parametrization axis.
- `loss_vs_<a>`: for a single swept parameter, loss against it.
- `mutransfer`: when lr and a shape (width or depth) are swept, loss vs lr (log2 axis), one curve
  per shape with its seed band, one panel per parametrization, each shape's fitted optimum with its
  95 % interval, and the lr carried from the smallest shape marked on every curve (the transfer check).
"""

from __future__ import annotations

import itertools
import math
import textwrap
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import WindtunnelError, WindtunnelWarning
from ..run_folder import PLOTS_DIR
from .figures import FORMATS, colormap, figure_grid, fmt_value, save_figure
from .labels import label_of
from .mutransfer_check import SHAPE_KEYS, mutransfer_check
from .runs import (
    LR_KEY,
    PARAM_KEY,
    WIDTH_KEY,
    RunResults,
    aggregate,
    load_run,
)

__all__ = ["plot_sweep"]

MAX_CATEGORIES, N_BINS = 12, 8
CHAR_INCHES = 0.085
"""About the width of one character of 10-point text, in inches (to size figures around their labels)."""
MIN_FIGURE_INCHES = 4.8
PARAM_NAMES = {"mup": "μP", "sp": "SP"}
FAILED_COLOUR = "#d9d9d9"


def plot_sweep(run_dir: str | Path, *, out_dir: str | Path | None = None,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw every picture of a sweep's run folder; returns the files written.

    Example:
        >>> [p.name for p in plot_sweep("runs/lr_init")]
        ['heatmap_train.lr__model.init_std.png', 'heatmap_train.lr__model.init_std.svg']
    """
    res = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else res.run_dir / PLOTS_DIR
    facet = PARAM_KEY if PARAM_KEY in res.params and res.frame[PARAM_KEY].nunique() > 1 else None
    axes_keys = [k for k in res.params if k != facet] or ([facet] if facet else [])
    if not axes_keys:
        raise WindtunnelError(f"{res.run_dir}: nothing was swept, so there is nothing to plot")
    if axes_keys == [facet]:
        facet = None
    axes_keys = sorted(axes_keys, key=lambda k: (k != LR_KEY, res.params.index(k)))  # lr on x first
    paths: list[Path] = []
    if len(axes_keys) == 1:
        paths += _loss_curve(res, axes_keys[0], facet, out, formats)
    for x_key, y_key in itertools.combinations(axes_keys, 2):
        paths += _heatmap(res, x_key, y_key, facet, out, formats)
    if LR_KEY in res.params and any(k in res.params and res.frame[k].nunique() > 1 for k in SHAPE_KEYS):
        paths += _mutransfer(res, out, formats)
    return paths


# --- heatmaps ---------------------------------------------------------------------------------


class _Axis:
    """One heatmap axis: the swept values as categories, or bins for continuous parameters."""

    def __init__(self, res: RunResults, key: str):
        self.key, self.log = key, res.log_spaced(key)
        values = res.frame[key].dropna().unique()
        numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
        spec = res.spec.get("parameters", {}).get(key)
        continuous = isinstance(spec, dict) and spec.get("distribution") in ("log_uniform", "uniform")
        self.edges = None
        if numeric and (continuous or len(values) > MAX_CATEGORIES):
            # bins span the searched range (the spec's min/max), not just where the sampler went
            lo = float(spec.get("min", min(values))) if isinstance(spec, dict) else float(min(values))
            hi = float(spec.get("max", max(values))) if isinstance(spec, dict) else float(max(values))
            lo, hi = min(lo, float(min(values))), max(hi, float(max(values)))
            self.edges = np.geomspace(lo, hi, N_BINS + 1) if self.log else np.linspace(lo, hi, N_BINS + 1)
            self.labels = [f"{fmt_value(a)}–{fmt_value(b)}" for a, b in zip(self.edges, self.edges[1:])]
        else:
            self.values = sorted(values) if numeric else sorted(values, key=str)
            self.labels = [fmt_value(v, log=self.log) for v in self.values]

    def index(self, value) -> int:
        if self.edges is None:
            return self.values.index(value)
        return int(min(np.searchsorted(self.edges, float(value), side="right") - 1, len(self.labels) - 1))

    @property
    def title(self) -> str:
        spacing = " — log-spaced" if self.log else ""
        binned = f", {len(self.labels)} bins" if self.edges is not None else ""
        return f"{label_of(self.key)}{spacing}{binned}"


def _heatmap(res, x_key, y_key, facet, out: Path, formats) -> list[Path]:
    xa, ya = _Axis(res, x_key), _Axis(res, y_key)
    cells = _cells(res, xa, ya, facet)
    panels = sorted(cells) if facet else [None]
    finite = [c["loss"] for grid in cells.values() for c in grid.values() if math.isfinite(c["loss"])]
    vmin, vmax, clipped = _colour_range(finite)
    ncols = min(2, len(panels))
    # a narrow grid (2 x 2 cells) still leaves room for the x-label under each panel and for the title
    width = max(1.0 + 0.75 * len(xa.labels), CHAR_INCHES * len(xa.title) + 1.0, MIN_FIGURE_INCHES / ncols)
    fig, axes = figure_grid(len(panels), ncols=2, size=(width, 0.9 + 0.55 * len(ya.labels)))
    for ax, panel in zip(axes, panels):
        image = _draw_cells(ax, cells[panel], xa, ya, vmin, vmax)
        ax.set_title(PARAM_NAMES.get(panel, panel) if panel else "", fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, extend="max" if clipped else "neither", shrink=0.9)
        bar.set_label(_metric_label(res))
    others = [k for k in res.params if k not in (x_key, y_key, facet)]
    over = f"; best over {', '.join(others)}" if others else ""
    title = (f"{res.name}: best {_metric_label(res)} per cell\n(mean over seeds{over}; framed = best, "
             f"hatched = no finite loss)")
    chars = int((width * ncols + 1.0) / CHAR_INCHES)  # the title wraps to the figure, never past its edge
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in title.split("\n")), fontsize=10)
    return save_figure(fig, out / f"heatmap_{x_key}__{y_key}", formats)


def _cells(res, xa: _Axis, ya: _Axis, facet) -> dict:
    """{panel: {(xi, yi): {loss, n_ok, n, status}}}: per cell the best seed-averaged configuration."""
    table = aggregate(res, res.params)
    cells: dict = {}
    for _, row in table.iterrows():
        panel = row[facet] if facet else None
        key = (xa.index(row[xa.key]), ya.index(row[ya.key]))
        grid = cells.setdefault(panel, {})
        old = grid.get(key)
        if old is None or _better(res, row, old):
            grid[key] = {"loss": row["loss"], "n_ok": row["n_ok"], "n": row["n"], "status": row["status"]}
    return cells


def _better(res, row, old) -> bool:
    if not math.isfinite(row["loss"]):
        return False
    return not math.isfinite(old["loss"]) or res.sign() * row["loss"] < res.sign() * old["loss"]


def _draw_cells(ax, grid: dict, xa: _Axis, ya: _Axis, vmin, vmax):
    nx, ny = len(xa.labels), len(ya.labels)
    data = np.full((ny, nx), np.nan)
    for (i, j), c in grid.items():
        data[j, i] = c["loss"] if math.isfinite(c["loss"]) else np.nan
    cmap = colormap("viridis_r").with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(data), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    finite = {k: c for k, c in grid.items() if math.isfinite(c["loss"])}
    best = min(finite, key=lambda k: finite[k]["loss"]) if finite else None
    seeds = max((c["n"] for c in grid.values()), default=1) > 1
    size = 8 if nx <= 8 else 6.5
    for (i, j), c in grid.items():
        if not math.isfinite(c["loss"]):
            ax.add_patch(_hatched(i, j))
            # a seed that diverged sinks the cell: say how many seeds did finish
            text = c["status"] + (f"\n{c['n_ok']}/{c['n']} ok" if seeds else "")
            ax.text(i, j, text, ha="center", va="center", fontsize=size - 1, color="#555555")
            continue
        shade = (c["loss"] - vmin) / (vmax - vmin) if vmax > vmin else 0.0
        text = f"{c['loss']:.3f}" + (f"\n{c['n_ok']}/{c['n']} seeds" if seeds else "")
        ax.text(i, j, text, ha="center", va="center", fontsize=size,
                color="white" if shade > 0.55 else "black", fontweight="bold" if (i, j) == best else None)
    if best is not None:
        from matplotlib.patches import Rectangle
        ax.add_patch(Rectangle((best[0] - 0.5, best[1] - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(nx), xa.labels, fontsize=7, rotation=30 if xa.edges is not None else 0,
                  ha="right" if xa.edges is not None else "center")
    ax.set_yticks(range(ny), ya.labels, fontsize=7)
    ax.set_xlabel(xa.title, fontsize=9)
    ax.set_ylabel(ya.title, fontsize=9)
    return image


def _hatched(i: int, j: int):
    from matplotlib.patches import Rectangle
    return Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor=FAILED_COLOUR, hatch="///", edgecolor="#9a9a9a", lw=0)


def _colour_range(finite: list[float]) -> tuple[float, float, bool]:
    """Colours span best..worst, but saturate where a few terrible cells would wash out the rest."""
    if not finite:
        return 0.0, 1.0, False
    lo, hi, med = min(finite), max(finite), float(np.median(finite))
    cap = med + 3 * (med - lo)
    if hi > cap > lo:
        return lo, cap, True
    return lo, (hi if hi > lo else lo + 1e-6), False


# --- one parameter: loss against it ------------------------------------------------------------


def _loss_curve(res, key, facet, out: Path, formats) -> list[Path]:
    table = aggregate(res, [k for k in (facet, key) if k])
    log = res.log_spaced(key)
    numeric = np.issubdtype(table[key].dtype, np.number)
    fig, (ax,) = figure_grid(1, ncols=1, size=(6.0, 4.0))
    groups = table.groupby(facet, sort=True) if facet else [(None, table)]
    for panel, group in groups:
        group = group.sort_values(key)
        xs = group[key] if numeric else group[key].astype(str)
        ok = group["loss"].map(math.isfinite)
        name = PARAM_NAMES.get(panel, panel) if panel else "mean over seeds"
        line = ax.plot(xs[ok], group["loss"][ok], "o-", label=name)[0]
        if (~ok).any():
            ax.plot(xs[~ok], [1.0] * int((~ok).sum()), "x", color=line.get_color(), ms=9, mew=2,
                    transform=ax.get_xaxis_transform(), clip_on=False, label=f"{name}: diverged/pruned")
        if ok.any():
            best = group["loss"][ok].idxmin()
            ax.plot([xs[best]], [group["loss"][best]], "*", ms=16, color=line.get_color(), mec="black")
    if log and numeric:
        _log2_axis(ax)
    ax.set_xlabel(label_of(key) + (" — log scale" if log and numeric else ""))
    ax.set_ylabel(_metric_label(res))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{res.name}: {_metric_label(res)} vs {label_of(key)}\n(★ = best; × at the top = no finite loss)",
                 fontsize=10)
    return save_figure(fig, out / f"loss_vs_{key}", formats)


# --- μTransfer ----------------------------------------------------------------------------------


def _mutransfer(res: RunResults, out: Path, formats) -> list[Path]:
    try:
        report = mutransfer_check(res.run_dir, write=False)
    except WindtunnelError as e:  # a sweep's pictures must not fail because the check cannot run
        warnings.warn(f"no muTransfer plot: {e}", WindtunnelWarning, stacklevel=2)
        return []
    panels = list(report.summaries)
    shapes = sorted({r.width for r in report.rows})
    colours = colormap("plasma")(np.linspace(0.05, 0.85, len(shapes)))
    fig, axes = figure_grid(len(panels), ncols=len(panels), size=(max(5.2, 10.0 / len(panels)), 4.4))
    finite = [p["loss"] for r in report.rows for p in r.points if math.isfinite(p["loss"])]
    top = float(np.quantile(finite, 0.85)) if finite else 1.0
    shape = "width d_model" if report.shape_key == WIDTH_KEY else label_of(report.shape_key)
    for ax, panel in zip(axes, panels):
        s = report.summaries[panel]
        carried = (s.carried or {}).get(LR_KEY)
        for colour, width in zip(colours, shapes):
            row = next((r for r in report.rows if r.parametrization == panel and r.width == width), None)
            if row is not None:
                _transfer_curve(ax, row, colour, carried)
        if carried:
            ax.axvline(carried, color="#444444", ls=":", lw=1.2, label=f"carried 2^{math.log2(carried):.3g}")
        band = f" [{s.slope_low:+.2f}, {s.slope_high:+.2f}]" if s.slope_low is not None else ""
        drift = f"drift {s.slope:+.2f}{band} log2/doubling" if s.slope is not None else "drift n/a (edge optima)"
        g = s.regret_widest
        ax.set_title(f"{PARAM_NAMES.get(panel, panel)}: {drift}\nregret at {s.widths[-1]}: "
                     f"{g.text() if g else 'n/a'} nats -> {s.verdict}", fontsize=9)
        _log2_axis(ax)
        ax.set_xlabel(f"{label_of(LR_KEY)} — log2 axis")
        ax.set_ylabel(_metric_label(res))
        if finite:
            lo = min(finite)
            pad = max(0.05 * (top - lo), 0.02)  # a lone point still gets a readable axis
            ax.set_ylim(lo - pad, max(top, lo + 10 * pad))
        ax.yaxis.get_major_formatter().set_useOffset(False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title=shape, title_fontsize=7)
    seeds = f"mean of {report.n_seeds} seeds, band = seed min..max" if report.n_seeds > 1 else "one seed"
    fig.suptitle(f"{res.name}: μTransfer — loss vs learning rate per {shape} ({seeds})\n★ fitted optimum with its "
                 f"95% interval, ○ best point on the grid's edge, × diverged, ◆ and dotted line: the carried lr",
                 fontsize=9)
    return save_figure(fig, out / "mutransfer", formats)


def _transfer_curve(ax, row, colour, carried: float | None) -> None:
    pts = [p for p in row.points if math.isfinite(p["loss"])]
    bad = [p for p in row.points if not math.isfinite(p["loss"])]
    opt = row.optimum
    mark = f"opt 2^{opt.log2_lr:.2f}" if opt.log2_lr is not None else "no optimum (edge)"
    xs = [2.0 ** p["log2_lr"] for p in pts]
    ax.plot(xs, [p["loss"] for p in pts], "o-", color=colour, ms=3.5, lw=1.4, label=f"{row.width}: {mark}")
    spread = [(x, p["low"], p["high"]) for x, p in zip(xs, pts) if p["low"] is not None and p["n_ok"] > 1]
    if spread:
        ax.fill_between([t[0] for t in spread], [t[1] for t in spread], [t[2] for t in spread], color=colour,
                        alpha=0.18, lw=0)
    if bad:
        ax.plot([2.0 ** p["log2_lr"] for p in bad], [0.97] * len(bad), "x", color=colour, ms=7, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False)
    if opt.lr is not None:
        y = opt.fit_loss if opt.fit_loss is not None else opt.best_loss
        if opt.low is not None:
            ax.errorbar([opt.lr], [y], xerr=[[opt.lr - 2.0**opt.low], [2.0**opt.high - opt.lr]], fmt="none",
                        ecolor=colour, elinewidth=2, capsize=3, zorder=4)
        ax.plot([opt.lr], [y], "*", ms=15, color=colour, mec="black", mew=0.8, zorder=5)
    elif opt.best_lr is not None:
        ax.plot([opt.best_lr], [opt.best_loss], "o", ms=11, mfc="none", mec=colour, mew=2, zorder=5)
    here = [p for p in pts if carried and abs(p["log2_lr"] - math.log2(carried)) < 1e-9]
    if here:
        ax.plot([carried], [here[0]["loss"]], "D", ms=6, color=colour, mec="black", mew=0.8, zorder=6)


def _log2_axis(ax) -> None:
    """A log2 x axis labelled 2^-8 in plain text (mathtext labels cost seconds per figure)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"2^{math.log2(v):g}" if v > 0 else ""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _metric_label(res: RunResults) -> str:
    return "validation loss (nats/token)" if res.metric == "val_loss" else res.metric
