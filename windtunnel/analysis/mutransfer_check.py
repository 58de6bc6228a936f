"""Transfer check: does the optimal learning rate stay put as the model grows, and what does it cost
when it does not?

Works on any swept shape key: width (`model.d_model`) or depth (`model.n_layers`). Per
parametrization (and depth rule, when `model.depth_scaling` is swept) and shape, the optimum comes
from every seed (`optimum.estimate_optimum`: weighted quadratic in log2 lr over up to five points
around the best one, 95 % bootstrap interval). A best point on the grid's edge names no optimum.

Two criteria, each pass | fail | inconclusive:
- drift: the slope of log2 lr* per doubling of the shape (least squares over the shapes that name an
  optimum), its 95 % interval from the same slope fitted to every bootstrap resample of the optima;
  pass when the interval lies within ±`drift_pass` (0.15), fail when it lies wholly beyond
  ±`drift_fail` (0.5). max - min of the optima is printed as a description only: it is biased upward
  by noise (about 2 sd with no movement at all) and its interval never covers 0;
- regret (`regret.transfer_regret`): the loss given up at the largest shape by carrying the
  source shape's winner; pass when its upper bound <= `regret_tolerance`, fail when its lower bound is above.
μP passes when either criterion passes, the best loss falls with the shape (its slope per doubling
wholly below 0) and nothing vetoes it: an optimum on the grid's edge at any shape makes it
inconclusive with the fix (more lrs beyond that edge), a carried configuration that diverges at any
shape makes it fail. SP, the control, is expected to drift about one log2 unit per doubling and is
reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WindtunnelError
from ..fileio import write_json
from ..run_folder import MUTRANSFER_CHECK_FILE
from .mutransfer_report import report_table
from .mutransfer_verdict import Thresholds, from_max_drift, judge
from .optimum import (
    N_BOOT,
    Optimum,
    OptimumEstimate,
    estimate_optimum,
    fit_optimum,
    percentile_interval,
    residual_scatter,
)
from .regret import Cell, Regret, transfer_regret
from .runs import LR_KEY, PARAM_KEY, WIDTH_KEY, RunResults, aggregate, load_run, with_parametrization
from .trend import slope_interval

__all__ = [
    "SHAPE_KEYS",
    "Optimum",
    "ParamSummary",
    "TransferReport",
    "Thresholds",
    "WidthOptimum",
    "check_family",
    "fit_optimum",
    "mutransfer_check",
]

MIN_WIDTHS, MIN_SPAN = 4, 8.0  # >= 4 shapes spanning >= 8x: fewer cannot tell a trend from noise
SHAPE_KEYS = (WIDTH_KEY, "model.n_layers", "width")
VARIANT_KEYS = ("model.depth_scaling",)  # swept beside the parametrization: each value is its own family


@dataclass
class WidthOptimum:
    """One row of the transfer table: one parametrization at one shape (width or depth)."""

    parametrization: str
    width: int
    optimum: OptimumEstimate
    n_lrs: int
    n_ok: int
    points: list[dict] = field(default_factory=list)
    """Per lr: log2_lr, loss (seed mean; inf diverged), low/high (seed min/max), n_ok, n, status."""
    regret: Regret | None = None


@dataclass
class ParamSummary:
    """How one parametrization's optimum moves with the shape, and what carrying it costs."""

    parametrization: str
    widths: list[int]
    drift: float | None
    """max - min of log2(optimal lr) over the shapes that name an optimum: a description, not the verdict."""
    drift_low: float | None
    drift_high: float | None
    slope: float | None
    """Least-squares shift of log2(optimal lr) per doubling of the shape (SP width: about -1): the drift verdict."""
    best_losses: list[float]
    loss_falls: bool
    """The best loss's slope per doubling of the shape lies wholly below 0 (`loss_trend` == falls)."""
    edge_widths: list[int]
    drift_verdict: str
    regret_verdict: str
    verdict: str
    carried: dict | None = None
    regret_widest: Regret | None = None
    n_seeds: int = 0
    reasons: list[str] = field(default_factory=list)
    settle: str = ""
    """What would settle an inconclusive verdict (more seeds, more lr points)."""
    slope_low: float | None = None
    slope_high: float | None = None
    loss_slope: float | None = None
    """Least-squares slope of the best loss per doubling of the shape, nats."""
    loss_low: float | None = None
    loss_high: float | None = None
    loss_trend: str = "inconclusive"
    """falls | flat | rises | inconclusive, from the best loss's slope interval."""
    diverged_widths: list[int] = field(default_factory=list)
    """Shapes where the carried configuration diverged."""
    edge_fixes: list[str] = field(default_factory=list)
    """Per edge: which lrs to add, e.g. `train.lr values below 2^-12`."""
    interval: str = ""
    """How the intervals were made (bootstrap over seeds, or the one-seed parametric bootstrap)."""


@dataclass
class TransferReport:
    """The transfer check of one run folder; `verdict` is μP's (pass | fail | inconclusive)."""

    run_dir: Path
    shape_key: str
    rows: list[WidthOptimum]
    summaries: dict[str, ParamSummary]
    verdict: str
    max_drift: float | None
    """The deprecated max - min threshold, when given (converted to `thresholds.drift_pass`)."""
    regret_tolerance: float
    from_width: int
    neighbors: int
    n_seeds: int
    notes: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)

    def to_dict(self) -> dict:
        sums = {k: {**asdict(v), "regret_widest": v.regret_widest.to_dict() if v.regret_widest else None}
                for k, v in self.summaries.items()}
        return {"run": str(self.run_dir), "shape_key": self.shape_key, "verdict": self.verdict,
                "thresholds": asdict(self.thresholds), "max_drift": self.max_drift,
                "regret_tolerance": self.regret_tolerance,
                "from_width": self.from_width, "neighbors": self.neighbors, "n_seeds": self.n_seeds,
                "confidence": 0.95, "notes": self.notes, "parametrizations": sums,
                "optima": [{"parametrization": r.parametrization, "width": r.width, "n_lrs": r.n_lrs,
                            "n_ok": r.n_ok, **r.optimum.to_dict(),
                            "regret": r.regret.to_dict() if r.regret else None, "points": r.points}
                           for r in self.rows]}

    def table(self) -> str:
        """The per-shape table and the per-parametrization verdicts, as printed by the CLI."""
        return report_table(self)


def mutransfer_check(run_dir: str | Path, *, neighbors: int = 2, max_drift: float | None = None,
                   regret_tolerance: float = 0.01, from_width: int | None = None, shape_key: str | None = None,
                   n_boot: int = N_BOOT, write: bool = True, drift_pass: float = 0.15, drift_fail: float = 0.5,
                   loss_flat: float = 0.01) -> TransferReport:
    """Each shape's optimal lr with its interval, the drift per doubling and the transfer regret, and the verdict.

    `neighbors`: grid points each side of the best one in the quadratic fit. `from_width`: the shape
    whose winner is carried (default the smallest). `shape_key`: which swept shape key, when a run
    sweeps several. `drift_pass` / `drift_fail`: the drift (log2 lr* per doubling) passes when its
    interval lies within ±drift_pass, fails when wholly beyond ±drift_fail. `loss_flat`: a best-loss
    slope within ±loss_flat nats per doubling is flat. `max_drift` (deprecated: a max - min in log2
    units) is converted to drift_pass = max_drift / doublings spanned, with a warning. Writes
    `run_dir/mutransfer_check.json` (atomically) unless `write=False`.

    Example:
        >>> report = mutransfer_check("runs/width_transfer")                # doctest: +SKIP
        >>> report.verdict, round(report.summaries["mup"].slope, 2)      # doctest: +SKIP
        ('pass', 0.04)
    """
    if regret_tolerance < 0 or not 0 < drift_pass <= drift_fail or loss_flat < 0:
        raise WindtunnelError(f"thresholds must satisfy 0 < drift_pass <= drift_fail (log2 per doubling), "
                              f"regret_tolerance >= 0 and loss_flat >= 0 (nats), got drift_pass={drift_pass}, "
                              f"drift_fail={drift_fail}, regret_tolerance={regret_tolerance}, loss_flat={loss_flat}")
    if max_drift is not None and max_drift <= 0:
        raise WindtunnelError(f"max_drift must be > 0 log2 units, got {max_drift}")
    if neighbors < 1:
        raise WindtunnelError(f"neighbors must be >= 1 (a quadratic needs 3 points), got {neighbors}")
    res = load_run(run_dir)
    if res.goal != "min":
        raise WindtunnelError(f"{res.run_dir}: the transfer check fits a loss; metric {res.metric!r} has goal max")
    key = _shape_key(res, shape_key)
    if LR_KEY not in res.params:
        raise WindtunnelError(f"{res.run_dir}: the transfer check needs a sweep over {LR_KEY}; "
                              f"this one sweeps {', '.join(res.params) or 'nothing'}")
    res = with_parametrization(res)
    variants = [PARAM_KEY, *(k for k in VARIANT_KEYS if k in res.params)]
    others = [k for k in res.params if k not in (LR_KEY, key, *variants)]
    table = aggregate(res, [*variants, key, LR_KEY, *others], seed_losses=True)
    table["_label"] = table[variants].astype(str).agg("/".join, axis=1)
    shapes = sorted(int(v) for v in table[key].unique())
    source = _source(res, shapes, from_width)
    notes = [f"also swept {', '.join(others)}: each lr takes the best value of those, re-chosen in every "
             "resample"] if others else []
    limits = Thresholds(drift_pass, max(drift_fail, drift_pass), regret_tolerance, loss_flat)
    if max_drift is not None:
        limits = from_max_drift(max_drift, shapes, limits, notes)
    rows, summaries = [], {}
    for label in sorted(table["_label"].unique(), key=lambda s: (s.split("/")[0] == "sp", s)):
        part = table[table["_label"] == label]
        cells = {int(w): _cells(g, others) for w, g in part.groupby(key, sort=True)}
        _enough_lrs(res, label, key, cells)
        fam, summaries[label] = check_family(label, cells, from_width=source, limits=limits, neighbors=neighbors,
                                             n_boot=n_boot, config_keys=[LR_KEY, *others], notes=notes)
        rows += fam
    verdict = _overall(summaries, notes)
    n_seeds = int(max((r.optimum.n_seeds for r in rows), default=0))
    if n_seeds <= 1:
        notes.append("one seed per point: intervals come from a parametric bootstrap of the fits' residuals "
                     "(pooled over the shapes; inconclusive where no fit has scatter); run >= 3 seeds for a "
                     "bootstrap over seeds")
    report = TransferReport(res.run_dir, key, rows, summaries, verdict, max_drift, regret_tolerance, source,
                            neighbors, n_seeds, notes, limits)
    if write:
        write_json(res.run_dir / MUTRANSFER_CHECK_FILE, report.to_dict(), strict=True)
    return report


def check_family(label: str, cells: dict[int, list[Cell]], *, from_width: int, limits: Thresholds = Thresholds(),
                 neighbors: int = 2, n_boot: int = N_BOOT, config_keys: list[str] | None = None,
                 notes: list[str] | None = None) -> tuple[list[WidthOptimum], ParamSummary]:
    """The transfer check of one parametrization from its configurations per shape (no run folder):
    each shape's optimum, the regret of carrying `from_width`'s winner, the drift and the verdict.
    `notes` (a list), when given, collects the one-seed noise estimate.

    Example:
        >>> cell = lambda w, e: Cell((2.0**e,), e, np.array([3 - 0.1 * np.log2(w) + 0.05 * (e + 7) ** 2]), False)
        >>> rows, s = check_family("mup", {w: [cell(w, e) for e in range(-11, -3)] for w in (64, 128, 256, 512)},
        ...                        from_width=64)
        >>> s.verdict, abs(round(s.slope, 3))
        ('pass', 0.0)
    """
    noise = _pooled_noise(cells, neighbors)
    if noise is not None and notes is not None:
        notes.append(f"{label}: one seed's noise sd {math.sqrt(noise[0]):.3g} nats, read off the fits' residuals "
                     f"({noise[1]} degrees of freedom, pooled over the {len(cells)} shapes)")
    fam = [_shape_row(label, w, c, neighbors, n_boot, noise) for w, c in sorted(cells.items())]
    fits = {r.width: r.optimum.fit for r in fam if r.optimum.fit is not None}
    carried, regrets = transfer_regret(cells, from_width=from_width, fits=fits, n_boot=n_boot, noise=noise)
    for r, g in zip(fam, regrets):
        r.regret = g
    keys = config_keys or [LR_KEY]
    return fam, _summarise(label, fam, carried, keys, limits, regrets)


# --- internals --------------------------------------------------------------------------------


def _shape_key(res: RunResults, wanted: str | None) -> str:
    swept = [k for k in SHAPE_KEYS if k in res.frame.columns and res.frame[k].nunique() >= 2]
    if wanted is not None:
        if wanted not in SHAPE_KEYS:
            raise WindtunnelError(f"{res.run_dir}: --shape-key {wanted!r} is not a shape key; expected one of "
                                  f"{', '.join(SHAPE_KEYS[:2])}")
        if wanted not in swept:
            raise WindtunnelError(f"{res.run_dir}: {wanted} is not swept over >= 2 values in this run")
        return wanted
    if not swept:
        raise WindtunnelError(f"{res.run_dir}: the transfer check needs several widths or depths (a swept shape "
                              f"key: {' or '.join(SHAPE_KEYS[:2])}); "
                              f"this run sweeps {', '.join(res.params) or 'nothing'}")
    if len(swept) > 1:
        raise WindtunnelError(f"{res.run_dir}: sweeps several shape keys ({', '.join(swept)}); "
                              "choose one with --shape-key")
    return swept[0]


def _source(res: RunResults, shapes: list[int], from_width: int | None) -> int:
    if from_width is None:
        return shapes[0]
    if from_width not in shapes:
        raise WindtunnelError(f"{res.run_dir}: --from-width {from_width} was not swept; swept: {shapes}")
    return from_width


def _has_data(g) -> np.ndarray:
    """Cells with a finished seed or a diverged one; all-error/pruned cells are missing points."""
    return ((g["n_ok"] > 0) | (g["status"] == "diverged")).to_numpy()


def _enough_lrs(res, label, key, cells: dict[int, list[Cell]]) -> None:
    for width, cs in cells.items():
        lrs = sorted({c.log2_lr for c in cs})
        if len(lrs) < 3:
            have = ", ".join(f"2^{x:g}" for x in lrs) or "none"
            raise WindtunnelError(f"{res.run_dir}: {label} at {key}={width} has {len(lrs)} lr point(s) with a "
                                  f"finished or diverged trial ({have}); the check needs >= 3 (error/pruned trials "
                                  "are missing)")


def _seed_lists(cells: list[Cell]) -> tuple[list[float], list[list[float]]]:
    """log2 lr and seed losses per cell, sorted by lr, for `estimate_optimum` (inf marks a diverged cell)."""
    cells = sorted(cells, key=lambda c: c.log2_lr)
    return [c.log2_lr for c in cells], [[*c.seeds.tolist(), *([math.inf] if c.diverged else [])] for c in cells]


def _pooled_noise(cells: dict[int, list[Cell]], neighbors: int) -> tuple[float, int] | None:
    """One seed's loss variance and its degrees of freedom, from the fits' residuals pooled over the
    shapes (per lr the best configuration); None when the points carry several seeds (they speak for themselves)."""
    if any(len(c.seeds) > 1 for cs in cells.values() for c in cs):
        return None
    rss = dof = 0
    for cs in cells.values():
        x, seeds = _seed_lists(cs)
        means = {}
        for xi, s in zip(x, seeds):
            v = float(np.mean(s)) if s and all(map(math.isfinite, s)) else math.inf
            means[xi] = min(means.get(xi, math.inf), v)
        r, d = residual_scatter(list(means), list(means.values()), half_window=neighbors)
        rss, dof = rss + r, dof + d
    return (rss / dof, dof) if dof else None


def _shape_row(label, width, cells: list[Cell], neighbors, n_boot, noise) -> WidthOptimum:
    """The optimum over lr, each lr taking its best configuration of the other swept keys (re-chosen per resample)."""
    x, seeds = _seed_lists(cells)
    opt = estimate_optimum(x, seeds, half_window=neighbors, n_boot=n_boot, seed=width, noise=noise)
    points = []
    for lr in sorted({c.log2_lr for c in cells}):
        at = [c for c in cells if c.log2_lr == lr]
        c = min(at, key=lambda c: (c.mean, c.diverged))
        points.append({"log2_lr": lr, "loss": c.mean, "low": float(c.seeds.min()) if len(c.seeds) else None,
                       "high": float(c.seeds.max()) if len(c.seeds) else None, "n_ok": len(c.seeds),
                       "n": c.n, "status": c.status})
    return WidthOptimum(label, width, opt, n_lrs=len(points), n_ok=sum(p["status"] == "ok" for p in points),
                        points=points)


def _cells(g, others) -> list[Cell]:
    g = g[_has_data(g)]
    return [Cell(config=(float(r[LR_KEY]), *(r[k] for k in others)), log2_lr=math.log2(float(r[LR_KEY])),
                 seeds=np.asarray(r["seed_losses"], dtype=float), diverged=r["status"] == "diverged",
                 n=int(r["n"]), status=str(r["status"]))
            for _, r in g.iterrows()]


def _summarise(label, rows: list[WidthOptimum], carried, config_keys, limits: Thresholds, regrets) -> ParamSummary:
    widths = [r.width for r in rows]
    named = [r for r in rows if r.optimum.log2_lr is not None]
    logs = [r.optimum.log2_lr for r in named]
    drift = max(logs) - min(logs) if len(named) >= 2 else None
    low = high = None
    boot = len(named) >= 2 and all(r.optimum.samples is not None for r in named)
    if drift is not None and boot:
        reps = np.stack([r.optimum.samples for r in named])
        low, high = percentile_interval(reps.max(axis=0) - reps.min(axis=0), drift)
    slope = s_low = s_high = None
    if len(named) >= 2:
        slope, s_low, s_high = slope_interval(np.log2([r.width for r in named]), logs,
                                              [r.optimum.samples for r in named] if boot else None)
    best = [r.optimum.best_loss if r.optimum.best_loss is not None else math.inf for r in rows]
    loss = _loss_slope(widths, best, [r.optimum.loss_samples for r in rows])
    s = ParamSummary(label, widths, drift, low, high, slope, best, False, [r.width for r in rows if r.optimum.on_edge],
                     "", "", "", carried=dict(zip(config_keys, carried)) if carried else None,
                     regret_widest=rows[-1].regret, n_seeds=max(r.optimum.n_seeds for r in rows),
                     slope_low=s_low, slope_high=s_high, loss_slope=loss[0], loss_low=loss[1], loss_high=loss[2],
                     diverged_widths=[g.width for g in regrets if g.diverged],
                     edge_fixes=_edge_fixes(rows), interval=", ".join(sorted({r.optimum.interval for r in rows})))
    judge(s, limits, min_widths=MIN_WIDTHS, min_span=MIN_SPAN)
    return s


def _loss_slope(widths, best, samples) -> tuple[float | None, float | None, float | None]:
    """The best loss's slope per doubling of the shape, with its interval when every shape was resampled."""
    if len(widths) < 2 or not all(map(math.isfinite, best)):
        return None, None, None
    return slope_interval(np.log2(widths), best, None if any(s is None for s in samples) else samples)


def _edge_fixes(rows: list[WidthOptimum]) -> list[str]:
    """`train.lr values below 2^-12` (or above the largest) per side where some shape's best lr is on the edge."""
    fixes = []
    for side, pick, word in (("smallest", min, "below"), ("largest", max, "above")):
        edge = [pick(p["log2_lr"] for p in r.points) for r in rows if r.optimum.on_edge and side in r.optimum.note]
        if edge:
            fixes.append(f"train.lr values {word} 2^{pick(edge):g}")
    return fixes


def _overall(summaries: dict[str, ParamSummary], notes: list[str]) -> str:
    candidates = {k: s for k, s in summaries.items() if k.split("/")[0] != "sp"}
    if not candidates:
        notes.append("no muP trials in this run: nothing to pass")
        return "inconclusive"
    if len(candidates) > 1:
        passing = [k for k, s in candidates.items() if s.verdict == "pass"]
        notes.append(f"{len(candidates)} muP variants: the verdict is the best of them"
                     + (f" ({', '.join(passing)} pass{'es' if len(passing) == 1 else ''})" if passing else ""))
    rank = {"pass": 0, "inconclusive": 1, "fail": 2}
    return min((s.verdict for s in candidates.values()), key=lambda v: rank.get(v, 1))
