"""Proof of worth: the μP winner tuned at the smallest width and carried unchanged to wider models,
against SP tuned at every width, on the same token budget per trial.

Four arms, on the config's corpus (`data.path`; null: the embedded corpus):
1. μP search at the smallest width: TPE with ASHA through the sweep engine (`windtunnel.sweep.run_sweep`),
   over the Xmodel-2 space (scale_emb, dim_model_base, scale_depth, lr) plus the hidden-matrix and
   embedding init stds (`SEARCH_SPACE`), the config's own values tried first (`first_trials`);
2. μP carried: the search's winner, unchanged, at every width, `--seeds` seeds each;
3. SP tuned at each width: a grid of lr x hidden init std at every width (a sweep, seed 0), then
   the best point of each width again with the other seeds;
4. SP carried: SP's smallest-width winner at every width (what a user without μP would do).
The μP arm's compute is the search plus its carried runs; the SP arm's is its grid plus its seeds;
both in FLOPs (`windtunnel.model.accounting`, training tokens only) and in seconds (the trials' own).
Both sweeps use `budget.fuse: auto` (the product's default: fused groups on a GPU, one trial per
process on a CPU), so on a CPU every arm's trials run alike and their seconds compare.

Writes OUT/summary.json (per width and arm: mean loss, 95 % t interval over seeds, the HPs, FLOPs and
seconds) and OUT/mup_vs_sp.png (loss against width, one line per arm, seed bands), and prints each of
the goals: μP carried at the widest width within 0.005 nats of SP tuned there (difference interval's
upper bound <= 0.01); μP's loss falling at every doubling (the difference interval above 0); μP's
compute <= 25 % of SP's with 3 seeds per width in both arms, as the goal counts them (the trials of
seeds 0-2; the whole run's share, with all its seeds, is printed beside). Printed as measured, never
tuned. Bad input (a width that does not divide into heads, a corpus smaller than one trial's tokens) is
one line naming the key, exit 2, before training.

    PYTHONPATH=$PWD python bench/mup_vs_sp.py --config proxies/xs.yaml --out /work/runs/mup_vs_sp
    PYTHONPATH=$PWD python bench/mup_vs_sp.py --out /tmp/smoke --quick        # CI-sized (8 min on a busy box)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mup_vs_sp_report import goals, jsonable, plot, summarise
from proxy_trials import ROOT, base_overrides, ints, prepare_data, run_trials

SEARCH_SPACE = {
    "model.scale_emb": {"distribution": "uniform", "min": 2, "max": 20, "step": 1},
    "model.dim_model_base": {"values": [32, 64, 128, 256]},
    "model.scale_depth": {"distribution": "uniform", "min": 1, "max": 5, "step": 0.1},
    "train.lr": {"distribution": "log_uniform", "min": 2.0**-10, "max": 2.0**-4},
    "model.hidden_init_std": {"distribution": "log_uniform", "min": 0.02, "max": 0.5},
    "model.emb_init_std": {"distribution": "log_uniform", "min": 0.01, "max": 1.0},
}
"""The CPU twin of the Xmodel-2 search (sweeps/mup_space.yaml) at the smallest width."""
WINNER_KEYS = tuple(SEARCH_SPACE)

QUICK = {"widths": [32, 64], "steps": 20, "batch_size": 4, "seq_len": 32, "eval_batches": 2, "seeds": 2,
         "search_trials": 4, "fuse": 2, "sp_lrs": [-7, -6], "sp_inits": [0.1], "grace": 10,
         "set": ["data.embedded_bytes=400000"]}
FULL = {"widths": [64, 128, 256, 512], "steps": 200, "batch_size": 8, "seq_len": 64, "eval_batches": 16,
        "seeds": 5, "search_trials": 32, "fuse": "auto", "sp_lrs": list(range(-12, -6)), "sp_inits": [0.05, 0.1],
        "grace": 50, "set": []}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    base = base_overrides(args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                          eval_batches=args.eval_batches) + ["model.base_shapes=null"] + args.set
    try:
        check_inputs(args, base)
    except Exception as e:  # noqa: BLE001 - every bad input is one line, exit 2, before anything trains
        from windtunnel.errors import WindtunnelError
        if not isinstance(e, WindtunnelError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.report_only:
        return report(args, base, out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    w0 = args.widths[0]
    phases: dict[str, dict] = {}

    from windtunnel.sweep.ray_engine import init_ray
    init_ray()  # one Ray for both sweeps (each run_sweep reuses it)
    # the config's own values are TPE's first trial: the search can only end at or below the shipped defaults
    phases["mup_search"] = _sweep(args, out / "mup_search", base, method="tpe", parameters=SEARCH_SPACE,
                                  fixed={"model.d_model": w0, "model.parametrization": "mup"},
                                  num_trials=args.search_trials, asha=True, first_trials=[args.defaults])
    winner = {k: _plain(phases["mup_search"]["best"][k]) for k in WINNER_KEYS}
    print(f"muP winner at width {w0}: {winner}", flush=True)
    sp_fixed = {"model.parametrization": "sp", "model.emb_init_std": args.sp_emb_init}
    phases["sp_grid"] = _sweep(args, out / "sp_grid", base, method="grid", fixed=sp_fixed,
                               parameters={"model.d_model": {"values": args.widths},
                                           "train.lr": {"values": [2.0**e for e in args.sp_lrs]},
                                           "model.hidden_init_std": {"values": args.sp_inits}})
    sp_best = _best_per_width(phases["sp_grid"]["rows"], args.widths)
    print(f"SP grid winners: {sp_best}", flush=True)
    # the seeded runs of three arms share one process pool (two pool start-ups saved on a busy box);
    # their compute is split by arm from each trial's own seconds
    seeded = {
        "mup_carried": [{"trial_id": f"mup_carried_w{w}_s{s}", "model.parametrization": "mup", "model.d_model": w,
                         **winner, "train.seed": s} for w in args.widths for s in seeds],
        "sp_seeds": [{"trial_id": f"sp_tuned_w{w}_s{s}", **sp_fixed, "model.d_model": w, **sp_best[w],
                      "train.seed": s} for w in args.widths for s in seeds[1:]],
        "sp_carried": [{"trial_id": f"sp_carried_w{w}_s{s}", **sp_fixed, "model.d_model": w, **sp_best[w0],
                        "train.seed": s} for w in args.widths[1:] for s in seeds],
    }
    pool_started = time.perf_counter()
    trials = sorted((t for ts in seeded.values() for t in ts), key=lambda t: -t["model.d_model"])
    rows = run_trials(args.config, base, trials, out=out / "seeded", workers=args.workers, label="seeded ")
    for name, ts in seeded.items():
        ids = {t["trial_id"] for t in ts}
        phases[name] = {"rows": [r for r in rows if r["trial_id"] in ids], "wall_s": None}
    phases["seeded_pool"] = {"rows": [], "wall_s": time.perf_counter() - pool_started}
    minutes = (time.perf_counter() - started) / 60
    # every trial row first, so the figures can be redrawn (--report-only) without training again
    (out / "phases.json").write_text(json.dumps(jsonable({"phases": phases, "winner": winner, "minutes": minutes,
                                                          "sp_best": {str(w): v for w, v in sp_best.items()}})))
    return report(args, base, out)


def report(args, base: list[str], out: Path) -> int:
    """summary.json, the picture and the goals from OUT/phases.json."""
    saved = json.loads((out / "phases.json").read_text())
    sp_best = {int(w): v for w, v in saved["sp_best"].items()}
    args.sp_emb_init = saved["phases"]["sp_grid"]["rows"][0]["model.emb_init_std"]
    minutes = saved["minutes"]
    summary = summarise(args, base, saved["phases"], winner=saved["winner"], sp_best=sp_best, minutes=minutes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    plot(summary, out / "mup_vs_sp.png")
    print(goals(summary))
    print(f"wrote {out / 'summary.json'} and {out / 'mup_vs_sp.png'}; wall time {minutes:.1f} min")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "proxies" / "xs.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--widths", type=ints, help="widths, smallest first (default 64,128,256,512)")
    p.add_argument("--quick", action="store_true",
                   help="a CI-sized smoke of the same code (widths 32,64, 20 steps; Ray start-up dominates)")
    p.add_argument("--seeds", type=int, help="seeds per carried width and per SP best (default 5)")
    p.add_argument("--steps", type=int, help="optimizer steps per trial (default 200)")
    p.add_argument("--search-trials", type=int, help="TPE trials of the muP search (default 32)")
    p.add_argument("--sp-lrs", type=ints, help="SP's log2 lr grid at every width (default -12..-7)")
    p.add_argument("--sp-inits", type=lambda s: [float(x) for x in s.split(",")],
                   help="SP's hidden init std grid (default 0.05,0.1)")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for every trial of every arm")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="redraw summary.json and the picture from "
                   "OUT/phases.json (same widths and budget), training nothing")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if key == "set":
            args.set = value + args.set
        elif getattr(args, key, None) is None:
            setattr(args, key, value)
    args.widths = sorted(args.widths)
    return args


def check_inputs(args, base: list[str]) -> None:
    """Every width builds, and the corpus holds more tokens than one trial reads; else a WindtunnelError."""
    from windtunnel.config import load_config
    from windtunnel.data.mixture import load_run_data
    from windtunnel.errors import ConfigError

    if args.seeds < 2:
        raise ConfigError("--seeds", "--seeds", f"must be >= 2 (an interval over seeds needs two), got {args.seeds}")
    cfg = None
    for w in args.widths:
        try:
            cfg = load_config(args.config, overrides=base + [f"model.d_model={w}"])
        except ConfigError as e:
            raise ConfigError(args.config, f"--widths {w}", f"{e.key}: {e.message}") from None
    args.sp_emb_init = cfg.model.emb_std  # SP keeps the config's embedding init; the grid moves the hidden one
    m = cfg.model
    args.defaults = {"model.scale_emb": m.scale_emb, "model.dim_model_base": m.dim_model_base,
                     "model.scale_depth": m.scale_depth, "train.lr": cfg.train.lr,
                     "model.hidden_init_std": m.hidden_std, "model.emb_init_std": m.emb_std}
    for key, value in args.defaults.items():
        p = SEARCH_SPACE[key]
        if not (value in p["values"] if "values" in p else p["min"] <= value <= p["max"]):
            raise ConfigError(args.config, key, f"{value} lies outside the search space ({p}); the search "
                              "starts from the config's own values")
    prepare_data(args.config, base)
    data = load_run_data(cfg)
    need = cfg.train.steps * cfg.tokens_per_step
    if len(data.train) <= need:
        raise ConfigError(args.config, "data.path", f"the corpus {cfg.data.path or '(embedded)'} holds "
                          f"{len(data.train):,} training tokens, not more than the {need:,} one trial reads "
                          f"(train.steps x batch_size x seq_len): trials would repeat data; prepare more text "
                          "or lower --steps")
    val_need = cfg.train.eval_batches * cfg.train.batch_size * cfg.train.seq_len
    if len(data.val) < val_need:
        raise ConfigError(args.config, "data.path", f"the corpus's val split holds {len(data.val):,} tokens, "
                          f"fewer than the {val_need:,} one evaluation reads")


def _sweep(args, run_dir: Path, base: list[str], *, method: str, parameters: dict, fixed: dict,
           num_trials: int | None = None, asha: bool = False, first_trials: list[dict] | None = None) -> dict:
    """One phase through the sweep engine (ASHA when asked); its rows and wall seconds."""
    import yaml

    from windtunnel.sweep.run import run_sweep
    from windtunnel.sweep.spec import spec_from_dict
    sets = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in base)} | fixed  # typed, as YAML gives
    if asha:
        sets["train.eval_every"] = args.grace
    spec = {"name": run_dir.name, "base": str(Path(args.config).resolve()), "set": sets, "method": method,
            "metric": {"name": "val_loss", "goal": "minimize"}, "parameters": parameters, "seeds": [0],
            "search_seed": 0, "budget": {"num_trials": num_trials, "max_concurrent": args.workers, "fuse": args.fuse},
            "resources": {"cpu": 1, "gpu": 0}}
    if first_trials:
        spec["first_trials"] = first_trials
    if asha:
        spec["early_terminate"] = {"type": "asha", "grace_period": args.grace, "reduction_factor": 3}
    started = time.perf_counter()
    result = run_sweep(spec_from_dict(spec, source=f"{run_dir.name} spec"), out_dir=run_dir, plots=False)
    wall = time.perf_counter() - started
    if result.best is None:
        raise RuntimeError(f"{run_dir}: no trial finished (see its trials/*/summary.json)")
    rows = result.table.to_dict("records")
    for r in rows:
        r.update({k: v for k, v in fixed.items() if k not in r})
    return {"rows": rows, "wall_s": wall, "best": result.best}


def _best_per_width(rows: list[dict], widths: list[int]) -> dict[int, dict]:
    """SP's grid winner (lr, hidden init) at each width, by seed-0 loss."""
    best = {}
    for w in widths:
        ok = [r for r in rows if int(r["model.d_model"]) == w and r["status"] == "ok"]
        if not ok:
            raise RuntimeError(f"SP grid: no finished trial at width {w}")
        r = min(ok, key=lambda r: r["val_loss"])
        best[w] = {"train.lr": float(r["train.lr"]), "model.hidden_init_std": float(r["model.hidden_init_std"])}
    return best


def _plain(value):
    """numpy scalars to Python numbers (they go into --set lines and JSON)."""
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    sys.exit(main())
