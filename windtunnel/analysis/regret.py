"""Transfer regret: the loss given up by carrying the smallest proxy's winner to a wider model.

Per width, regret = loss at the configuration (lr and any other swept HP) that won at the source width
minus that width's best loss, both as means over seeds at the grid points. A drift in log2 units can
be large inside a flat basin at almost no cost; regret is the cost itself, in nats.

The interval is a bootstrap over seeds: per resample, every cell's seeds are resampled (topped up
to the typical scatter of the cells near the best, as for the optimum; `optimum.resample_means`; with
one seed per cell, Gaussian noise of the sd read off the fits' residuals instead),
the winner at the source width is re-chosen (so the noise in picking it counts) and the regret
recomputed; 95 % percentile interval. The best-of-grid minimum favours a lucky cell, so with few
seeds the regret leans slightly high. When the carried lr was not run at a width (or every trial of
it there failed to run), its loss is read off that width's fitted quadratic when the lr lies inside
the fit's window (and measured from the quadratic's minimum when that lies below the best grid
point), else interpolated linearly in log2 lr between the neighbouring lrs; such a value has no seed
interval. Outside the lrs swept at a width the regret is unknown, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .optimum import N_BOOT, percentile_interval, resample_means

__all__ = ["Cell", "Regret", "transfer_regret"]

NEAR_BEST = 2.0  # log2 units: the cells whose seed scatter sets the resampling noise (as the fit's window)


@dataclass(frozen=True)
class Cell:
    """One configuration at one width: its swept values (lr first), its finished seeds' losses."""

    config: tuple
    log2_lr: float
    seeds: np.ndarray
    diverged: bool
    n: int = 0
    """Trials run (finished, diverged, failed) of this configuration: its seeds."""
    status: str = "ok"

    @property
    def mean(self) -> float:
        return math.inf if self.diverged or not len(self.seeds) else float(self.seeds.mean())


@dataclass(frozen=True)
class Regret:
    """The regret at one width; `value` None when unknown (see `reason`) or when the carried config diverged."""

    width: int
    value: float | None
    low: float | None = None
    high: float | None = None
    diverged: bool = False
    how: str = ""
    reason: str = ""

    def text(self) -> str:
        if self.diverged:
            return "diverged"
        if self.value is None:
            return f"unknown ({self.reason})"
        band = f" [{self.low:.3f}, {self.high:.3f}]" if self.low is not None else ""
        return f"{self.value:.3f}{band}"

    def to_dict(self) -> dict:
        return {"width": self.width, "regret": self.value, "low": self.low, "high": self.high,
                "diverged": self.diverged, "how": self.how, "reason": self.reason}


def transfer_regret(cells: dict[int, Sequence[Cell]], *, from_width: int, fits: dict | None = None,
                    n_boot: int = N_BOOT, seed: int = 0,
                    noise: tuple[float, int] | None = None) -> tuple[tuple | None, list[Regret]]:
    """(carried config, regret per width) of carrying `from_width`'s best configuration to every width.

    `cells` maps each width to its configurations; `fits` optionally maps a width to
    (a, b, c, lo, hi): its quadratic in log2 lr and the window it was fitted on, for interpolation.
    `noise` = (variance, dof) of one seed's loss (`optimum.residual_scatter`, pooled): with one seed
    per point the interval comes from a parametric bootstrap with that noise; without it a one-seed
    regret has no interval (and is never taken as exact).

    Example:
        >>> cell = lambda lr, loss: Cell((2.0**lr,), lr, np.array([loss]), False)
        >>> carried, rows = transfer_regret({64: [cell(-7, 3.0), cell(-6, 3.1)], 512: [cell(-7, 2.6), cell(-6, 2.5)]},
        ...                                 from_width=64)
        >>> [r.text() for r in rows], rows[1].how
        (['0.000', '0.100'], 'one seed, no noise estimate: no interval')
    """
    source = [c for c in cells.get(from_width, []) if math.isfinite(c.mean)]
    if not source:
        why = f"the source shape {from_width} has no finished, finite trial to carry"
        return None, [Regret(w, None, reason=why) for w in sorted(cells)]
    carried = min(source, key=lambda c: c.mean)
    source_reps = _reps(cells[from_width], n_boot, seed, noise)
    winners = np.argmin(source_reps, axis=1)
    rows = []
    for k, width in enumerate(sorted(cells)):
        # the source width reuses its own resamples, so its regret is 0 in every one of them
        rows.append(_regret_at(width, cells[width], carried, [c.config for c in cells[from_width]], winners,
                               (fits or {}).get(width), n_boot, seed if width == from_width else seed + 1 + k, noise))
    return carried.config, rows


def _reps(cells: Sequence[Cell], n_boot: int, seed: int, noise=None) -> np.ndarray:
    """Resampled seed means of every cell, the seeds' scatter pooled over the cells within NEAR_BEST
    log2 units of the best one's lr (the cells a winner can come from)."""
    diverged = np.array([not math.isfinite(c.mean) for c in cells])
    finite = [c for c in cells if math.isfinite(c.mean)]
    best = min(finite, key=lambda c: c.mean).log2_lr if finite else 0.0
    pool = [j for j, c in enumerate(cells) if abs(c.log2_lr - best) <= NEAR_BEST]
    one_seed = noise is not None and all(len(c.seeds) <= 1 for c in cells)
    return resample_means([c.seeds for c in cells], diverged, n_boot, seed, pool=pool,
                          noise=noise if one_seed else None)


def _regret_at(width, cells, carried: Cell, source_configs, winners, fit, n_boot, seed, noise) -> Regret:
    finite = [c for c in cells if math.isfinite(c.mean)]
    if not finite:
        return Regret(width, None, reason=f"no finished, finite trial at {width}")
    best = min(c.mean for c in finite)
    here = next((c for c in cells if c.config == carried.config and (len(c.seeds) or c.diverged)), None)
    if here is None:
        return _interpolated(width, finite, carried, best, fit)
    if here.diverged:
        return Regret(width, None, diverged=True, how="the carried configuration diverged at this width")
    n_seeds = int(np.median([len(c.seeds) for c in finite]))
    if n_seeds < 2 and (noise is None or not noise[1]):
        return Regret(width, here.mean - best, how="one seed, no noise estimate: no interval")
    reps = _reps(cells, n_boot, seed, noise)
    index = {c.config: j for j, c in enumerate(cells)}
    cols = np.array([index.get(source_configs[w], -1) for w in winners])
    picked = np.where(cols >= 0, reps[np.arange(n_boot), np.maximum(cols, 0)], np.inf)
    low, high = percentile_interval(picked - reps.min(axis=1), here.mean - best)
    how = (f"seed means; bootstrap over {n_seeds} seeds" if n_seeds >= 2 else
           "one seed; parametric bootstrap from the fit residuals")
    return Regret(width, here.mean - best, low, high, how=how + ", the source winner re-chosen per resample")


def _interpolated(width, finite: list[Cell], carried: Cell, best: float, fit) -> Regret:
    """The carried lr was not run here (or every trial of it failed to run): read it off the curve."""
    others = carried.config[1:]
    line = sorted((c for c in finite if c.config[1:] == others), key=lambda c: c.log2_lr)
    x = carried.log2_lr
    if not line or not line[0].log2_lr <= x <= line[-1].log2_lr:
        span = f"2^{line[0].log2_lr:g}..2^{line[-1].log2_lr:g}" if line else "none"
        return Regret(width, None, reason=f"carried lr 2^{x:g} outside the lrs run at {width} ({span})")
    if fit is not None and not others and fit[3] <= x <= fit[4]:
        a, b, c = fit[:3]
        floor = min(best, c - b * b / (4 * a)) if a > 0 else best  # the curve's own minimum, if lower
        return Regret(width, a * x * x + b * x + c - floor,
                      how="interpolated on the fitted quadratic (lr not run here)")
    xs, ys = [c.log2_lr for c in line], [c.mean for c in line]
    return Regret(width, float(np.interp(x, xs, ys)) - best,
                  how="interpolated linearly in log2 lr (lr not run here)")
