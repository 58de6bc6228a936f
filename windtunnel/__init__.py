"""windtunnel: muP wind-tunnel hyperparameter search for language models.

The public surface is small and imported lazily (torch and Ray load only when a name needs them):

    >>> import windtunnel as wt
    >>> cfg = wt.load_config("proxies/xs.yaml", overrides=["train.lr=0.01"])
    >>> summary = wt.train(cfg, out_dir="runs/xs")
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562)
_EXPORTS = {
    "load_config": "config", "config_from_dict": "config", "RunConfig": "config",
    "ModelConfig": "config", "TrainConfig": "config", "DataConfig": "config", "save_config": "config",
    "ConfigError": "errors", "DataError": "errors", "WindtunnelError": "errors",
    "build_model": "model.parametrization", "param_groups": "model.parametrization",
    "write_base_shapes": "model.parametrization", "multipliers": "model.parametrization",
    "build_optimizer": "training.optim",
    "build_schedule": "training.schedule",
    "train": "training.loop",
    "open_data": "data.corpus",
    # transfer to a target and the full run
    "transfer": "target.carry", "TransferPlan": "target.plan", "format_plan": "target.table",
    "write_plan": "target.plan", "launch": "target.launch",
    "load_target": "target.presets", "load_proxy": "target.proxy", "effective_hparams": "target.hparams",
    "count_params": "model.accounting", "memory_per_gpu": "model.accounting",
    "save_checkpoint": "training.checkpoint", "load_checkpoint": "training.checkpoint",
    "latest_checkpoint": "training.checkpoint",
    "prepare": "data.preparation",
    "plot_sweep": "analysis.plots",
    "coord_check": "analysis.coord_check", "plot_coord": "analysis.coord_plot",
    "fit_optimum": "analysis.transfer_check", "transfer_check": "analysis.transfer_check",
    "horizon_check": "analysis.horizon_check", "best_trial": "analysis.runs", "load_run": "analysis.runs",
    "train_fused": "training.fused",
    "run_sweep": "sweep", "load_sweep": "sweep", "read_results": "sweep",
    # know before you pay: the target's loss from a ladder, the tunnel's cost for a budget
    "predict": "target.predict", "format_prediction": "target.predict_report",
    "plot_prediction": "target.predict_report", "plan_tunnel": "target.tunnel_plan",
    "format_tunnel": "target.tunnel_plan", "write_tunnel": "target.tunnel_plan",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
