"""The horizon correction of a carried learning rate: the optimum falls as the training budget grows.

A horizon sweep (`sweeps/horizon.yaml`, checked by `windtunnel check horizon`) fits
log2 lr* = a + slope x log2 tokens on one proxy. The proxy's optimum was found at its own tokens per
parameter; the target trains at another. Across sizes the horizon is measured in tokens per
non-embedding parameter, so the carried lr is multiplied by (target TPP / proxy TPP)^slope, and the
slope's 95 % interval gives the corrected lr's interval.

Example:
    >>> c = horizon_correction("runs/horizon", raw_lr=0.01, proxy_tpp=5.0, target_tpp=1300.0)
    >>> c.lr < c.raw_lr, c.low <= c.lr <= c.high
    (True, True)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WindtunnelError

__all__ = ["HorizonCorrection", "horizon_correction"]


@dataclass(frozen=True)
class HorizonCorrection:
    """The carried lr before and after the horizon fit of `run`, with the interval."""

    run: Path
    slope: float
    slope_interval: tuple[float, float]
    n_budgets: int
    proxy_tpp: float
    target_tpp: float
    fitted_tpp: tuple[float, float]
    """Tokens per parameter spanned by the horizon sweep's budgets (its own model)."""
    raw_lr: float
    lr: float
    low: float
    high: float
    applied: bool = True
    """False when --set train.lr overrode the carried lr: the correction is shown, not applied."""

    @property
    def factor(self) -> float:
        return self.lr / self.raw_lr

    @property
    def doublings_beyond(self) -> float:
        """How many doublings of tokens per parameter the target lies beyond the fitted range (0 inside)."""
        lo, hi = self.fitted_tpp
        if self.target_tpp > hi:
            return math.log2(self.target_tpp / hi)
        return math.log2(lo / self.target_tpp) if self.target_tpp < lo else 0.0


def horizon_correction(run: str | os.PathLike, *, raw_lr: float, proxy_tpp: float,
                       target_tpp: float) -> HorizonCorrection:
    """Correct `raw_lr` (found at `proxy_tpp` tokens per parameter) to `target_tpp` with `run`'s horizon fit.

    A run folder without a fitted slope raises `WindtunnelError` (the CLI's exit 2).
    """
    from ..analysis.horizon_check import horizon_params, load_horizon_fit
    from ..analysis.runs import load_run
    if not (raw_lr > 0 and proxy_tpp > 0 and target_tpp > 0):
        raise WindtunnelError(f"horizon correction needs positive lr and tokens per parameter, got "
                              f"lr={raw_lr}, proxy={proxy_tpp}, target={target_tpp}")
    report = load_horizon_fit(run)
    fit = report.fit
    n_params = horizon_params(load_run(run))
    tpps = [r.tokens / n_params for r in report.rows if r.optimum.log2_lr is not None]
    central, low, high = fit.shift(target_tpp / proxy_tpp)
    return HorizonCorrection(run=Path(run), slope=fit.slope, slope_interval=fit.slope_interval, n_budgets=fit.n,
                             proxy_tpp=proxy_tpp, target_tpp=target_tpp, fitted_tpp=(min(tpps), max(tpps)),
                             raw_lr=raw_lr, lr=raw_lr * central, low=raw_lr * low, high=raw_lr * high)
