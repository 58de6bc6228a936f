"""Step time alone: one fused step of K trials against K single steps, in one process, one thread.

    PYTHONPATH=$PWD nice -n 10 python bench/fused_step.py           # ~1 min on an idle core

No setup, evaluation or files are timed (`bench/fused_sweep.py` measures whole sweeps): only
`training.loop.train_step` on groups built by `training.loop.setup`, 10 steps per repeat, the singles
and the group interleaved, median of 3. ratio = K singles' time / the group's time (> 1: fusing wins).
It tells per-step overheads of the loop apart from the cost of the batched kernels themselves.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cfgs(width: int, k: int):
    from windtunnel.config import load_config
    common = [f"model.d_model={width}", "train.steps=100", "train.threads=1", "train.device=cpu", "train.track=[]"]
    return [load_config(ROOT / "proxies" / "xs.yaml", overrides=common + [f"train.lr={0.001 * 2 ** i}"])
            for i in range(k)]


def _steps(run, n: int, at: int) -> None:
    from windtunnel.training.loop import train_step
    for s in range(at, at + n):
        run.compute.set_lr([1.0] * len(run.active))
        train_step(run, s)


def main() -> int:
    import torch

    from windtunnel.training.distributed import DistContext
    from windtunnel.training.loop import setup
    from windtunnel.training.trackers import Tracking
    torch.set_num_threads(1)
    ctx = DistContext(device=torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="wt-step-") as tmp:
        for width in (64, 128):
            for k in (4, 8):
                cfgs, d = _cfgs(width, k), Path(tmp) / f"w{width}k{k}"
                group = setup(cfgs, [d / f"g{i}" for i in range(k)], ctx, tracking=[Tracking()] * k)
                singles = [setup([c], [d / f"s{i}"], ctx, tracking=[Tracking()]) for i, c in enumerate(cfgs)]
                _steps(group, 2, 0)
                for run in singles:
                    _steps(run, 2, 0)
                fused, alone = [], []
                for rep in range(3):
                    started = time.perf_counter()
                    for run in singles:
                        _steps(run, 10, 2 + 10 * rep)
                    alone.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    _steps(group, 10, 2 + 10 * rep)
                    fused.append(time.perf_counter() - started)
                ratios = [a / f for a, f in zip(alone, fused)]
                print(f"width {width} K={k}: {statistics.median(alone) * 100:.0f} ms/step for {k} singles, "
                      f"{statistics.median(fused) * 100:.0f} ms fused; ratio {statistics.median(ratios):.2f} "
                      f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
