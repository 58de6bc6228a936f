"""mup base shapes: derived for a model from its `dim_model_base`, read from a `.bsh` file, or written to one.

A `.bsh` file lists each parameter's base shape (the width dims at `d_model = dim_model_base`, null for
finite dims). It depends on the depth, the base width and the head layout, not on `d_model`: one file
serves a whole width ladder. `model.base_shapes: null` derives the shapes for the built model (cached
by content, so a sweep's workers and repeated builds pay once); a named file is used only when it
describes the model, and otherwise refused with the difference in words.

Example:
    >>> shapes = base_shapes(ModelConfig(d_model=128, n_layers=4))       # derived, in memory
    >>> shapes["blocks.0.mlp.down.weight"].base_shape()
    [64, 160]
    >>> file_mismatch(ModelConfig(n_layers=4), "proxies/shapes/xs_base64.bsh")   # doctest: +SKIP
    'it describes 2 blocks, this model has model.n_layers=4'
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path

import torch
import yaml
from mup import InfDim, InfShape, make_base_shapes, save_base_shapes

from ..config import ModelConfig
from ..errors import ConfigError
from ..fileio import atomic_write
from .transformer import Multipliers, Transformer

__all__ = ["base_shapes", "derived_shapes", "file_mismatch", "write_base_shapes"]

_UNIT = Multipliers(emb_mult=1.0, residual_mult=1.0, attn_scale=1.0, width_mult=1.0)  # shapes only


def base_shapes(cfg: ModelConfig, *, source: str | None = None) -> dict | str:
    """mup base shapes for `cfg`: derived when `cfg.base_shapes` is null, else the file's path once it
    is checked to describe this model (a ConfigError naming the difference when it does not)."""
    if cfg.base_shapes is None:
        return derived_shapes(cfg)
    if not os.path.isfile(cfg.base_shapes):  # a named file that is missing is a mistake, not "make them"
        raise ConfigError(source, "model.base_shapes", f"no such file {cfg.base_shapes}; write it with "
                          "`windtunnel shapes CONFIG` or set model.base_shapes=null to derive the shapes")
    why = file_mismatch(cfg, cfg.base_shapes)
    if why:
        raise ConfigError(source, "model.base_shapes", f"file {cfg.base_shapes} does not describe this model: "
                          f"{why}; set model.base_shapes=null to derive the shapes for this model, or point it "
                          "at a file written for it (`windtunnel shapes CONFIG --out NEW.bsh`)")
    return cfg.base_shapes  # mup loads the path itself (yaml.safe_load)


def derived_shapes(cfg: ModelConfig) -> dict[str, InfShape]:
    """The base shapes of `cfg`'s model, made in memory (base at d_model = dim_model_base).

    Example:
        >>> len(derived_shapes(ModelConfig(n_layers=2)))    # 2 blocks x 9 tensors + embedding + final norm
        20
    """
    return dict(_derived(_content_key(cfg)))  # a fresh dict: callers never share the cached one


def file_mismatch(cfg: ModelConfig, path: str | os.PathLike) -> str | None:
    """How the `.bsh` file at `path` contradicts `cfg`'s model, in words; None when it describes it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        return f"it cannot be read as a base-shape file ({' '.join(str(e).split())[:120]})"
    if not isinstance(data, dict):
        return "it holds no mapping of parameter names to base shapes"
    ours = {name: shape.base_shape() for name, shape in derived_shapes(cfg).items()}
    if set(data) != set(ours):
        return _names_differ(set(data), set(ours), cfg)
    for name, dims in ours.items():
        theirs = data[name]
        if not isinstance(theirs, list) or len(theirs) != len(dims) or not all(map(_same_dim, theirs, dims)):
            return _dims_differ(name, theirs, dims, cfg)
    return None


def write_base_shapes(cfg: ModelConfig, path: str | os.PathLike) -> Path:
    """Write the `.bsh` file for `cfg` (base at d_model = dim_model_base; delta varies every width dim).

    Example:
        >>> write_base_shapes(load_config("proxies/xs.yaml").model, "proxies/shapes/xs.bsh")
        PosixPath('proxies/shapes/xs.bsh')
    """
    return atomic_write(path, lambda tmp: save_base_shapes(derived_shapes(cfg), tmp))


# --- internals --------------------------------------------------------------------------------


def _content_key(cfg: ModelConfig) -> tuple:
    # every field but the file path: the shapes are a function of the rest (the cache key is content)
    return dataclasses.astuple(dataclasses.replace(cfg, base_shapes=None))


@functools.lru_cache(maxsize=32)
def _derived(key: tuple) -> dict[str, InfShape]:
    cfg = ModelConfig(*key)
    base, delta = _base_and_delta(cfg)
    if all(isinstance(d, int) for dims in base.values() for d in dims):
        return make_base_shapes(base, delta)
    # mup's zip_infshape takes only integer base dims; a base width like 256 over 24 heads gives a
    # fractional one (10.67 per KV head group), so build the same InfShapes directly.
    return {name: InfShape([InfDim(b if b != e else None, None) for b, e in zip(base[name], delta[name])])
            for name in base}


def _base_and_delta(cfg: ModelConfig) -> tuple[dict, dict]:
    """Shapes of the base model (every width dim x dim_model_base/d_model) and of a delta model.

    The delta doubles (or triples) every width dimension (d_model, d_ffn, d_head): how mup learns which
    dims are widths. Base dims are computed, not built, so a base width that does not divide into
    heads (MiniCPM: 256 over 24 heads) still has exact multipliers.
    """
    with torch.device("meta"):
        actual = Transformer(cfg, _UNIT)
        # the delta must differ from the base too, or mup takes d_model for a finite dim (width = base / 2)
        factor = 3 if cfg.d_model * 2 == cfg.dim_model_base else 2
        delta = Transformer(dataclasses.replace(cfg, d_model=cfg.d_model * factor), _UNIT)
    ratio = cfg.dim_model_base / cfg.d_model
    base, delta_shapes = {}, {}
    for (name, p), (_, q) in zip(actual.named_parameters(), delta.named_parameters()):
        base[name] = [_exact(d * ratio) if d != e else d for d, e in zip(p.shape, q.shape)]
        delta_shapes[name] = list(q.shape)
    return base, delta_shapes


def _exact(x: float) -> int | float:
    return int(round(x)) if abs(x - round(x)) < 1e-9 else x


def _same_dim(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-6)


def _blocks(names: set[str]) -> int:
    return len({n.split(".")[1] for n in names if n.startswith("blocks.")})


def _names_differ(theirs: set[str], ours: set[str], cfg: ModelConfig) -> str:
    if _blocks(theirs) != _blocks(ours):
        return f"it describes {_blocks(theirs)} blocks, this model has model.n_layers={cfg.n_layers}"
    gains = {n for n in theirs ^ ours if n.endswith("norm.weight")}
    if gains and gains == theirs ^ ours:
        has = "has" if gains <= theirs else "has no"
        return f"it {has} RMSNorm gains, this model has model.norm_gain={str(cfg.norm_gain).lower()}"
    missing, extra = sorted(ours - theirs), sorted(theirs - ours)
    parts = [f"{len(missing)} of this model's tensors are not in it (e.g. {missing[0]})"] if missing else []
    parts += [f"it has {len(extra)} tensors this model lacks (e.g. {extra[0]})"] if extra else []
    return "; ".join(parts)


def _dims_differ(name: str, theirs, ours: list, cfg: ModelConfig) -> str:
    if name == "embed.weight" and isinstance(theirs, list) and len(theirs) == 2 and theirs[1] != ours[1]:
        return f"it was made for base width {theirs[1]}, this model has model.dim_model_base={cfg.dim_model_base}"
    cause = ("model.n_kv_heads" if ".k_proj." in name or ".v_proj." in name
             else "model.ffn_mult" if ".mlp." in name else "model.n_heads")
    return f"{name} has base shape {theirs} there and {ours} in this model (it was made for another {cause})"
