"""The context-length law L(t) = b + (t / c)^a: loss of the token that sees t tokens of context.

Xmodel-2 fits it to WikiText-2 test loss (a ≈ -0.575, b ≈ 1.772, c ≈ 32.84); here it is fitted by
weighted least squares (scipy's `curve_fit`, weights = the points' standard errors when given) with
a < 0 and c > 0, and reported with standard errors from the fit's covariance and R².

Example:
    >>> import numpy as np
    >>> t = np.array([1, 2, 4, 8, 16, 32, 64, 128.0])
    >>> fit = fit_context_law(t, context_law(t, a=-0.575, b=1.772, c=32.84))
    >>> round(fit["a"], 3), round(fit["b"], 3), round(fit["c"], 2)
    (-0.575, 1.772, 32.84)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["MIN_POINTS", "MIN_R2", "context_law", "fit_context_law", "fit_warning"]

MIN_POINTS = 4
"""A 3-parameter fit needs one point more than its parameters to give standard errors."""
MIN_R2 = 0.5
"""Below this R² the law explains too little of the points' spread to be read."""


def context_law(t, *, a: float, b: float, c: float) -> np.ndarray:
    """L(t) = b + (t / c)^a.

    Example:
        >>> float(context_law(32.84, a=-0.5, b=1.0, c=32.84))
        2.0
    """
    return b + (np.asarray(t, dtype=np.float64) / c) ** a


def fit_context_law(t, loss, *, sigma=None) -> dict:
    """Fit L(t) = b + (t/c)^a to points (t, loss); returns a, b, c, their standard errors, R², n.

    `sigma`: per-point standard errors (weights); None weighs the points equally. A fit that cannot
    be made (too few points, no convergence) returns {"error": why, "n": ...} instead of raising,
    since the measured points are worth reporting without it.
    """
    from scipy.optimize import curve_fit

    t, loss = np.asarray(t, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(loss) & (t > 0)
    t, loss = t[ok], loss[ok]
    sig = None if sigma is None else np.asarray(sigma, dtype=np.float64)[ok]
    if sig is not None and not (np.all(np.isfinite(sig)) and np.all(sig > 0)):
        sig = None  # a zero or missing error would get infinite weight
    if len(t) < MIN_POINTS:
        return {"error": f"needs at least {MIN_POINTS} finite points, got {len(t)}", "n": len(t)}

    def law(x, a, b, c):
        return b + (x / c) ** a

    p0 = _start(t, loss)
    bounds = ([-10.0, -np.inf, 1e-9], [-1e-6, np.inf, np.inf])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning when the covariance is not estimable
            params, cov = curve_fit(law, t, loss, p0=p0, sigma=sig, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError) as e:
        return {"error": f"did not converge ({e})", "n": len(t)}
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else [math.nan] * 3
    resid = loss - law(t, *params)
    total = ((loss - loss.mean()) ** 2).sum()
    r2 = 1.0 - (resid ** 2).sum() / total if total > 0 else math.nan
    a, b, c = (float(x) for x in params)
    fit = {"a": a, "b": b, "c": c, "a_se": float(errors[0]), "b_se": float(errors[1]),
           "c_se": float(errors[2]), "r2": float(r2), "n": len(t), "weighted": sig is not None}
    fit["warning"] = fit_warning(fit)
    return fit


def fit_warning(fit: dict) -> str | None:
    """Why the fitted numbers should not be read, or None: a parameter whose standard error is not
    finite or exceeds its own size (its interval spans zero and more), or R² below `MIN_R2`.

    Example:
        >>> fit_warning({"a": -0.5, "b": 1.9068, "c": 3.0, "a_se": 0.1, "b_se": 725.3, "c_se": 1.0,
        ...              "r2": 0.03})[:80]
        'the fit does not constrain b (standard error larger than the value) and explains'
        >>> fit_warning({"a": -0.5, "b": 1.9, "c": 3.0, "a_se": 0.1, "b_se": 0.2, "c_se": 1.0, "r2": 0.98}) is None
        True
    """
    loose = [k for k in ("a", "b", "c") if not (math.isfinite(fit[f"{k}_se"]) and fit[f"{k}_se"] <= abs(fit[k]))]
    weak = math.isfinite(fit["r2"]) and fit["r2"] < MIN_R2
    if not loose and not weak and math.isfinite(fit["r2"]):
        return None
    why = []
    if loose:
        why.append(f"does not constrain {', '.join(loose)} (standard error larger than the value)")
    if weak or not math.isfinite(fit["r2"]):
        why.append(f"explains little (R² {fit['r2']:.2f} < {MIN_R2})")
    return (f"the fit {' and '.join(why)}: do not read these numbers; more held-out windows (--windows) or a "
            "model that uses its context would")


def _start(t: np.ndarray, loss: np.ndarray) -> list[float]:
    """A starting point: b a little below the lowest loss, a from the log-log slope of L - b, c from
    the first point."""
    span = max(loss.max() - loss.min(), 1e-6)
    b = loss.min() - 0.1 * span
    excess = np.clip(loss - b, 1e-9, None)
    slope = np.polyfit(np.log(t), np.log(excess), 1)[0]
    a = float(np.clip(slope, -5.0, -0.01))
    with np.errstate(over="ignore", divide="ignore"):
        c = float(t[0] / excess[0] ** (1.0 / a))
    # a flat or rising curve gives a ~ 0 and an absurd c: keep the start inside the bounds
    return [a, float(b), float(np.clip(c, 1e-6, 1e12)) if np.isfinite(c) else 1.0]
