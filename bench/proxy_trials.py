"""Shared by the benches that train many small proxies directly (no sweep engine): one trial through
`windtunnel.training.loop.train`, a process pool running a list of trials (one torch thread each), and
the run folder in the sweep's results format so `windtunnel check transfer` and `windtunnel plot` read it.

A trial is a dict: `trial_id`, `train.seed` and any dotted config keys, e.g.

    >>> t = {"trial_id": "mup_w64_s0", "model.d_model": 64, "train.lr": 2**-7, "train.seed": 0}
    >>> rows = run_trials("proxies/xs.yaml", base_overrides(150), [t], out=Path("runs/x"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from windtunnel.fileio import atomic_write  # noqa: E402 - after the path line above


def base_overrides(steps: int, *, batch_size: int = 8, seq_len: int = 64, eval_batches: int = 16) -> list[str]:
    """The `--set` lines every trial of a bench shares: budget, one eval at the end, one thread."""
    return [f"train.steps={steps}", f"train.batch_size={batch_size}", f"train.seq_len={seq_len}",
            f"train.warmup_steps={max(1, steps // 10)}", f"train.eval_every={steps}",
            f"train.eval_batches={eval_batches}", "train.log_every=10", "train.threads=1"]


def trial_keys(trial: dict) -> dict:
    """The dotted config keys of a trial (its id and seed taken out)."""
    return {k: v for k, v in trial.items() if k not in ("trial_id", "train.seed")}


def run_trial(config: str, base: list[str], trial: dict, out_dir: str) -> dict:
    """One proxy through the shared training loop; a crash is recorded as status `error`."""
    import torch
    torch.set_num_threads(1)
    from windtunnel.config import load_config
    from windtunnel.training.loop import train

    keys = trial_keys(trial)
    base = base + [f"train.seed={trial['train.seed']}"]
    cfg = load_config(config, overrides=base + [f"{k}={v}" for k, v in keys.items()])
    try:
        s = train(cfg, out_dir=out_dir)
        status, loss, tokens, seconds = s["status"], s["val_loss"], s["tokens"], s["seconds"]
    except Exception as e:  # noqa: BLE001 - the bench reports every trial, broken ones included
        print(f"{trial['trial_id']}: {type(e).__name__}: {e}", file=sys.stderr)
        status, loss, tokens, seconds = "error", math.inf, 0, 0.0
    return {"trial_id": trial["trial_id"], "status": status, "val_loss": loss, "tokens": tokens,
            "seconds": seconds, "seed": cfg.train.seed, **keys}


def prepare_data(config: str, base: list[str]) -> None:
    """Prepare the config's corpus once in this process, so the workers do not race to write it."""
    from windtunnel.config import load_config
    from windtunnel.data.mixture import load_run_data
    load_run_data(load_config(config, overrides=base))


def run_trials(config: str, base: list[str], trials: list[dict], *, out: Path, workers: int = 2,
               checkpoint: Callable[[list[dict]], None] | None = None, label: str = "") -> list[dict]:
    """Every trial in a pool of `workers` processes, progress printed per trial; `checkpoint(rows)` is
    called every 8 trials so a killed bench still leaves what it ran. Returns the rows in finishing order."""
    started = time.perf_counter()
    rows: list[dict] = []
    if not trials:
        return rows
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_trial, config, base, t, str(out / "trials" / t["trial_id"])) for t in trials]
        for i, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            print(f"{label}[{i}/{len(trials)} {time.perf_counter() - started:6.0f}s] {row['trial_id']:<30} "
                  f"{row['status']:<8} val_loss {row['val_loss']:.4f} ({row['seconds']:.0f}s)", flush=True)
            if checkpoint is not None and i % 8 == 0:
                checkpoint(rows)
    return rows


def write_results(out: Path, rows: list[dict], spec: dict, *, sort_keys: list[str]) -> None:
    """results.parquet/.csv and spec.yaml in the sweep engine's format, each written atomically."""
    import pandas as pd

    frame = pd.DataFrame(sorted(rows, key=lambda r: tuple(_sortable(r.get(k)) for k in sort_keys)))
    out.mkdir(parents=True, exist_ok=True)
    for name, write in (("results.parquet", lambda p: frame.to_parquet(p, index=False)),
                        ("results.csv", lambda p: frame.to_csv(p, index=False)),
                        ("spec.yaml", lambda p: Path(p).write_text(yaml.safe_dump(spec, sort_keys=False)))):
        atomic_write(out / name, write)


def _sortable(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def ints(text: str) -> list[int]:
    """`64,128` -> [64, 128] (argparse type)."""
    return [int(x) for x in text.split(",") if x.strip()]
