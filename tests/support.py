"""Helpers the tests share (constants and small file writers). Fixtures live in conftest.py; tests
import helpers from here, never from another test module."""

from __future__ import annotations

from pathlib import Path

import yaml

from windtunnel.config import parse_overrides

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
    "model.dim_model_base=32", "model.max_seq_len=64", "model.base_shapes=null",
    "train.steps=12", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
    "train.eval_every=6", "train.eval_batches=2", "train.log_every=1", "train.threads=1",
    "data.embedded_bytes=400000",
]


def tiny_set(*swept: str) -> dict:
    """TINY as a spec's `set:` block, minus the keys a test sweeps."""
    return {k: v for k, v in parse_overrides(TINY).items() if k not in swept}


def write_spec(path: Path, **fields) -> Path:
    """A tiny sweep spec on the xs proxy (train.lr over two values unless `parameters` says otherwise)."""
    spec = {"name": "t", "base": str(ROOT / "proxies" / "xs.yaml"), "set": tiny_set(*fields.get("parameters", {})),
            "method": "grid", "parameters": {"train.lr": {"values": [0.01, 0.03]}}}
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def torchrun(args: list[str], *, nproc: int = 2, env: dict | None = None, timeout: int = 300) -> str:
    """Run `python -m torch.distributed.run --standalone --nproc-per-node=N ARGS`; on failure the assertion
    shows each rank's own error lines first (torchrun's summary alone hides why a rank died)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    env = env or {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        keys = ("Error", "error:", "Exception", "terminate", "Abort", "what()")
        causes = [line for line in done.stderr.splitlines() if any(k in line for k in keys)][:20]
        raise AssertionError(f"torchrun exited {done.returncode}\n" + "\n".join(causes)
                             + "\n--- stderr tail ---\n" + done.stderr[-2000:])
    return done.stdout
