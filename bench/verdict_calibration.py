"""Verdict calibration: the transfer and horizon checks on synthetic loss curves whose truth is known.

Each repetition draws loss-vs-lr curves (9 lrs a factor 2 apart, widths 64..512 = 3 doublings; a
quadratic basin in log2 lr, 0.05 nats per log2^2, steeper to the right in the asymmetric cases; the
floor falls 0.1 nat per doubling), adds Gaussian seed noise and runs the check's own statistics on
them (`mutransfer_check.check_family`, `horizon_check.horizon_fit`: the code the CLI runs, without the
run folder). Cases (the true optimum's position is drawn per repetition, so it falls anywhere
between grid points):

    mup          optimum fixed (0 log2 per doubling): should pass            -> power
    asym-mup     the same, basin 4x steeper above the optimum than below     -> power
    sp           optimum falls 1 log2 per doubling: must not pass            -> false pass
    asym-sp      the same, asymmetric basin                                  -> false pass
    edge         optimum falls 0.5 per doubling, from below the grid's smallest lr at every width
                 (2^-12.5 .. 2^-14 on a grid from 2^-11): must not pass      -> false pass
    diverge      μP-like, but at width 512 every lr >= 2^-8 diverges, the carried one with them: must fail
    horizon      optimum falls 0.35 log2 per doubling of tokens over 4 budgets (8x), symmetric
    asym-horizon the same, asymmetric basin

Per case, seeds (1, 3) and noise sd (0.005, 0.01, 0.02 nats): the 95 % intervals' coverage of the
true slope (and of the true optimum per width), the pass / inconclusive / fail rates, and as a
baseline measured in the same run the coverage of the old statistics (max - min of the optima with
its bootstrap interval, whose truth is 0 for μP; for the horizon a three-point parabola per budget
with the least-squares line's Student-t interval). Goals: slope coverage >= 0.90, false pass <= 0.05
for every sp / edge / diverge case, power >= 0.5 for mup at sd 0.01 with 3 seeds.

    PYTHONPATH=$PWD python bench/verdict_calibration.py            # 50 repetitions per cell, a few minutes
    PYTHONPATH=$PWD python bench/verdict_calibration.py --quick    # 12 repetitions, 300 resamples, < 1 min
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from windtunnel.analysis.horizon_check import horizon_fit  # noqa: E402 - after the path line above
from windtunnel.analysis.mutransfer_check import check_family  # noqa: E402
from windtunnel.analysis.optimum import fit_optimum  # noqa: E402
from windtunnel.analysis.regret import Cell  # noqa: E402

WIDTHS = (64, 128, 256, 512)
GRID = np.arange(-12.0, -3.0)  # 2^-12 .. 2^-4
EDGE_GRID = np.arange(-11.0, -3.0)
CURVATURE = 0.05
TRANSFER_CASES = ("mup", "asym-mup", "sp", "asym-sp", "edge", "diverge")
HORIZON_CASES = ("horizon", "asym-horizon")
GOOD = ("mup", "asym-mup")


def loss(x: np.ndarray, vertex: float, floor: float, asym: bool) -> np.ndarray:
    """The true basin: CURVATURE per log2^2; when asymmetric half that below the optimum, twice above (4x)."""
    a = np.where(x > vertex, CURVATURE * (2.0 if asym else 1.0), CURVATURE * (0.5 if asym else 1.0))
    return floor + a * (x - vertex) ** 2


def true_vertex(case: str, d: float, c: float) -> float:
    """The true log2 optimum at `d` doublings above width 64, for a draw `c`."""
    if case in ("sp", "asym-sp"):
        return c - d
    if case == "edge":
        return -12.5 - 0.5 * d
    return c


def transfer_cells(case: str, n_seeds: int, sd: float, rng) -> tuple[dict[int, list[Cell]], float, dict[int, float]]:
    """One repetition: cells per width, the true slope (nan when no optimum is on the grid), the true vertices."""
    c = {"sp": rng.uniform(-6.5, -5.5), "asym-sp": rng.uniform(-6.5, -5.5),
         "diverge": rng.uniform(-7.4, -6.6)}.get(case, rng.uniform(-8.0, -6.0))
    grid = EDGE_GRID if case == "edge" else GRID
    cells, vertices = {}, {}
    for w in WIDTHS:
        d = math.log2(w / 64)
        v = true_vertex(case, d, c)
        vertices[w] = v
        clean = loss(grid, v, 3.0 - 0.1 * d, case.startswith("asym"))
        row = []
        for x, y in zip(grid, clean):
            if case == "diverge" and w == 512 and x >= -8:
                row.append(Cell((2.0**x,), float(x), np.array([]), True))
            else:
                row.append(Cell((2.0**x,), float(x), y + sd * rng.standard_normal(n_seeds), False))
        cells[w] = row
    slope = {"sp": -1.0, "asym-sp": -1.0}.get(case, 0.0) if case in (*GOOD, "sp", "asym-sp") else math.nan
    return cells, slope, vertices


def run_transfer(case, n_seeds, sd, reps, n_boot, rng) -> dict:
    out = {"pass": 0, "fail": 0, "inconclusive": 0, "cover": [], "cover_opt": [], "cover_maxmin": []}
    for _ in range(reps):
        cells, slope, vertices = transfer_cells(case, n_seeds, sd, rng)
        rows, s = check_family("mup", cells, from_width=64, n_boot=n_boot)
        out[s.verdict] += 1
        if math.isnan(slope):
            continue
        if s.slope_low is not None:
            out["cover"].append(s.slope_low <= slope <= s.slope_high)
        out["cover_opt"] += [r.optimum.low <= vertices[r.width] <= r.optimum.high for r in rows
                             if r.optimum.low is not None]
        if s.drift_low is not None:
            true_range = max(vertices.values()) - min(vertices.values())
            out["cover_maxmin"].append(s.drift_low <= true_range <= s.drift_high)
    return out


def run_horizon(case, n_seeds, sd, reps, n_boot, rng) -> dict:
    from scipy.stats import t as student
    out = {"cover": [], "cover_old": [], "width": [], "width_old": []}
    tokens = [2.0**k * 2e5 for k in range(4)]
    for _ in range(reps):
        c = rng.uniform(-6.0, -5.0)
        vs = [c - 0.35 * k for k in range(4)]
        seeds = [[list(loss(np.array([x]), v, 2.5 - 0.1 * k, case.startswith("asym"))[0]
                       + sd * rng.standard_normal(n_seeds)) for x in GRID] for k, v in enumerate(vs)]
        _, fit = horizon_fit(tokens, [GRID] * 4, seeds, n_boot=n_boot)
        if fit is not None:
            out["cover"].append(fit.slope_interval[0] <= -0.35 <= fit.slope_interval[1])
            out["width"].append(fit.slope_interval[1] - fit.slope_interval[0])
        # the old statistic: a three-point parabola through the seed means, Student-t interval of the line
        old = [fit_optimum(2.0**GRID, [float(np.mean(s)) for s in b]) for b in seeds]
        xs = [math.log2(t) for t, o in zip(tokens, old) if o.log2_lr is not None]
        ys = [o.log2_lr for o in old if o.log2_lr is not None]
        if len(xs) >= 3:
            b, a = np.polyfit(xs, ys, 1)
            resid = np.asarray(ys) - (a + b * np.asarray(xs))
            sxx = float(((np.asarray(xs) - np.mean(xs)) ** 2).sum())
            se = math.sqrt(float(resid @ resid) / (len(xs) - 2) / sxx)
            h = float(student.ppf(0.975, len(xs) - 2)) * se
            out["cover_old"].append(b - h <= -0.35 <= b + h)
            out["width_old"].append(2 * h)
    return out


def _rate(xs) -> str:
    return f"{np.mean(xs):.2f}" if len(xs) else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="12 repetitions and 300 resamples (under a minute)")
    ap.add_argument("--reps", type=int, help="repetitions per cell (default 50, --quick 12)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the whole simulation (default 0)")
    args = ap.parse_args(argv)
    reps = args.reps or (12 if args.quick else 50)
    n_boot = 300 if args.quick else 1000
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"verdict calibration: {reps} repetitions per cell, {n_boot} resamples, seed {args.seed}")
    print(f"{'case':<13} {'seeds':>5} {'sd':>6}  {'pass':>5} {'incon':>5} {'fail':>5}  {'slope cover':>11} "
          f"{'opt cover':>9}  {'old cover':>9}  goal")
    misses = []
    for case in TRANSFER_CASES:
        for n_seeds in (1, 3):
            for sd in (0.005, 0.01, 0.02):
                r = run_transfer(case, n_seeds, sd, reps, n_boot, rng)
                p = r["pass"] / reps
                goal, ok = _goal(case, n_seeds, sd, p, r["cover"])
                if not ok:
                    misses.append(f"{case} {n_seeds} seeds sd {sd}")
                print(f"{case:<13} {n_seeds:>5} {sd:>6.3f}  {p:>5.2f} {r['inconclusive'] / reps:>5.2f} "
                      f"{r['fail'] / reps:>5.2f}  {_rate(r['cover']):>11} {_rate(r['cover_opt']):>9}  "
                      f"{_rate(r['cover_maxmin']):>9}  {goal}")
    print(f"{'case':<13} {'seeds':>5} {'sd':>6}  {'slope cover':>11} {'width':>6}  {'old cover':>9} {'width':>6}")
    for case in HORIZON_CASES:
        for n_seeds in (1, 3):
            for sd in (0.005, 0.01, 0.02):
                r = run_horizon(case, n_seeds, sd, reps, n_boot, rng)
                if len(r["cover"]) and np.mean(r["cover"]) < 0.90:
                    misses.append(f"{case} {n_seeds} seeds sd {sd}")
                print(f"{case:<13} {n_seeds:>5} {sd:>6.3f}  {_rate(r['cover']):>11} {_rate(r['width']):>6}  "
                      f"{_rate(r['cover_old']):>9} {_rate(r['width_old']):>6}")
    verdict = "all met" if not misses else f"missed in {len(misses)}: {'; '.join(misses)}"
    if reps < 50:  # 10 of 12 is 0.83: within chance of a 0.95 coverage
        verdict += f" (at {reps} repetitions a coverage is +-{2 * math.sqrt(0.95 * 0.05 / reps):.2f} by chance; " \
                   "the goals are judged at 50)"
    print(f"{time.perf_counter() - start:.0f} s (wall, busy shared machine); goals {verdict}")
    print("columns: pass/incon/fail = verdict rates; slope cover = the drift (or horizon) slope's 95% interval "
          "contains the true slope; opt cover = per-width optimum intervals containing the truth; old cover = "
          "the old statistic's interval (transfer: max - min of the optima, truth 0 for muP and 3 for SP; "
          "horizon: 3-point parabolas + Student-t line)")
    return 0


def _goal(case, n_seeds, sd, p, cover) -> tuple[str, bool]:
    """The goal this cell is held to, and whether it is met."""
    parts, ok = [], True
    if len(cover):
        parts.append("cover>=0.90")
        ok &= float(np.mean(cover)) >= 0.90
    if case in GOOD and n_seeds == 3 and sd == 0.01:
        parts.append("power>=0.5")
        ok &= p >= 0.5
    elif case not in GOOD:
        parts.append("false pass<=0.05")
        ok &= p <= 0.05
    return (" ".join(parts) + (" ok" if ok else " MISSED")) if parts else "", ok


if __name__ == "__main__":
    raise SystemExit(main())
