"""Plain YAML data checked against dataclass type hints, addressed by dotted keys.

A config file is sections (`model`, `train`, ...) of plain values; each section is a dataclass whose
type hints say what a field takes: `int`, `float`, `bool`, `str`, `X | None`, `Literal[...]`,
`tuple[...]` (`tuple[X, ...]`: a list) or `dict[str, X]`. This module turns plain data into those dataclasses, or raises
`ConfigError(source, "section.key", ...)` naming the file, the key, what was expected and what came.
Dotted keys (`train.lr`, `data.mixture.web`) name one field, or one entry of a mapping field, from
the command line (`parse_overrides`) or a sweep. The module knows no particular schema:
`windtunnel.config` (the run config) and the sweep spec pass theirs.

Example:
    >>> from windtunnel.config import TrainConfig
    >>> check_section(TrainConfig, {"lr": "3e-3", "steps": 1e3}, source="c.yaml", section="train").steps
    1000
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from typing import Any, Literal, Mapping, Sequence

import yaml

from .errors import ConfigError

__all__ = [
    "check_section",
    "check_key",
    "set_keys",
    "parse_overrides",
    "coerce",
    "maybe_number",
    "suggest",
    "check_positive",
    "check_non_negative",
    "is_int",
    "is_finite",
]


def read_yaml_mapping(path, *, expected: str) -> dict[str, Any]:
    """A YAML file's top-level mapping ({} for an empty file); a missing file, bad YAML or another
    top-level type is a ConfigError naming the file. `expected` says what the mapping should hold.

    Example:
        >>> read_yaml_mapping("proxies/xs.yaml", expected="model/train/data")["model"]["d_model"]
        64
    """
    source = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "no such file") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, "(yaml)", f"not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", f"expected a mapping with {expected}, got {type(data).__name__}")
    return data


def check_section(cls, raw: Mapping[str, Any] | None, *, source: str | None, section: str):
    """Build the dataclass `cls` from a mapping, each key checked against its field's type hint.

    None gives the defaults. An unknown key, a wrong type or a value outside a `Literal` raises
    `ConfigError(source, "section.key", ...)`; ints are accepted for floats and `1e-3` strings for
    numbers. Rules on values and across fields (`> 0`, `<`) are the caller's: the run config and the
    sweep spec each check theirs after this.

    Example:
        >>> from windtunnel.config import TrainConfig
        >>> check_section(TrainConfig, {"lr": "3e-3"}, source="c.yaml", section="train").lr
        0.003
    """
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(source, section, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(source, f"{section}.{key}", f"unknown key{suggest(key, names, listed=8)}")
        values[key] = coerce(value, hints[key], source, f"{section}.{key}")
    return cls(**values)


def check_key(sections: Mapping[str, type], key: str, value: Any, *, source: str | None = None) -> Any:
    """Check one value against the field a dotted key names in `sections`; return it as the field holds it.

    `section.field` names a field; `section.field.entry` one entry of a `dict[str, X]` field.

    Example:
        >>> from windtunnel.config import DataConfig
        >>> check_key({"data": DataConfig}, "data.mixture.web", "0.5")
        0.5
    """
    section, _, name = key.partition(".")
    cls = sections.get(section)
    if cls is None or not name:
        raise ConfigError(source, key, f"unknown key{suggest(section, sections)}; keys look like "
                          f"{'/'.join(sections)}.<field>")
    hints = typing.get_type_hints(cls)
    name, _, inner = name.partition(".")  # data.mixture.web: field `mixture`, entry `web`
    if name not in hints:
        raise ConfigError(source, key, f"unknown key{suggest(name, list(hints))}")
    if not inner:
        return coerce(value, hints[name], source, key)
    mapping = [a for a in (typing.get_args(hints[name]) or (hints[name],)) if typing.get_origin(a) is dict]
    if not mapping or "." in inner:
        raise ConfigError(source, key, f"{section}.{name} is not a mapping; set it as a whole")
    return coerce(value, typing.get_args(mapping[0])[1], source, key)


def set_keys(data: dict, values: Mapping[str, Any], *, sections: Sequence[str], source: str | None) -> dict:
    """Return a copy of nested plain data with dotted keys set; the input is not changed.

    The first part of each key must be one of `sections`; deeper parts reach into mappings, which are
    copied on the way down. Values are set as given: checking them is the dataclasses' job.

    Example:
        >>> set_keys({"data": {"mixture": {"web": 1}}}, {"data.mixture.code": 0.3}, sections=["data"],
        ...          source=None)
        {'data': {'mixture': {'web': 1, 'code': 0.3}}}
    """
    data = dict(data)
    for key, value in values.items():
        parts = key.split(".")
        if parts[0] not in sections or len(parts) < 2 or not all(parts):
            raise ConfigError(source, key, f"unknown key{suggest(parts[0], sections)}; keys look like "
                              f"{'/'.join(sections)}.<field>")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                raise ConfigError(source, ".".join(parts[: depth + 1]),
                                  f"expected a mapping to set {key} in, got {child!r}")
            node[part] = child = dict(child or {})  # copied: the caller's dict stays as it was
            node = child
        node[parts[-1]] = value
    return data


def parse_overrides(items: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Parse `key.path=value` strings; values are YAML scalars or lists (`0.01`, `true`, `[0.9, 0.95]`).

    Example:
        >>> parse_overrides(["train.lr=3e-3", "model.parametrization=sp"])
        {'train.lr': 0.003, 'model.parametrization': 'sp'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(source, item, "expected KEY=VALUE, for example model.d_model=128")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = maybe_number(value)
    return out


def coerce(value: Any, hint: Any, source: str | None, key: str) -> Any:
    """Check `value` against a type hint; ints are accepted for floats, '1e-3' strings for numbers.

    Example:
        >>> coerce("1e-3", float | None, "c.yaml", "train.lr")
        0.001
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, source, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, key, f"expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, f"expected a mapping of names to values, got {value!r}")
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(source, f"{key}.{name}", f"expected a name (string) as key, got {name!r}")
            out[name] = coerce(item, args[1], source, f"{key}.{name}")
        return out
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {value!r}")
        return tuple(coerce(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(source, key, f"expected a list of {len(args)} numbers, got {value!r}")
        return tuple(coerce(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return _coerce_scalar(maybe_number(value), hint, source, key)


def _coerce_scalar(value: Any, hint: Any, source: str | None, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e6 in YAML is a float; an integral float is an int the user meant
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    return value


def maybe_number(value: Any) -> Any:
    """A string that spells a finite number becomes that number; anything else is returned as is.

    YAML 1.1 reads `1e-3` (no dot) as a string; users mean the number.

    Example:
        >>> maybe_number("1e-3"), maybe_number("12"), maybe_number("fast"), maybe_number("nan")
        (0.001, 12, 'fast', 'nan')
    """
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def suggest(key: str, choices, *, listed: int = 0) -> str:
    """` (did you mean 'x'?)` for a close match; else the choices when there are at most `listed`.

    Example:
        >>> suggest("d_modle", ["d_model", "n_layers"]), suggest("zz", ["a", "b"], listed=2)
        (" (did you mean 'd_model'?)", '; expected one of a, b')
    """
    choices = list(choices)
    close = difflib.get_close_matches(key, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; expected one of {', '.join(choices)}" if 0 < len(choices) <= listed else ""


def check_positive(obj, source: str | None, section: str, names: Sequence[str]) -> None:
    """Raise `ConfigError(source, "section.name", "must be > 0, ...")` for the first field of `obj` <= 0."""
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(source, f"{section}.{name}", f"must be > 0, got {value}")


def check_non_negative(obj, source: str | None, section: str, names: Sequence[str]) -> None:
    """Raise `ConfigError(source, "section.name", "must be >= 0, ...")` for the first field of `obj` < 0."""
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(source, f"{section}.{name}", f"must be >= 0, got {value}")


def is_int(x: Any) -> bool:
    """A Python or numpy integer, not a bool (`True` is an int to Python, never a count to us).

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)  # numpy ints are Integral


def is_finite(x: Any) -> bool:
    """A value that reads as a finite number (None, "", NaN, inf and text are not).

    Example:
        >>> is_finite(1.5), is_finite(float("inf")), is_finite(None), is_finite("2")
        (True, False, False, True)
    """
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
