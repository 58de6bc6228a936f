"""Horizon check: how the optimal learning rate moves with the token budget (lr* ~ D^slope).

A horizon sweep trains one proxy at >= 3 budgets (`train.steps` swept, or any swept key under which
the trials' token counts differ) with an lr grid at each. Per budget the optimum is the vertex of a
parabola in log2(lr) (`transfer_check.fit_optimum`, seeds averaged first); a least-squares line
through (log2 tokens, log2 lr*) gives the slope, and its 95 % interval comes from the fit's own
standard error (Student t with n - 2 degrees of freedom: the scatter of the optima about the line).
The line extrapolates the optimum to a token count, with the prediction's interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WindtunnelError
from ..fileio import write_json
from .runs import LR_KEY, RunResults, best_over, load_run
from .transfer_check import Optimum, fit_optimum

__all__ = [
    "HORIZON_FILE",
    "INTERVAL_METHOD",
    "MIN_BUDGETS",
    "MIN_LRS",
    "BudgetOptimum",
    "HorizonFit",
    "HorizonReport",
    "horizon_check",
    "load_horizon_fit",
]

MIN_BUDGETS, MIN_LRS = 3, 3
HORIZON_FILE = "horizon_check.json"
STEPS_KEY = "train.steps"
INTERVAL_METHOD = "95% interval from the least-squares fit's standard error (Student t, n-2 dof)"


@dataclass
class BudgetOptimum:
    """One budget's lr curve and its fitted optimum."""

    budget: float
    tokens: float
    optimum: Optimum
    n_lrs: int
    n_ok: int


@dataclass(frozen=True)
class HorizonFit:
    """log2 lr* = intercept + slope * log2 tokens, fitted on `n` budgets."""

    slope: float
    intercept: float
    slope_se: float
    slope_interval: tuple[float, float]
    n: int
    residual_std: float
    log2_tokens_mean: float
    log2_tokens_sxx: float

    def t95(self) -> float:
        from scipy.stats import t
        return float(t.ppf(0.975, self.n - 2))

    def predict(self, tokens: float) -> tuple[float, float, float]:
        """(lr*, low, high) at `tokens`: the line and the 95 % interval of the fitted mean there.

        Example:
            >>> fit.predict(1e9)       # lr* at one billion tokens, with its interval
            (0.0021, 0.0012, 0.0037)
        """
        x = math.log2(tokens)
        y = self.intercept + self.slope * x
        se = self.residual_std * math.sqrt(1 / self.n + (x - self.log2_tokens_mean) ** 2 / self.log2_tokens_sxx)
        h = self.t95() * se
        return 2.0 ** y, 2.0 ** (y - h), 2.0 ** (y + h)

    def shift(self, ratio: float) -> tuple[float, float, float]:
        """Factor (central, low, high) by which lr* moves when the budget grows `ratio`-fold: 2^(slope log2 ratio)."""
        dx = math.log2(ratio)
        lo, hi = self.slope_interval
        ends = sorted((2.0 ** (lo * dx), 2.0 ** (hi * dx)))
        return 2.0 ** (self.slope * dx), ends[0], ends[1]


@dataclass
class HorizonReport:
    """The horizon check of one run folder; `fit` is None when fewer than 3 budgets name an optimum."""

    run_dir: Path
    budget_key: str
    rows: list[BudgetOptimum]
    fit: HorizonFit | None
    tokens: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "fitted" if self.fit is not None else "inconclusive"

    def to_dict(self) -> dict:
        out = {"run": str(self.run_dir), "budget_key": self.budget_key, "verdict": self.verdict,
               "interval": INTERVAL_METHOD, "notes": self.notes,
               "fit": asdict(self.fit) if self.fit else None,
               "optima": [{"budget": r.budget, "tokens": r.tokens, "n_lrs": r.n_lrs, "n_ok": r.n_ok,
                           **asdict(r.optimum)} for r in self.rows]}
        if self.fit is not None and self.tokens is not None:
            lr, lo, hi = self.fit.predict(self.tokens)
            out["extrapolation"] = {"tokens": self.tokens, "lr": lr, "low": lo, "high": hi}
        return out

    def table(self) -> str:
        """Per budget the optimum, then the fit and the extrapolation, as the CLI prints them."""
        lines = [(f"{self.budget_key:>12} {'tokens':>10} {'optimum lr':>11} {'log2':>7} {'best loss':>10} "
                 f"{'ok/lrs':>7}  note")]
        for r in self.rows:
            o = r.optimum
            lr = f"{o.lr:.3g}" if o.lr is not None else "-"
            log2 = f"{o.log2_lr:.2f}" if o.log2_lr is not None else "-"
            loss = f"{o.best_loss:.4f}" if o.best_loss is not None else "-"
            lines.append(f"{r.budget:>12g} {r.tokens:>10.3g} {lr:>11} {log2:>7} {loss:>10} "
                         f"{f'{r.n_ok}/{r.n_lrs}':>7}  {o.note or o.method}")
        f = self.fit
        if f is None:
            lines.append("no fit: fewer than 3 budgets name an optimum (extend the lr grid where the best "
                         "lr sits on its edge) -> inconclusive")
        else:
            lo, hi = f.slope_interval
            lines.append(f"fit: log2 lr* = {f.intercept:.2f} {f.slope:+.3f} x log2 tokens on {f.n} budgets; "
                         f"slope {f.slope:+.3f} [{lo:+.3f}, {hi:+.3f}] ({INTERVAL_METHOD})")
            lines.append(f"per doubling of tokens the optimal lr moves x{2 ** f.slope:.3f} "
                         f"[x{2 ** lo:.3f}, x{2 ** hi:.3f}]")
            if self.tokens is not None:
                lr, lo_lr, hi_lr = f.predict(self.tokens)
                lines.append(f"extrapolated to {self.tokens:.3g} tokens: lr* {lr:.3g} [{lo_lr:.3g}, {hi_lr:.3g}]")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def horizon_check(run_dir: str | Path, *, tokens: float | None = None, neighbors: int = 1,
                  write: bool = True) -> HorizonReport:
    """Fit each budget's optimal lr and the line log2 lr* vs log2 tokens, with its interval.

    Bad input (no lr sweep, no budget swept, fewer than 3 budgets, fewer than 3 lr points at some
    budget) raises `WindtunnelError` naming the folder and what is missing; nothing is written.
    Writes `run_dir/horizon_check.json` (atomically) unless `write=False`.

    Example:
        >>> report = horizon_check("runs/horizon", tokens=1e9)
        >>> round(report.fit.slope, 2), report.fit.slope_interval
        (-0.31, (-0.52, -0.1))
    """
    if tokens is not None and not tokens > 0:
        raise WindtunnelError(f"--tokens must be > 0, got {tokens}")
    if neighbors < 1:
        raise WindtunnelError(f"neighbors must be >= 1 (a parabola needs 3 points), got {neighbors}")
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
        notes.append(f"also swept {', '.join(others)}: each lr takes the best value of those")
    rows = [_budget_row(res, budget, group, key, neighbors) for budget, group in
            best_over(res, [key, LR_KEY]).groupby(key, sort=True)]
    named = [r for r in rows if r.optimum.log2_lr is not None]
    fit = _fit_line([math.log2(r.tokens) for r in named], [r.optimum.log2_lr for r in named])
    if fit is not None and fit.n == 3:
        notes.append("3 budgets leave 1 degree of freedom: the interval is wide; more budgets narrow it")
    if len(set(res.frame.get("seed", [0]))) < 2:
        notes.append("one seed: the interval reflects the optima's scatter about the line only")
    report = HorizonReport(res.run_dir, key, rows, fit, tokens, notes)
    if write:
        write_json(res.run_dir / HORIZON_FILE, report.to_dict())
    return report


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


def _budget_row(res: RunResults, budget, group, key: str, neighbors: int) -> BudgetOptimum:
    group = group.sort_values(LR_KEY)
    if len(group) < MIN_LRS:
        raise WindtunnelError(f"{res.run_dir}: {key}={budget:g} has {len(group)} lr point(s); the horizon check "
                              f"needs >= {MIN_LRS} at every budget")
    ok = res.frame[(res.frame[key] == budget) & (res.frame["status"] == "ok")]
    tokens = float(ok["tokens"].max()) if len(ok) else float(res.frame[res.frame[key] == budget]["tokens"].max())
    losses = [v if s == "ok" else math.inf for v, s in zip(group["loss"], group["status"])]
    opt = fit_optimum(group[LR_KEY].astype(float).tolist(), losses, neighbors=neighbors)
    return BudgetOptimum(float(budget), tokens, opt, n_lrs=len(group), n_ok=int((group["status"] == "ok").sum()))


def _fit_line(x: list[float], y: list[float]) -> HorizonFit | None:
    n = len(x)
    if n < MIN_BUDGETS or len(set(x)) < 2:
        return None
    xs, ys = np.asarray(x), np.asarray(y)
    slope, intercept = np.polyfit(xs, ys, 1)
    resid = ys - (intercept + slope * xs)
    s = math.sqrt(float(resid @ resid) / (n - 2))
    sxx = float(((xs - xs.mean()) ** 2).sum())
    se = s / math.sqrt(sxx)
    fit = HorizonFit(float(slope), float(intercept), se, (0.0, 0.0), n, s, float(xs.mean()), sxx)
    h = fit.t95() * se
    return HorizonFit(float(slope), float(intercept), se, (float(slope - h), float(slope + h)), n, s,
                      float(xs.mean()), sxx)
