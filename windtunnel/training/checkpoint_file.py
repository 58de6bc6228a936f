"""Resumable checkpoints: one file per step under `<run>/checkpoints/`, written atomically.

A checkpoint holds the model and optimizer states, the step (which is also the data position: a
`BatchSampler` batch is a pure function of seed and step), the RNG states, the run's scalar state
(first loss, seconds trained, where a branched decay starts) and the resolved config as YAML text.
Everything is a tensor or a plain Python value, so `torch.load(..., weights_only=True)` reads it.

Example:
    >>> path = save_checkpoint("runs/x", step=100, model=model, optimizer=opt, state={"seconds": 12.5})
    >>> ckpt = load_checkpoint(latest_checkpoint("runs/x"))
    >>> restore(ckpt, model=model, optimizer=opt); ckpt["step"]
    100
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import WindtunnelError
from ..fileio import atomic_write
from ..model.parametrization import unwrap
from ..run_folder import CHECKPOINT_DIR, CHECKPOINT_MARKER, remove_folder

__all__ = ["CHECKPOINT_DIR", "save_checkpoint", "load_checkpoint", "restore", "list_checkpoints",
           "latest_checkpoint", "prune_checkpoints", "checkpoint_step", "rng_state", "set_rng_state",
           "is_complete_folder", "SHARDED_MARKER"]

FORMAT = 1
_NAME = re.compile(r"^step_(\d{8,})(\.pt)?$")
SHARDED_MARKER = CHECKPOINT_MARKER  # written last into a sharded checkpoint folder, before its rename


def save_checkpoint(run_dir: str | os.PathLike, *, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any] | None = None,
                    config_yaml: str = "") -> Path:
    """Write `<run_dir>/checkpoints/step_XXXXXXXX.pt` atomically (temp file, fsync, rename).

    `model` may be wrapped (DDP, torch.compile): the bare module's state is saved, so any wrapping
    can load it. `state` holds the loop's scalars (plain Python values).
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    payload = {
        "format": FORMAT,
        "step": int(step),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "state": dict(state or {}),
        "config": config_yaml,
    }
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not outrun the bytes on a crash
    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a missing or foreign file is a `WindtunnelError`."""
    path = Path(path)
    if not path.is_file():
        raise WindtunnelError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, pickle refused by weights_only, ...
        raise WindtunnelError(f"{path}: not a readable checkpoint ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WindtunnelError(f"{path}: not a windtunnel checkpoint (expected format {FORMAT})")
    return payload


def restore(ckpt: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
            source: str = "checkpoint") -> None:
    """Load model (and optimizer) states and the RNG states from a loaded checkpoint, in place.

    The model keeps its mup `infshape`s (states are copied into the existing parameters).
    """
    try:
        unwrap(model).load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise WindtunnelError(f"{source}: does not fit this model ({' '.join(str(e).split())[:300]}); "
                              "was it written with a different model shape?") from None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise WindtunnelError(f"{source}: optimizer state does not fit ({e})") from None
    set_rng_state(ckpt["rng"])


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoints, oldest step first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p.is_file() or is_complete_folder(p))]
    return sorted(found, key=checkpoint_step)


def is_complete_folder(path: str | os.PathLike) -> bool:
    """A sharded checkpoint folder that finished saving: torch.distributed.checkpoint's `.metadata`
    and our marker are both there (a crash mid-save leaves a `.step_N.partial` folder, never listed)."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file() and (path / SHARDED_MARKER).is_file()


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | os.PathLike, *, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (keep <= 0 keeps everything); returns the deleted."""
    if keep <= 0:
        return []
    old = list_checkpoints(run_dir)[:-keep]
    for path in old:
        if path.is_dir():  # renamed aside first: a prune cut short never leaves a half step folder listed
            remove_folder(path)
        else:
            path.unlink(missing_ok=True)
    return old


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step in a checkpoint's file name (`step_00001000.pt` -> 1000)."""
    match = _NAME.match(Path(path).name)
    if not match:
        raise WindtunnelError(f"{path}: not a checkpoint name (expected step_XXXXXXXX.pt or a step_XXXXXXXX folder)")
    return int(match.group(1))


# --- RNG states as tensors and plain values (weights_only-safe) ------------------------------


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, Python, NumPy) as weights_only-safe values."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by `rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
