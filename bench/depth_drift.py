"""Depth drift of the optimal lr per depth rule, from a depth-transfer sweep's run folder.

    windtunnel sweep sweeps/depth_transfer.yaml --out runs/depth_transfer
    python bench/depth_drift.py runs/depth_transfer

Per `model.depth_scaling` and depth, the optimum is `transfer_check.fit_optimum`'s parabola vertex
in log2(lr) (seeds averaged first); the drift is max - min of log2 optimum over the depths that name
one, and the slope is its least-squares shift per doubling of depth. Until `windtunnel check transfer`
judges any swept shape key, this prints the depth figures; it judges nothing itself.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from windtunnel.analysis.runs import LR_KEY, best_over, load_run
from windtunnel.analysis.transfer_check import fit_optimum
from windtunnel.errors import WindtunnelError

DEPTH_KEY, RULE_KEY = "model.n_layers", "model.depth_scaling"


def depth_drift(run_dir: str) -> dict[str, dict]:
    """{rule: {"depths": [...], "log2_opt": [...], "best_loss": [...], "drift": x, "slope": y}}."""
    res = load_run(run_dir)
    for key in (DEPTH_KEY, RULE_KEY, LR_KEY):
        if key not in res.params:
            raise WindtunnelError(f"{res.run_dir}: a depth drift needs {key} swept; this run sweeps "
                                  f"{', '.join(res.params)}")
    curves = best_over(res, [RULE_KEY, DEPTH_KEY, LR_KEY])
    out = {}
    for rule, by_rule in curves.groupby(RULE_KEY, sort=False):
        depths, logs, losses, notes = [], [], [], []
        for depth, group in by_rule.groupby(DEPTH_KEY, sort=True):
            group = group.sort_values(LR_KEY)
            y = [v if s == "ok" else math.inf for v, s in zip(group["loss"], group["status"])]
            opt = fit_optimum(group[LR_KEY].astype(float).tolist(), y)
            depths.append(int(depth))
            logs.append(opt.log2_lr)
            losses.append(opt.best_loss)
            notes.append(opt.note or opt.method)
        named = [(d, v) for d, v in zip(depths, logs) if v is not None]
        drift = max(v for _, v in named) - min(v for _, v in named) if len(named) >= 2 else None
        slope = (float(np.polyfit(np.log2([d for d, _ in named]), [v for _, v in named], 1)[0])
                 if len(named) >= 2 else None)
        out[str(rule)] = {"depths": depths, "log2_opt": logs, "best_loss": losses, "notes": notes,
                          "drift": drift, "slope": slope}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder of sweeps/depth_transfer.yaml")
    args = parser.parse_args()
    try:
        result = depth_drift(args.run)
    except WindtunnelError as e:
        print(f"depth_drift: error: {e}", file=sys.stderr)
        return 2
    for rule, r in result.items():
        print(f"{rule}:")
        for d, v, loss, note in zip(r["depths"], r["log2_opt"], r["best_loss"], r["notes"]):
            opt = f"2^{v:.2f}" if v is not None else "-"
            best = f"{loss:.4f}" if loss is not None else "-"
            print(f"  {d:>3} layers  optimum lr {opt:>8}  best loss {best}  ({note})")
        drift = f"{r['drift']:.2f}" if r["drift"] is not None else "n/a"
        slope = f"{r['slope']:+.2f}" if r["slope"] is not None else "n/a"
        print(f"  drift {drift} log2 units over depths {r['depths'][0]}-{r['depths'][-1]} "
              f"(per doubling of depth {slope})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
