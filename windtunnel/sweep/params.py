"""One swept parameter of a sweep spec: `{values: [...]}` or `{distribution: .., min: .., max: .., step: ..}`.

Each value is checked against the config field its dotted key names (`train.lr` takes a finite number),
so a typo or a wrong type stops the sweep before it starts, with the spec file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from ..config import check_value
from ..errors import ConfigError

__all__ = ["Param", "DISTRIBUTIONS", "parse_parameters", "spec_value", "integer", "is_number"]

DISTRIBUTIONS = ("categorical", "log_uniform", "uniform", "int_uniform")
_ALIASES = {"log_uniform_values": "log_uniform"}  # W&B's name for the same thing
_PATH_KEYS = ("model.base_shapes", "data.path")  # relative to the spec file, like the base's own paths


@dataclass(frozen=True)
class Param:
    """One swept config key: a list of `values`, or a `distribution` between `min` and `max`."""

    key: str
    """Dotted config key, e.g. `train.lr`; it names the results column too."""
    values: tuple | None = None
    """The choices (grid points, or categorical choices for random/tpe)."""
    distribution: Literal["categorical", "log_uniform", "uniform", "int_uniform"] = "categorical"
    """How random and tpe draw it; grid takes `values` only."""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    """Quantization of uniform / int_uniform draws (values min, min+step, ..., max)."""



def parse_parameters(value: Any, method: str, source, root: Path) -> dict[str, Param]:
    """The spec's `parameters:` mapping, each entry checked for its key and the sweep's method."""
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(source, "parameters", "expected a non-empty mapping of dotted config keys "
                          "to {values: [...]} or {distribution: ..., min: .., max: ..}")
    return {str(k): _param(str(k), v, method, source, root) for k, v in value.items()}


def _param(key: str, raw: Any, method: str, source, root: Path) -> Param:
    where = f"parameters.{key}"
    _known_key(key, source, where)
    if not isinstance(raw, Mapping):
        raise ConfigError(source, where, f"expected {{values: [...]}} or {{distribution: .., min: .., "
                          f"max: ..}}, got {raw!r}")
    allowed = {"values", "value", "distribution", "min", "max", "step"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConfigError(source, f"{where}.{extra[0]}", f"unknown key; expected {', '.join(sorted(allowed))}")
    dist = raw.get("distribution")
    dist = _ALIASES.get(dist, dist)
    if "value" in raw:
        raw = {**raw, "values": [raw["value"]]}
    if "values" in raw:
        return _categorical(key, raw, dist, source, where, root)
    if dist is None:
        raise ConfigError(source, where, "expected `values: [...]` or a `distribution`")
    if method == "grid":
        raise ConfigError(source, f"{where}.distribution", "method grid takes `values: [...]` only; "
                          "use method random or tpe to sample a distribution")
    if dist not in DISTRIBUTIONS or dist == "categorical":
        raise ConfigError(source, f"{where}.distribution", f"expected one of log_uniform, uniform, "
                          f"int_uniform (or `values` for a categorical), got {dist!r}")
    return _ranged(key, raw, dist, source, where)


def _known_key(key: str, source, where: str) -> None:
    try:
        check_value(key, None, source=source)  # any value: only "unknown key" matters here
    except ConfigError as e:
        if e.message.startswith("unknown key"):
            raise ConfigError(source, where, e.message) from None


def _categorical(key, raw, dist, source, where, root) -> Param:
    if dist not in (None, "categorical"):
        raise ConfigError(source, f"{where}.distribution", f"`values` is a categorical choice; drop "
                          f"distribution {dist!r} or give min/max instead of values")
    values = raw["values"]
    if not isinstance(values, list):
        raise ConfigError(source, f"{where}.values", f"expected a list, got {values!r}")
    if not values:
        raise ConfigError(source, f"{where}.values", "is empty; a grid needs at least one value")
    checked = tuple(spec_value(key, v, source, f"{where}.values[{i}]", root) for i, v in enumerate(values))
    if len(set(map(repr, checked))) != len(checked):
        raise ConfigError(source, f"{where}.values", f"has duplicates: {list(values)}")
    return Param(key=key, values=checked)


def _ranged(key, raw, dist, source, where) -> Param:
    lo, hi, step = (raw.get(k) for k in ("min", "max", "step"))
    for name, v in (("min", lo), ("max", hi)):
        if not is_number(v):
            raise ConfigError(source, f"{where}.{name}", f"expected a finite number, got {v!r}")
    if lo > hi:
        raise ConfigError(source, where, f"min <= max must hold, got min={lo}, max={hi}")
    if dist == "log_uniform" and lo <= 0:
        raise ConfigError(source, f"{where}.min", f"log_uniform needs min > 0, got {lo}")
    if step is not None:
        if not is_number(step) or step <= 0:
            raise ConfigError(source, f"{where}.step", f"expected a number > 0, got {step!r}")
        if dist == "log_uniform":
            raise ConfigError(source, f"{where}.step", "log_uniform takes no step (Optuna cannot quantize "
                              "a log scale); use uniform with a step, or values")
        n = (hi - lo) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
            raise ConfigError(source, f"{where}.step", f"(max - min) must be a multiple of step, got "
                              f"min={lo}, max={hi}, step={step}")
    if dist == "int_uniform":
        for name, v in (("min", lo), ("max", hi), ("step", step)):
            if v is not None and float(v) != int(v):
                raise ConfigError(source, f"{where}.{name}", f"int_uniform needs an integer, got {v!r}")
        lo, hi, step = int(lo), int(hi), int(step) if step is not None else None
    for name, v in (("min", lo), ("max", hi)):  # the field must accept what the draw gives
        spec_value(key, v if dist != "int_uniform" else int(v), source, f"{where}.{name}", Path("."))
    if dist != "int_uniform":
        try:
            check_value(key, 0.5, source=source)
        except ConfigError:
            raise ConfigError(source, f"{where}.distribution", f"{key} takes integers; use int_uniform "
                              f"or values") from None
    return Param(key=key, distribution=dist, min=lo, max=hi, step=step)


def spec_value(key: str, value: Any, source, where: str, root: Path) -> Any:
    """One config value, type-checked for its key; the error names where it sits in the spec."""
    try:
        value = check_value(key, value, source=source)
    except ConfigError as e:
        raise ConfigError(source, where, e.message) from None
    if key in _PATH_KEYS and isinstance(value, str):
        value = _under(root, value)
    elif key == "data.sources" and isinstance(value, dict):  # a mixture's named folders
        value = {name: _under(root, p) if isinstance(p, str) else p for name, p in value.items()}
    elif key.startswith("data.sources.") and isinstance(value, str):
        value = _under(root, value)
    return value


def _under(root: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def integer(v: Any, source, key: str, *, positive: bool = False) -> int:
    """An integer (1e3 written in YAML counts), else a ConfigError naming `key`."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(source, key, f"expected an integer, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(source, key, f"must be > 0, got {v}")
    return v


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
