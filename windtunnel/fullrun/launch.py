"""Launch a written full-run config with the shared training loop: in this process on one device, or
through torchrun (one process per GPU, several nodes, restarts into `--resume`).

Example:
    >>> launch("runs/1.2b.yaml", run_dir="runs/1.2b", nproc=8)     # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from ..config import RunConfig, load_config
from ..errors import WindtunnelError
from ..formatting import fmt_bytes
from ..model.accounting import count_params, memory_per_gpu
from ..run_folder import read_summary, summary_path
from ..training.distributed import torchrun_command
from ..training.trackers import check_trackers, resolve_track

__all__ = ["launch", "check_launchable"]


def launch(config: str | os.PathLike, *, run_dir: str | os.PathLike, nproc: int = 1, resume: bool = False,
           progress: bool = True, nnodes: int = 1, rdzv_endpoint: str | None = None,
           max_restarts: int = 0) -> dict[str, Any]:
    """Train a written run config with the shared loop and return its summary: in this process on one
    device; through torchrun (one process per GPU, `train.parallel` DDP or FSDP) when `nproc` > 1,
    `nnodes` > 1 or `max_restarts` > 0. With `max_restarts`, torchrun restarts the processes after a
    failure and they resume from the newest complete checkpoint. On several nodes, run the same
    call on each, with one node's `host:port` as `rdzv_endpoint`; the summary is read on the node
    that holds rank 0 (elsewhere, this returns {"status": "ok", "node": "worker"} when torchrun did).

    Example:
        >>> summary = launch("runs/cpu.yaml", run_dir="runs/cpu")
        >>> summary["status"]
        'ok'
    """
    cfg = load_config(config)
    check_launchable(cfg, nproc=nproc)
    if nproc == 1 and nnodes == 1 and not max_restarts:
        from ..training.loop import train
        return train(cfg, out_dir=run_dir, progress=progress, resume=resume)  # trackers: cfg.train.track
    written = summary_path(run_dir)
    started = time.time()
    command = torchrun_command(config, out=run_dir, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                               max_restarts=max_restarts, train_args=["--resume"] if resume else [])
    code = subprocess.run(command, check=False).returncode
    if nnodes > 1 and code == 0 and not written.is_file():
        return {"status": "ok", "node": "worker"}
    if not written.is_file() or written.stat().st_mtime < started:
        raise WindtunnelError(f"torchrun exited with status {code} without writing {written}; "
                              "see its output above")
    return read_summary(run_dir, missing_ok=False)


def check_launchable(cfg: RunConfig, *, nproc: int = 1) -> None:
    """Refuse a launch this machine cannot run: CUDA asked for and absent, too few GPUs, or a CPU
    run whose estimated memory exceeds the machine's; also a tracker (`train.track`) that is not
    installed or an MLflow server that does not answer.

    Example:
        >>> check_launchable(load_config("runs/1.2b.yaml"))   # on a machine without CUDA
        WindtunnelError: runs/1.2b.yaml: train.device is cuda but this machine has no CUDA device; ...
    """
    check_trackers(resolve_track(cfg.train.track), source=cfg.source)
    import torch
    has_cuda = torch.cuda.is_available()
    if cfg.train.device == "cuda" and not has_cuda:
        size = count_params(cfg.model).total / 1e9
        raise WindtunnelError(f"{cfg.source}: train.device is cuda but this machine has no CUDA device; "
                              f"not launching a {size:.2f}B-parameter run on CPU. Write the config without "
                              "--launch (or use --dry-run) and launch it on a GPU machine")
    on_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and has_cuda)
    if on_cuda and nproc > torch.cuda.device_count():
        raise WindtunnelError(f"--nproc {nproc} but only {torch.cuda.device_count()} CUDA devices are visible "
                              "on this node (--nproc counts processes per node)")
    if not on_cuda:
        need = memory_per_gpu(cfg).total * nproc
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if need > 0.8 * ram:
            raise WindtunnelError(f"{cfg.source}: no GPU here, and the run needs ~{fmt_bytes(need, digits=2)}, more "
                                  f"than this machine's {fmt_bytes(ram, digits=2)}; launch it on a GPU machine")
