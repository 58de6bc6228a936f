"""Which trials can train as one fused computation, and what a fused group costs in memory.

Two run configs fuse when they agree on everything except the keys in `FREE_KEYS`: numbers that
change what a trial learns (learning rate, init, muP multipliers, base width, weight decay, seed,
schedule shape, data mixture weights) but not the shapes of its tensors, its batch or its step count.
`model.d_model`, `model.n_layers`, `train.batch_size`, `train.steps` and the like change shapes or
the loop itself, so trials that differ in them run in different groups. No torch here: a sweep plan
groups its trials instantly.

Example:
    >>> fusion_key(cfg_lr_001) == fusion_key(cfg_lr_003)       # only train.lr differs
    True
"""

from __future__ import annotations

import json

from ..config import RunConfig, config_to_dict
from ..errors import ConfigError

__all__ = ["AUTO_MAX", "FREE_KEYS", "check_group", "describe_key_difference", "fusion_key", "group_memory_bytes"]

FREE_KEYS = frozenset({
    "model.dim_model_base", "model.parametrization", "model.scale_emb", "model.scale_depth",
    "model.init_std", "model.hidden_init_std", "model.emb_init_std", "model.attn_mult", "model.base_shapes",
    "train.lr", "train.weight_decay", "train.weight_decay_mode", "train.seed", "train.grad_clip",
    "train.schedule", "train.warmup_steps", "train.warmup_fraction", "train.decay", "train.decay_fraction",
    "train.decay_steps",
    "train.half_life", "train.min_lr_ratio", "train.diverge_factor", "train.log_every",
    "data.mixture", "data.mixture_decay", "data.val_mixture",
})
"""Keys whose values may differ inside a fused group (each trial keeps its own)."""

AUTO_MAX = 16
"""`budget.fuse: auto` fuses at most this many trials: beyond it a CPU gains little and a GPU's
kernels are already wide."""


def fusion_key(cfg: RunConfig) -> str:
    """A string equal for two configs exactly when they can train in one fused group."""
    data = config_to_dict(cfg)
    kept = {section: {k: v for k, v in values.items() if f"{section}.{k}" not in FREE_KEYS}
            for section, values in data.items() if isinstance(values, dict)}
    return json.dumps(kept, sort_keys=True, default=str)


def group_memory_bytes(cfg: RunConfig, k: int) -> float:
    """Training memory of a fused group of `k` trials shaped like `cfg`: k times one trial's weights,
    gradients, AdamW moments, activations and logits (`accounting.memory_per_gpu`)."""
    from ..model.accounting import memory_per_gpu
    return k * memory_per_gpu(cfg).total


def describe_key_difference(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted keys (outside FREE_KEYS) whose values differ between `a` and `b`."""
    da, db = config_to_dict(a), config_to_dict(b)
    out = []
    for section, values in da.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in FREE_KEYS and db.get(section, {}).get(key) != value:
                out.append(dotted)
    return out


def check_group(cfgs: list[RunConfig]) -> None:
    """Refuse, before anything is built or written, a group whose trials cannot train as one fused
    model: a shape or loop key differs, or checkpoints are asked for (a fused group restarts instead).

    Example:
        >>> check_group([cfg, load_config("xs.yaml", overrides=["model.d_model=64"])])   # doctest: +SKIP
        ConfigError: ...: model.d_model: differs from ... in a key that changes shapes or the loop ...
    """
    key = fusion_key(cfgs[0])
    for c in cfgs[1:]:
        if fusion_key(c) != key:
            differ = describe_key_difference(cfgs[0], c)
            raise ConfigError(c.source, differ[0] if differ else "(config)",
                              f"differs from {cfgs[0].source or 'the first trial'} in a key that changes "
                              f"shapes or the loop ({', '.join(differ)}); such trials cannot be fused")
    if cfgs[0].train.checkpoint_every:
        raise ConfigError(cfgs[0].source, "train.checkpoint_every", "fused trials do not checkpoint "
                          f"(an interrupted group restarts); set 0, got {cfgs[0].train.checkpoint_every}")
