"""The two evaluation pictures: loss against context length with its fitted law, and the reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.figures import FORMATS, save_figure

__all__ = ["plot_context", "plot_reliability"]


def plot_context(result: dict[str, Any], base: str | Path, *, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Loss per context bucket (points with standard errors, log x) and the fitted law; parameters in the legend.

    Example:
        >>> plot_context(context("runs/xs"), "runs/xs/eval/context")      # doctest: +SKIP
        [PosixPath('runs/xs/eval/context.png'), PosixPath('runs/xs/eval/context.svg')]
    """
    from matplotlib.figure import Figure

    points, fit = result["points"], result["fit"]
    t = np.array([p["t_mean"] for p in points])
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(t, [p["loss"] for p in points], yerr=[p["loss_se"] or 0 for p in points], fmt="o",
                color="C0", capsize=3, label=f"held-out loss ({result['windows']} windows)")
    if "a" in fit:
        grid = np.geomspace(t.min(), t.max(), 200)
        label = (f"L(t) = b + (t/c)^a\na = {fit['a']:.3f} ± {fit['a_se']:.3f}, b = {fit['b']:.3f} ± "
                 f"{fit['b_se']:.3f}\nc = {fit['c']:.3g} ± {fit['c_se']:.2g}, R² = {fit['r2']:.4f}")
        ax.plot(grid, fit["b"] + (grid / fit["c"]) ** fit["a"], color="C3", label=label)
    else:
        ax.plot([], [], " ", label=f"no fit: {fit.get('error')}")
    ax.set_xscale("log")
    ax.set_xlabel("context tokens t (mean of each position bucket)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"loss vs context: {_short(result['model'])}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, base, formats)


def plot_reliability(result: dict[str, Any], base: str | Path, *, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Accuracy per confidence bin (bars) against the diagonal, and how many answers fall in each bin.

    Example:
        >>> plot_reliability(calibration("runs/xs", tasks="tasks.jsonl"), "runs/xs/eval/reliability")  # doctest: +SKIP
        [PosixPath('runs/xs/eval/reliability.png'), PosixPath('runs/xs/eval/reliability.svg')]
    """
    from matplotlib.figure import Figure

    s, bins = result["overall"], result["overall"]["reliability"]
    lo = np.array([b["lo"] for b in bins])
    width = 1.0 / len(bins)
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else np.nan for b in bins])
    counts = np.array([b["count"] for b in bins])
    fig = Figure(figsize=(5.2, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(lo, acc, width=width, align="edge", color="C0", edgecolor="black", linewidth=0.5, label="accuracy")
    filled = counts > 0  # the gap from accuracy to the bin's mean confidence, above or below the bar
    top.bar(lo[filled], np.abs(conf - acc)[filled], bottom=np.minimum(conf, acc)[filled], width=width,
            align="edge", fill=False, edgecolor="C3", hatch="//", linewidth=0.8, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    text = (f"ECE = {s['ece']:.3f} ({s['bins']} equal-width bins)\nMCE = {s['mce']:.3f}, Brier = {s['brier']:.3f}\n"
            f"accuracy = {s['accuracy']:.3f} (chance {s['chance_accuracy']:.3f}), n = {s['n']}")
    top.text(0.03, 0.97, text, transform=top.transAxes, va="top", fontsize=8,
             bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    top.legend(loc="lower right", fontsize=8)
    top.set_title(f"calibration ({result['scoring']} scoring, {result['shots']}-shot): "
                  f"{_short(result['model'])}", fontsize=9)
    bottom.bar(lo, counts, width=width, align="edge", color="C7", edgecolor="black", linewidth=0.5)
    bottom.set(xlabel="confidence (top choice's probability)", ylabel="answers")
    return save_figure(fig, base, formats)


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
