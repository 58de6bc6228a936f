"""windtunnel: muP wind-tunnel hyperparameter search for language models.

The public surface is small and imported lazily (torch and Ray load only when a name needs them):

    >>> import windtunnel as wt
    >>> cfg = wt.load_config("proxies/xs.yaml", overrides=["train.lr=0.01"])
    >>> summary = wt.train(cfg, out_dir="runs/xs")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562)
_EXPORTS = {
    "load_config": "config", "config_from_dict": "config", "RunConfig": "config",
    "ModelConfig": "config", "TrainConfig": "config", "DataConfig": "config", "save_config": "config",
    "ConfigError": "errors", "WindtunnelError": "errors",
    "build_model": "parametrization", "param_groups": "parametrization",
    "write_base_shapes": "parametrization", "multipliers": "parametrization",
    "build_optimizer": "optim",
    "build_schedule": "schedule",
    "train": "trainer",
    "open_data": "data",
    # transfer to a target and the full run
    "transfer": "transfer_plan", "TransferPlan": "transfer_plan", "format_plan": "transfer_plan",
    "write_plan": "transfer_plan", "launch": "transfer_plan",
    "load_target": "targets", "load_proxy": "proxy", "effective_hparams": "hparams",
    "count_params": "estimate", "memory_per_gpu": "estimate",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "latest_checkpoint": "checkpoint",
    "prepare": "preparation",
    "plot_sweep": "plots",
    "coord_check": "checks.coord", "plot_coord": "checks.coord",
    "fit_optimum": "checks.transfer", "transfer_check": "checks.transfer",
    "run_sweep": "sweep", "load_sweep": "sweep", "read_results": "sweep",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'windtunnel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
