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
    "train": "training.loop", "train_group": "training.loop",
    "open_data": "data.corpus",
    # transfer to a target and the full run
    "transfer": "fullrun.transfer", "TransferPlan": "fullrun.plan", "format_plan": "fullrun.table",
    "write_plan": "fullrun.plan", "launch": "fullrun.launch",
    "load_target": "fullrun.presets", "load_proxy": "fullrun.proxy", "effective_hparams": "fullrun.hparams",
    "count_params": "model.accounting", "memory_per_gpu": "model.accounting",
    "save_checkpoint": "training.checkpoint_file", "load_checkpoint": "training.checkpoint_file",
    "latest_checkpoint": "training.checkpoint_file",
    "prepare": "data.preparation",
    "plot_sweep": "analysis.plots",
    "coord_check": "analysis.coord_check", "plot_coord": "analysis.coord_plot",
    "fit_optimum": "analysis.mutransfer_check", "mutransfer_check": "analysis.mutransfer_check",
    "horizon_check": "analysis.horizon_check", "best_trial": "analysis.runs", "load_run": "analysis.runs",
    "train_fused": "training.fused",  # deprecated: train_group
    "run_sweep": "sweep", "load_sweep": "sweep", "read_results": "sweep",
    # know before you pay: the target's loss from a ladder, the tunnel's cost for a budget
    "predict": "fullrun.predict", "format_prediction": "fullrun.predict_report",
    "plot_prediction": "fullrun.predict_report", "plan_tunnel": "fullrun.tunnel_plan",
    "format_tunnel": "fullrun.tunnel_plan", "write_tunnel": "fullrun.tunnel_plan",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
