"""Transfer check: does the optimal learning rate stay put as the model grows, and what does it cost
when it does not?

Works on any swept shape key: width (`model.d_model`) or depth (`model.n_layers`). Per
parametrization (and depth rule, when `model.depth_scaling` is swept) and shape, the optimum comes
from every seed (`optimum.estimate_optimum`: weighted quadratic in log2 lr over up to five points
around the best one, 95 % bootstrap interval). A best point on the grid's edge names no optimum.

Two criteria, each pass | fail | inconclusive:
- drift: max - min of log2 optimum over the shapes, with a bootstrap interval (the widths' resamples
  combined); pass when its upper bound <= `max_drift`, fail when its lower bound > `max_drift`;
- regret (`regret.transfer_regret`): the loss given up at the largest shape by carrying the
  source shape's winner; pass when its upper bound <= `regret_tolerance`, fail when its lower bound is above.
μP passes when either criterion passes and its best loss falls as the model grows; SP, the control,
is expected to drift about one log2 unit per doubling and is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WindtunnelError
from ..fileio import write_json
from .optimum import (
    N_BOOT,
    Optimum,
    OptimumEstimate,
    estimate_optimum,
    fit_optimum,
    percentile_interval,
)
from .regret import Cell, Regret, transfer_regret
from .runs import (
    LR_KEY,
    PARAM_KEY,
    WIDTH_KEY,
    RunResults,
    aggregate,
    load_run,
    with_parametrization,
)
from .transfer_report import report_table
from .transfer_verdict import judge

__all__ = [
    "SHAPE_KEYS",
    "Optimum",
    "ParamSummary",
    "TransferReport",
    "WidthOptimum",
    "fit_optimum",
    "transfer_check",
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
    """max - min of log2(optimal lr) over the shapes that name an optimum."""
    drift_low: float | None
    drift_high: float | None
    slope: float | None
    """least-squares shift of log2(optimal lr) per doubling of the shape (SP width: about -1)."""
    best_losses: list[float]
    loss_falls: bool
    """Best loss lower at the largest shape than at the smallest, with a falling trend over log2(shape)."""
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


@dataclass
class TransferReport:
    """The transfer check of one run folder; `verdict` is μP's (pass | fail | inconclusive)."""

    run_dir: Path
    shape_key: str
    rows: list[WidthOptimum]
    summaries: dict[str, ParamSummary]
    verdict: str
    max_drift: float
    regret_tolerance: float
    from_width: int
    neighbors: int
    n_seeds: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        sums = {k: {**asdict(v), "regret_widest": v.regret_widest.to_dict() if v.regret_widest else None}
                for k, v in self.summaries.items()}
        return {"run": str(self.run_dir), "shape_key": self.shape_key, "verdict": self.verdict,
                "max_drift": self.max_drift, "regret_tolerance": self.regret_tolerance,
                "from_width": self.from_width, "neighbors": self.neighbors, "n_seeds": self.n_seeds,
                "confidence": 0.95, "notes": self.notes, "parametrizations": sums,
                "optima": [{"parametrization": r.parametrization, "width": r.width, "n_lrs": r.n_lrs,
                            "n_ok": r.n_ok, **r.optimum.to_dict(),
                            "regret": r.regret.to_dict() if r.regret else None, "points": r.points}
                           for r in self.rows]}

    def table(self) -> str:
        """The per-shape table and the per-parametrization verdicts, as printed by the CLI."""
        return report_table(self)


def transfer_check(run_dir: str | Path, *, neighbors: int = 2, max_drift: float = 1.0,
                   regret_tolerance: float = 0.01, from_width: int | None = None, shape_key: str | None = None,
                   n_boot: int = N_BOOT, write: bool = True) -> TransferReport:
    """Each shape's optimal lr with its interval, the drift and the transfer regret, and the verdict.

    `neighbors`: grid points each side of the best one in the quadratic fit. `from_width`: the shape
    whose winner is carried (default the smallest). `shape_key`: which swept shape key, when a run
    sweeps several. Writes `run_dir/transfer_check.json` (atomically) unless `write=False`.

    Example:
        >>> report = transfer_check("runs/width_transfer")
        >>> report.verdict, round(report.summaries["mup"].drift, 2)      # doctest: +SKIP
        ('pass', 0.41)
    """
    if max_drift <= 0 or regret_tolerance < 0:
        raise WindtunnelError(f"max_drift must be > 0 log2 units and regret_tolerance >= 0 nats, "
                              f"got {max_drift} and {regret_tolerance}")
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
    notes = [f"also swept {', '.join(others)}: each lr takes the best value of those"] if others else []
    rows, summaries = [], {}
    for label in sorted(table["_label"].unique(), key=lambda s: (s.split("/")[0] == "sp", s)):
        part = table[table["_label"] == label]
        fam = [_shape_row(res, label, (key, int(w)), g, neighbors, n_boot) for w, g in part.groupby(key, sort=True)]
        cells = {int(w): _cells(g, others) for w, g in part.groupby(key, sort=True)}
        fits = {r.width: r.optimum.fit for r in fam if r.optimum.fit is not None}
        carried, regrets = transfer_regret(cells, from_width=source, fits=fits, n_boot=n_boot)
        for r, g in zip(fam, regrets):
            r.regret = g
        rows += fam
        summaries[label] = _summarise(label, fam, carried, [LR_KEY, *others], max_drift, regret_tolerance)
    verdict = _overall(summaries, notes)
    n_seeds = int(max((r.optimum.n_seeds for r in rows), default=0))
    if n_seeds <= 1:
        notes.append("one seed per point: intervals come from the fit's residuals alone (inconclusive where "
                     "a fit has no scatter); run >= 3 seeds for a bootstrap over seeds")
    report = TransferReport(res.run_dir, key, rows, summaries, verdict, max_drift, regret_tolerance, source,
                            neighbors, n_seeds, notes)
    if write:
        write_json(res.run_dir / "transfer_check.json", report.to_dict(), strict=True)
    return report


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


def _shape_row(res, label, shape: tuple[str, int], g, neighbors, n_boot) -> WidthOptimum:
    """Best over the other swept keys per lr (by seed mean), then the optimum over lr."""
    key, width = shape
    g = g[_has_data(g)]
    per_lr = []
    for lr, cells in g.groupby(LR_KEY, sort=True):
        finite = cells[cells["loss"].map(math.isfinite)]
        per_lr.append(finite.loc[finite["loss"].idxmin()] if len(finite) else cells.iloc[0])
    if len(per_lr) < 3:
        have = ", ".join(f"2^{math.log2(float(r[LR_KEY])):g}" for r in per_lr) or "none"
        raise WindtunnelError(f"{res.run_dir}: {label} at {key}={width} has {len(per_lr)} lr point(s) with a finished "
                              f"or diverged trial ({have}); the check needs >= 3 (error/pruned trials are missing)")
    x = [math.log2(float(r[LR_KEY])) for r in per_lr]
    seeds = [list(r["seed_losses"]) + ([math.inf] if r["status"] == "diverged" else []) for r in per_lr]
    opt = estimate_optimum(x, seeds, half_window=neighbors, n_boot=n_boot, seed=width)
    points = [{"log2_lr": xi, "loss": float(r["loss"]), "low": min(r["seed_losses"], default=None),
               "high": max(r["seed_losses"], default=None), "n_ok": int(r["n_ok"]), "n": int(r["n"]),
               "status": r["status"]} for xi, r in zip(x, per_lr)]
    return WidthOptimum(label, width, opt, n_lrs=len(per_lr), n_ok=sum(r["status"] == "ok" for r in per_lr),
                        points=points)


def _cells(g, others) -> list[Cell]:
    g = g[_has_data(g)]
    return [Cell(config=(float(r[LR_KEY]), *(r[k] for k in others)), log2_lr=math.log2(float(r[LR_KEY])),
                 seeds=np.asarray(r["seed_losses"], dtype=float), diverged=r["status"] == "diverged")
            for _, r in g.iterrows()]


def _summarise(label, rows: list[WidthOptimum], carried, config_keys, max_drift, tol) -> ParamSummary:
    widths = [r.width for r in rows]
    named = [r for r in rows if r.optimum.log2_lr is not None]
    logs = [r.optimum.log2_lr for r in named]
    drift = max(logs) - min(logs) if len(named) >= 2 else None
    low = high = None
    if drift is not None and all(r.optimum.samples is not None for r in named):
        reps = np.stack([r.optimum.samples for r in named])
        low, high = percentile_interval(reps.max(axis=0) - reps.min(axis=0), drift)
    slope = float(np.polyfit(np.log2([r.width for r in named]), logs, 1)[0]) if len(named) >= 2 else None
    best = [r.optimum.best_loss if r.optimum.best_loss is not None else math.inf for r in rows]
    falls = _loss_falls(widths, best)
    edges = [r.width for r in rows if r.optimum.on_edge]
    widest = rows[-1].regret
    s = ParamSummary(label, widths, drift, low, high, slope, best, falls, edges, "", "", "",
                     carried=dict(zip(config_keys, carried)) if carried else None, regret_widest=widest,
                     n_seeds=max(r.optimum.n_seeds for r in rows))
    judge(s, max_drift=max_drift, tol=tol, min_widths=MIN_WIDTHS, min_span=MIN_SPAN)
    return s


def _loss_falls(widths: list[int], best: list[float]) -> bool:
    """The best loss falls with the shape: lower at the largest than at the smallest, and its trend
    against log2(shape) points down. Not step by step: a seed-noise wobble between neighbours is no
    evidence that a bigger model is worse."""
    finite = [(w, b) for w, b in zip(widths, best) if math.isfinite(b)]
    if len(finite) < 2 or len(finite) < len(best) or not best[-1] < best[0]:
        return False
    return float(np.polyfit(np.log2([w for w, _ in finite]), [b for _, b in finite], 1)[0]) < 0


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
