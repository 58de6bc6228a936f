"""windtunnel: muP wind-tunnel hyperparameter search for language models.

Tune hyperparameters on tiny muP proxies, check that they carry, and carry them to the full model:

    >>> import windtunnel as wt
    >>> result = wt.run_sweep("sweeps/lr_init.yaml")                  # proxies swept on Ray Tune
    >>> report = wt.mutransfer_check("runs/width_transfer")           # does the optimum hold with width?
    >>> plan = wt.transfer(target="1.2b", source=result.run_dir)      # the full run's config, rescaled
    >>> wt.launch(plan, out="runs/1.2b")                              # the same training loop, on GPUs

The public surface is the names below (`__all__`), each with a docstring example; everything else is
an implementation detail that may move (import it from its module if you must). Names are imported
lazily (PEP 562): torch and Ray load only when a name needs them.
"""

from __future__ import annotations

import warnings

from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access
_EXPORTS = {
    # configs and the one training loop
    "load_config": "config", "train": "training.loop", "WindtunnelError": "errors",
    # data
    "prepare": "data.preparation",
    # sweeps and their results
    "run_sweep": "sweep", "read_results": "sweep",
    # can the tunnel be trusted: activations, the optimum across shapes, the optimum across horizons
    "coord_check": "analysis.coord_check", "mutransfer_check": "analysis.mutransfer_check",
    "horizon_check": "analysis.horizon_check",
    # carry the winner to the target and run it
    "transfer": "fullrun.transfer", "launch": "fullrun.launch",
    # know before you pay: the target's loss from a ladder, the tunnel's cost for a budget
    "predict": "fullrun.predict", "plan_tunnel": "fullrun.tunnel_plan",
}

# names that were public before the surface was cut down: they still resolve, with a FutureWarning
# naming their module, so existing scripts keep running while they move their imports
_FORMER = {
    "config_from_dict": "config", "RunConfig": "config", "ModelConfig": "config", "TrainConfig": "config",
    "DataConfig": "config", "save_config": "config", "ConfigError": "errors", "DataError": "errors",
    "build_model": "model.parametrization", "param_groups": "model.parametrization",
    "write_base_shapes": "model.parametrization", "multipliers": "model.parametrization",
    "build_optimizer": "training.optim", "build_schedule": "training.schedule", "open_data": "data.corpus",
    "TransferPlan": "fullrun.plan", "format_plan": "fullrun.table", "write_plan": "fullrun.plan",
    "load_target": "fullrun.presets", "load_proxy": "fullrun.proxy", "effective_hparams": "fullrun.hparams",
    "count_params": "model.accounting", "memory_per_gpu": "model.accounting",
    "save_checkpoint": "training.checkpoint_file", "load_checkpoint": "training.checkpoint_file",
    "latest_checkpoint": "training.checkpoint_file", "plot_sweep": "analysis.plots",
    "plot_coord": "analysis.coord_plot", "fit_optimum": "analysis.mutransfer_check",
    "transfer_check": "analysis.mutransfer_check", "best_trial": "analysis.runs", "load_run": "analysis.runs",
    "train_fused": "training.fused", "load_sweep": "sweep", "format_prediction": "fullrun.predict_report",
    "plot_prediction": "fullrun.predict_report", "format_tunnel": "fullrun.tunnel_plan",
    "write_tunnel": "fullrun.tunnel_plan",
}
_RENAMED = {"transfer_check": "mutransfer_check"}

__all__ = sorted(_EXPORTS) + ["__version__"]

_public_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def __getattr__(name: str):
    if name in _EXPORTS:
        return _public_getattr(name)
    module = _FORMER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    real = _RENAMED.get(name, name)
    warnings.warn(f"windtunnel.{name} is no longer part of the public API; use "
                  f"`from windtunnel.{module} import {real}`", FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(f".{module}", __name__), real)
