"""Figure plumbing shared by the sweep plots and the coord check: matplotlib without pyplot.

`matplotlib.figure.Figure` with the Agg canvas: no global pyplot state, no GUI backend, safe in
worker processes and notebooks alike. matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..fileio import atomic_write
from ..formatting import fmt_number

__all__ = ["figure_grid", "save_figure", "colormap", "fmt_value", "FORMATS"]

FORMATS = ("png", "svg")


def figure_grid(n: int, *, ncols: int, size: tuple[float, float] = (4.0, 3.2)):
    """A figure with `n` panels on a grid of `ncols` columns; returns (figure, list of n axes).

    Example:
        >>> fig, axes = figure_grid(3, ncols=2)
        >>> len(axes)
        3
    """
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.8), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def save_figure(fig, base: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `base.<fmt>` for each format, each atomically (temp file, then rename).

    Example:
        >>> save_figure(fig, "runs/x/plots/heatmap")
        [PosixPath('runs/x/plots/heatmap.png'), PosixPath('runs/x/plots/heatmap.svg')]
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attach the Agg canvas: png and svg both render through it
    paths = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, editable
            atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=130))
        paths.append(path)
    return paths


def colormap(name: str):
    """A matplotlib colormap by name (e.g. `viridis`)."""
    import matplotlib

    return matplotlib.colormaps[name]


def fmt_value(value, *, log: bool = False) -> str:
    """A tick label: `0.0039 (2^-8)` for powers of two on log axes, else 3 significant digits."""
    if isinstance(value, str):
        return value
    v = float(value)
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    text = fmt_number(v, digits=3)
    if log and v > 0:
        e = math.log2(v)
        if abs(e * 2 - round(e * 2)) < 1e-9:
            text += f"\n(2^{e:g})"
    return text
