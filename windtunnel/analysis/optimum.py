"""Where a loss-vs-lr curve bottoms out, and how sure we are: the optimum of one width, with an error bar.

`fit_optimum` is the bare rule for one noise-free curve (a parabola through the best point and its
neighbours). `estimate_optimum` is what the transfer check uses on real, noisy runs: every seed of
every lr point, a weighted quadratic in log2(lr) over a window of up to five points around the best
one (more points than a three-point parabola, so one noisy point in a flat basin cannot throw the
vertex a grid step away), and a 95 % interval for the vertex:

- several seeds per point: a bootstrap over seeds (each configuration's seeds resampled, topped up to
  the typical scatter near the optimum, see `resample_means`; per lr the best configuration of the
  other swept keys re-chosen, the window re-chosen and the quadratic refitted per resample);
- one seed: a parametric bootstrap from the fit residuals: one seed's noise sd read off the scatter of
  the points about their quadratics (pooled over the shapes by the transfer check, else this curve's
  own), its own uncertainty drawn per resample (scaled inverse chi-square), Gaussian noise of that sd
  added to every configuration, and the same re-choice and refit; a lone three-point window has no
  scatter to read, so no interval.

An lr point where any seed diverged is a diverged point in every resample (a configuration that blows
up on one seed in three is not a candidate); error/pruned trials never reach here (missing points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CONFIDENCE",
    "N_BOOT",
    "Optimum",
    "OptimumEstimate",
    "estimate_optimum",
    "fit_optimum",
    "percentile_interval",
    "resample_means",
    "residual_scatter",
]

CONFIDENCE, N_BOOT = 0.95, 1000


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
    best = {"best_lr": float(2.0 ** x[i]), "best_loss": float(y[i])}
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


@dataclass(frozen=True)
class OptimumEstimate:
    """One width's optimum from all its seeds, with a 95 % interval in log2(lr) (None when unknown)."""

    log2_lr: float | None
    low: float | None
    high: float | None
    method: str
    """`quadratic` (weighted fit's vertex), `grid` (best point: the fit has no minimum inside the
    window, or fewer than three finite points around it) or `none` (edge, or nothing finite)."""
    interval: str
    """How the interval was made: `bootstrap over N seeds`, `residual bootstrap (one seed)`, or why none."""
    on_edge: bool = False
    best_lr: float | None = None
    best_loss: float | None = None
    fit_loss: float | None = None
    n_points: int = 0
    n_seeds: int = 0
    note: str = ""
    fit: tuple | None = None
    """(a, b, c, lo, hi): the quadratic a x^2 + b x + c in x = log2 lr and the window [lo, hi] it was fitted on."""
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The bootstrap's vertices (N_BOOT of them, same count for every width so drifts can be resampled)."""
    loss_samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The best loss (lowest per-lr mean) of each resample, for the trend of the best loss with the shape."""

    @property
    def lr(self) -> float | None:
        return None if self.log2_lr is None else float(2.0**self.log2_lr)

    def to_dict(self) -> dict:
        keys = ("log2_lr", "low", "high", "method", "interval", "on_edge", "best_lr", "best_loss",
                "fit_loss", "n_points", "n_seeds", "note", "fit")
        return {"lr": self.lr, **{k: getattr(self, k) for k in keys}}


def estimate_optimum(log2_lrs: Sequence[float], seed_losses: Sequence[Sequence[float]], *, half_window: int = 2,
                     n_boot: int = N_BOOT, seed: int = 0, noise: tuple[float, int] | None = None) -> OptimumEstimate:
    """The optimum of one curve from every seed: weighted quadratic vertex and a 95 % bootstrap interval.

    `seed_losses[i]` holds the finished seeds' losses of the configuration at `log2_lrs[i]`; inf marks
    a diverged seed (the whole configuration is then diverged). `log2_lrs` must be sorted; an lr may
    repeat: each entry is then one value of the other swept keys (init std, ...), and each lr takes its
    best configuration, re-chosen in every resample (the winner's curse counts). `noise` = (variance,
    degrees of freedom) of one seed's loss, pooled over several curves (`residual_scatter`): with one
    seed it sets the interval (else this curve's own fit residuals do).

    Example:
        >>> x = [-9, -8, -7, -6, -5, -4]
        >>> ys = [[2.5 + 0.05 * (v + 6.5) ** 2 + e for e in (-0.01, 0.0, 0.01)] for v in x]
        >>> est = estimate_optimum(x, ys)
        >>> round(est.log2_lr, 2), est.low <= -6.5 <= est.high, est.interval
        (-6.5, True, 'bootstrap over 3 seeds')
    """
    cells = np.asarray(log2_lrs, dtype=float)
    if len(cells) != len(seed_losses) or len(cells) == 0 or np.any(np.diff(cells) < 0):
        raise ValueError("log2_lrs must be sorted and one per seed_losses entry")
    x, starts = np.unique(cells, return_index=True)
    seeds = [np.asarray(s, dtype=float) for s in seed_losses]
    diverged = np.array([len(s) == 0 or not np.isfinite(s).all() for s in seeds])
    cell_means = np.array([math.inf if d else float(s.mean()) for s, d in zip(seeds, diverged)])
    means = np.minimum.reduceat(cell_means, starts)  # per lr: its best configuration
    n_seeds = int(np.median([len(s) for s in seeds]))
    if diverged.all():
        return OptimumEstimate(None, None, None, "none", "none: every point diverged", note="every point diverged")
    i = int(np.argmin(means))
    vertex, fit, win = _vertex(x, means, i, half_window)
    reps, how = _resample(x, cells, seeds, diverged, starts, means, win, n_seeds, (n_boot, seed, half_window), noise)
    best = {"best_lr": float(2.0 ** x[i]), "best_loss": float(means[i]), "n_seeds": n_seeds,
            "loss_samples": None if reps is None else reps.min(axis=1)}
    if i in (0, len(x) - 1):
        side = "smallest" if i == 0 else "largest"
        return OptimumEstimate(None, None, None, "none", "none: no optimum", on_edge=True, **best,
                               note=f"best at the grid's {side} lr 2^{x[i]:.3g}: the optimum may lie beyond; "
                                    "extend the grid")
    fit_loss = None if fit is None else float(fit[0] * vertex**2 + fit[1] * vertex + fit[2])
    method = "quadratic" if fit_loss is not None else "grid"
    note = "" if method == "quadratic" else ("fewer than 3 finite points around the best one (a neighbour "
                                             "diverged): best grid point" if len(win) < 3 else
                                             "the fit has no minimum inside the window: best grid point")
    samples = None if reps is None else _fit_resamples(x, reps, np.isfinite(means), half_window)
    low, high = percentile_interval(samples, vertex)
    return OptimumEstimate(float(vertex), low, high, method, how, n_points=len(win), fit_loss=fit_loss,
                           note=note, samples=samples, fit=fit, **best)


def residual_scatter(log2_lrs: Sequence[float], losses: Sequence[float], *, half_window: int = 2) -> tuple[float, int]:
    """(residual sum of squares, degrees of freedom) of one seed's curve about its weighted quadratic
    around the best point (the same window as `estimate_optimum`); pooled over curves, sum / dof
    estimates one seed's loss variance. A three-point window has no degrees of freedom: (0, 0).

    Example:
        >>> x = [-9, -8, -7, -6, -5, -4]
        >>> rss, dof = residual_scatter(x, [2.5 + 0.05 * (v + 6.5) ** 2 for v in x])
        >>> round(rss, 9), dof
        (0.0, 2)
    """
    x, y = np.asarray(log2_lrs, dtype=float), np.asarray(losses, dtype=float)
    y = np.where(np.isfinite(y), y, np.inf)
    if not np.isfinite(y).any():
        return 0.0, 0
    i = int(np.argmin(y))
    win = _window(np.isfinite(y), i, half_window)
    if len(win) <= 3:
        return 0.0, 0
    wx, wy = x[win], y[win]
    fitted = np.stack([wx**2, wx, np.ones_like(wx)], axis=1) @ (_projection(wx, i - win[0]) @ wy)
    return float(((wy - fitted) ** 2).sum()), len(win) - 3


def percentile_interval(samples: np.ndarray | None, point: float) -> tuple[float | None, float | None]:
    """The 95 % percentile interval of bootstrap `samples` (outward to the nearest samples), widened to
    contain `point` if it does not.

    Example:
        >>> [round(v, 3) for v in percentile_interval(np.linspace(0, 1, 101), 0.5)]
        [0.02, 0.98]
    """
    if samples is None or len(samples) == 0:
        return None, None
    tail = 100 * (1 - CONFIDENCE) / 2
    # no interpolation: a resample whose carried config diverged is inf, and inf - inf is NaN
    lo = np.percentile(samples, tail, method="lower")
    hi = np.percentile(samples, 100 - tail, method="higher")
    return float(min(lo, point)), float(max(hi, point))


# --- internals --------------------------------------------------------------------------------


def _window(finite: np.ndarray, i: int, half_window: int) -> np.ndarray:
    """Indices of the finite points within `half_window` of `i`, contiguous (a diverged point ends it)."""
    lo = hi = i
    while lo - 1 >= max(0, i - half_window) and finite[lo - 1]:
        lo -= 1
    while hi + 1 <= min(len(finite) - 1, i + half_window) and finite[hi + 1]:
        hi += 1
    return np.arange(lo, hi + 1)


def _projection(x: np.ndarray, i: int) -> np.ndarray:
    """(3, n) matrix mapping losses to (a, b, c) of the weighted quadratic around x[i]: points further
    from the best one weigh less (Gaussian in log2 lr, sd = the window's half-width), so a real
    curve's asymmetry (steeper at high lr) pulls the vertex less."""
    width = max(float(np.max(np.abs(x - x[i]))), 1e-9)
    w = np.exp(-0.5 * ((x - x[i]) / width) ** 2)
    design = np.stack([x**2, x, np.ones_like(x)], axis=1)
    return np.linalg.pinv(design * np.sqrt(w)[:, None]) * np.sqrt(w)[None, :]


def _vertices(x: np.ndarray, coef: np.ndarray, fallback: float) -> np.ndarray:
    """Vertex per column of `coef` (a, b, c), inside [x0, x-1]; `fallback` where the fit has no minimum."""
    a, b = coef[0], coef[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(a > 0, -b / (2 * a), np.nan)
    inside = np.isfinite(v) & (v >= x[0]) & (v <= x[-1])
    return np.where(inside, v, fallback)


def _vertex(x: np.ndarray, means: np.ndarray, i: int, half_window: int) -> tuple[float, tuple | None, np.ndarray]:
    """(vertex, (a, b, c, lo, hi) or None when the best grid point stands in, window indices)."""
    win = _window(np.isfinite(means), i, half_window)
    if len(win) < 3:
        return float(x[i]), None, win
    coef = _projection(x[win], i - win[0]) @ means[win]
    v = float(_vertices(x[win], coef[:, None], math.nan)[0])
    if math.isnan(v):
        return float(x[i]), None, win
    return v, (*(float(c) for c in coef), float(x[win[0]]), float(x[win[-1]])), win


def _resample(x, cells, seeds, diverged, starts, means, win, n_seeds, boot, noise):
    """(n_boot, n_lrs) resampled per-lr best means and how they were made, or (None, why not)."""
    n_boot, seed, half_window = boot
    pool = np.flatnonzero(np.isin(cells, x[win])) if len(win) else None
    if n_seeds >= 2:
        reps = resample_means(seeds, diverged, n_boot, seed, pool=pool)
        how = f"bootstrap over {n_seeds} seeds"
    else:
        if noise is None or noise[1] == 0:
            noise = residual_scatter(x, means, half_window=half_window)
            noise = (noise[0] / noise[1], noise[1]) if noise[1] else (0.0, 0)
        if noise[1] == 0:
            return None, f"none: one seed and a {len(win)}-point fit leave no scatter to resample"
        reps = resample_means(seeds, diverged, n_boot, seed, noise=noise)
        how = "parametric bootstrap from the fit residuals (one seed)"
    return np.minimum.reduceat(reps, starts, axis=1), how


def _fit_resamples(x, reps, finite, half_window) -> np.ndarray:
    """Vertex of each resample (a row of `reps`): the window re-centred on its best lr and the fit redone."""
    centers = np.argmin(reps, axis=1)
    out = x[centers].astype(float)  # an edge or a lone point: the best grid point
    for c in np.unique(centers):
        win = _window(finite, int(c), half_window)
        if c in (0, len(x) - 1) or len(win) < 3:
            continue
        rows = centers == c
        coef = _projection(x[win], int(c) - win[0]) @ reps[rows][:, win].T
        out[rows] = _vertices(x[win], coef, float(x[c]))
    return out


def resample_means(seeds: Sequence[np.ndarray], diverged: np.ndarray, n_boot: int, seed: int,
                   pool: Sequence[int] | None = None, noise: tuple[float, int] | None = None) -> np.ndarray:
    """(n_boot, n_points) bootstrap means over seeds; inf at diverged points.

    Each point's seeds are resampled with replacement (the spread widened by sqrt(n/(n-1)), unbiased),
    and when they scatter less than the typical point in `pool` (default all; callers pass the points
    near the optimum; typical = the median of their variances), Student-t noise (pooled degrees of
    freedom) makes up the difference: seed noise is alike at neighbouring lrs, so 2-3 seeds that happen
    to agree do not make a point look exact, while an lr near divergence keeps its own seeds (its
    spikes only go up; a symmetric draw would let its mean fall below every seed it has). Calibration
    on exact quadratics with Gaussian noise (300 draws): the vertex's 95 % interval covered the truth
    in 95 % (3 seeds) and 96 % (2 seeds); resampling the seeds alone, 89 % at 3 seeds.

    `noise` = (variance, degrees of freedom) of one seed's loss, estimated elsewhere (one seed per
    point: the fits' residuals): each resample draws its own noise sd from that estimate's scaled
    inverse chi-square (an sd read off a few residuals is itself uncertain: the interval widens with
    it) and adds Gaussian noise of that sd / sqrt(seeds) to every point's mean.

    Example:
        >>> resample_means([np.array([1.0, 2.0, 3.0])], np.array([False]), 4, 0).shape
        (4, 1)
    """
    rng = np.random.default_rng(seed)
    reps = np.full((n_boot, len(seeds)), np.inf)
    if noise is not None and noise[1] > 0:
        return _parametric_means(seeds, diverged, noise, reps, rng)
    chosen = range(len(seeds)) if pool is None else pool
    live = [np.asarray(seeds[j], dtype=float) for j in chosen if not diverged[j] and len(seeds[j]) > 1]
    dof = sum(len(s) - 1 for s in live)
    if not dof:  # no scatter to resample: every resample is the means themselves
        means = np.array([np.mean(s) if len(s) else np.inf for s in seeds])
        return np.broadcast_to(np.where(diverged, np.inf, means), reps.shape).copy()
    # typical scatter: the median of the points' variances, unbiased for chi-square's median (a
    # volatile lr near divergence cannot inflate every point's noise); a point scattering more keeps its own
    typical = float(np.median([s.var(ddof=1) / (1 - 2 / (9 * (len(s) - 1))) ** 3 for s in live]))
    draws = rng.standard_t(dof, size=(n_boot, len(seeds)))
    for j, s in enumerate(seeds):
        if not diverged[j] and len(s):
            s = np.asarray(s, dtype=float)
            n, own = len(s), (float(np.var(s, ddof=1)) if len(s) > 1 else 0.0)
            mean = float(s.mean())
            # the point's own seeds, resampled (bounded by what was seen: an unstable lr's spikes
            # only go up), widened by sqrt(n/(n-1)) to an unbiased spread ...
            drawn = s[rng.integers(0, n, size=(n_boot, n))].mean(axis=1) if n > 1 else np.full(n_boot, mean)
            drawn = mean + (drawn - mean) * (math.sqrt(n / (n - 1)) if n > 1 else 1.0)
            # ... plus the scatter a typical point near the optimum has and this one's seeds lack
            reps[:, j] = drawn + math.sqrt(max(typical - own, 0.0) / n) * draws[:, j]
    return reps



def _parametric_means(seeds, diverged, noise, reps, rng) -> np.ndarray:
    var, dof = noise
    sd = np.sqrt(var * dof / rng.chisquare(dof, size=(reps.shape[0], 1)))
    z = rng.standard_normal(reps.shape)
    for j, s in enumerate(seeds):
        if not diverged[j] and len(s):
            reps[:, j] = float(np.mean(s)) + sd[:, 0] * z[:, j] / math.sqrt(len(s))
    return reps


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


