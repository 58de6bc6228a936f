"""Depth drift of the optimal lr per depth rule, from depth-transfer sweep run folders.

    windtunnel sweep sweeps/depth_transfer.yaml --out runs/depth_transfer
    python bench/depth_drift.py runs/depth_transfer [more run folders of the same design]

Per `model.depth_scaling` and depth, the optimum is `mutransfer_check.fit_optimum`'s parabola vertex
in log2(lr) (seeds averaged first); the drift is max - min of log2 optimum over the depths that name
one, and the slope is its least-squares shift per doubling of depth. Several folders (a sweep cut in
parts) are read as one table; a rule or depth fixed in a folder's `set:` is taken from there. At
n_layers == n_layers_base both rules build the same model, so a rule missing that depth borrows the
other's trials (said in the output). Until `windtunnel check transfer` judges any swept shape key,
this prints the depth figures; it judges nothing itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import numpy as np

from windtunnel.analysis.mutransfer_check import fit_optimum
from windtunnel.analysis.runs import LR_KEY, best_over, load_run
from windtunnel.errors import WindtunnelError

DEPTH_KEY, RULE_KEY, BASE_KEY = "model.n_layers", "model.depth_scaling", "model.n_layers_base"


def read_runs(run_dirs: list[str]):
    """The runs' trials as one `RunResults` swept over rule, depth and lr, plus the base depth."""
    import pandas as pd
    frames, bases, first = [], set(), None
    for run_dir in run_dirs:
        res = load_run(run_dir)
        first = first or res
        fixed = res.spec.get("set") or {}
        frame = res.frame.copy()
        for key in (RULE_KEY, DEPTH_KEY):
            if key not in frame.columns:
                if key not in fixed:
                    raise WindtunnelError(f"{res.run_dir}: {key} is neither swept nor set")
                frame[key] = fixed[key]
        if LR_KEY not in res.params:
            raise WindtunnelError(f"{res.run_dir}: a depth drift needs {LR_KEY} swept")
        bases.add(int(fixed.get(BASE_KEY, 2)))
        frames.append(frame)
    if len(bases) != 1:
        raise WindtunnelError(f"the runs disagree on {BASE_KEY}: {sorted(bases)}")
    frame = pd.concat(frames, ignore_index=True)
    return dataclasses.replace(first, frame=frame, params=[RULE_KEY, DEPTH_KEY, LR_KEY]), bases.pop()


def depth_drift(run_dirs: list[str]) -> dict[str, dict]:
    """{rule: {"depths": [...], "log2_opt": [...], "best_loss": [...], "drift": x, "slope": y}}."""
    import pandas as pd
    res, base = read_runs(run_dirs)
    curves = best_over(res, [RULE_KEY, DEPTH_KEY, LR_KEY])
    rules = sorted(curves[RULE_KEY].unique(), key=lambda r: r != "sqrt")
    out = {}
    for rule in rules:
        by_rule, borrowed = curves[curves[RULE_KEY] == rule], ""
        if base not in set(by_rule[DEPTH_KEY]):
            other = curves[(curves[RULE_KEY] != rule) & (curves[DEPTH_KEY] == base)]
            by_rule = pd.concat([by_rule, other], ignore_index=True)
            borrowed = f" (depth {base} from {other[RULE_KEY].iloc[0]}: the same model)" if len(other) else ""
        out[str(rule)] = _rule_curve(by_rule, borrowed)
    return out


def _rule_curve(by_rule, borrowed: str) -> dict:
    depths, logs, losses, notes = [], [], [], []
    for depth, group in by_rule.groupby(DEPTH_KEY, sort=True):
        group = group.sort_values(LR_KEY)
        y = [v if s == "ok" else math.inf for v, s in zip(group["loss"], group["status"])]
        opt = fit_optimum(group[LR_KEY].astype(float).tolist(), y)
        depths.append(int(depth))
        logs.append(opt.log2_lr)
        losses.append(opt.best_loss)
        notes.append(f"{opt.note or opt.method}, {len(group)} lrs")
    named = [(d, v) for d, v in zip(depths, logs) if v is not None]
    drift = max(v for _, v in named) - min(v for _, v in named) if len(named) >= 2 else None
    slope = (float(np.polyfit(np.log2([d for d, _ in named]), [v for _, v in named], 1)[0])
             if len(named) >= 2 else None)
    return {"depths": depths, "log2_opt": logs, "best_loss": losses, "notes": notes, "drift": drift,
            "slope": slope, "borrowed": borrowed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folder(s) of sweeps/depth_transfer.yaml")
    args = parser.parse_args()
    try:
        result = depth_drift(args.runs)
    except WindtunnelError as e:
        print(f"depth_drift: error: {e}", file=sys.stderr)
        return 2
    for rule, r in result.items():
        print(f"{rule}:{r['borrowed']}")
        for d, v, loss, note in zip(r["depths"], r["log2_opt"], r["best_loss"], r["notes"]):
            opt = f"2^{v:.2f}" if v is not None else "-"
            best = f"{loss:.4f}" if loss is not None else "-"
            print(f"  {d:>3} layers  optimum lr {opt:>8}  best loss {best}  ({note})")
        drift = f"{r['drift']:.2f}" if r["drift"] is not None else "n/a"
        slope = f"{r['slope']:+.2f}" if r["slope"] is not None else "n/a"
        named = [d for d, v in zip(r["depths"], r["log2_opt"]) if v is not None]
        print(f"  drift {drift} log2 units over depths {', '.join(map(str, named))} (those naming an optimum; "
              f"per doubling of depth {slope})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
