"""Search efficiency: the compute TPE, TPE + ASHA and random search need to come within 0.5 % of the
full grid's best loss, as a fraction of the grid's compute, over several search seeds.

    PYTHONPATH=$PWD nice -n 10 python bench/search_efficiency.py            # ~3 min on 2 idle cores
    PYTHONPATH=$PWD python bench/search_efficiency.py --from runs/lr_init   # reuse a finished grid sweep

What it does: (1) trains the full grid once (an lr x init_std grid on the xs proxy, fused K at a time
on `--concurrency` processes), keeping each trial's held-out loss every `eval_every` steps; or reads
a finished grid sweep folder (`--from`, its trials' metrics.csv). (2) Replays each searcher against
that table offline: a searcher proposes grid points through Optuna (TPESampler over each swept key
as a log-uniform range, snapped to the nearest grid value; or a seeded random order without
repeats), a proposal "trains" by reading its recorded curve and costs the steps it runs. ASHA is
applied at its rungs with the sweep's own rung rule (`windtunnel.sweep.rungs`); a pruned trial
costs the steps it ran and is told to Optuna as PRUNED with its last value. A TPE proposal of an
already-tried point is trained (and paid) again, as a real sweep would.
Compute = optimizer steps of every trial started (all trials have one shape, so steps are FLOPs).
A searcher is done when a trial that ran to the end has a final loss <= 1.005 x the grid's best.
Goal: TPE + ASHA <= 25 % of the grid (mean over seeds).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = [round(0.0005 * 2 ** (i / 2), 6) for i in range(12)]   # 5e-4 .. 0.0226, factor sqrt(2)
STDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]


def _train_group(job):
    from windtunnel.training.loop import train_group
    cfgs, outs = job
    train_group(cfgs, out_dirs=outs)


def run_grid(out: Path, *, steps: int, eval_every: int, k: int, concurrency: int) -> dict:
    """Train the grid; returns {(lr, std): {step: val_loss}}."""
    from windtunnel.config import load_config
    common = [f"train.steps={steps}", f"train.eval_every={eval_every}", "train.batch_size=8", "train.seq_len=64",
              f"train.warmup_steps={max(1, steps // 10)}", "train.log_every=1000", "train.threads=1",
              "train.eval_batches=4", "model.max_seq_len=64"]
    points = [(lr, s) for lr in LRS for s in STDS]
    cfgs = [load_config(ROOT / "proxies" / "xs.yaml", overrides=common + [f"train.lr={lr}", f"model.init_std={s}"])
            for lr, s in points]
    outs = [str(out / f"t{i:04d}") for i in range(len(points))]
    jobs = [(cfgs[i:i + k], outs[i:i + k]) for i in range(0, len(cfgs), k)]
    with mp.get_context("spawn").Pool(concurrency) as pool:
        list(pool.imap_unordered(_train_group, jobs))
    return {p: _curve(Path(o)) for p, o in zip(points, outs)}


def read_grid(run_dir: Path) -> dict:
    """A finished grid sweep: {(params...): {step: val_loss}} from its trials' metrics.csv."""
    from windtunnel.analysis.runs import read_results
    df = read_results(run_dir)
    keys = [c for c in df.columns if c.startswith(("train.", "model.", "data."))]
    return {tuple(row[k] for k in keys): _curve(run_dir / "trials" / row["trial_id"]) for _, row in df.iterrows()}


def _curve(trial_dir: Path) -> dict[int, float]:
    import pandas as pd
    m = pd.read_csv(trial_dir / "metrics.csv")
    m = m[m["val_loss"].notna()]
    return {int(s): float(v) for s, v in zip(m["step"], m["val_loss"])}


class Replay:
    """Grid curves as a black box: `final(p)` and `value_at(p, step)`; inf for a diverged trial."""

    def __init__(self, curves: dict, steps: int):
        self.curves, self.steps = curves, steps
        finals = [self.final(p) for p in curves]
        self.best = min(finals)
        self.target = self.best * 1.005
        self.grid_cost = steps * len(curves)
        self.good = sum(f <= self.target for f in finals)

    def final(self, p) -> float:
        c = self.curves[p]
        return c.get(self.steps, math.inf)

    def value_at(self, p, step: int) -> float:
        c = self.curves[p]
        later = [s for s in c if s >= step]
        return c[min(later)] if later else math.inf

    def ran(self, p) -> int:
        """Steps a diverged trial ran before it stopped (its last logged evaluation)."""
        return max(self.curves[p], default=self.steps)


def search(replay: Replay, method: str, seed: int, *, rungs_args: dict, cap: int) -> float:
    """Fraction of the grid's compute `method` spends before a finished trial is within 0.5 %."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from windtunnel.sweep.rungs import RungFile

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    points = list(replay.curves)
    axes = [sorted({p[i] for p in points}) for i in range(len(points[0]))]
    # each swept key as a log-uniform range over its grid values (how a TPE spec would write it);
    # a proposal trains the nearest grid point
    space = {f"x{i}": FloatDistribution(min(a), max(a), log=True) for i, a in enumerate(axes)}
    order = iter(random.Random(seed).sample(range(len(points)), len(points)))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    cost = 0
    with tempfile.TemporaryDirectory() as tmp:
        rungs = RungFile(Path(tmp) / "asha.json", **rungs_args) if method == "tpe+asha" else None
        for n in range(cap):
            if method == "random":
                p = points[next(order, None)] if n < len(points) else None
                if p is None:
                    break
                cost, done = cost + min(replay.ran(p), replay.steps), replay.final(p)
            else:
                trial = study.ask(space)
                p = tuple(min(a, key=lambda v, x=trial.params[f"x{i}"]: abs(math.log(v / x)))
                          for i, a in enumerate(axes))
                stopped = _asha(replay, p, trial, rungs, f"n{n}") if rungs else None
                if stopped is not None:
                    cost += stopped
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                cost, done = cost + min(replay.ran(p), replay.steps), replay.final(p)
                study.tell(trial, done if math.isfinite(done) else 1e9)
            if done <= replay.target:
                return cost / replay.grid_cost
    return math.nan  # not found within the cap


def _asha(replay: Replay, p, trial, rungs, tid: str) -> int | None:
    """Steps run when ASHA stops the trial at a rung, else None (it runs to the end)."""
    for milestone in sorted(rungs.milestones):
        if milestone >= replay.steps:
            break
        value = replay.value_at(p, milestone)
        if not math.isfinite(value):
            return min(replay.ran(p), milestone)
        trial.report(value, milestone)
        if rungs.should_stop(tid, step=milestone, value=value):
            return milestone
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", type=Path, help="a finished grid sweep folder to replay")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--fuse", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--grace-period", type=int, default=None, help="first ASHA rung (default steps / 9)")
    ap.add_argument("--reduction-factor", type=float, default=3.0)
    args = ap.parse_args()
    from windtunnel.sweep.rungs import milestones
    if args.source is not None:
        from windtunnel.sweep.run import read_spec
        curves = read_grid(args.source)
        steps = max(max(c) for c in curves.values() if c)
        print(f"grid: {len(curves)} trials read from {args.source} ({read_spec(args.source).name})")
    else:
        steps = args.steps
        with tempfile.TemporaryDirectory(prefix="wt-search-") as tmp:
            curves = run_grid(Path(tmp), steps=steps, eval_every=args.eval_every, k=args.fuse,
                              concurrency=args.concurrency)
        print(f"grid: {len(LRS)} lr x {len(STDS)} init_std = {len(curves)} trials x {steps} steps (xs proxy, "
              f"batch 8 x 64), trained fused K={args.fuse}")
    replay = Replay(curves, steps)
    grace = args.grace_period or max(1, steps // 9)
    rungs_args = {"grace_period": grace, "reduction_factor": args.reduction_factor, "max_t": steps}
    print(f"best grid loss {replay.best:.4f}; within 0.5 %: {replay.good} of {len(curves)} trials; "
          f"ASHA rungs at {sorted(milestones(**rungs_args))}")
    for method in ("random", "tpe", "tpe+asha"):
        fracs = [search(replay, method, seed, rungs_args=rungs_args, cap=3 * len(curves)) for seed in range(args.seeds)]
        found = [f for f in fracs if math.isfinite(f)]
        spread = statistics.stdev(found) if len(found) > 1 else 0.0
        print(f"{method:9s}: {statistics.mean(found):.1%} of the grid's compute (sd {spread:.1%}, "
              f"min {min(found):.1%}, max {max(found):.1%}) over {len(found)}/{len(fracs)} seeds "
              f"that found it within {3 * len(curves)} trials" + (" (goal <= 25 %)" if method == "tpe+asha" else ""),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
