"""Why does μP's best loss stay flat with width? A grid over settings x lr x seeds at given widths,
with the lr re-tuned per setting, so each setting is judged at its own optimum.

Each `--grid KEY=V1,V2` adds an axis (their product are the settings); every setting is trained at
every width and lr (`--lrs`, log2) and seed. Printed per (width, setting): the best lr by the mean over
seeds and that mean with a 95 % t interval over seeds. Raw rows in OUT/results.csv (sweep format).

    # which init matters: hidden x embedding init at the base width, one seed, lr re-tuned
    PYTHONPATH=$PWD python bench/init_diagnosis.py --out /work/runs/i20/base --widths 64 \\
        --grid model.hidden_init_std=0.05,0.1,0.2,0.4 --grid model.emb_init_std=0.05,0.2,1.0 --lrs=-9,-8,-7,-6,-5
    # the SP control at the same widths
    PYTHONPATH=$PWD python bench/init_diagnosis.py --out /work/runs/i20/sp --widths 64,512 \\
        --set model.parametrization=sp --grid model.init_std=0.02,0.05,0.1 --lrs=-11,-10,-9,-8,-7
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

from proxy_trials import ROOT, base_overrides, ints, prepare_data, run_trials, write_results


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    base = base_overrides(args.steps) + args.set
    trials = plan(args)
    prepare_data(args.config, base)
    print(f"{len(trials)} trials: widths {args.widths}, {len(settings_of(args))} settings, "
          f"lr 2^{min(args.lrs)}..2^{max(args.lrs)}, seeds {args.seeds}, {args.steps} steps", flush=True)
    started = time.perf_counter()
    spec = {"name": out.name, "base": str(args.config), "set": dict(o.split("=", 1) for o in base),
            "method": "grid", "seeds": args.seeds, "metric": {"name": "val_loss", "goal": "minimize"}}
    keys = ["model.d_model", *[k for k, _ in args.grid], "train.lr", "seed"]
    rows = run_trials(args.config, base, trials, out=out, workers=args.workers,
                      checkpoint=lambda r: write_results(out, r, spec, sort_keys=keys))
    write_results(out, rows, spec, sort_keys=keys)
    print(summary(rows, [k for k, _ in args.grid]))
    print(f"{len(rows)} trials in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "proxies" / "xs.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--widths", type=ints, default=[64, 512])
    p.add_argument("--grid", action="append", default=[], type=_axis, help="KEY=V1,V2 (repeat for more axes)")
    p.add_argument("--lrs", type=ints, default=[-9, -8, -7, -6, -5], help="log2 learning rates")
    p.add_argument("--seeds", type=ints, default=[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for every trial")
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def _axis(text: str) -> tuple[str, list]:
    key, _, values = text.partition("=")
    return key, [_number(v) for v in values.split(",")]


def _number(text: str):
    try:
        return float(text) if any(c in text for c in ".e") else int(text)
    except ValueError:
        return text


def settings_of(args) -> list[dict]:
    return [dict(zip([k for k, _ in args.grid], combo)) for combo in itertools.product(*[v for _, v in args.grid])]


def plan(args) -> list[dict]:
    """Every (width, setting, lr, seed), widest first so the workers finish together."""
    trials = []
    for w, setting, e, s in itertools.product(args.widths, settings_of(args), args.lrs, args.seeds):
        name = "_".join(f"{k.split('.')[-1]}{v}" for k, v in setting.items())
        trials.append({"trial_id": f"w{w}_{name}_lr2^{e}_s{s}".replace("__", "_"), "model.d_model": w,
                       **setting, "train.lr": 2.0**e, "train.seed": s})
    return sorted(trials, key=lambda t: (-t["model.d_model"], t["train.seed"]))


def summary(rows: list[dict], axes: list[str]) -> str:
    """Per width and setting: the best lr by mean over seeds, its mean loss and 95 % t interval."""
    import pandas as pd
    from scipy import stats

    frame = pd.DataFrame(rows)
    frame = frame[frame.status == "ok"]
    lines = []
    for (w, *setting), part in frame.groupby(["model.d_model", *axes], sort=True):
        means = part.groupby("train.lr").val_loss.agg(["mean", "count", "std"])
        lr = means["mean"].idxmin()
        best = part[part["train.lr"] == lr].val_loss
        half = (stats.t.ppf(0.975, len(best) - 1) * best.std(ddof=1) / math.sqrt(len(best))) if len(best) > 1 else 0
        edge = " (grid edge)" if lr in (means.index.min(), means.index.max()) else ""
        curve = " ".join(f"{m:.3f}" for m in means["mean"])
        lines.append(f"w{w:<5} {' '.join(f'{a.split(chr(46))[-1]}={v}' for a, v in zip(axes, setting)):<50} "
                     f"best lr 2^{math.log2(lr):.0f}{edge}: {best.mean():.4f} ± {half:.4f} (n={len(best)}) | {curve}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
