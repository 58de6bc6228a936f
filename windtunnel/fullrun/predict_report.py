"""A loss prediction as text and as a picture: what `windtunnel predict` prints and draws.

Example:
    >>> print(format_prediction(pred))                                     # doctest: +SKIP
    >>> plot_prediction(pred, "runs/ladder/predict")                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..analysis.figures import figure_grid, save_figure
from ..formatting import fmt_number
from .predict import EXPONENTS, Prediction

__all__ = ["format_prediction", "plot_prediction", "prediction_dict"]


def format_prediction(pred: Prediction) -> str:
    """The fit, its exponents with intervals, the holdout check, the target's loss with its interval."""
    f, lvl = pred.boot.fit, f"{pred.level:.0%}"
    (n_lo, n_hi), (d_lo, d_hi) = pred.seen("N"), pred.seen("D")
    widths = sorted({p.width for p in pred.fitted})
    lines = [f"law: L = E + A (N/N0)^-alpha + B (D/D0)^-beta, least squares on log L, {len(pred.boot.params)} "
             f"bootstrap refits (points resampled within each width), {lvl} intervals",
             f"fitted on {len(pred.fitted)} points: widths {', '.join(map(str, widths))}; "
             f"N {_si(n_lo)}..{_si(n_hi)} non-embedding params ({math.log10(n_hi / n_lo):.2f} decades), "
             f"D {_si(d_lo)}..{_si(d_hi)} tokens ({math.log10(d_hi / d_lo):.2f} decades)",
             f"holds for: {pred.data}",
             f"  E     = {f.E:.4f}  [{_iv(pred, 'E')}]",
             f"  A     = {f.A:.4f}  [{_iv(pred, 'A')}]   N0 = {_si(f.n0)}",
             f"  B     = {f.B:.4f}  [{_iv(pred, 'B')}]   D0 = {_si(f.d0)}"]
    for name, axis in EXPONENTS:
        value, low, high = pred.exponent(name)
        lines.append(f"  {name:<5} = {value:.4f}  [{low:.4f}, {high:.4f}]   ({axis} exponent)")
    lines.append(f"  residual rms {f.rms:.4f} in log L (~{f.rms:.1%} of a loss)")
    if pred.holdout:
        h0 = pred.holdout[0]
        beyond = math.log10(h0.n / max(p.n for p in pred.points if p.width != h0.width))
        lines += ["", f"holdout: width {h0.width} ({_si(h0.n)} params) predicted from the other widths, "
                      f"{beyond:.2f} decades beyond them in N",
                  f"  {'tokens':>10} {'measured':>9} {'predicted':>9} {lvl + ' interval':>20} {'error':>8}  inside"]
        for h in pred.holdout:
            interval = f"[{h.low:.4f}, {h.high:.4f}]"
            lines.append(f"  {_si(h.d):>10} {h.measured:9.4f} {h.predicted:9.4f} {interval:>20} {h.error:+8.4f}  "
                         f"{'yes' if h.inside else 'NO'}" + (f" ({h.seeds} seeds)" if h.seeds > 1 else ""))
        worst = max(abs(h.error) for h in pred.holdout)
        inside = sum(h.inside for h in pred.holdout)
        lines.append(f"  max |error| {worst:.4f} nats; {inside}/{len(pred.holdout)} inside the interval")
    if pred.target is not None:
        t = pred.target
        lines += ["", f"target {t.name}: N {_si(t.n)} non-embedding params ({t.decades_n:+.2f} decades beyond the "
                      f"ladder), D {_si(t.d)} tokens ({t.decades_d:+.2f} decades)"]
        if pred.refusal is None:
            lines.append(f"  predicted loss {t.loss:.4f}  {lvl} interval [{t.low:.4f}, {t.high:.4f}]")
    lines += [f"warning: {w}" for w in pred.warnings]
    if pred.refusal:
        lines.append(f"refused: {pred.refusal}")
    return "\n".join(lines)


def prediction_dict(pred: Prediction) -> dict:
    """The prediction as plain data (for --json and the tests)."""
    out = {"data": pred.data, "level": pred.level, "points": len(pred.fitted), "refusal": pred.refusal,
           "warnings": list(pred.warnings), "seen": {"N": pred.seen("N"), "D": pred.seen("D")},
           "fit": {k: getattr(pred.boot.fit, k) for k in ("E", "A", "alpha", "B", "beta", "n0", "d0", "rms")},
           "intervals": {k: pred.boot.interval(k, pred.level) for k in ("E", "A", "alpha", "B", "beta")},
           "holdout": [{**h.__dict__, "error": h.error, "inside": h.inside} for h in pred.holdout]}
    if pred.target is not None:
        out["target"] = dict(pred.target.__dict__)
    return out


def plot_prediction(pred: Prediction, base: str | os.PathLike) -> list[Path]:
    """Two panels: loss against N (a fit curve per token budget, extended to the target or the held-out
    rung, with the interval band) and loss against D (a curve per width); the ladder's points, held-out
    points hollow, the prediction as a point with its interval."""
    fig, (ax_n, ax_d) = figure_grid(2, ncols=2, size=(5.2, 4.0))
    fit, boot = pred.boot.fit, pred.boot
    held = {p.trial for p in pred.points} - {p.trial for p in pred.fitted}
    budgets = sorted({p.d for p in pred.points})
    widths = sorted({p.width for p in pred.points})
    n_all = [p.n for p in pred.points] + ([pred.target.n] if pred.target else [])
    d_all = [p.d for p in pred.points] + ([pred.target.d] if pred.target else [])
    ns = np.geomspace(min(n_all) / 1.3, max(n_all) * 1.3, 80)
    ds = np.geomspace(min(d_all) / 1.3, max(d_all) * 1.3, 80)
    colors = _colors(len(budgets))
    for color, d in zip(colors, budgets):
        ax_n.plot(ns, fit(ns, d), color=color, lw=1, label=f"D {_si(d)}")
        _points(ax_n, [p for p in pred.points if p.d == d], "n", color, held)
    _, low, high = boot.band(ns, budgets[-1], level=pred.level)
    ax_n.fill_between(ns, low, high, color=colors[-1], alpha=0.15, lw=0, label=f"{pred.level:.0%} band (fit)")
    for color, w in zip(_colors(len(widths)), widths):
        n = next(p.n for p in pred.points if p.width == w)
        ax_d.plot(ds, fit(n, ds), color=color, lw=1, label=f"width {w}")
        _points(ax_d, [p for p in pred.points if p.width == w], "d", color, held)
    for h in pred.holdout:
        for ax, x in ((ax_n, h.n), (ax_d, h.d)):
            ax.errorbar([x], [h.predicted], yerr=[[h.predicted - h.low], [h.high - h.predicted]], fmt="x",
                        color="crimson", capsize=3, ms=6)
    if pred.target is not None and pred.refusal is None:
        t = pred.target
        ax_n.plot(ns, fit(ns, t.d), color="black", lw=1, ls="--", label=f"target D {_si(t.d)}")
        for ax, x in ((ax_n, t.n), (ax_d, t.d)):
            ax.errorbar([x], [t.loss], yerr=[[t.loss - t.low], [t.high - t.loss]], fmt="*", color="black",
                        capsize=3, ms=9, label=f"{t.name} {t.loss:.3f}")
    for ax, xlabel in ((ax_n, "non-embedding parameters N"), (ax_d, "training tokens D")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out loss (nats/token)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    title = "loss law fit" + (f", width {pred.holdout[0].width} held out (x: predicted)" if pred.holdout else "")
    fig.suptitle(f"{title}; {pred.data}", fontsize=9)
    return save_figure(fig, base, formats=("png",))


def _points(ax, points, attr: str, color, held: set[str]) -> None:
    for hollow in (False, True):
        sel = [p for p in points if (p.trial in held) == hollow]
        if sel:
            ax.scatter([getattr(p, attr) for p in sel], [p.loss for p in sel], s=16, zorder=3,
                       facecolors="none" if hollow else color, edgecolors=color)


def _colors(k: int):
    from ..analysis.figures import colormap

    cmap = colormap("viridis")
    return [cmap(0.1 + 0.75 * i / max(k - 1, 1)) for i in range(k)]


def _iv(pred: Prediction, name: str) -> str:
    low, high = pred.boot.interval(name, pred.level)
    return f"{low:.4g}, {high:.4g}"


def _si(x: float) -> str:
    """1.2e+06 -> 1.2M: counts of params and tokens at a glance."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return fmt_number(x, digits=3)
