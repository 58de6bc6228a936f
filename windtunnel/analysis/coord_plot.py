"""The coord check's pictures: one figure per parametrization, one panel per recorded tensor, the
tensor's size against width on log-log axes, one line per step.

    >>> plot_coord(coord_check(load_config("proxies/xs.yaml")), "runs/coord_xs")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .coord_check import CoordResult
from .figures import colormap, figure_grid, save_figure

__all__ = ["plot_coord"]


def plot_coord(result: CoordResult, out_dir: str | Path, *, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """One figure per parametrization (`coord_<p>.png/.svg`): one panel per recorded tensor,
    log-log size against width, one line per step. Offending panels get a red title.

    Example:
        >>> plot_coord(result, "runs/coord_xs")
        [PosixPath('runs/coord_xs/coord_mup.png'), PosixPath('runs/coord_xs/coord_mup.svg'), ...]
    """
    paths = []
    for p in result.sizes:
        fig, axes = figure_grid(len(result.layers), ncols=min(4, len(result.layers)), size=(3.4, 2.8))
        bad = {o.layer for o in result.offenders.get(p, [])}
        colours = colormap("viridis")([i / max(result.steps - 1, 1) for i in range(result.steps)])
        for ax, layer in zip(axes, result.layers):
            mean = result.mean_sizes(p, layer)
            for t in range(result.steps):
                ys = [row[t] for row in mean]
                ax.plot(result.widths, ys, "o-", color=colours[t], ms=3, lw=1.2,
                        label=f"step {t + 1}" + (" (init)" if t == 0 else ""))
            _log_log(ax, result.widths)
            ax.set_title(layer + ("  (over threshold)" if layer in bad else ""), fontsize=9,
                         color="crimson" if layer in bad else "black")
            ax.set_xlabel("width d_model", fontsize=8)
            ax.set_ylabel("mean |activation|", fontsize=8)
            ax.grid(True, which="both", alpha=0.25)
        axes[0].legend(fontsize=7)
        name = {"mup": "μP", "sp": "SP"}.get(p, p)
        verdict = ""
        if p == "mup" and result.passed is not None:
            verdict = (f" — {'PASS' if result.passed else 'FAIL'} "
                       f"(init and first update, threshold {result.threshold:g})")
        fig.suptitle(f"Coord check, {name}: activation size vs width over the first {result.steps} Adam steps "
                     f"at lr={result.lr:.3g}{verdict}\nflat lines = width-stable; μP should be flat, "
                     f"SP grows", fontsize=10)
        paths += save_figure(fig, Path(out_dir) / f"coord_{p}", formats)
    return paths


def _log_log(ax, widths: list[int]) -> None:
    """Log axes labelled in plain numbers (mathtext tick labels cost seconds per figure)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels even within a decade
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
