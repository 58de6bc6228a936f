"""The sweep spec: a YAML file a W&B-sweeps user can read, loaded into dataclasses and checked.

    name: lr_init
    base: ../proxies/xs.yaml           # run config; parameters are dotted keys into it
    set: {train.steps: 300}            # fixed overrides
    method: grid                       # grid | random | tpe
    metric: {name: val_loss, goal: minimize}
    parameters:
      train.lr: {values: [0.001, 0.003, 0.01]}
      model.init_std: {distribution: log_uniform, min: 0.01, max: 0.2}   # random / tpe only
    seeds: [0]
    budget: {num_trials: 16, max_concurrent: 2, time_budget_s: null, fuse: null}   # fuse: K | auto
    early_terminate: {type: asha, grace_period: 50, reduction_factor: 3}
    first_trials:                      # tpe only: tried first (e.g. today's defaults), so the search
      - {train.lr: 0.01, model.init_std: 0.1}   # can only end at or below them
    resources: {cpu: 1, gpu: 0}
    track: [tensorboard, mlflow, wandb]  # experiment trackers per trial; null: the base config's train.track

Every rule a spec can break raises `ConfigError(spec file, key, what was expected)` before anything
is written. No torch and no Ray here: checking a spec is instant.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from ..config import check_section, config_to_dict, load_config
from ..errors import ConfigError
from ..typecheck import coerce, read_yaml_mapping
from .params import DISTRIBUTIONS, Param, integer, parse_parameters, spec_value

__all__ = ["Param", "Metric", "Budget", "EarlyTerminate", "Resources", "SweepSpec", "load_sweep",
           "spec_from_dict", "spec_to_dict", "base_dict", "max_steps", "METHODS", "DISTRIBUTIONS"]

METHODS = ("grid", "random", "tpe")
_TOP_KEYS = ("name", "description", "base", "set", "method", "metric", "parameters", "seeds", "budget",
             "early_terminate", "resources", "search_seed", "track", "first_trials")
_TRACK_HINT = tuple[Literal["tensorboard", "mlflow", "wandb"], ...] | None  # what the run config's train.track takes
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Metric:
    name: Literal["val_loss", "train_loss"] = "val_loss"
    """What trials are ranked by: final held-out loss (default) or final training loss."""
    goal: Literal["minimize", "maximize"] = "minimize"

    @property
    def mode(self) -> str:
        return "min" if self.goal == "minimize" else "max"


@dataclass(frozen=True)
class Budget:
    num_trials: int | None = None
    """grid: null (every point x seed) or exactly that count; random/tpe: configurations to try."""
    max_concurrent: int | None = None
    """Trials running at once; null lets the cluster's free resources decide."""
    time_budget_s: float | None = None
    """Stop the sweep after this many seconds; unfinished trials are left for --resume."""
    fuse: int | Literal["auto"] | None = None
    """Train up to this many same-shape trials as one fused model per Ray trial (`auto`: as many as
    fit one trial's resources, at most 16); null or 1 runs one trial per Ray trial."""


@dataclass(frozen=True)
class EarlyTerminate:
    type: Literal["asha"] = "asha"
    grace_period: int = 50
    """Optimizer steps before a trial can be stopped (the first ASHA rung)."""
    reduction_factor: float = 3.0
    """Each rung keeps the best 1/reduction_factor of the trials that reach it."""


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    """CPUs per trial (fractions allowed); torch gets max(1, floor(cpu)) threads."""
    gpu: float = 0.0
    """GPUs per trial (fractions let trials share one)."""


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep. `base` is absolute; `set` and `parameters` values are checked per key."""

    name: str
    base: str
    method: Literal["grid", "random", "tpe"]
    parameters: dict[str, Param]
    set: dict[str, Any] = field(default_factory=dict)
    metric: Metric = field(default_factory=Metric)
    seeds: tuple[int, ...] = (0,)
    budget: Budget = field(default_factory=Budget)
    early_terminate: EarlyTerminate | None = None
    resources: Resources = field(default_factory=Resources)
    search_seed: int = 0
    """Seed of the random / TPE sampler: the same spec draws the same random points."""
    description: str = ""
    track: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] | None = None
    """Experiment trackers every trial logs to (`--track` overrides it); null: the base config's
    `train.track` (TensorBoard when installed). How the sweep runs, not what it measures: it may
    change on --resume."""
    first_trials: tuple[dict[str, Any], ...] = ()
    """tpe: configurations the search tries before its own (e.g. the shipped defaults), each a mapping
    of some swept keys to values inside their ranges; keys left out are drawn by TPE."""
    source: str | None = field(default=None, compare=False)

    @property
    def param_keys(self) -> list[str]:
        return list(self.parameters)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec YAML; relative paths are taken relative to the spec file.

    Example:
        >>> spec = load_sweep("sweeps/lr_init.yaml")
        >>> spec.method, spec.param_keys
        ('grid', ['train.lr', 'model.init_std'])
    """
    source = str(path)
    data = read_yaml_mapping(path, expected="name/base/method/parameters")
    data.setdefault("name", Path(path).stem)
    return spec_from_dict(data, source=source, root=Path(path).resolve().parent)


def spec_from_dict(data: Mapping[str, Any], *, source: str | None = None, root: str | Path = ".") -> SweepSpec:
    """Build and check a `SweepSpec` from plain data; `root` anchors relative paths.

    Example:
        >>> spec_from_dict({"name": "t", "base": "proxies/xs.yaml", "method": "grid",
        ...                 "parameters": {"train.lr": {"values": [0.01, 0.03]}}}).seeds
        (0,)
    """
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(source, str(unknown[0]), f"unknown key; expected one of {', '.join(_TOP_KEYS)}")
    root = Path(root)
    name = _name(data.get("name"), source)
    method = data.get("method")
    if method not in METHODS:
        raise ConfigError(source, "method", f"expected one of {', '.join(METHODS)}, got {method!r}")
    base = _base(data.get("base"), source, root)
    fixed = _fixed(data.get("set"), source, root)
    params = parse_parameters(data.get("parameters"), method, source, root)
    both = sorted(set(fixed) & set(params))
    if both:
        raise ConfigError(source, f"set.{both[0]}", "is also a swept parameter; keep it in one place")
    seeds = _seeds(data.get("seeds", [0]), source)
    spec = SweepSpec(
        name=name, base=base, method=method, parameters=params, set=fixed,
        metric=_section(Metric, data.get("metric"), source, "metric"),
        seeds=seeds,
        budget=_budget(data.get("budget"), source),
        early_terminate=_section(EarlyTerminate, data["early_terminate"], source, "early_terminate")
        if data.get("early_terminate") is not None else None,
        resources=_section(Resources, data.get("resources"), source, "resources"),
        search_seed=integer(data.get("search_seed", 0), source, "search_seed"),
        description=str(data.get("description") or ""),
        track=coerce(data.get("track"), _TRACK_HINT, source, "track"),
        first_trials=_first_trials(data.get("first_trials"), method, params, source),
        source=source,
    )
    _check_spec(spec)
    return spec


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """Plain data of a spec (what `spec.yaml` in the run folder holds); `spec_from_dict` reads it back."""
    def plain(obj) -> dict:
        return dict(vars(obj))

    params = {}
    for key, p in spec.parameters.items():
        if p.values is not None:
            entry = {"values": list(p.values)}
        else:
            entry = {"distribution": p.distribution, "min": p.min, "max": p.max}
            if p.step is not None:
                entry["step"] = p.step
        params[key] = entry
    out = {"name": spec.name, "description": spec.description, "base": spec.base, "set": dict(spec.set),
           "method": spec.method, "metric": plain(spec.metric), "parameters": params,
           "seeds": list(spec.seeds), "budget": plain(spec.budget),
           "early_terminate": plain(spec.early_terminate) if spec.early_terminate else None,
           "resources": plain(spec.resources), "search_seed": spec.search_seed,
           "track": list(spec.track) if spec.track is not None else None}
    if spec.first_trials:
        out["first_trials"] = [dict(t) for t in spec.first_trials]
    return out


# --- parts ---------------------------------------------------------------------------------------


def _name(value: Any, source) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(source, "name", f"expected a folder-safe name (letters, digits, _ . -), got {value!r}")
    return value


def _base(value: Any, source, root: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, "base", f"expected the path of a run config YAML, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (root / path).resolve()
    if not path.is_file():
        raise ConfigError(source, "base", f"no such file {value!r} (looked for {path})")
    return str(path)


def _fixed(value: Any, source, root: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, "set", f"expected a mapping of dotted keys to values, got {value!r}")
    return {str(k): spec_value(str(k), v, source, f"set.{k}", root) for k, v in value.items()}


def _seeds(value: Any, source) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(source, "seeds", f"expected a non-empty list of integers, got {value!r}")
    seeds = tuple(integer(s, source, f"seeds[{i}]") for i, s in enumerate(value))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(source, "seeds", f"has duplicates: {list(seeds)}")
    return seeds


def _first_trials(value: Any, method: str, params: dict[str, Param], source) -> tuple[dict[str, Any], ...]:
    """Each entry a mapping of swept keys to values TPE could draw itself (inside the range, or one of
    the values), so the study accepts it as one of its own trials."""
    if value is None:
        return ()
    if method != "tpe":
        raise ConfigError(source, "first_trials", f"only a tpe search takes first trials (a {method} sweep "
                          "already runs the points it lists); add them to the parameters' values instead")
    if not isinstance(value, list):
        raise ConfigError(source, "first_trials", f"expected a list of mappings {{swept key: value}}, got {value!r}")
    out = []
    for i, entry in enumerate(value):
        where = f"first_trials[{i}]"
        if not isinstance(entry, Mapping) or not entry:
            raise ConfigError(source, where, f"expected a mapping {{swept key: value}}, got {entry!r}")
        for key, v in entry.items():
            p = params.get(str(key))
            if p is None:
                raise ConfigError(source, f"{where}.{key}", f"is not a swept parameter; expected one of "
                                  f"{', '.join(params)}")
            if p.values is not None:
                if v not in p.values:
                    raise ConfigError(source, f"{where}.{key}", f"expected one of {list(p.values)}, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not p.min <= v <= p.max:
                raise ConfigError(source, f"{where}.{key}", f"expected a number in [{p.min:g}, {p.max:g}] "
                                  f"(the parameter's range), got {v!r}")
        out.append({str(k): v for k, v in entry.items()})
    return tuple(out)


def _budget(raw: Any, source) -> Budget:
    """The budget section; `fuse` (a positive integer or `auto`) is checked here, the rest by type."""
    if not isinstance(raw, Mapping) or "fuse" not in raw:
        return _section(Budget, raw, source, "budget")
    fuse = raw["fuse"]
    ok = fuse is None or fuse == "auto" or (type(fuse) is int and fuse >= 1)
    if not ok:
        raise ConfigError(source, "budget.fuse", f"expected a positive integer, auto or null, got {fuse!r}")
    rest = _section(Budget, {k: v for k, v in raw.items() if k != "fuse"}, source, "budget")
    return dataclasses.replace(rest, fuse=fuse)


def _section(cls, raw: Any, source, name: str):
    """A small dataclass section, typed by config's checker; a sweep's counts and steps are > 0 too."""
    section = check_section(cls, raw, source=source, section=name)
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if type(value) is int and value <= 0:  # int fields only: check_section gives floats as float
            raise ConfigError(source, f"{name}.{f.name}", f"must be > 0, got {value}")
    return section


def _check_spec(spec: SweepSpec) -> None:
    """Rules across sections; the base config must load with the fixed overrides."""
    src = spec.source
    try:
        load_config(spec.base)
    except ConfigError as e:
        raise ConfigError(src, "base", str(e)) from None
    try:
        base = load_config(spec.base, overrides=spec.set)
    except ConfigError as e:
        raise ConfigError(src, f"set.{e.key}" if e.key in spec.set else "set",
                          f"{e.message} (base {spec.base} with the fixed overrides)") from None
    b, r = spec.budget, spec.resources
    if spec.method == "grid":
        points = math.prod(len(p.values) for p in spec.parameters.values()) * len(spec.seeds)
        if b.num_trials is not None and b.num_trials != points:
            raise ConfigError(src, "budget.num_trials", f"the grid has {points} trials "
                              f"({_grid_shape(spec)} x {len(spec.seeds)} seeds); set it to {points} or null")
    elif b.num_trials is None:
        raise ConfigError(src, "budget.num_trials", f"method {spec.method} needs a number of trials")
    if spec.method == "tpe" and len(spec.seeds) != 1:
        raise ConfigError(src, "seeds", f"method tpe proposes each configuration once, so it takes one "
                          f"seed, got {list(spec.seeds)}")
    if r.cpu <= 0 or r.gpu < 0:
        raise ConfigError(src, "resources", f"expected cpu > 0 and gpu >= 0, got cpu={r.cpu}, gpu={r.gpu}")
    if b.time_budget_s is not None and b.time_budget_s <= 0:
        raise ConfigError(src, "budget.time_budget_s", f"must be > 0 or null, got {b.time_budget_s}")
    et = spec.early_terminate
    if et is not None:
        if et.reduction_factor <= 1:
            raise ConfigError(src, "early_terminate.reduction_factor", f"must be > 1, got {et.reduction_factor}")
        steps = max_steps(spec, base.train.steps)
        if et.grace_period >= steps:
            raise ConfigError(src, "early_terminate.grace_period", f"must be < train.steps={steps} "
                              f"(ASHA could never stop a trial), got {et.grace_period}")


def _grid_shape(spec: SweepSpec) -> str:
    return " x ".join(str(len(p.values)) for p in spec.parameters.values())


def max_steps(spec: SweepSpec, base_steps: int) -> int:
    p = spec.parameters.get("train.steps")
    if p is None:
        return base_steps
    return int(max(p.values) if p.values is not None else p.max)


def base_dict(spec: SweepSpec) -> dict[str, Any]:
    """The base run config with the spec's fixed overrides, as plain data with absolute paths."""
    return config_to_dict(load_config(spec.base, overrides=spec.set))
