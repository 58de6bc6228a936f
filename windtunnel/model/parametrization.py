"""muP in one place: multipliers, base shapes, init, and per-role learning rates (the Xmodel-2 / MiniCPM recipe
expressed with `mup`; the README's μP table maps each rule to its line).

Every parameter gets a role by the module that owns it, never by its name:

| role      | what                         | muP init std          | muP Adam lr | SP           |
|-----------|------------------------------|-----------------------|-------------|--------------|
| embedding | token embedding (tied readout)| emb_std               | lr          | same         |
| hidden    | every Linear inside a block  | hidden_std / sqrt(m)  | lr / m      | hidden_std, lr |
| vector    | RMSNorm gains                | ones                  | lr          | same         |

(`hidden_std` is model.hidden_init_std, `emb_std` model.emb_init_std; each falls back on model.init_std)
plus the forward multipliers: embedding x scale_emb, residual branches (depth rule below),
logits / m (mup's shared readout), attention attn_mult / d_head (8 when null: it depends on d_head
only, so heads added at a fixed d_head leave it unchanged). `m = cfg.width_mult`.

Depth (`model.depth_scaling`, muP only; `d = n_layers / n_layers_base`, alpha = 1 for CompleteP):

| rule                                   | sqrt                      | completep                                  |
|----------------------------------------|---------------------------|--------------------------------------------|
| residual branch                        | scale_depth / sqrt(L)     | scale_depth / sqrt(L_base) x d^-alpha       |
| lr, tensors inside blocks              | x 1                       | x d^(alpha - 1) = 1                        |
| Adam eps, tensors inside blocks        | x 1                       | x d^-alpha                                 |
| weight decay, tensors inside blocks    | shrink lr x wd kept       | shrink kept, so AdamW wd x d^(1 - alpha)   |
| embedding, final norm                  | unchanged                 | unchanged                                  |

A parameter the table does not cover raises, so a new layer cannot silently lose its scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from mup import set_base_shapes
from torch import nn

from ..config import ModelConfig, RunConfig
from ..errors import ConfigError
from .shapes import base_shapes, write_base_shapes
from .transformer import Multipliers, RMSNorm, Transformer

__all__ = ["Role", "DepthRule", "depth_rule", "DEFAULT_ATTN_MULT", "COMPLETEP_ALPHA", "multipliers", "build_model",
           "param_roles", "param_groups", "base_shapes", "write_base_shapes", "init_weights", "unwrap", "peak_shrink",
           "weight_decay_warning", "MAX_SHRINK_PER_STEP"]

Role = Literal["embedding", "hidden", "vector"]

DEFAULT_ATTN_MULT = 8.0
"""muP attention scale attn_mult / d_head when model.attn_mult is null: sqrt(64), so 1/sqrt(d_head) at
d_head 64 (MiniCPM's and Xmodel-2's code). A constant: the scale then follows d_head alone."""
COMPLETEP_ALPHA = 1.0
"""CompleteP's depth exponent: residual branches x (L / L_base)^-alpha."""


@dataclass(frozen=True)
class DepthRule:
    """What depth does under a config's `model.depth_scaling` (see the module's depth table)."""

    residual_mult: float
    """Each residual branch (attention, MLP) is multiplied by this."""
    lr_factor: float
    """Times the lr of every tensor inside a block (hidden matrices, block norm gains)."""
    eps_factor: float
    """Times Adam's epsilon of every tensor inside a block."""


def depth_rule(cfg: ModelConfig) -> DepthRule:
    """The depth rule of `cfg`: `sqrt` scales the branches only; `completep` also corrects the
    optimizer of the tensors inside blocks. SP has none.

    Example:
        >>> r = depth_rule(ModelConfig(n_layers=8, n_layers_base=2, depth_scaling="completep", scale_depth=1.0))
        >>> round(r.residual_mult * 8, 4), r.lr_factor, r.eps_factor   # branch ~ 1/L, eps x L_base / L
        (5.6569, 1.0, 0.25)
    """
    if cfg.parametrization == "sp":
        return DepthRule(1.0, 1.0, 1.0)
    if cfg.depth_scaling == "sqrt":
        return DepthRule(cfg.scale_depth / math.sqrt(cfg.n_layers), 1.0, 1.0)
    d, alpha = cfg.n_layers / cfg.n_layers_base, COMPLETEP_ALPHA
    # anchored so that at n_layers == n_layers_base the branch equals sqrt's: a proxy tuned at the base
    # depth is the same model under either rule
    base_branch = cfg.scale_depth / math.sqrt(cfg.n_layers_base)
    return DepthRule(base_branch * d ** -alpha, d ** (alpha - 1.0), d ** -alpha)


def multipliers(cfg: ModelConfig) -> Multipliers:
    """The forward-pass constants of `cfg`'s parametrization.

    Example:
        >>> multipliers(ModelConfig(d_model=128, dim_model_base=64, n_heads=4)).width_mult
        2.0
    """
    if cfg.parametrization == "sp":
        return Multipliers(emb_mult=1.0, residual_mult=1.0, attn_scale=1.0 / math.sqrt(cfg.d_head), width_mult=1.0)
    attn_mult = cfg.attn_mult if cfg.attn_mult is not None else DEFAULT_ATTN_MULT
    return Multipliers(
        emb_mult=cfg.scale_emb,
        residual_mult=depth_rule(cfg).residual_mult,
        attn_scale=attn_mult / cfg.d_head,
        width_mult=cfg.width_mult,
    )


def build_model(cfg: ModelConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                source: str | None = None) -> Transformer:
    """Build the decoder of `cfg`: base shapes attached (muP) and weights initialised, seeded.

    Example:
        >>> model = build_model(ModelConfig(d_model=128), seed=0)
        >>> model.readout.width_mult()
        2.0
    """
    with torch.device(device):
        model = Transformer(cfg, multipliers(cfg))
    if cfg.parametrization == "mup":
        shapes = base_shapes(cfg, source=source)  # a file that does not describe this model is refused there
        # rescale_params=False: mup would multiply the tied embedding by sqrt(m) (mup issue #55);
        # we initialise every tensor ourselves right after.
        set_base_shapes(model, shapes, rescale_params=False)
        _check_readout_mult(model, cfg, source)
    init_weights(model, cfg, seed=seed)
    return model


def param_roles(model: Transformer) -> dict[str, Role]:
    """Each parameter's role, decided by the module type that owns it."""
    roles: dict[str, Role] = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, nn.Embedding):
                roles[name] = "embedding"
            elif isinstance(module, nn.Linear) and mod_name.startswith("blocks."):
                roles[name] = "hidden"
            elif isinstance(module, RMSNorm):
                roles[name] = "vector"
    missing = [n for n, _ in model.named_parameters() if n not in roles]
    if missing:
        raise TypeError(f"parameters without a muP role: {missing}; add their module to param_roles")
    return roles


@torch.no_grad()
def init_weights(model: Transformer, cfg: ModelConfig, *, seed: int) -> None:
    """Initialise every parameter by its role (table above), from a private seeded generator."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    hidden_std = cfg.hidden_std / math.sqrt(cfg.width_mult if cfg.parametrization == "mup" else 1.0)
    roles = param_roles(model)
    for name, p in model.named_parameters():
        role = roles[name]
        if role == "vector":
            p.fill_(1.0)
            continue
        std = cfg.emb_std if role == "embedding" else hidden_std
        # draw on CPU with our generator so the same seed gives the same weights on any device
        p.copy_(torch.randn(p.shape, generator=gen) * std)


def param_groups(model: nn.Module, cfg: RunConfig, *, roles: dict[str, Role] | None = None) -> list[dict]:
    """AdamW parameter groups: lr, eps and weight decay per role, width and depth (muP's MuAdamW, made
    explicit, plus the depth rule's corrections for the tensors inside blocks).

    `roles` may be computed before the model is wrapped (DDP, FSDP) and passed in; names are matched
    after stripping wrapper prefixes. Each group also carries `peak_lr` (the schedule scales from it)
    and `role`, so the optimizer shows exactly what every tensor gets. Tensors of one role whose
    depth corrections differ (block norms vs the final norm under completep) get separate groups.

    Example:
        >>> groups = param_groups(build_model(cfg.model), cfg)
        >>> {g["role"]: g["lr"] for g in groups}   # hidden lr = lr / m
        {'embedding': 0.01, 'hidden': 0.005, 'vector': 0.01}
    """
    roles = roles or param_roles(unwrap(model))
    m = cfg.model.width_mult if cfg.model.parametrization == "mup" else 1.0
    lr, depth = cfg.train.lr, depth_rule(cfg.model)
    lr_by_role = {"embedding": lr, "hidden": lr / m, "vector": lr}
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        name = _strip_prefix(name)
        in_block = name.startswith("blocks.") and (depth.lr_factor != 1.0 or depth.eps_factor != 1.0)
        buckets.setdefault((roles[name], in_block), []).append(p)
    groups = []
    for (role, in_block), params in sorted(buckets.items(), key=lambda kv: (_ROLE_ORDER.index(kv[0][0]), kv[0][1])):
        group_lr = lr_by_role[role] * (depth.lr_factor if in_block else 1.0)
        groups.append({"params": params, "role": role, "lr": group_lr, "peak_lr": group_lr,
                       "eps": cfg.train.eps * (depth.eps_factor if in_block else 1.0),
                       "weight_decay": 0.0 if role == "vector" else _weight_decay(cfg, group_lr)})
    return groups


_ROLE_ORDER = ("embedding", "hidden", "vector")


def _weight_decay(cfg: RunConfig, group_lr: float) -> float:
    """AdamW shrinks by lr_group(t) * wd_group each step; pick wd_group so the shrink is width-free."""
    wd = cfg.train.weight_decay
    if cfg.train.weight_decay_mode == "independent":
        return wd / group_lr          # shrink = wd * schedule(t)
    return wd * cfg.train.lr / group_lr  # shrink = lr(t) * wd, the base lr's AdamW units


MAX_SHRINK_PER_STEP = 1e-3
"""Above this fraction per step at peak, weight decay erases a matrix within ~1000 steps: almost surely
a value meant in other units (MiniCPM's AdamW 0.1 at lr 0.01 shrinks by exactly 1e-3)."""


def peak_shrink(cfg: RunConfig) -> float:
    """The fraction by which weight decay shrinks every matrix per step at the schedule's peak."""
    t = cfg.train
    return t.weight_decay if t.weight_decay_mode == "independent" else t.lr * t.weight_decay


def weight_decay_warning(cfg: RunConfig) -> str | None:
    """One line when the per-step shrink at peak exceeds MAX_SHRINK_PER_STEP, naming the likely value.

    Example:
        >>> weight_decay_warning(load_config("x.yaml", overrides=["train.weight_decay=0.1"]))
        'train.weight_decay=0.1 (weight_decay_mode independent) shrinks every matrix by 10% per step ...'
    """
    t, shrink = cfg.train, peak_shrink(cfg)
    if shrink <= MAX_SHRINK_PER_STEP:
        return None
    said = f"train.weight_decay={t.weight_decay:g} (weight_decay_mode {t.weight_decay_mode})"
    if t.weight_decay_mode == "independent":  # most likely an AdamW value: it meant a shrink of lr x wd
        likely = (f"if {t.weight_decay:g} is meant in AdamW units, set train.weight_decay="
                  f"{t.weight_decay * t.lr:.3g} (= {t.weight_decay:g} x lr {t.lr:g}) "
                  "or train.weight_decay_mode=coupled")
    else:
        likely = (f"AdamW's usual 0.1 would be train.weight_decay=0.1 (shrink {0.1 * t.lr:.3g}); "
                  f"at most {MAX_SHRINK_PER_STEP / t.lr:.3g} keeps it under {MAX_SHRINK_PER_STEP:g}")
    return (f"{said} shrinks every matrix by {shrink:.3g} of itself per step at peak (more than "
            f"{MAX_SHRINK_PER_STEP:g} is implausible); {likely}")


def _check_readout_mult(model: Transformer, cfg: ModelConfig, source: str | None) -> None:
    m = model.embed.weight.infshape.width_mult()
    if not math.isclose(m, cfg.width_mult, rel_tol=1e-6):
        raise ConfigError(source, "model.base_shapes",
                          f"base shapes for base width {cfg.d_model / m:g}, but model.dim_model_base="
                          f"{cfg.dim_model_base}; set model.base_shapes=null to derive them for this model")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and `torch.compile` (`._orig_mod`) wrappers.

    Example:
        >>> unwrap(torch.compile(model)) is model     # doctest: +SKIP
        True
    """
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _strip_prefix(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name
