"""A trend per doubling of the shape, with its bootstrap interval, and how it is judged.

The transfer check asks two questions of the same shape: does the optimal lr move (log2 lr* per
doubling) and does the best loss fall (nats per doubling)? Both are least-squares slopes against
log2(shape), computed once on the point estimates and once on every bootstrap resample of them, so
the interval carries each shape's uncertainty. A slope is unbiased where max - min of noisy values is
not: with no movement at all, max - min of four optima each uncertain by sd s is about 2 s and its
interval never covers 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .optimum import percentile_interval

__all__ = ["drift_state", "loss_trend", "slope_interval"]


def slope_interval(log2_shapes: Sequence[float], points: Sequence[float],
                   samples: Sequence[np.ndarray] | None) -> tuple[float, float | None, float | None]:
    """(slope, low, high): least-squares slope of `points` against `log2_shapes`, its 95 % interval
    from the same slope fitted to each bootstrap resample (`samples[i]` = the resamples of point i,
    all of one length); no interval when `samples` is None.

    Example:
        >>> s, lo, hi = slope_interval([6, 7, 8, 9], [-7.0, -7.0, -7.0, -7.0], [np.full(100, -7.0)] * 4)
        >>> round(s, 3), round(lo, 3), round(hi, 3)
        (0.0, 0.0, 0.0)
    """
    x = np.asarray(log2_shapes, dtype=float)
    dx = (x - x.mean()) / float(((x - x.mean()) ** 2).sum())
    slope = float(dx @ np.asarray(points, dtype=float))
    if samples is None:
        return slope, None, None
    reps = np.stack([np.asarray(s, dtype=float) for s in samples])  # (n shapes, n_boot)
    with np.errstate(invalid="ignore"):  # inf - inf in a diverged resample: NaN, then +inf below
        slopes = dx @ (reps - reps.mean(axis=0))
    slopes = np.where(np.isnan(slopes), np.inf, slopes)
    low, high = percentile_interval(slopes, slope)
    return slope, low, high


def drift_state(slope: float | None, low: float | None, high: float | None, pass_within: float,
                fail_beyond: float) -> str:
    """pass when the slope's interval lies within ±`pass_within` (log2 per doubling), fail when it lies
    wholly beyond ±`fail_beyond`, else inconclusive (also with no interval).

    Example:
        >>> drift_state(0.02, -0.1, 0.12, 0.15, 0.5), drift_state(-1.0, -1.2, -0.8, 0.15, 0.5)
        ('pass', 'fail')
        >>> drift_state(0.3, 0.2, 0.4, 0.15, 0.5)     # moving, but less than the fail threshold
        'inconclusive'
    """
    if slope is None or low is None:
        return "inconclusive"
    if -pass_within <= low and high <= pass_within:
        return "pass"
    return "fail" if low > fail_beyond or high < -fail_beyond else "inconclusive"


def loss_trend(low: float | None, high: float | None, flat_within: float) -> str:
    """falls | rises | flat | inconclusive for the best loss's slope interval (nats per doubling):
    falls when wholly below 0, rises when wholly above, flat when within ±`flat_within`.

    Example:
        >>> loss_trend(-0.12, -0.08, 0.01), loss_trend(-0.004, 0.003, 0.01), loss_trend(-0.05, 0.02, 0.01)
        ('falls', 'flat', 'inconclusive')
    """
    if low is None:
        return "inconclusive"
    if high < 0:
        return "falls"
    if low > 0:
        return "rises"
    return "flat" if -flat_within <= low and high <= flat_within else "inconclusive"
