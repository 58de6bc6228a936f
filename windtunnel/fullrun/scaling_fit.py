"""The loss law L(N, D) = E + A·(N/N0)^-α + B·(D/D0)^-β, fitted with a bootstrap: the core of `predict`.

Why this form: it is Chinchilla's (Hoffmann et al. 2022, approach 3), the one law that separates what
more parameters buy (α) from what more tokens buy (β) and has an irreducible loss E, so one fit over
a width x token-budget ladder answers "what loss at N parameters and D tokens" for any pair. A law in
compute alone, L(C), needs a compute-optimal line, which a CPU ladder of a few widths cannot trace.
N is the non-embedding parameter count (Kaplan et al. 2020: the embedding adds little to what a model
can learn, and it differs between the byte-level ladder and a 65k-vocabulary target), D the training tokens.

How: least squares on log L (a relative error, as Chinchilla's log-space fit), with E in (0, min loss)
and both exponents in [-1, 3] (a negative exponent is allowed so that a flat or rising curve shows up
as an interval spanning zero rather than being pinned at the bound), from several starts, the best
kept. N and D are divided by the ladder's geometric means N0 and D0 so A and B are O(1).
Five parameters need points on at least three widths and two budgets; with few widths E and α trade
off against each other, and the bootstrap shows it as a wide α interval.

The interval: `bootstrap` refits on points resampled within each width (every width stays in, so the
design does not change), and a prediction interval adds to each refit's prediction one residual of
the full fit drawn at random (a single run's seed noise, not only the fit's uncertainty).

Example:
    >>> import numpy as np
    >>> n = np.repeat([1e5, 4e5, 1.6e6], 3); d = np.tile([2e5, 4e5, 8e5], 3)
    >>> fit = fit_law(n, d, loss_law(n, d, E=1.5, A=0.4, alpha=0.5, B=0.6, beta=0.3, n0=4e5, d0=4e5))
    >>> round(fit.alpha, 2), round(fit.beta, 2), round(fit.E, 2)
    (0.5, 0.3, 1.5)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["LawFit", "Bootstrap", "loss_law", "fit_law", "bootstrap", "MIN_WIDTHS", "MIN_BUDGETS", "MIN_POINTS"]

MIN_WIDTHS = 3
"""E, A and α need three model sizes at least (two give a line in log N with no curvature)."""
MIN_BUDGETS = 2
"""B and β need two token budgets at least."""
MIN_POINTS = 6
"""One point more than the five parameters."""
_ALPHA_BOUNDS = (-1.0, 3.0)


def loss_law(n, d, *, E: float, A: float, alpha: float, B: float, beta: float, n0: float = 1.0, d0: float = 1.0):
    """L = E + A·(N/N0)^-α + B·(D/D0)^-β.

    Example:
        >>> float(loss_law(1.0, 1.0, E=1.0, A=0.5, alpha=1.0, B=0.25, beta=1.0))
        1.75
    """
    n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return E + A * (n / n0) ** -alpha + B * (d / d0) ** -beta


@dataclass(frozen=True)
class LawFit:
    """A fitted law: its five parameters (A, B in units of N0, D0), the scale, and the fit's residuals."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    n0: float
    d0: float
    residuals: tuple[float, ...]
    """log L measured - log L fitted, per point."""

    def __call__(self, n, d):
        return loss_law(n, d, E=self.E, A=self.A, alpha=self.alpha, B=self.B, beta=self.beta, n0=self.n0, d0=self.d0)

    @property
    def rms(self) -> float:
        """Root-mean-square residual in log L (≈ the relative error of one point)."""
        r = np.asarray(self.residuals)
        return float(np.sqrt(np.mean(r ** 2))) if len(r) else math.nan


def fit_law(n, d, loss, *, n0: float | None = None, d0: float | None = None, starts: list | None = None) -> LawFit:
    """Fit the law to points (N, D, loss) by bounded least squares on log L from several starts.

    Raises ValueError when there are too few points or no start converges.

    Example:
        >>> fit = fit_law([1e5, 1e5, 1e6, 1e6, 1e7, 1e7], [1e5, 1e6] * 3, [3.0, 2.6, 2.5, 2.1, 2.3, 1.9])
        >>> fit.alpha > 0 and fit.beta > 0
        True
    """
    from scipy.optimize import least_squares

    n, d, loss = (np.asarray(x, dtype=np.float64) for x in (n, d, loss))
    if len(loss) < MIN_POINTS:
        raise ValueError(f"the law has 5 parameters: needs at least {MIN_POINTS} points, got {len(loss)}")
    n0 = float(np.exp(np.log(n).mean())) if n0 is None else n0
    d0 = float(np.exp(np.log(d).mean())) if d0 is None else d0
    x, y, logl = n / n0, d / d0, np.log(loss)
    top = float(loss.min()) * (1 - 1e-6)

    lx, ly = np.log(x), np.log(y)

    def resid(p):
        E, A, alpha, B, beta = p
        return np.log(E + A * x ** -alpha + B * y ** -beta) - logl

    def jac(p):  # analytic: five times fewer law evaluations than finite differences
        E, A, alpha, B, beta = p
        xa, yb = x ** -alpha, y ** -beta
        cols = np.stack([np.ones_like(x), xa, -A * xa * lx, yb, -B * yb * ly], axis=1)
        return cols / (E + A * xa + B * yb)[:, None]

    lo = [1e-6, 1e-9, _ALPHA_BOUNDS[0], 1e-9, _ALPHA_BOUNDS[0]]
    hi = [top, 1e3, _ALPHA_BOUNDS[1], 1e3, _ALPHA_BOUNDS[1]]
    best = None
    for start in starts or _starts(loss):
        p0 = np.clip(start, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                r = least_squares(resid, p0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                  max_nfev=500)
            except ValueError:
                continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        raise ValueError("the law's fit did not converge from any start")
    E, A, alpha, B, beta = (float(v) for v in best.x)
    return LawFit(E=E, A=A, alpha=alpha, B=B, beta=beta, n0=n0, d0=d0,
                  residuals=tuple(float(v) for v in -best.fun))


def _starts(loss: np.ndarray) -> list[list[float]]:
    """A small grid of starts: E at two fractions of the lowest loss, exponents small and large."""
    low = float(loss.min())
    out = []
    for e in (0.5, 0.85):
        rest = max(float(np.median(loss)) - e * low, 1e-3)
        for alpha, beta in ((0.3, 0.3), (1.0, 0.5), (0.5, 1.0)):
            out.append([e * low, rest / 2, alpha, rest / 2, beta])
    return out


@dataclass(frozen=True)
class Bootstrap:
    """Refits on resampled points: each refit's parameters, and the fit they came from."""

    fit: LawFit
    params: np.ndarray
    """(reps, 5): E, A, alpha, B, beta of each refit that converged."""
    seed: int

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """The percentile interval of one parameter over the refits."""
        col = ("E", "A", "alpha", "B", "beta").index(name)
        q = (1 - level) / 2
        return tuple(float(v) for v in np.quantile(self.params[:, col], [q, 1 - q]))

    def predict(self, n: float, d: float, *, level: float = 0.95, noise: bool = True) -> tuple[float, float, float]:
        """(point, low, high): the full fit's loss at (N, D) and the refits' percentile interval;
        `noise` adds one of the full fit's residuals per refit (the interval of one run, not of the mean)."""
        point, low, high = self.band(np.array([n]), np.array([d]), level=level, noise=noise)
        return float(point[0]), float(low[0]), float(high[0])

    def band(self, n, d, *, level: float = 0.95, noise: bool = False):
        """`predict` over arrays of (N, D): three arrays (point, low, high), e.g. a plot's band."""
        E, A, alpha, B, beta = (c[:, None] for c in self.params.T)
        f = self.fit
        n, d = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64))
        preds = np.log(loss_law(n[None, :], d[None, :], E=E, A=A, alpha=alpha, B=B, beta=beta, n0=f.n0, d0=f.d0))
        if noise and f.residuals:
            rng = np.random.default_rng(self.seed + 1)
            preds = preds + rng.choice(np.asarray(f.residuals), size=(len(preds), 1))
        q = (1 - level) / 2
        low, high = np.exp(np.quantile(preds, [q, 1 - q], axis=0))
        return f(n, d), low, high


def bootstrap(n, d, loss, groups, *, reps: int = 300, seed: int = 0) -> Bootstrap:
    """Fit the law, then refit it `reps` times on points resampled with replacement within each group
    (each width), starting from the full fit; refits that fail are dropped.

    Example:
        >>> boot = bootstrap(n, d, loss, groups=n, reps=100)           # doctest: +SKIP
        >>> boot.interval("alpha")                                     # doctest: +SKIP
        (0.41, 0.62)
    """
    n, d, loss, groups = (np.asarray(x) for x in (n, d, loss, groups))
    fit = fit_law(n, d, loss)
    starts = [[fit.E, fit.A, fit.alpha, fit.B, fit.beta]]  # a resample lies near the full fit
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rows = []
    for _ in range(reps):
        pick = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
        try:
            f = fit_law(n[pick], d[pick], loss[pick], n0=fit.n0, d0=fit.d0, starts=starts)
        except ValueError:
            continue
        rows.append([f.E, f.A, f.alpha, f.B, f.beta])
    if not rows:
        raise ValueError("no bootstrap refit converged")
    return Bootstrap(fit=fit, params=np.asarray(rows), seed=seed)
