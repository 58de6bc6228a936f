"""Horizon check: how the optimal learning rate moves with the token budget (lr* ~ D^slope).

A horizon sweep trains one proxy at >= 3 budgets (`train.steps` swept, or any swept key under which
the trials' token counts differ) with an lr grid at each. Per budget the optimum comes from every
seed as in the transfer check (`optimum.estimate_optimum`: a weighted quadratic in log2(lr) over up to
five points around the best one, each lr taking its best value of any other swept key, and the
bootstrap over seeds, or with one seed the parametric bootstrap from the fits' residuals pooled over
the budgets). A least-squares line through (log2 tokens, log2 lr*) gives the slope; its 95 % interval
is the slope refitted to every bootstrap resample of the optima. Three-point parabolas were biased on
asymmetric basins (coverage 0.46-0.67, bench/verdict_calibration.py); the five-point fit's bias is
alike at every budget and cancels in the slope. When the optima scatter about the line more than
their own intervals explain (chi-square of the residuals over n - 2, p < 0.05) the interval is widened
by the square root of that ratio (the Particle Data Group's scale factor), so a bent line is not
read as a precise one. The line extrapolates the optimum to a token count of the horizon sweep's own
model, with the number of doublings beyond the largest budget and a warning past `FAR` of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WindtunnelError
from ..fileio import write_json
from ..run_folder import HORIZON_CHECK_FILE, trial_config_paths
from .optimum import N_BOOT, OptimumEstimate, estimate_optimum, percentile_interval, residual_scatter
from .runs import LR_KEY, RunResults, aggregate, load_run

__all__ = [
    "HORIZON_FILE",
    "INTERVAL_METHOD",
    "MIN_BUDGETS",
    "MIN_LRS",
    "BudgetOptimum",
    "HorizonFit",
    "HorizonReport",
    "horizon_check",
    "horizon_fit",
    "horizon_params",
    "load_horizon_fit",
]

MIN_BUDGETS, MIN_LRS = 3, 3
HORIZON_FILE = HORIZON_CHECK_FILE
STEPS_KEY = "train.steps"
FAR = 3.0  # doublings of tokens beyond the largest budget past which an extrapolation is flagged
INTERVAL_METHOD = ("95% interval: the slope refitted to each bootstrap resample of the optima, widened by the "
                   "scale factor when the optima scatter about the line more than their intervals explain")


@dataclass
class BudgetOptimum:
    """One budget's lr curve and its optimum (with its interval)."""

    budget: float
    tokens: float
    optimum: OptimumEstimate
    n_lrs: int
    n_ok: int


@dataclass(frozen=True)
class HorizonFit:
    """log2 lr* = intercept + slope * log2 tokens, fitted on `n` budgets, with bootstrap resamples."""

    slope: float
    intercept: float
    slope_interval: tuple[float, float]
    n: int
    scale: float
    """The interval's widening factor (1 when the optima lie on the line within their intervals)."""
    log2_tokens_range: tuple[float, float]
    interval: str
    """How the optima's intervals were made (bootstrap over seeds, or one seed's parametric bootstrap)."""
    slopes: np.ndarray = field(repr=False, compare=False)
    intercepts: np.ndarray = field(repr=False, compare=False)

    def predict(self, tokens: float) -> tuple[float, float, float]:
        """(lr*, low, high) at `tokens` (of the horizon sweep's model): the line and its 95 % interval there.

        Example:
            >>> fit.predict(1e9)       # doctest: +SKIP
            (0.0021, 0.0012, 0.0037)
        """
        x = math.log2(tokens)
        y = self.intercept + self.slope * x
        lo, hi = percentile_interval(self.intercepts + self.slopes * x, y)
        return 2.0**y, 2.0 ** (y - self.scale * (y - lo)), 2.0 ** (y + self.scale * (hi - y))

    def doublings_beyond(self, tokens: float) -> float:
        """Doublings of tokens from the fitted budgets to `tokens` (0 inside their range)."""
        lo, hi = self.log2_tokens_range
        x = math.log2(tokens)
        return max(x - hi, lo - x, 0.0)

    def shift(self, ratio: float) -> tuple[float, float, float]:
        """Factor (central, low, high) by which lr* moves when the budget grows `ratio`-fold: 2^(slope log2 ratio)."""
        dx = math.log2(ratio)
        lo, hi = self.slope_interval
        ends = sorted((2.0 ** (lo * dx), 2.0 ** (hi * dx)))
        return 2.0 ** (self.slope * dx), ends[0], ends[1]

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "slope_interval": list(self.slope_interval),
                "n": self.n, "scale": self.scale, "log2_tokens_range": list(self.log2_tokens_range),
                "interval": self.interval}


@dataclass
class HorizonReport:
    """The horizon check of one run folder; `fit` is None when fewer than 3 budgets name an optimum."""

    run_dir: Path
    budget_key: str
    rows: list[BudgetOptimum]
    fit: HorizonFit | None
    tokens: float | None = None
    """Tokens of the horizon sweep's own model to extrapolate to (converted from the target's tokens
    per parameter when given that way)."""
    notes: list[str] = field(default_factory=list)
    tokens_per_param: float | None = None

    @property
    def verdict(self) -> str:
        return "fitted" if self.fit is not None else "inconclusive"

    def to_dict(self) -> dict:
        out = {"run": str(self.run_dir), "budget_key": self.budget_key, "verdict": self.verdict,
               "interval": INTERVAL_METHOD, "notes": self.notes,
               "fit": self.fit.to_dict() if self.fit else None,
               "optima": [{"budget": r.budget, "tokens": r.tokens, "n_lrs": r.n_lrs, "n_ok": r.n_ok,
                           **r.optimum.to_dict()} for r in self.rows]}
        if self.fit is not None and self.tokens is not None:
            lr, lo, hi = self.fit.predict(self.tokens)
            out["extrapolation"] = {"tokens": self.tokens, "tokens_per_param": self.tokens_per_param, "lr": lr,
                                    "low": lo, "high": hi, "doublings_beyond": self.fit.doublings_beyond(self.tokens)}
        return out

    def table(self) -> str:
        """Per budget the optimum, then the fit and the extrapolation, as the CLI prints them."""
        lines = [(f"{self.budget_key:>12} {'tokens':>10} {'optimum lr':>11} {'log2':>7} {'95% interval':>16} "
                  f"{'best loss':>10} {'ok/lrs':>7} {'seeds':>5}  note")]
        for r in self.rows:
            o = r.optimum
            lr = f"{o.lr:.3g}" if o.lr is not None else "-"
            log2 = f"{o.log2_lr:.2f}" if o.log2_lr is not None else "-"
            band = f"[{o.low:.2f}, {o.high:.2f}]" if o.low is not None else "-"
            loss = f"{o.best_loss:.4f}" if o.best_loss is not None else "-"
            lines.append(f"{r.budget:>12g} {r.tokens:>10.3g} {lr:>11} {log2:>7} {band:>16} {loss:>10} "
                         f"{f'{r.n_ok}/{r.n_lrs}':>7} {o.n_seeds:>5}  {o.note or o.method}")
        f = self.fit
        if f is None:
            lines.append("no fit: fewer than 3 budgets name an optimum (extend the lr grid where the best "
                         "lr sits on its edge) -> inconclusive")
        else:
            lo, hi = f.slope_interval
            lines.append(f"fit: log2 lr* = {f.intercept:.2f} {f.slope:+.3f} x log2 tokens on {f.n} budgets; "
                         f"slope {f.slope:+.3f} [{lo:+.3f}, {hi:+.3f}] (optima: {f.interval}; {INTERVAL_METHOD}"
                         + (f"; widened x{f.scale:.2f}" if f.scale > 1 else "") + ")")
            lines.append(f"per doubling of tokens the optimal lr moves x{2 ** f.slope:.3f} "
                         f"[x{2 ** lo:.3f}, x{2 ** hi:.3f}]")
            if self.tokens is not None:
                lr, lo_lr, hi_lr = f.predict(self.tokens)
                per = f" ({self.tokens_per_param:.3g} tokens per parameter)" if self.tokens_per_param else ""
                lines.append(f"extrapolated to {self.tokens:.3g} tokens of this sweep's model{per}, "
                             f"{f.doublings_beyond(self.tokens):.1f} doublings beyond the largest budget: "
                             f"lr* {lr:.3g} [{lo_lr:.3g}, {hi_lr:.3g}]")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def horizon_check(run_dir: str | Path, *, tokens: float | None = None, tokens_per_param: float | None = None,
                  neighbors: int = 2, n_boot: int = N_BOOT, write: bool = True) -> HorizonReport:
    """Fit each budget's optimal lr and the line log2 lr* vs log2 tokens, with its interval.

    `tokens`: extrapolate to this many tokens of the horizon sweep's own model. `tokens_per_param`:
    extrapolate to this many tokens per non-embedding parameter (a target's: its tokens / its
    parameters), converted through the sweep model's size. Bad input (no lr sweep, no budget swept,
    fewer than 3 budgets, fewer than 3 lr points at some budget) raises `WindtunnelError` naming the
    folder and what is missing; nothing is written. Writes `run_dir/horizon_check.json` (atomically)
    unless `write=False`.

    Example:
        >>> report = horizon_check("runs/horizon", tokens_per_param=1300)     # doctest: +SKIP
        >>> round(report.fit.slope, 2), report.fit.slope_interval           # doctest: +SKIP
        (-0.11, (-0.21, -0.01))
    """
    for name, value in (("tokens", tokens), ("tokens_per_param", tokens_per_param)):
        if value is not None and not value > 0:
            raise WindtunnelError(f"{name} must be > 0, got {value}")
    if tokens is not None and tokens_per_param is not None:
        raise WindtunnelError("give tokens (of the sweep's model) or tokens_per_param (the target's), not both")
    if neighbors < 1:
        raise WindtunnelError(f"neighbors must be >= 1 (a quadratic needs 3 points), got {neighbors}")
    res = load_run(run_dir)
    if res.goal != "min":
        raise WindtunnelError(f"{res.run_dir}: the horizon check fits a loss; metric {res.metric!r} has goal max")
    if LR_KEY not in res.params:
        raise WindtunnelError(f"{res.run_dir}: the horizon check needs a sweep over {LR_KEY}; "
                              f"this one sweeps {', '.join(res.params) or 'nothing'}")
    key = _budget_key(res)
    notes = []
    others = [k for k in res.params if k not in (LR_KEY, key)]
    if others:
        notes.append(f"also swept {', '.join(others)}: each lr takes the best value of those, re-chosen per resample")
    cells = _budget_cells(res, key, others)
    noise = _one_seed_noise(cells, neighbors)
    rows = [_budget_row(res, key, budget, c, neighbors, n_boot, k, noise) for k, (budget, c) in enumerate(cells)]
    fit = _fit_line(rows)
    if tokens_per_param is not None:
        tokens = tokens_per_param * horizon_params(res)
    if fit is not None and tokens is not None and fit.doublings_beyond(tokens) > FAR:
        notes.append(f"extrapolated {fit.doublings_beyond(tokens):.1f} doublings of tokens beyond the largest "
                     f"budget (more than {FAR:g}): the interval assumes the line holds that far; sweep longer "
                     "budgets to check it")
    if fit is not None and fit.n == 3:
        notes.append("3 budgets leave 1 degree of freedom to test the line: more budgets check it")
    report = HorizonReport(res.run_dir, key, rows, fit, tokens, notes, tokens_per_param)
    if write:
        write_json(res.run_dir / HORIZON_FILE, report.to_dict())
    return report


def horizon_fit(tokens: Sequence[float], log2_lrs: Sequence[Sequence[float]],
                seed_losses: Sequence[Sequence[Sequence[float]]], *, neighbors: int = 2,
                n_boot: int = N_BOOT) -> tuple[list[OptimumEstimate], HorizonFit | None]:
    """The optimum per budget and the fitted line, from arrays (no run folder): budget k trained
    `tokens[k]` tokens; `log2_lrs[k]` and `seed_losses[k]` are as for `optimum.estimate_optimum`.

    Example:
        >>> x = [-9.0, -8, -7, -6, -5, -4]
        >>> curves = [[[2.5 + 0.05 * (v - (-6 - 0.1 * k)) ** 2] for v in x] for k in range(4)]
        >>> optima, fit = horizon_fit([1e6, 2e6, 4e6, 8e6], [x] * 4, curves)
        >>> round(fit.slope, 3)
        -0.1
    """
    cells = [(float(t), (list(x), [list(s) for s in seeds], None))
             for t, x, seeds in zip(tokens, log2_lrs, seed_losses)]
    noise = _one_seed_noise(cells, neighbors)
    optima = [estimate_optimum(x, seeds, half_window=neighbors, n_boot=n_boot, seed=k, noise=noise)
              for k, (_, (x, seeds, _)) in enumerate(cells)]
    rows = [BudgetOptimum(t, t, o, n_lrs=len(set(x)), n_ok=0) for (t, (x, _, _)), o in zip(cells, optima)]
    return optima, _fit_line(rows)


def load_horizon_fit(run_dir: str | Path) -> HorizonReport:
    """The horizon check of `run_dir`, refusing (WindtunnelError) a folder without a fitted slope."""
    report = horizon_check(run_dir, write=False)
    if report.fit is None:
        raise WindtunnelError(f"{report.run_dir}: no horizon fit: fewer than {MIN_BUDGETS} budgets name an "
                              "optimum (see `windtunnel check horizon`)")
    return report


# --- internals --------------------------------------------------------------------------------


def _budget_key(res: RunResults) -> str:
    """`train.steps` when swept, else the one swept key (other than lr) whose trials differ in tokens."""
    candidates = [STEPS_KEY] if STEPS_KEY in res.params else [
        k for k in res.params if k != LR_KEY and "tokens" in res.frame.columns
        and res.frame.groupby(k)["tokens"].max().nunique() > 1]
    if not candidates:
        raise WindtunnelError(f"{res.run_dir}: the horizon check needs a swept token budget ({STEPS_KEY}); "
                              f"this run sweeps {', '.join(res.params)}")
    key = candidates[0]
    n = res.frame[key].nunique()
    if n < MIN_BUDGETS:
        raise WindtunnelError(f"{res.run_dir}: the horizon check needs >= {MIN_BUDGETS} budgets of {key}; "
                              f"this run has {n}")
    if "tokens" not in res.frame.columns:
        raise WindtunnelError(f"{res.run_dir}: the results table has no `tokens` column to place each budget")
    return key


def _budget_cells(res: RunResults, key: str, others: list[str]) -> list[tuple[float, tuple]]:
    """Per budget: (budget, (log2 lrs, seed losses)) of every configuration with a finished or diverged trial."""
    table = aggregate(res, [key, LR_KEY, *others], seed_losses=True)
    table = table[(table["n_ok"] > 0) | (table["status"] == "diverged")]
    out = []
    for budget, g in table.groupby(key, sort=True):
        g = g.sort_values(LR_KEY)
        x = [math.log2(float(v)) for v in g[LR_KEY]]
        seeds = [[*r["seed_losses"], *([math.inf] if r["status"] == "diverged" else [])] for _, r in g.iterrows()]
        out.append((float(budget), (x, seeds, g)))
    return out


def _one_seed_noise(cells, neighbors: int) -> tuple[float, int] | None:
    """One seed's loss variance pooled over the budgets' fit residuals; None with several seeds per point."""
    if any(len(s) > 1 for _, (_, seeds, _) in cells for s in seeds):
        return None
    rss = dof = 0
    for _, (x, seeds, _) in cells:
        best: dict[float, float] = {}
        for xi, s in zip(x, seeds):
            best[xi] = min(best.get(xi, math.inf), s[0] if s and math.isfinite(s[0]) else math.inf)
        r, d = residual_scatter(list(best), list(best.values()), half_window=neighbors)
        rss, dof = rss + r, dof + d
    return (rss / dof, dof) if dof else None


def _budget_row(res: RunResults, key: str, budget: float, cell, neighbors, n_boot, k, noise) -> BudgetOptimum:
    x, seeds, g = cell
    n_lrs = len(set(x))
    if n_lrs < MIN_LRS:
        raise WindtunnelError(f"{res.run_dir}: {key}={budget:g} has {n_lrs} lr point(s); the horizon check "
                              f"needs >= {MIN_LRS} at every budget")
    at = res.frame[res.frame[key] == budget]
    ok = at[at["status"] == "ok"]
    tokens = float(ok["tokens"].max()) if len(ok) else float(at["tokens"].max())
    opt = estimate_optimum(x, seeds, half_window=neighbors, n_boot=n_boot, seed=k, noise=noise)
    n_ok = len({lr for lr, st in zip(g[LR_KEY], g["status"]) if st == "ok"})
    return BudgetOptimum(budget, tokens, opt, n_lrs=n_lrs, n_ok=n_ok)


def _fit_line(rows: list[BudgetOptimum]) -> HorizonFit | None:
    named = [r for r in rows if r.optimum.log2_lr is not None]
    xs = np.array([math.log2(r.tokens) for r in named])
    if len(named) < MIN_BUDGETS or len(set(xs)) < 2:
        return None
    ys = np.array([r.optimum.log2_lr for r in named])
    n_boot = max((len(r.optimum.samples) for r in named if r.optimum.samples is not None), default=N_BOOT)
    # an optimum without an interval (one seed, three-point fits) stands still in every resample
    reps = np.stack([r.optimum.samples if r.optimum.samples is not None else np.full(n_boot, r.optimum.log2_lr)
                     for r in named])  # (budgets, n_boot)
    sxx = float(((xs - xs.mean()) ** 2).sum())
    dx = (xs - xs.mean()) / sxx
    slope, slopes = float(dx @ ys), dx @ (reps - reps.mean(axis=0))
    centers = reps.mean(axis=0)
    intercept = float(ys.mean() - slope * xs.mean())
    n = len(named)
    method = ", ".join(sorted({r.optimum.interval for r in named}))
    if any(r.optimum.samples is None for r in named):
        # an optimum without an interval stands still in every resample and would make the line look exact
        # (zero width with one seed and three-point fits): add the line's own Student-t uncertainty from
        # the optima's scatter about it (n - 2 degrees of freedom) to every resample, slope and centre alike
        resid = ys - intercept - slope * xs
        s_line = math.sqrt(float((resid ** 2).sum()) / (n - 2))
        draws = np.random.default_rng(0).standard_t(n - 2, size=(2, slopes.size))
        slopes = slope + (slopes - slopes.mean()) + s_line / math.sqrt(sxx) * draws[0]
        centers = ys.mean() + (centers - centers.mean()) + s_line / math.sqrt(n) * draws[1]
        scale = 1.0  # the scatter about the line is already in the draws
        method += "; plus the line's Student-t scatter (some optima have no interval of their own)"
    else:
        # scatter about the line beyond what the optima's own intervals explain: widen (PDG scale factor)
        sd = np.maximum(reps.std(axis=1), 1e-9)
        chi2 = float((((ys - intercept - slope * xs) / sd) ** 2).sum())
        from scipy.stats import chi2 as chi2_dist
        scale = math.sqrt(chi2 / (n - 2)) if n > 2 and chi2_dist.sf(chi2, n - 2) < 0.05 else 1.0
    intercepts = centers - slopes * xs.mean()
    lo, hi = percentile_interval(slopes, slope)
    interval = (slope - scale * (slope - lo), slope + scale * (hi - slope))
    return HorizonFit(slope, intercept, interval, n, scale, (float(xs.min()), float(xs.max())),
                      method, slopes, intercepts)


def horizon_params(res: RunResults) -> float:
    """Non-embedding parameters of the horizon sweep's model (its first trial's config, else its base)."""
    from ..config import load_config
    from ..model.accounting import count_params
    configs = trial_config_paths(res.run_dir)[:1]
    try:
        cfg = load_config(configs[0]) if configs else load_config(res.spec["base"], overrides=res.spec.get("set") or {})
    except (KeyError, OSError) as e:
        raise WindtunnelError(f"{res.run_dir}: cannot tell the horizon sweep's model size (no trial config.yaml "
                              f"and no readable base in spec.yaml: {e})") from None
    return float(count_params(cfg.model).non_embedding)
