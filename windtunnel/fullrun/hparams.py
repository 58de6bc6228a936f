"""What the parametrization makes of a config's HPs, and which HPs carry from a proxy to a target.

Under muP the proxy's optimum holds at any width, so the width-independent HPs (`CARRIED`) are
copied as they are; the parametrization then rescales what reaches each tensor (hidden lr / m,
hidden init std / sqrt(m), logits / m). The optimum was also found under the proxy's optimizer and
schedule shape (`RECIPE`): a transfer carries those too.

Example:
    >>> e = effective_hparams(cfg)      # d_model 256, dim_model_base 64: m = 4
    >>> e["lr_hidden"] == cfg.train.lr / 4
    True
"""

from __future__ import annotations

import math
from typing import Any

from ..config import RunConfig
from ..errors import WindtunnelError
from ..model.parametrization import multipliers
from ..training.schedule import make_schedule

__all__ = ["CARRIED", "RECIPE", "get_value", "proxy_hparams", "effective_hparams", "minicpm_batch_tokens"]

CARRIED = ("train.lr", "model.init_std", "model.hidden_init_std", "model.emb_init_std", "model.scale_emb",
           "model.scale_depth", "model.dim_model_base",
           "model.attn_mult", "model.norm_gain", "model.parametrization", "model.depth_scaling",
           "model.n_layers_base")
"""Width-independent under muP: the proxy's values are the target's."""

RECIPE = ("train.betas", "train.eps", "train.weight_decay", "train.weight_decay_mode", "train.schedule",
          "train.decay", "train.decay_fraction", "train.min_lr_ratio")
"""The optimizer and schedule shape the optimum was found under: carried, warned when the preset differs."""


def get_value(cfg: RunConfig, key: str) -> Any:
    """A config value by dotted key (tuples as lists, as YAML writes them)."""
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    return list(value) if isinstance(value, tuple) else value


def proxy_hparams(cfg: RunConfig) -> dict[str, Any]:
    """The proxy's CARRIED and RECIPE values, resolved to what it actually trained with."""
    values = {key: get_value(cfg, key) for key in CARRIED + RECIPE}
    if cfg.model.parametrization == "mup":  # null attn_mult: the number the proxy trained with, written out
        values["model.attn_mult"] = multipliers(cfg.model).attn_scale * cfg.model.d_head
    if cfg.train.schedule == "wsd":  # the decay length as a fraction, whether given in steps or not
        values["train.decay_fraction"] = make_schedule(cfg).decay_steps / cfg.train.steps
    values["train.betas"] = list(cfg.train.betas)
    # the init stds the proxy drew with, written out: a target preset's own init_std then cannot
    # change the role the proxy left to the shorthand
    values["model.hidden_init_std"], values["model.emb_init_std"] = cfg.model.hidden_std, cfg.model.emb_std
    return values


def effective_hparams(cfg: RunConfig) -> dict[str, float]:
    """What the parametrization makes of a config's HPs: per-role lr, init std, weight decay, multipliers.

    Example:
        >>> effective_hparams(cfg)["lr_hidden"] == cfg.train.lr / cfg.model.width_mult
        True
    """
    import torch

    from ..model.parametrization import param_groups
    from ..model.transformer import Transformer
    mup = cfg.model.parametrization == "mup"
    with torch.device("meta"):
        model = Transformer(cfg.model, multipliers(cfg.model))
    groups = {g["role"]: g for g in param_groups(model, cfg)}
    mults = multipliers(cfg.model)
    m = cfg.model.width_mult if mup else 1.0
    hidden = groups["hidden"]
    return {
        "width_mult": m,
        "lr_embedding": groups["embedding"]["lr"],
        "lr_hidden": hidden["lr"],
        "lr_vector": groups["vector"]["lr"] if "vector" in groups else math.nan,
        "wd_hidden": hidden["weight_decay"],
        "shrink_hidden": hidden["lr"] * hidden["weight_decay"],  # AdamW: w -= lr * wd * w per step at peak
        "eps_hidden": hidden["eps"],  # completep: eps x n_layers_base / n_layers
        "init_std_embedding": cfg.model.emb_std,
        "init_std_hidden": cfg.model.hidden_std / math.sqrt(m),  # as parametrization.init_weights draws it
        "emb_mult": mults.emb_mult,
        "residual_mult": mults.residual_mult,
        "logit_mult": 1.0 / mults.width_mult,
        "attn_scale": mults.attn_scale,
    }


def minicpm_batch_tokens(loss: float) -> float:
    """MiniCPM's optimal batch in tokens, bs = 1.21e9 / L^6.24, with L their C4 loss (nats/token).

    Example:
        >>> round(minicpm_batch_tokens(2.5) / 1e6, 2)
        3.97
    """
    if not loss > 0:
        raise WindtunnelError(f"MiniCPM's batch law needs a positive loss, got {loss}")
    return 1.21e9 / loss ** 6.24


# --- carrying ---------------------------------------------------------------------------------
