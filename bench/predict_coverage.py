"""Does `predict`'s interval cover the truth? Holdout predictions on simulated ladders with a known law.

Each replicate draws a ladder with the CPU ladder's design (non-embedding N of widths 64..512 at d_head
16, 2 layers; D of 50..200 steps x 2048 tokens), losses from a known law L = E + A N^-α + B D^-β times
log-normal noise of `--noise` (one run's seed scatter), fits widths 64..256 with the same bootstrap
`windtunnel predict` uses, and predicts width 512 at every budget. Printed: the share of held-out
points inside their interval (the target is the nominal level) and the mean |error|, against the
noise-free truth and against the noisy "measurement" the real check compares with.

    PYTHONPATH=$PWD python bench/predict_coverage.py --replicates 40 --reps 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from windtunnel.fullrun.scaling_fit import bootstrap, loss_law  # noqa: E402

LAW = {"E": 1.2, "A": 0.5, "alpha": 0.45, "B": 0.8, "beta": 0.35, "n0": 1e6, "d0": 2e5}
WIDTHS = (64, 128, 256, 512)
STEPS = (50, 75, 100, 150, 200)


def n_params(width: int, layers: int = 2, ffn_mult: float = 2.5) -> float:
    """Non-embedding parameters of the CPU ladder's shape: attention 4 d^2 (q, k, v, out; plain multi-head),
    SwiGLU 3 d x ffn_mult d, per layer (the norms' gains are negligible)."""
    return layers * (4 * width * width + 3 * width * int(ffn_mult * width))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicates", type=int, default=40)
    p.add_argument("--reps", type=int, default=100, help="bootstrap refits per replicate")
    p.add_argument("--noise", type=float, default=0.005, help="sd of log L per run")
    p.add_argument("--level", type=float, default=0.95)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    n = np.repeat([n_params(w) for w in WIDTHS], len(STEPS))
    d = np.tile([s * 2048.0 for s in STEPS], len(WIDTHS))
    truth = loss_law(n, d, **LAW)
    fit_on, held = n < n.max(), n == n.max()
    inside_truth, inside_meas, errors = [], [], []
    for r in range(args.replicates):
        loss = truth * np.exp(rng.normal(0, args.noise, len(truth)))
        boot = bootstrap(n[fit_on], d[fit_on], loss[fit_on], groups=n[fit_on], reps=args.reps, seed=r)
        for i in np.flatnonzero(held):
            point, low, high = boot.predict(n[i], d[i], level=args.level, noise=True)
            errors.append(point - truth[i])
            inside_truth.append(low <= truth[i] <= high)
            inside_meas.append(low <= loss[i] <= high)
    errors = np.abs(errors)
    print(f"{args.replicates} simulated ladders x {held.sum()} held-out points, noise sd {args.noise} in log L, "
          f"{args.reps} refits each:")
    print(f"  interval ({args.level:.0%}) covers the measured point {np.mean(inside_meas):.0%}, the noise-free "
          f"truth {np.mean(inside_truth):.0%}; |error| vs truth mean {errors.mean():.4f}, 95th pct "
          f"{np.quantile(errors, 0.95):.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
