"""Transfer check: does the optimal learning rate stay put as width grows (BRIEF §6)?

Per parametrization and width, the optimum is the vertex of a parabola fitted in log2(lr) to the
points around the best one. A best point on the grid's edge names no optimum: the true one may lie
beyond it. The drift (max - min of log2 optimum over widths) and whether the best loss falls with
width give the verdict; SP, the control, is expected to drift about one log2 unit per doubling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import WindtunnelError
from ..fileio import write_json
from .runs import (LR_KEY, PARAM_KEY, WIDTH_KEY, RunResults, best_over, load_run,
                             with_parametrization)

__all__ = ["Optimum", "fit_optimum", "WidthOptimum", "ParamSummary", "TransferReport", "transfer_check"]

MIN_WIDTHS, MIN_SPAN = 4, 8.0  # BRIEF §6: >= 4 widths spanning >= 8x


@dataclass(frozen=True)
class Optimum:
    """Where a loss-vs-lr curve bottoms out. `lr` is None when no optimum can be named."""

    lr: float | None
    log2_lr: float | None
    on_edge: bool
    method: str
    """`parabola` (vertex of the fit), `grid` (best grid point: a neighbour diverged or the fit has no
    minimum there), or `none` (edge, or nothing finite)."""
    best_lr: float | None = None
    best_loss: float | None = None
    fit_loss: float | None = None
    n_points: int = 0
    note: str = ""


def fit_optimum(lrs: Sequence[float], losses: Sequence[float], *, neighbors: int = 1) -> Optimum:
    """The optimal lr of one curve: a parabola in log2(lr) through the best point and `neighbors` on
    each side. Non-finite losses are diverged points; they bound the grid but are never fitted.

    Example:
        >>> opt = fit_optimum([2**-8, 2**-7, 2**-6, 2**-5], [3.0, 2.6, 2.5, 2.9])
        >>> round(opt.log2_lr, 2), opt.on_edge
        (-6.3, False)
        >>> fit_optimum([2**-8, 2**-7, 2**-6], [3.0, 2.8, 2.7]).on_edge   # still falling at the edge
        True
    """
    x, y = _checked_curve(lrs, losses, neighbors)
    finite = np.isfinite(y)
    if not finite.any():
        return Optimum(None, None, False, "none", n_points=0, note="every point diverged")
    i = int(np.argmin(np.where(finite, y, np.inf)))
    best = dict(best_lr=float(2.0 ** x[i]), best_loss=float(y[i]))
    if i in (0, len(x) - 1):
        side = "smallest" if i == 0 else "largest"
        return Optimum(None, None, True, "none", n_points=1, **best,
                       note=f"best at the grid's {side} lr 2^{x[i]:.3g}: the optimum may lie beyond; extend the grid")
    lo, hi = i - neighbors, i + neighbors + 1
    window = slice(max(lo, 0), min(hi, len(x)))
    wx, wy = x[window], y[window]
    if not np.isfinite(wy).all() or len(wx) < 3:
        return Optimum(best["best_lr"], float(x[i]), False, "grid", n_points=1, **best,
                       note="a neighbour diverged: optimum taken at the best grid point")
    a, b, c = np.polyfit(wx, wy, 2)
    vertex = -b / (2 * a) if a > 0 else math.nan
    if not (a > 0 and wx[0] <= vertex <= wx[-1]):
        return Optimum(best["best_lr"], float(x[i]), False, "grid", n_points=len(wx), **best,
                       note="the fitted parabola has no minimum inside the window: best grid point")
    return Optimum(float(2.0 ** vertex), float(vertex), False, "parabola", n_points=len(wx),
                   fit_loss=float(a * vertex**2 + b * vertex + c), **best)


@dataclass
class WidthOptimum:
    """One row of the transfer table."""

    parametrization: str
    width: int
    optimum: Optimum
    n_lrs: int
    n_ok: int


@dataclass
class ParamSummary:
    """How one parametrization's optimum moves with width."""

    parametrization: str
    widths: list[int]
    drift: float | None
    """max - min of log2(optimal lr) over the widths that name an optimum."""
    slope: float | None
    """least-squares shift of log2(optimal lr) per doubling of width (SP: about -1)."""
    best_losses: list[float]
    loss_falls: bool
    edge_widths: list[int]
    verdict: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class TransferReport:
    """The transfer check of one run folder; `verdict` is μP's (pass | fail | inconclusive)."""

    run_dir: Path
    rows: list[WidthOptimum]
    summaries: dict[str, ParamSummary]
    verdict: str
    max_drift: float
    neighbors: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run": str(self.run_dir), "verdict": self.verdict, "max_drift": self.max_drift,
                "neighbors": self.neighbors, "notes": self.notes,
                "parametrizations": {k: asdict(v) for k, v in self.summaries.items()},
                "optima": [{"parametrization": r.parametrization, "width": r.width, "n_lrs": r.n_lrs,
                            "n_ok": r.n_ok, **asdict(r.optimum)} for r in self.rows]}

    def table(self) -> str:
        """The per-width table and the per-parametrization verdicts, as printed by the CLI."""
        lines = [f"{'param':<6} {'width':>6} {'optimum lr':>11} {'log2':>7} {'best loss':>10} "
                 f"{'best lr':>9} {'ok/lrs':>7}  note"]
        for r in self.rows:
            o = r.optimum
            lr = f"{o.lr:.3g}" if o.lr is not None else "-"
            log2 = f"{o.log2_lr:.2f}" if o.log2_lr is not None else "-"
            loss = f"{o.best_loss:.4f}" if o.best_loss is not None else "-"
            best_lr = f"2^{math.log2(o.best_lr):.3g}" if o.best_lr else "-"
            note = o.note or o.method
            lines.append(f"{r.parametrization:<6} {r.width:>6} {lr:>11} {log2:>7} {loss:>10} {best_lr:>9} "
                         f"{f'{r.n_ok}/{r.n_lrs}':>7}  {note}")
        for s in self.summaries.values():
            drift = f"{s.drift:.2f}" if s.drift is not None else "n/a"
            slope = f"{s.slope:+.2f}" if s.slope is not None else "n/a"
            lines.append(f"{s.parametrization}: drift {drift} log2 units (per doubling {slope}), best loss "
                         f"{'falls' if s.loss_falls else 'does not fall'} with width -> {s.verdict}"
                         + "".join(f"\n  - {r}" for r in s.reasons))
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verdict (muP, drift <= {self.max_drift:g} log2 and loss falls): {self.verdict}")
        return "\n".join(lines)


def transfer_check(run_dir: str | Path, *, neighbors: int = 1, max_drift: float = 1.0,
                   write: bool = True) -> TransferReport:
    """Fit each width's optimal lr per parametrization, measure the drift, give BRIEF §6's verdict.

    Writes `run_dir/transfer_check.json` (atomically) unless `write=False`.

    Example:
        >>> report = transfer_check("runs/width_transfer")
        >>> report.verdict, round(report.summaries["mup"].drift, 2)
        ('pass', 0.41)
    """
    if max_drift <= 0:
        raise WindtunnelError(f"max_drift must be > 0 log2 units, got {max_drift}")
    if neighbors < 1:
        raise WindtunnelError(f"neighbors must be >= 1 (a parabola needs 3 points), got {neighbors}")
    res = load_run(run_dir)
    if res.goal != "min":
        raise WindtunnelError(f"{res.run_dir}: the transfer check fits a loss; metric {res.metric!r} has goal max")
    width_key = _width_key(res)
    if LR_KEY not in res.params:
        raise WindtunnelError(f"{res.run_dir}: the transfer check needs a sweep over {LR_KEY}; "
                              f"this one sweeps {', '.join(res.params) or 'nothing'}")
    res, notes = with_parametrization(res), []
    others = [k for k in res.params if k not in (LR_KEY, width_key, PARAM_KEY)]
    if others:
        notes.append(f"also swept {', '.join(others)}: each lr takes the best value of those")
    curves = best_over(res, [PARAM_KEY, width_key, LR_KEY])
    rows = [_width_row(p, w, group, width_key, neighbors)
            for (p, w), group in curves.groupby([PARAM_KEY, width_key], sort=True)]
    summaries = {p: _summarise(p, [r for r in rows if r.parametrization == p], max_drift)
                 for p in sorted({r.parametrization for r in rows})}
    verdict = summaries["mup"].verdict if "mup" in summaries else "inconclusive"
    if "mup" not in summaries:
        notes.append("no muP trials in this run: nothing to pass")
    if "mup" in summaries and "sp" in summaries:
        notes.append(_contrast(summaries["mup"], summaries["sp"]))
    report = TransferReport(res.run_dir, rows, summaries, verdict, max_drift, neighbors, notes)
    if write:
        write_json(res.run_dir / "transfer_check.json", report.to_dict(), strict=True)
    return report


# --- internals --------------------------------------------------------------------------------


def _checked_curve(lrs, losses, neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(lrs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise ValueError(f"lrs and losses must be equal-length non-empty lists, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and (x > 0).all()):
        raise ValueError(f"learning rates must be finite and > 0, got {x.tolist()}")
    if len(np.unique(x)) != len(x):
        raise ValueError("learning rates must be distinct; average seeds before fitting")
    if neighbors < 1:
        raise ValueError(f"neighbors must be >= 1 (a parabola needs 3 points), got {neighbors}")
    order = np.argsort(x)
    return np.log2(x[order]), y[order]


def _width_key(res: RunResults) -> str:
    for key in (WIDTH_KEY, "width"):
        if key in res.params or key in res.frame.columns:
            if res.frame[key].nunique() >= 2:
                return key
    raise WindtunnelError(f"{res.run_dir}: the transfer check needs several widths ({WIDTH_KEY}); "
                          f"this run sweeps {', '.join(res.params) or 'nothing'}")


def _width_row(param: str, width, group, width_key: str, neighbors: int) -> WidthOptimum:
    group = group.sort_values(LR_KEY)
    losses = [v if s == "ok" else math.inf for v, s in zip(group["loss"], group["status"])]
    opt = fit_optimum(group[LR_KEY].astype(float).tolist(), losses, neighbors=neighbors)
    return WidthOptimum(param, int(width), opt, n_lrs=len(group), n_ok=int((group["status"] == "ok").sum()))


def _summarise(param: str, rows: list[WidthOptimum], max_drift: float) -> ParamSummary:
    rows = sorted(rows, key=lambda r: r.width)
    widths = [r.width for r in rows]
    named = [r for r in rows if r.optimum.log2_lr is not None]
    logs = [r.optimum.log2_lr for r in named]
    drift = max(logs) - min(logs) if len(named) >= 2 else None
    slope = float(np.polyfit(np.log2([r.width for r in named]), logs, 1)[0]) if len(named) >= 2 else None
    best = [r.optimum.best_loss if r.optimum.best_loss is not None else math.inf for r in rows]
    falls = len(best) >= 2 and all(b < a for a, b in zip(best, best[1:]))
    edges = [r.width for r in rows if r.optimum.on_edge]
    verdict, reasons = _verdict(widths, named, drift, falls, edges, max_drift)
    if param != "mup":  # the control: moving is what it is expected to do
        verdict = {"fail": "drifts" if drift is not None and drift > max_drift else "holds",
                   "pass": "holds"}.get(verdict, verdict)
    return ParamSummary(param, widths, drift, slope, best, falls, edges, verdict, reasons)


def _verdict(widths, named, drift, falls, edges, max_drift) -> tuple[str, list[str]]:
    reasons = []
    if edges:
        reasons.append(f"no optimum at width(s) {', '.join(map(str, edges))}: best lr on the grid's edge")
    span = max(widths) / min(widths)
    if len(widths) < MIN_WIDTHS or span < MIN_SPAN:
        reasons.append(f"{len(widths)} widths spanning {span:g}x; BRIEF §6 asks >= {MIN_WIDTHS} spanning >= {MIN_SPAN:g}x")
    if drift is not None and drift > max_drift:
        return "fail", reasons + [f"optimum drifts {drift:.2f} log2 units > {max_drift:g}"]
    if drift is None or edges or len(widths) < MIN_WIDTHS or span < MIN_SPAN:
        return "inconclusive", reasons
    reasons.append(f"optimum drifts {drift:.2f} log2 units <= {max_drift:g}")
    if not falls:
        return "fail", reasons + ["best loss does not fall with width"]
    return "pass", reasons + ["best loss falls with width"]


def _contrast(mup: ParamSummary, sp: ParamSummary) -> str:
    if mup.drift is None or sp.drift is None:
        return "muP vs SP drift: not comparable (an optimum is missing)"
    ratio = sp.drift / mup.drift if mup.drift > 0 else math.inf
    return f"SP drifts {sp.drift:.2f} log2 units, muP {mup.drift:.2f} (SP/muP = {ratio:.1f}x)"


