"""Experiment trackers: the run's metrics also in TensorBoard, MLflow and Weights & Biases.

One key chooses them: `train.track: [tensorboard, mlflow, wandb]` in a run config, `track:` in a
sweep spec, or `--track` on the command line. Null (the default) means TensorBoard when it is
installed; `[]` means none. Every run logs the same keys, so proxies of a sweep and the full run sit
side by side in each tool:

- params: the resolved config as dotted keys (`train.lr`, `model.d_model`, ...);
- per logged step: `train/loss`, `train/lr`, `train/val_loss`, `train/tokens`, `train/tokens_per_s`,
  `train/mfu` (and `train/val_loss.<source>` for a data mixture);
- at the end: `final/val_loss`, `final/train_loss`, `final/tokens`, `final/seconds`, `final/diverged`
  and the status (ok, diverged, pruned, error, stopped).

A sweep trial is logged from inside the training loop, once per trial, also when trials train as
one fused group. Where each tool puts a sweep (one TensorBoard folder per trial, an MLflow parent
run per sweep, a W&B group) is in `windtunnel.training.tracker_clients`.

Example:
    >>> with open_trackers(cfg, out_dir="runs/xs") as trackers:     # TensorBoard when installed
    ...     trackers.log(10, {"step": 10, "loss": 3.1, "lr": 0.01})
    ...     trackers.finish({"status": "ok", "val_loss": 2.9, "steps": 10, "tokens": 5120})
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from ..config import RunConfig, config_to_dict
from ..errors import ConfigError, WindtunnelError
from ..run_folder import MLFLOW_DB
from ..typecheck import is_finite, suggest

__all__ = ["TRACKERS", "KEY_HPARAMS", "DEFAULT_EXPERIMENT", "Tracking", "Trackers", "resolve_track",
           "check_trackers", "open_trackers", "parse_track", "experiment_name", "flat_params", "step_metrics",
           "final_metrics", "mlflow_uri", "tracker_available"]

TRACKERS = ("tensorboard", "mlflow", "wandb")
"""The trackers `track` may name."""

KEY_HPARAMS = ("train.lr", "model.init_std", "model.scale_emb", "model.scale_depth", "model.dim_model_base",
               "model.d_model", "model.n_layers", "train.steps", "train.batch_size", "train.seed")
"""The hyperparameters every run shows in TensorBoard's HParams table (a sweep adds its swept keys)."""

DEFAULT_EXPERIMENT = "windtunnel"
"""The MLflow experiment and W&B project when the environment names none."""

_ROW_KEYS = ("loss", "lr", "val_loss", "tokens", "tokens_per_s", "mfu")
_PROBE_S = 2.0  # an unreachable tracking server fails the start, within this many seconds


@dataclass(frozen=True)
class Tracking:
    """Where a run's trackers log beyond its own folder: the sweep it is a trial of, if any.

    `train` builds one for a plain run; a sweep builds one per trial (`windtunnel.sweep.tracking`)
    and ships it to the workers, so it holds plain values only.
    """

    names: tuple[str, ...] = ()
    """The trackers to open (already resolved: no null)."""
    name: str | None = None
    """The run's name in the trackers: the trial id, or the run folder's name."""
    group: str | None = None
    """The sweep's name (MLflow parent run, W&B group); None for a plain run."""
    hparams: tuple[str, ...] = ()
    """Dotted keys shown in TensorBoard's HParams table besides KEY_HPARAMS (a sweep's swept keys)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI; None: MLFLOW_TRACKING_URI, else a local store in the run folder."""
    mlflow_parent: str | None = None
    """The sweep's MLflow parent run id: each trial is its child."""
    mlflow_experiment: str | None = None
    """None: MLFLOW_EXPERIMENT_NAME, else `windtunnel`. A sweep resolves this, the project and the
    mode in the driver, whose environment Ray's workers may not share."""
    wandb_project: str | None = None
    """None: WANDB_PROJECT, else `windtunnel`."""
    wandb_mode: str | None = None
    """W&B mode; None: WANDB_MODE, else offline."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra tags (trial id, seed, the trial folder)."""


def resolve_track(track: Sequence[str] | None) -> tuple[str, ...]:
    """The trackers a `track` value means: null -> TensorBoard when installed, else the list itself.

    Example:
        >>> resolve_track(None), resolve_track(["mlflow"]), resolve_track([])
        (('tensorboard',), ('mlflow',), ())
    """
    if track is None:
        return ("tensorboard",) if tracker_available("tensorboard") else ()
    return tuple(dict.fromkeys(track))


def parse_track(text: str, *, source: str = "--track") -> tuple[str, ...]:
    """A command line's tracker list: comma-separated names, or `none`.

    Example:
        >>> parse_track("tensorboard,mlflow"), parse_track("none")
        (('tensorboard', 'mlflow'), ())
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(None, source, f"unknown tracker {name!r}{suggest(name, TRACKERS)}; expected a "
                              f"comma-separated list of {', '.join(TRACKERS)}, or none")
    return tuple(dict.fromkeys(names))


def tracker_available(name: str) -> bool:
    """Whether a tracker's client library is installed (without importing it)."""
    modules = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}[name]
    return any(importlib.util.find_spec(m) is not None for m in modules)


def check_trackers(names: Sequence[str], *, source: str | None, key: str = "train.track",
                   out_dir: str | os.PathLike | None = None) -> None:
    """Refuse, before anything runs, a tracker that is not installed or an MLflow server that does not
    answer (a TCP connect of at most two seconds), as one ConfigError line.

    Example:
        >>> check_trackers(["wandb"], source="proxies/xs.yaml")     # without wandb installed
        ConfigError: proxies/xs.yaml: train.track: wandb is not installed; pip install 'windtunnel[wandb]'
    """
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(source, key, f"unknown tracker {name!r}; expected some of {', '.join(TRACKERS)}")
        if not tracker_available(name):
            raise ConfigError(source, key, f"{name} is not installed; pip install 'windtunnel[{name}]' "
                              f"(or leave {name} out of {key})")
    if "mlflow" in names:
        _probe_mlflow(mlflow_uri(None, out_dir or "."))


def mlflow_uri(uri: str | None, run_dir: str | os.PathLike) -> str:
    """The MLflow store a run logs to: `uri`, else MLFLOW_TRACKING_URI, else MLflow's default backend
    (SQLite) as a file in the run (or sweep) folder, so nothing lands in the working directory."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir) / MLFLOW_DB).resolve()}"


def experiment_name(tracker: str) -> str:
    """Where runs are grouped: MLFLOW_EXPERIMENT_NAME (mlflow) or WANDB_PROJECT (wandb), else `windtunnel`."""
    env = {"mlflow": "MLFLOW_EXPERIMENT_NAME", "wandb": "WANDB_PROJECT"}[tracker]
    return os.environ.get(env) or DEFAULT_EXPERIMENT


def _probe_mlflow(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return  # a local store (sqlite, file) is created on first use
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=_PROBE_S).close()
    except OSError as e:
        raise WindtunnelError(f"MLflow tracking server {uri} does not answer ({e.strerror or e}); start it, "
                              "or unset MLFLOW_TRACKING_URI to log to a local store in the run folder") from None


def flat_params(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values (lists as text, mappings one key deeper).

    Example:
        >>> flat_params(load_config("proxies/xs.yaml"))["train.lr"]
        0.01
    """
    out: dict[str, Any] = {}
    for section, values in config_to_dict(cfg).items():
        for key, value in values.items():
            if isinstance(value, Mapping):
                out.update({f"{section}.{key}.{k}": _scalar(v) for k, v in value.items()})
            else:
                out[f"{section}.{key}"] = _scalar(value)
    return out


def step_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.csv row as tracker metrics (`train/<column>`); empty and non-finite cells are left out."""
    keys = [k for k in row if k in _ROW_KEYS or k.startswith("val_loss.")]
    return {f"train/{k}": float(row[k]) for k in keys if is_finite(row[k])}


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """A summary's outcome as tracker metrics (`final/...`); a diverged run has `final/diverged` 1 and no
    val_loss (trackers hold no infinities)."""
    out = {"final/diverged": 1.0 if summary.get("status") == "diverged" else 0.0}
    for key in ("val_loss", "train_loss", "tokens", "seconds", "steps"):
        if is_finite(summary.get(key)):
            out[f"final/{key}"] = float(summary[key])
    return out


class Trackers:
    """The run's open trackers as one: `log` per metrics row, `finish` once with the summary.

    A tracker that fails mid-run (a server gone away) is dropped with one warning: the run goes on.
    Closed without `finish` (the run raised), each tracker records the run as failed.
    """

    def __init__(self, clients: list[Any]):
        self.clients = clients
        self._done = False

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        metrics = step_metrics(row)
        if metrics:
            self._each("log", step, metrics)

    def finish(self, summary: Mapping[str, Any]) -> None:
        if not self._done:
            self._done = True
            self._each("finish", int(summary.get("steps") or 0), final_metrics(summary),
                       str(summary.get("status") or "error"))

    def close(self) -> None:
        self.finish({"status": "error"})

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _each(self, method: str, *args) -> None:
        for client in list(self.clients):
            try:
                getattr(client, method)(*args)
            except Exception as e:  # noqa: BLE001 - a dashboard never costs the run
                self.clients.remove(client)
                print(f"windtunnel: warning: {client.name} tracking stopped ({type(e).__name__}: {e})",
                      file=sys.stderr, flush=True)


def open_trackers(cfg: RunConfig, *, out_dir: str | os.PathLike, tracking: Tracking | None = None,
                  enabled: bool = True, resume: bool = False) -> Trackers:
    """Open the trackers of one run (`tracking.names`, else `cfg.train.track` resolved); with
    `enabled` False (ranks other than 0) none. `resume`: the run continues from a checkpoint, and
    MLflow continues the run this folder logged to (TensorBoard appends to the same folder; W&B
    starts a run of the same name and group).

    Example:
        >>> trackers = open_trackers(cfg, out_dir="runs/xs", tracking=Tracking(names=("mlflow",)))
    """
    out = Path(out_dir)
    tracking = tracking or Tracking(names=resolve_track(cfg.train.track))
    if not enabled or not tracking.names:
        return Trackers([])
    from .tracker_clients import RunInfo, open_client
    params = flat_params(cfg)
    run = RunInfo(out=out, name=tracking.name or out.resolve().name, params=params,
                  hparams={k: params[k] for k in (*KEY_HPARAMS, *tracking.hparams) if params.get(k) is not None},
                  group=tracking.group, tags={"run_dir": str(out.resolve()), **tracking.tags},
                  mlflow_uri=mlflow_uri(tracking.mlflow_uri, out), mlflow_parent=tracking.mlflow_parent, resume=resume,
                  mlflow_experiment=tracking.mlflow_experiment or experiment_name("mlflow"),
                  wandb_project=tracking.wandb_project or experiment_name("wandb"),
                  wandb_mode=tracking.wandb_mode or os.environ.get("WANDB_MODE") or "offline")
    trackers = Trackers([])
    try:
        for tracker in tracking.names:
            trackers.clients.append(open_client(tracker, run))
    except BaseException:
        trackers.close()
        raise
    return trackers


def _scalar(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return str(list(value))
    return value

