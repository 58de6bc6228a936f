"""The three trackers, each through its own client library; `windtunnel.training.trackers` picks them.

Each client has `log(step, metrics)` and `finish(step, final, status)`:

- TensorBoard: events in `<run>/tensorboard/` (so one folder per sweep trial), with the HParams
  plugin's session start (the run's hyperparameters) and end (its status), so TensorBoard's HParams
  dashboard lists every trial with its values and final metrics: `tensorboard --logdir runs/`.
- MLflow: one run with the config as params, the per-step metrics and the final summary; a sweep's
  trials are children of the sweep's parent run. Experiment: MLFLOW_EXPERIMENT_NAME, else
  `windtunnel`. Store: MLFLOW_TRACKING_URI, else `mlflow.db` (SQLite, MLflow's default backend) in
  the run or sweep folder: `mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db`.
- W&B: one run per trial, grouped by sweep, offline unless WANDB_MODE says otherwise (files under
  `<run>/wandb/`; `wandb sync` uploads them later). Project: WANDB_PROJECT, else `windtunnel`. No
  console capture and no system-metrics sampling: the loop's own numbers are what is logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import write_json
from ..run_folder import TENSORBOARD_DIR, TRACKERS_FILE

__all__ = ["RUN_IDS_FILE", "RunInfo", "open_client", "TensorBoardClient", "MlflowTrackerClient", "WandbClient",
           "mlflow_client", "mlflow_experiment", "MLFLOW_STATUS"]

RUN_IDS_FILE = TRACKERS_FILE
"""In a run folder: the MLflow run it logs to (so --resume continues it); in a sweep folder: the parent run."""

MLFLOW_STATUS = {"ok": "FINISHED", "stopped": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "error": "FAILED"}
_FAILED = ("diverged", "error")


@dataclass(frozen=True)
class RunInfo:
    """What every client is told about the run it logs."""

    out: Path
    name: str
    params: dict[str, Any]
    """The resolved config as dotted keys."""
    hparams: dict[str, Any]
    """The subset shown in TensorBoard's HParams table."""
    group: str | None = None
    """The sweep's name, None for a plain run."""
    tags: dict[str, str] = field(default_factory=dict)
    mlflow_uri: str = ""
    """The resolved MLflow store."""
    mlflow_parent: str | None = None
    resume: bool = False
    """The run continues from a checkpoint: MLflow continues the run it logged to before."""
    mlflow_experiment: str = "windtunnel"
    wandb_project: str = "windtunnel"
    wandb_mode: str = "offline"


def open_client(tracker: str, run: RunInfo):
    """One tracker's client for `run`."""
    return {"tensorboard": TensorBoardClient, "mlflow": MlflowTrackerClient, "wandb": WandbClient}[tracker](run)


class TensorBoardClient:
    """Scalars plus the HParams session of one run, in `<out>/tensorboard/`."""

    name = "tensorboard"

    def __init__(self, run: RunInfo):
        import importlib.util
        self.hparams_plugin = importlib.util.find_spec("tensorboard") is not None
        if self.hparams_plugin:
            from torch.utils.tensorboard import SummaryWriter
        else:  # tensorboardX (it comes with Ray): scalars only, no HParams session
            from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run.out / TENSORBOARD_DIR))
        if self.hparams_plugin:
            self.writer.file_writer.add_summary(_hparams_summary(session_start=run.hparams))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, step: int, final: dict[str, float], status: str) -> None:
        self.log(step, final)
        if self.hparams_plugin:
            self.writer.file_writer.add_summary(_hparams_summary(session_end=status))
        self.writer.close()


def _hparams_summary(*, session_start: dict[str, Any] | None = None, session_end: str | None = None):
    """The HParams plugin's session start (hyperparameters) or end (status) as a TensorBoard summary.

    No experiment summary is written: TensorBoard then builds the table's columns from every run's
    session, so proxies of several sweeps and the full run share one table.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    if session_start is not None:
        info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in session_start.items():
            if isinstance(value, bool):
                info.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[key].number_value = float(value)
            else:
                info.hparams[key].string_value = str(value)
        content, tag = plugin_data_pb2.HParamsPluginData(session_start_info=info), metadata.SESSION_START_INFO_TAG
    else:
        status = {"ok": "STATUS_SUCCESS", "stopped": "STATUS_SUCCESS", "pruned": "STATUS_ABORTED"}.get(
            session_end, "STATUS_FAILURE")
        info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=time.time())
        content, tag = plugin_data_pb2.HParamsPluginData(session_end_info=info), metadata.SESSION_END_INFO_TAG
    content.version = metadata.PLUGIN_DATA_VERSION
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                   content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


class MlflowTrackerClient:
    """One MLflow run: params, per-step metrics, the final summary; a child of the sweep's parent run."""

    name = "mlflow"

    def __init__(self, run: RunInfo):
        from mlflow.entities import Param
        self.client = mlflow_client(run.mlflow_uri)
        saved = _saved_run(run.out, run.mlflow_uri) if run.resume else None
        if saved is not None:  # a resumed run: its metrics continue the same MLflow run
            self.run_id = saved
            self.client.update_run(saved, status="RUNNING")
            return
        experiment = mlflow_experiment(self.client, run.mlflow_experiment)
        tags = {**run.tags, **({"windtunnel.sweep": run.group} if run.group else {}),
                **({"mlflow.parentRunId": run.mlflow_parent} if run.mlflow_parent else {})}
        self.run_id = self.client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        items = [Param(k, str(v)) for k, v in run.params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        write_json(run.out / RUN_IDS_FILE, {"mlflow_uri": run.mlflow_uri, "mlflow_run": self.run_id})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, step: int, final: dict[str, float], status: str) -> None:
        self.log(step, final)
        self.client.set_tag(self.run_id, "status", status)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))


def _saved_run(out: Path, uri: str) -> str | None:
    """The MLflow run id an earlier session of this run logged to, when it is in the same store."""
    import json
    try:
        saved = json.loads((out / RUN_IDS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("mlflow_run") if saved.get("mlflow_uri") == uri else None


def mlflow_client(uri: str):
    """An MlflowClient on a store (`trackers.mlflow_uri` resolves which)."""
    import logging

    from mlflow import MlflowClient
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines in the run's console
    return MlflowClient(tracking_uri=uri)


def mlflow_experiment(client, name: str) -> str:
    """The id of experiment `name`, created when missing; in a SQLite store its artifacts go beside
    the database file (MLflow would otherwise pick `./mlruns` in the working directory)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = str(client.tracking_uri)
    beside = Path(uri[len("sqlite:///"):]).parent / "mlartifacts" if uri.startswith("sqlite:///") else None
    try:
        return client.create_experiment(name, artifact_location=beside.resolve().as_uri() if beside else None)
    except Exception:  # noqa: BLE001 - another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class WandbClient:
    """One W&B run (offline by default), in the sweep's group; files under `<out>/wandb/`."""

    name = "wandb"

    def __init__(self, run: RunInfo):
        import wandb
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_machine_info=True,
                                  disable_git=True, save_code=False, silent=True)
        run.out.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=run.wandb_project, group=run.group,
                              name=run.name, job_type="trial" if run.group else "train", dir=str(run.out),
                              config={**run.params, **run.tags}, tags=[run.group] if run.group else None,
                              mode=run.wandb_mode, reinit="create_new",
                              settings=settings)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, step: int, final: dict[str, float], status: str) -> None:
        self.run.summary.update({**final, "status": status})
        self.run.finish(exit_code=1 if status in _FAILED else 0)
