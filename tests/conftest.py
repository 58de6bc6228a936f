"""Shared fixtures: a small embedded corpus in a private cache, and tiny configs."""

from __future__ import annotations

import os

import pytest

from support import ROOT, TINY


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


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Every test: W&B never touches the network here; MLflow and W&B names come from no outer environment."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
