"""Target presets: the full-size models a sweep's winner is carried to (`transfer/<name>.yaml`).

A target file is a run config (`model`, `train`, `data`) plus a `transfer` section:

    transfer:
      description: Xmodel-2 1.2B
      tokens: 1.5e12          # training tokens of the full run
      batch_tokens: 3932160   # tokens per optimizer step; null: MiniCPM's law from the proxy's loss

`train.steps` and `train.grad_accum` are not written in a target: `windtunnel transfer` computes
them from the token budget, the batch and the number of GPUs. Add a target by dropping a YAML file
in `transfer/` (or pass its path).

Example:
    >>> load_target("1.2b").tokens
    1500000000000.0
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, apply_overrides, config_from_dict, derive_shapes, resolve_paths
from ..errors import ConfigError, WindtunnelError

__all__ = ["Target", "load_target", "target_files", "TARGET_DIRS"]

# searched in order: the working directory's presets, then the ones shipped beside the package
TARGET_DIRS = (Path("transfer"), Path(__file__).resolve().parents[2] / "transfer")
_TRANSFER_KEYS = {"description", "tokens", "batch_tokens"}
_COMPUTED = ("steps", "grad_accum")


@dataclass(frozen=True)
class Target:
    """A target preset: its shape and recipe (`sections`, plain data) and its token budget."""

    name: str
    path: Path
    description: str
    tokens: float
    batch_tokens: int | None
    sections: dict[str, dict[str, Any]]

    def config(self, *, steps: int, grad_accum: int = 1, overrides: dict[str, Any] | None = None) -> RunConfig:
        """The target's run config at a given length and accumulation, checked, errors naming its file."""
        # the config's own override path: deep keys such as data.mixture.web reach into mappings, and a
        # carried or --set shape key (dim_model_base, n_layers) derives the base shapes, as in `train`
        sets = derive_shapes({**(overrides or {}), "train.steps": steps, "train.grad_accum": grad_accum})
        data = apply_overrides({name: dict(section) for name, section in self.sections.items()}, sets,
                               source=str(self.path))
        return config_from_dict(data, source=str(self.path))


def target_files() -> dict[str, Path]:
    """Every preset found, by name (a working-directory preset shadows a shipped one)."""
    found: dict[str, Path] = {}
    for folder in TARGET_DIRS:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def load_target(target: str | os.PathLike) -> Target:
    """Load a target by preset name (`1.2b`) or YAML path, checking every key.

    Example:
        >>> t = load_target("1.2b")
        >>> t.sections["model"]["d_model"], t.batch_tokens
        (1536, 3932160)
    """
    path = Path(target)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        presets = target_files()
        if str(target) not in presets:
            raise WindtunnelError(f"unknown target {str(target)!r}; presets: {', '.join(presets) or 'none'} "
                                  f"(in {', '.join(str(d) for d in TARGET_DIRS)}), or give a YAML path")
        path = presets[str(target)]
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "no such file") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, "(yaml)", f"not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("transfer"), dict):
        raise ConfigError(source, "transfer", "a target needs a `transfer:` section with tokens and batch_tokens")
    spec = raw.pop("transfer")
    resolve_paths(raw, path.resolve().parent)
    sections = {name: dict(raw.get(name) or {}) for name in ("model", "train", "data")}
    for key in _COMPUTED:
        if key in sections["train"]:
            raise ConfigError(source, f"train.{key}", "is computed by `windtunnel transfer` from "
                              "transfer.tokens, transfer.batch_tokens and the GPU count; remove it")
    tokens, batch_tokens = _check_spec(spec, source)
    target = Target(name=path.stem, path=path, description=str(spec.get("description", "")),
                    tokens=tokens, batch_tokens=batch_tokens, sections=sections)
    warmup = int(sections["train"].get("warmup_steps", 0) or 0)
    # check every other key now, with a placeholder length long enough for the warmup and any decay
    target.config(steps=100 * (warmup + 1))
    return target


def _check_spec(spec: dict, source: str) -> tuple[float, int | None]:
    unknown = set(spec) - _TRANSFER_KEYS
    if unknown:
        raise ConfigError(source, f"transfer.{sorted(unknown)[0]}",
                          f"unknown key; expected {', '.join(sorted(_TRANSFER_KEYS))}")
    tokens = _number(spec.get("tokens"), source, "transfer.tokens")
    batch = spec.get("batch_tokens")
    if batch is not None:
        batch = _number(batch, source, "transfer.batch_tokens")
        if not float(batch).is_integer():
            raise ConfigError(source, "transfer.batch_tokens", f"expected a whole number of tokens, got {batch}")
        batch = int(batch)
    return tokens, batch


def _number(value: Any, source: str, key: str) -> float:
    try:
        number = float(value)  # YAML reads 1.5e12 (no sign in the exponent) as a string
    except (TypeError, ValueError):
        raise ConfigError(source, key, f"expected a positive number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(source, key, f"expected a positive number, got {value!r}")
    return number
