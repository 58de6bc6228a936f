"""The plan's cost model against measured trial times on this machine.

`windtunnel plan` costs a trial as FLOPs / (peak x MFU), FLOPs from `model.accounting.run_flops`.
Here that model meets trials that ran: for each finished trial of a sweep or ladder folder, the
estimated seconds (its FLOPs over this device's peak, measured now with the trial's thread count,
times the MFU the plan assumes for proxies) against the seconds it took. Per width: the sums, their
ratio, and the MFU the trials achieved, which is the number the plan's assumption should be.

Example:
    >>> rows = check_costs("runs/ladder")                                    # doctest: +SKIP
    >>> [(r.width, round(r.ratio, 2)) for r in rows]                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..analysis.runs import load_run
from ..config import load_config
from ..errors import WindtunnelError
from ..model.accounting import run_flops
from ..run_folder import config_path, trial_dir

__all__ = ["CostRow", "check_costs", "matmul_peak", "format_costs"]


@dataclass(frozen=True)
class CostRow:
    width: int
    trials: int
    flops: float
    measured_s: float
    estimated_s: float
    peak: float

    @property
    def ratio(self) -> float:
        """Measured over estimated: above 1, the plan is optimistic for this width."""
        return self.measured_s / self.estimated_s

    @property
    def achieved_mfu(self) -> float:
        return self.flops / self.measured_s / self.peak


def matmul_peak(*, threads: int = 1, size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of a square matmul on this CPU with `threads` threads (the ceiling MFU is
    measured against, as bench/throughput.py measures it)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        c = torch.empty(size, size)
        torch.matmul(a, b, out=c)  # warm the kernels and the caches
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - start)
        return 2.0 * size ** 3 / best
    finally:
        torch.set_num_threads(old)


def check_costs(run: str | os.PathLike, *, mfu: float, peak: float | None = None) -> list[CostRow]:
    """Per width of `run`'s finished trials: FLOPs, measured and estimated seconds (at `mfu` of `peak`,
    default this CPU's matmul peak at the trials' thread count, measured now)."""
    res = load_run(run)
    frame = res.frame[res.frame["status"] == "ok"]
    if frame.empty:
        raise WindtunnelError(f"{run}: no finished trial to check the cost model against")
    by_width: dict[int, list[float]] = {}
    threads = 1
    for row in frame.to_dict("records"):
        path = config_path(trial_dir(run, str(row["trial_id"])))
        if not path.is_file():
            raise WindtunnelError(f"{path}: missing; the cost check needs each trial's resolved config")
        cfg = load_config(path)
        threads = max(threads, int(cfg.train.threads or 1))
        acc = by_width.setdefault(cfg.model.d_model, [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += run_flops(cfg, float(row["tokens"]))
        acc[2] += float(row["seconds"])
    peak = peak or matmul_peak(threads=threads)
    return [CostRow(width=w, trials=int(n), flops=f, measured_s=s, estimated_s=f / (peak * mfu), peak=peak)
            for w, (n, f, s) in sorted(by_width.items())]


def format_costs(rows: list[CostRow], *, mfu: float, run: str) -> str:
    """The check as a table, with the MFU the trials achieved."""
    lines = [f"cost model vs measured ({run}; peak {rows[0].peak / 1e9:.1f} GFLOP/s fp32 matmul on this machine, "
             f"measured now; estimate = FLOPs / (peak x {mfu:.0%}); a shared machine: seconds vary with its load)",
             f"  {'width':>6} {'trials':>6} {'FLOPs':>9} {'measured s':>11} {'estimated s':>12} {'ratio':>6} "
             f"{'achieved MFU':>12}"]
    for r in rows:
        lines.append(f"  {r.width:>6} {r.trials:>6} {r.flops:>9.3g} {r.measured_s:>11.1f} {r.estimated_s:>12.1f} "
                     f"{r.ratio:>6.2f} {r.achieved_mfu:>12.1%}")
    total_m, total_e = sum(r.measured_s for r in rows), sum(r.estimated_s for r in rows)
    lines.append(f"  {'total':>6} {sum(r.trials for r in rows):>6} {sum(r.flops for r in rows):>9.3g} "
                 f"{total_m:>11.1f} {total_e:>12.1f} {total_m / total_e:>6.2f}")
    return "\n".join(lines)
