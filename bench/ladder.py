"""The prediction ladder: widths x token budgets x seeds for `windtunnel predict`, built with WSD decay branches.

A sweep trains every trial from step 0; a scaling-law ladder wants several token budgets per width, and
WSD gives them almost for free (MiniCPM): one stable trunk per (width, seed) runs the longest budget,
keeping a checkpoint at the start of each shorter budget's decay, and each shorter budget is a decay
branch off that checkpoint (`train --decay-from`). Every budget decays over its last `--decay-fraction`
(so a branch is the run that budget would have been alone), for the trunk's cost plus the branches'
decays: budgets 50..200 steps cost 275 steps per (width, seed) instead of 575.

Width grows by heads at a fixed d_head (`model.head_dim`), the direction the 1.2B grows in; the base
shapes are made in memory. The HPs are the config's (the carried ones); `--set` changes any.
The folder is written in the sweep's results format (one row per width x budget x seed, `train.steps`
the budget), so `windtunnel predict`, `windtunnel results` and `windtunnel plot` read it. A row's
`seconds` are the trunk's seconds up to the branch point plus the branch's (the budget's cost as if it
had run alone); `wall_s` in trials/<id>/ladder.json is what the ladder itself spent on that row.

    PYTHONPATH=$PWD python bench/ladder.py --set model.init_std=0.1 --set train.lr=0.0078125 --out runs/ladder
    # ~60 min on a 2-core machine shared with other jobs (the width-512 trunk is most of it)
    PYTHONPATH=$PWD python bench/ladder.py --widths 32,64 --budgets 20,40 --out /tmp/ladder   # seconds
    windtunnel predict runs/ladder --holdout largest --min-tokens 2e5
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import yaml  # noqa: E402

from windtunnel.fileio import atomic_write  # noqa: E402 - after the path line above
from windtunnel.sweep.results import ResultsTable  # noqa: E402

LADDER_SET = ["model.head_dim=16", "model.n_kv_heads=null", "model.base_shapes=null", "model.dim_model_base=64",
              "train.warmup_steps=10"]
"""For the CPU proxy (proxies/xs.yaml) only: width by heads at d_head 16 (the target's direction), shapes in
memory, a short warmup for short budgets. Another --config (e.g. `windtunnel plan`'s proxy.yaml) is used as written."""
DEFAULT_CONFIG = ROOT / "proxies" / "xs.yaml"
PARAMS = ["model.d_model", "train.steps"]


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    jobs = [(w, s) for w in sorted(args.widths, reverse=True)
            for s in (args.seeds if w == max(args.widths) else args.seeds + args.extra_seeds)]
    table = ResultsTable(out, param_keys=PARAMS)
    shape = LADDER_SET if Path(args.config).resolve() == DEFAULT_CONFIG else []  # another config: as written
    base = shape + [f"train.decay_fraction={args.decay_fraction}"] + args.overrides
    write_spec(out, args, base)
    started = time.perf_counter()
    print(f"ladder: {len(jobs)} trunks x {len(args.budgets)} budgets, {args.workers} workers -> {out}", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_width, args.config, base, w, s, args.budgets, args.decay_fraction,
                               str(out)) for w, s in jobs]
        for future in as_completed(futures):
            for row in future.result():
                table.add(row)
                print(f"  width {row['model.d_model']:>4} seed {row['seed']} {row['train.steps']:>5} steps: "
                      f"val_loss {row['val_loss']:.4f} ({row['status']}, {row['seconds']:.0f} s)", flush=True)
            table.write()
    print(f"ladder done in {(time.perf_counter() - started) / 60:.1f} min (machine shared with other jobs)")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--widths", type=_ints, default=[64, 128, 256, 512])
    p.add_argument("--budgets", type=_ints, default=[50, 75, 100, 150, 200],
                   help="token budgets in optimizer steps; the largest is the trunk")
    p.add_argument("--decay-fraction", type=float, default=0.2)
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds of every width")
    p.add_argument("--extra-seeds", type=_ints, default=[1],
                   help="more seeds for all but the largest width (a second worker's otherwise idle time)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.budgets = sorted(set(args.budgets))
    starts = [branch_start(b, args.decay_fraction) for b in args.budgets]
    if any(s < 1 for s in starts):
        p.error(f"--budgets {args.budgets}: every budget needs a stable phase before its decay")
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def branch_start(budget: int, decay_fraction: float) -> int:
    """The step a budget's decay starts at (the trunk's checkpoint it branches from)."""
    return budget - round(decay_fraction * budget)


def run_width(config: str, base: list[str], width: int, seed: int, budgets: list[int], decay_fraction: float,
              out: str) -> list[dict]:
    """One (width, seed): the trunk (the largest budget) with checkpoints at every branch point, then a
    decay branch per shorter budget; checkpoints are removed once the branches have run."""
    import torch
    torch.set_num_threads(1)
    from windtunnel.config import load_config
    from windtunnel.training.loop import train

    trunk_steps = max(budgets)
    starts = {b: branch_start(b, decay_fraction) for b in budgets if b != trunk_steps}
    every = math.gcd(*starts.values()) if starts else 0
    common = base + [f"model.d_model={width}", f"train.seed={seed}", f"train.steps={trunk_steps}",
                     f"train.eval_every={trunk_steps}"]
    trunk_id = f"w{width}_s{seed}_d{trunk_steps}"
    trunk_dir = Path(out) / "trials" / trunk_id
    cfg = load_config(config, overrides=common + [f"train.checkpoint_every={every}",
                                                  "train.keep_checkpoints=0"])  # keep all
    rows = [_row(trunk_id, width, seed, trunk_steps, trunk_dir, lambda: train(cfg, out_dir=trunk_dir))]
    for budget, start in sorted(starts.items()):
        branch_id = f"w{width}_s{seed}_d{budget}"
        branch_dir = Path(out) / "trials" / branch_id
        ckpt = next(iter(sorted((trunk_dir / "checkpoints").glob(f"step_{start:08d}*"))), None)
        decay = budget - start
        bcfg = load_config(config, overrides=common + [f"train.decay_steps={decay}", "train.checkpoint_every=0"])
        rows.append(_row(branch_id, width, seed, budget, branch_dir,
                         lambda: train(bcfg, out_dir=branch_dir, decay_from=ckpt)))
    shutil.rmtree(trunk_dir / "checkpoints", ignore_errors=True)
    return rows


def _row(trial_id: str, width: int, seed: int, budget: int, trial_dir: Path, fn) -> dict:
    """Run one budget; a crash is recorded as status `error` (the ladder reports every row)."""
    started = time.perf_counter()
    try:
        s = fn()
    except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
        print(f"{trial_id}: {type(e).__name__}: {e}", file=sys.stderr)
        s = {"status": "error", "val_loss": math.nan, "tokens": 0, "seconds": 0.0, "message": str(e)[:200]}
    wall = time.perf_counter() - started
    trial_dir.mkdir(parents=True, exist_ok=True)
    ident = {"trial_id": trial_id, "seed": seed, "params": {"model.d_model": width, "train.steps": budget}}
    atomic_write(trial_dir / "trial.json", lambda p: Path(p).write_text(json.dumps(ident)))
    atomic_write(trial_dir / "ladder.json", lambda p: Path(p).write_text(json.dumps({"wall_s": round(wall, 2)})))
    return {"trial_id": trial_id, "seed": seed, "model.d_model": width, "train.steps": budget,
            "status": s["status"], "val_loss": float(s["val_loss"]), "tokens": s.get("tokens"),
            "seconds": s.get("seconds"), "steps": s.get("steps"), "train_loss": s.get("train_loss"),
            "n_params": s.get("params"), "flops_per_token": s.get("flops_per_token"),
            "message": s.get("message") or ""}


def write_spec(out: Path, args, base: list[str]) -> None:
    spec = {"name": out.name, "description": "prediction ladder: width x token budget (WSD decay branches)",
            "base": str(args.config), "set": dict(o.split("=", 1) for o in base), "method": "grid",
            "seeds": sorted(set(args.seeds + args.extra_seeds)), "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {"model.d_model": {"values": args.widths}, "train.steps": {"values": args.budgets}}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "spec.yaml", lambda p: Path(p).write_text(yaml.safe_dump(spec, sort_keys=False)))


if __name__ == "__main__":
    sys.exit(main())
