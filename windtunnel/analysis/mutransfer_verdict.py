"""The transfer check's verdicts: the drift (slope per doubling) and regret criteria, each pass | fail |
inconclusive, the vetoes (an optimum on the grid's edge, a carried configuration that diverges), the
best loss's trend, and what would settle an inconclusive verdict. Kept apart from the fitting so each
rule reads in one place."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from .trend import drift_state, loss_trend

__all__ = ["Thresholds", "drift_state", "from_max_drift", "judge", "regret_state", "seeds_to_settle"]


@dataclass(frozen=True)
class Thresholds:
    """What the transfer check calls pass and fail."""

    drift_pass: float = 0.15
    """The drift passes when its interval lies within ±this, log2 lr* per doubling of the shape: 0.15
    per doubling is ~1 log2 unit (a factor 2 in lr, inside a typical basin's flat bottom) over the 6-7
    doublings from a 64-wide proxy to a 1.2B."""
    drift_fail: float = 0.5
    """The drift fails when its interval lies wholly beyond ±this (half of SP's one unit per doubling)."""
    regret_tolerance: float = 0.01
    """The regret at the largest shape passes when its upper bound is within this, nats."""
    loss_flat: float = 0.01
    """A best-loss slope within ±this, nats per doubling, is flat (a bigger model no better)."""


def from_max_drift(max_drift: float, shapes: list[int], limits: Thresholds, notes: list[str]) -> Thresholds:
    """The deprecated max - min threshold as a slope: a line moving D log2 over k doublings has slope D/k.
    Warns (FutureWarning) and adds the same line to `notes`.

    Example:
        >>> import warnings; warnings.simplefilter("ignore")
        >>> from_max_drift(1.0, [64, 512], Thresholds(), []).drift_pass     # 1 log2 over 3 doublings
        0.3333333333333333
    """
    doublings = math.log2(max(shapes) / min(shapes)) or 1.0
    per = max_drift / doublings
    msg = (f"max_drift={max_drift:g} (a max - min in log2) is deprecated: the drift is now judged as a slope per "
           f"doubling; read as drift_pass={per:.3g} log2 per doubling over these {doublings:g} doublings "
           "(use drift_pass / --drift-pass)")
    warnings.warn(msg, FutureWarning, stacklevel=4)
    notes.append(msg)
    return Thresholds(per, max(limits.drift_fail, per), limits.regret_tolerance, limits.loss_flat)


def regret_state(regret, tol: float) -> str:
    """pass | fail | inconclusive | unknown for the regret at the largest shape (a `Regret` or None).
    A diverged carried config fails; a value without an interval (one seed and no noise estimate, or
    read off the fitted curve) is inconclusive: it is not exact.

    Example:
        >>> from windtunnel.analysis.regret import Regret
        >>> regret_state(Regret(512, 0.0, 0.0, 0.004), 0.01), regret_state(Regret(512, 0.0), 0.01)
        ('pass', 'inconclusive')
    """
    if regret is None:
        return "unknown"
    if regret.diverged:
        return "fail"
    if regret.value is None:
        return "unknown"
    if regret.low is None:
        return "inconclusive"
    if regret.high <= tol:
        return "pass"
    return "fail" if regret.low > tol else "inconclusive"


def seeds_to_settle(point, low, high, threshold: float, n_seeds: int) -> int | None:
    """Seeds an interval would need to fall on one side of `threshold`, if its half-width shrinks like
    1/sqrt(seeds); None when the point sits on the threshold or the interval is unbounded (a resample
    diverged: no count of seeds is sure to settle it).

    Example:
        >>> seeds_to_settle(0.6, 0.2, 1.4, 1.0, 3)    # half-width 0.8 must shrink to 0.4: 4x the seeds
        12
        >>> seeds_to_settle(0.02, 0.0, float("inf"), 0.01, 3) is None
        True
    """
    if not all(math.isfinite(v) for v in (point, low, high)):
        return None
    half = (high - point) if point < threshold else (point - low)
    room = abs(threshold - point)
    if room < 1e-9 or half <= 1e-9:
        return None
    return max(n_seeds + 1, math.ceil(max(n_seeds, 1) * (half / room) ** 2))


def judge(s, limits: Thresholds, *, min_widths: int, min_span: float) -> None:
    """Set the verdicts, `reasons` and `settle` of a ParamSummary (see mutransfer_check)."""
    reasons = []
    span = max(s.widths) / min(s.widths)
    few = len(s.widths) < min_widths or span < min_span
    if few:
        reasons.append(f"{len(s.widths)} shapes spanning {span:g}x; "
                       f"a trend needs >= {min_widths} spanning >= {min_span:g}x")
    d = drift_state(s.slope, s.slope_low, s.slope_high, limits.drift_pass, limits.drift_fail)
    r = regret_state(s.regret_widest, limits.regret_tolerance)
    if s.edge_widths:  # an edge optimum leaves the slope without that shape, and the regret can hide there
        d, r = (d if d == "fail" else "inconclusive"), (r if r in ("fail", "unknown") else "inconclusive")
        reasons.append(f"no optimum at {', '.join(map(str, s.edge_widths))}: best lr on the grid's edge")
    if few:
        d, r = (d if d != "pass" else "inconclusive"), (r if r != "pass" else "inconclusive")
    s.drift_verdict, s.regret_verdict = d, r
    s.loss_trend = loss_trend(s.loss_low, s.loss_high, limits.loss_flat)
    s.loss_falls = s.loss_trend == "falls"
    reasons += _criteria_lines(s, limits, d, r)
    if s.parametrization.split("/")[0] == "sp":  # the control: moving is what it is expected to do
        s.verdict = {"fail": "drifts", "pass": "holds"}.get(d, d)
        s.reasons = reasons
        return
    if s.diverged_widths:
        s.verdict = "fail"
        reasons.append(f"the carried configuration diverged at {', '.join(map(str, s.diverged_widths))}")
    elif s.edge_widths and d != "fail":
        s.verdict = "inconclusive"
        fixes = " and ".join(s.edge_fixes) or "lrs beyond the edge"
        s.settle = f"add {fixes} to the sweep's spec and resume it (--resume runs only the new points)"
    elif "pass" in (d, r) and s.loss_trend != "rises":
        s.verdict = {"falls": "pass", "flat": "fail"}.get(s.loss_trend, "inconclusive")
        if s.verdict == "inconclusive":
            s.settle = _settle(s, limits)
    elif s.loss_trend == "rises" or ({d, r} <= {"fail", "unknown"} and "fail" in (d, r)):
        s.verdict = "fail"  # the bigger model is worse, or neither criterion can still pass
    else:
        s.verdict = "inconclusive"
        s.settle = _settle(s, limits)
    if few and s.verdict == "inconclusive":
        s.settle = f"run >= {min_widths} shapes spanning >= {min_span:g}x; " + s.settle
    s.reasons = reasons


def _criteria_lines(s, limits: Thresholds, d: str, r: str) -> list[str]:
    lines = []
    if s.slope is not None:
        band = f" [{s.slope_low:+.3f}, {s.slope_high:+.3f}]" if s.slope_low is not None else " (no interval)"
        desc = f"; max - min {s.drift:.2f} log2, descriptive" if s.drift is not None else ""
        lines.append(f"drift {s.slope:+.3f}{band} log2 per doubling (pass within ±{limits.drift_pass:g}, fail "
                     f"beyond ±{limits.drift_fail:g}) -> {d}{desc}")
    else:
        lines.append(f"drift: fewer than 2 shapes name an optimum -> {d}")
    reg = s.regret_widest.text() if s.regret_widest else "unknown"
    lines.append(f"regret at {s.widths[-1]} {reg} nats vs {limits.regret_tolerance:g} -> {r}")
    if s.loss_slope is not None:
        band = f" [{s.loss_low:+.4f}, {s.loss_high:+.4f}]" if s.loss_low is not None else " (no interval)"
        lines.append(f"best loss {s.loss_slope:+.4f}{band} nats per doubling (flat within ±{limits.loss_flat:g})"
                     f" -> {s.loss_trend}")
    else:
        lines.append("best loss: not finite at every shape -> inconclusive")
    return lines


def _settle(s, limits: Thresholds) -> str:
    """What would turn an inconclusive verdict into a verdict."""
    hints = []
    n = max(1, s.n_seeds)
    if s.slope is not None and s.slope_low is None:
        hints.append("more seeds (>= 3), or more lr points near each optimum, to put an interval on the drift")
    elif s.slope is not None and s.drift_verdict == "inconclusive":
        a, lo, hi = (s.slope, s.slope_low, s.slope_high) if s.slope >= 0 else (-s.slope, -s.slope_high, -s.slope_low)
        if a < limits.drift_pass or a > limits.drift_fail:
            need = seeds_to_settle(a, lo, hi, limits.drift_pass if a < limits.drift_pass else limits.drift_fail, n)
            if need:
                hints.append(f"about {need} seeds per point for the drift")
        else:
            hints.append(f"the drift lies between ±{limits.drift_pass:g} and ±{limits.drift_fail:g} per doubling: "
                         "more seeds will not make it pass or fail; the regret decides")
    g = s.regret_widest
    if g is not None and g.value is not None and g.low is not None and g.low <= limits.regret_tolerance < g.high:
        need = seeds_to_settle(g.value, g.low, g.high, limits.regret_tolerance, n)
        if not math.isfinite(g.high):
            hints.append("the carried configuration diverged in some resamples: more seeds at the source shape")
        elif need:
            hints.append(f"about {need} seeds per point for the regret" if need <= 100 else
                         "over 100 seeds for the regret (its interval is wide against the tolerance)")
    if s.loss_trend == "inconclusive" and s.loss_low is not None:
        hints.append("more seeds (or more shapes) to tell whether the best loss falls")
    hints.append("lr points at half-steps (2^0.5) around each optimum narrow both")
    return "; ".join(hints)
