"""Shared fixtures: a small embedded corpus in a private cache, and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests prepare the embedded corpus once, in a temp cache, never in the user's home."""
    cache = tmp_path_factory.mktemp("wt-cache")
    old = os.environ.get("WINDTUNNEL_CACHE")
    os.environ["WINDTUNNEL_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("WINDTUNNEL_CACHE", None)
    else:
        os.environ["WINDTUNNEL_CACHE"] = old


TINY = [
    "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
    "model.dim_model_base=32", "model.max_seq_len=64", "model.base_shapes=null",
    "train.steps=12", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
    "train.eval_every=6", "train.eval_batches=2", "train.log_every=1", "train.threads=1",
    "data.embedded_bytes=400000",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture
def xs_path():
    return ROOT / "proxies" / "xs.yaml"


@pytest.fixture(scope="session")
def ray_session(_private_cache):
    """One Ray instance for the whole test session (ray.init costs ~6 s and ~640 MB); `run_sweep`
    reuses an initialised Ray, so every test that needs Ray takes this fixture."""
    import ray

    from windtunnel.sweep.ray_engine import init_ray
    started = init_ray()
    yield ray
    if started:
        ray.shutdown()
