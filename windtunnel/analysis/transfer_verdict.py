"""The transfer check's verdicts: drift and regret criteria, each pass | fail | inconclusive, and
what would settle an inconclusive one. Kept apart from the fitting so each rule reads in one place."""

from __future__ import annotations

import math

__all__ = ["drift_state", "judge", "regret_state", "seeds_to_settle"]


def drift_state(drift, low, high, max_drift: float) -> str:
    """pass when the drift's upper bound is within `max_drift`, fail when its lower bound exceeds it.

    Example:
        >>> drift_state(0.3, 0.1, 0.8, 1.0), drift_state(2.0, 1.4, 2.6, 1.0), drift_state(0.9, 0.4, 1.6, 1.0)
        ('pass', 'fail', 'inconclusive')
    """
    if drift is None or low is None:
        return "inconclusive"
    if high <= max_drift:
        return "pass"
    return "fail" if low > max_drift else "inconclusive"


def regret_state(regret, tol: float) -> str:
    """pass | fail | inconclusive | unknown for the regret at the largest shape (a `Regret` or None).
    With one seed (no interval) the value itself is judged; a diverged carried config fails."""
    if regret is None:
        return "unknown"
    if regret.diverged:
        return "fail"
    if regret.value is None:
        return "unknown"
    low, high = (regret.low, regret.high) if regret.low is not None else (regret.value, regret.value)
    if high <= tol:
        return "pass"
    return "fail" if low > tol else "inconclusive"


def seeds_to_settle(point, low, high, threshold: float, n_seeds: int) -> int | None:
    """Seeds an interval would need to fall on one side of `threshold`, if its half-width shrinks like
    1/sqrt(seeds); None when the point sits on the threshold (no number of seeds settles it).

    Example:
        >>> seeds_to_settle(0.6, 0.2, 1.4, 1.0, 3)    # half-width 0.8 must shrink to 0.4: 4x the seeds
        12
    """
    half = (high - point) if point < threshold else (point - low)
    room = abs(threshold - point)
    if room < 1e-9 or half <= 1e-9:
        return None
    return max(n_seeds + 1, math.ceil(max(n_seeds, 1) * (half / room) ** 2))


def judge(s, *, max_drift: float, tol: float, min_widths: int, min_span: float) -> None:
    """Set `s.drift_verdict`, `s.regret_verdict`, `s.verdict`, `s.reasons` and `s.settle` of a ParamSummary."""
    reasons = []
    if s.edge_widths:
        reasons.append(f"no optimum at {', '.join(map(str, s.edge_widths))}: best lr on the grid's edge")
    span = max(s.widths) / min(s.widths)
    few = len(s.widths) < min_widths or span < min_span
    if few:
        reasons.append(f"{len(s.widths)} shapes spanning {span:g}x; "
                       f"a trend needs >= {min_widths} spanning >= {min_span:g}x")
    d = drift_state(s.drift, s.drift_low, s.drift_high, max_drift)
    if d == "pass" and (s.edge_widths or few):
        d = "inconclusive"
    r = regret_state(s.regret_widest, tol)
    if r == "pass" and few:
        r = "inconclusive"
    s.drift_verdict, s.regret_verdict = d, r
    if s.drift is not None:
        band = f" [{s.drift_low:.2f}, {s.drift_high:.2f}]" if s.drift_low is not None else " (no interval)"
        reasons.append(f"drift {s.drift:.2f}{band} log2 vs {max_drift:g} -> {d}")
    reg = s.regret_widest.text() if s.regret_widest else "unknown"
    reasons.append(f"regret at {s.widths[-1]} {reg} nats vs {tol:g} -> {r}")
    if s.parametrization.split("/")[0] == "sp":  # the control: moving is what it is expected to do
        s.verdict = {"fail": "drifts", "pass": "holds"}.get(d, d)
        s.reasons = reasons
        return
    if "pass" in (d, r):
        s.verdict = "pass" if s.loss_falls else "fail"
        reasons.append("best loss falls with the shape" if s.loss_falls else "best loss does not fall with the shape")
    elif {d, r} <= {"fail", "unknown"} and "fail" in (d, r):  # neither criterion can still pass
        s.verdict = "fail"
    else:
        s.verdict = "inconclusive"
        s.settle = _settle(s, max_drift, tol)
        if few:
            s.settle = f"run >= {min_widths} shapes spanning >= {min_span:g}x; " + s.settle
    s.reasons = reasons


def _settle(s, max_drift: float, tol: float) -> str:
    """What would turn an inconclusive verdict into a verdict."""
    hints = []
    n = max(1, s.n_seeds)
    if s.drift is not None and s.drift_low is None:
        hints.append("more seeds (>= 3), or more lr points near each optimum, to put an interval on the drift")
    elif s.drift is not None and s.drift_low <= max_drift < s.drift_high:
        need = seeds_to_settle(s.drift, s.drift_low, s.drift_high, max_drift, n)
        if need:
            hints.append(f"about {need} seeds per point for the drift")
    g = s.regret_widest
    if g is not None and g.value is not None and g.low is not None and g.low <= tol < g.high:
        need = seeds_to_settle(g.value, g.low, g.high, tol, n)
        if need:
            hints.append(f"about {need} seeds per point for the regret" if need <= 100 else
                         "over 100 seeds for the regret (its interval is wide against the tolerance)")
    if s.edge_widths:
        hints.append("extend the lr grid past the edge optima")
    hints.append("lr points at half-steps (2^0.5) around each optimum narrow both")
    return "; ".join(hints)
