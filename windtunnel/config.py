"""The run config: loaded from YAML, overridden by dotted keys, checked, saved.

The sections' dataclasses and their value rules live in `windtunnel.schema` (re-exported here); field
types are checked from their type hints by `windtunnel.typecheck`. A bad value raises `ConfigError`
naming the file, the dotted key, the rule and the value. No torch here, so the CLI can parse and
validate configs without paying for the import.

    >>> cfg = load_config("proxies/xs.yaml", overrides=["train.lr=0.01"])
    >>> save_config(cfg, "runs/x/config.yaml")
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import ConfigError
from .fileio import write_text
from .schema import SECTIONS, DataConfig, ModelConfig, RunConfig, TrainConfig
from .typecheck import (
    check_key,
    check_section,
    parse_overrides,
    read_yaml_mapping,
    set_keys,
    suggest,
)

__all__ = [
    "ModelConfig", "TrainConfig", "DataConfig", "RunConfig",
    "load_config", "config_from_dict", "config_to_dict", "save_config",
    "parse_overrides", "apply_overrides", "check_value", "check_section", "resolve_paths",
    "SHAPE_KEYS", "derive_shapes",
]


_SECTIONS = SECTIONS
_PATH_KEYS = {("model", "base_shapes"), ("data", "path")}

SHAPE_KEYS = ("model.dim_model_base", "model.n_layers", "model.n_heads", "model.head_dim", "model.n_kv_heads",
              "model.ffn_mult", "model.vocab_size", "model.norm_gain")
"""Keys that change the muP base shapes (the `.bsh` file depends on the depth, the base width and the
head layout, not on d_model). Overriding one makes a config's file describe another model."""


def load_config(path: str | os.PathLike, *, overrides: Mapping[str, Any] | Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config, apply dotted overrides, check every rule.

    Relative paths inside the file (`model.base_shapes`, `data.path`, `data.sources`) are taken relative
    to the file; in `overrides`, relative to the current directory. Both are stored absolute.

    Example:
        >>> cfg = load_config("proxies/xs.yaml", overrides=["model.d_model=128", "train.lr=0.01"])
        >>> cfg.model.width_mult
        2.0
    """
    source = str(path)
    data = read_yaml_mapping(path, expected="model/train/data")
    resolve_paths(data, Path(path).resolve().parent)
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides, source="--set")
        for key, value in overrides.items():  # a typo typed after --set is not the file's fault
            check_key(_SECTIONS, key, value, source="--set")
    overrides = derive_shapes(overrides)
    for section, key in _PATH_KEYS:  # a path typed on the command line is relative to the cwd
        dotted = f"{section}.{key}"
        if isinstance(overrides.get(dotted), str):
            overrides[dotted] = str(Path(os.path.expanduser(overrides[dotted])).resolve())
    return config_from_dict(apply_overrides(data, overrides, source=source), source=source)


def derive_shapes(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides`, plus `model.base_shapes: None` when they set a shape key but not base_shapes.

    The config file's `.bsh` (often one file shared by a whole ladder) describes the model as the file
    has it; with `--set model.n_layers=4` it no longer does, so the built model's shapes are derived
    from its own `dim_model_base` instead (null: made in memory, cached by content) and the shared
    file is neither used nor rewritten. Sweeps apply the same rule to every trial.

    Example:
        >>> derive_shapes({"model.n_layers": 4})
        {'model.n_layers': 4, 'model.base_shapes': None}
    """
    out = dict(overrides)
    if any(k in SHAPE_KEYS for k in out) and "model.base_shapes" not in out:
        out["model.base_shapes"] = None
    return out


def apply_overrides(data: dict, overrides: Mapping[str, Any], *, source: str | None) -> dict:
    """Return a copy of a nested config dict with dotted keys set; the input is not changed.

    `train.lr` sets data['train']['lr']; deeper keys reach into mappings, so a sweep can set one
    mixture weight with `data.mixture.web`.

    Example:
        >>> apply_overrides({"data": {"mixture": {"web": 1, "code": 1}}}, {"data.mixture.code": 0.3},
        ...                 source=None)
        {'data': {'mixture': {'web': 1, 'code': 0.3}}}
    """
    return set_keys(data, overrides, sections=list(_SECTIONS), source=source)


def check_value(key: str, value: Any, *, source: str | None = None) -> Any:
    """Check one value against the field a dotted key names; return it as the config would hold it.

    Only the field's type is checked (cross-field rules need the whole config): a sweep spec uses
    this to reject `train.lr: {values: [fast]}` before any trial runs.

    Example:
        >>> check_value("train.lr", "1e-3")
        0.001
    """
    return check_key(_SECTIONS, key, value, source=source)


def config_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Build and check a `RunConfig` from nested plain data (what YAML gives).

    Example:
        >>> config_from_dict({"model": {"d_model": 128}}).model.d_head
        32
    """
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(source, key, f"unknown section{suggest(key, _SECTIONS)}; expected model, train, data")
    sections = {name: check_section(cls, data.get(name) or {}, source=source, section=name)
                for name, cls in _SECTIONS.items()}
    cfg = RunConfig(**sections, source=source)
    cfg.check()
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested data of a config (lists for tuples), ready for YAML or JSON."""
    out = {}
    for name in _SECTIONS:
        section = dataclasses.asdict(getattr(cfg, name))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
    return out


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# --- internals --------------------------------------------------------------------------------


def resolve_paths(data: dict, base: Path) -> None:
    """Make the path-valued keys of raw config data (e.g. `data.path`) absolute against `base`, the
    folder of the file they were read from, so a config means the same from any working directory.

    Example:
        >>> raw = {"data": {"path": "../data/web"}}
        >>> resolve_paths(raw, Path("/work/proxies")); raw["data"]["path"]     # doctest: +SKIP
        '/work/data/web'
    """
    for section, key in _PATH_KEYS:
        sub = data.get(section)
        if isinstance(sub, dict) and isinstance(sub.get(key), str):
            sub[key] = _resolve(sub[key], base)
    sub = data.get("data")
    if isinstance(sub, dict) and isinstance(sub.get("sources"), dict):
        sub["sources"] = {k: _resolve(v, base) if isinstance(v, str) else v for k, v in sub["sources"].items()}


def _resolve(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())

