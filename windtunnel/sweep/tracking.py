"""A sweep in the experiment trackers: which ones (`track`), the MLflow parent run, each trial's names.

The trials log from inside the training loop (`windtunnel.training.trackers`), one run per trial
even when trials train as a fused group; this module gives each its names: the trial id as run
name, the sweep as group (W&B) and parent run (MLflow), the swept keys as HParams columns
(TensorBoard). The MLflow parent run is made by the driver before any trial starts and kept across
`--resume` (its id is in `trackers.json` in the sweep folder); it ends with the sweep's counts and
best value.

Example:
    >>> tracking = sweep_tracking(spec, "runs/lr_init", track=["mlflow"], base=base_dict(spec))
    >>> tracking = start_parent(tracking, "runs/lr_init", spec)       # the folder exists by now
    >>> trial_tracking(tracking, point, "runs/lr_init/trials/t0003").name
    't0003'
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..fileio import write_json
from ..run_folder import MLFLOW_DB, STUDY_FILE, TENSORBOARD_DIR, TRACKERS_FILE, TRIALS_DIR, WANDB_DIR
from ..training.trackers import Tracking, check_trackers, experiment_name, mlflow_uri, resolve_track
from .points import TrialPoint
from .spec import SweepSpec

__all__ = ["sweep_tracking", "start_parent", "end_parent", "trial_tracking", "viewer_commands"]


def sweep_tracking(spec: SweepSpec, run_dir: str | os.PathLike, *, track: Sequence[str] | None,
                   base: dict[str, Any]) -> Tracking:
    """The sweep's trackers: `track` (--track), else the spec's `track`, else the base config's
    `train.track`, else TensorBoard when installed. Checked here, before anything is written: a
    tracker that is not installed or an MLflow server that does not answer is a one-line error."""
    if track is not None:
        names, key = resolve_track(track), "--track"
    elif spec.track is not None:
        names, key = resolve_track(spec.track), "track"
    else:
        names, key = resolve_track(base["train"].get("track")), "base: train.track"
    check_trackers(names, source=spec.source, key=key, out_dir=run_dir)
    uri = mlflow_uri(None, run_dir) if "mlflow" in names else None
    # resolved here: Ray's workers may not share the driver's environment
    return Tracking(names=names, group=spec.name, hparams=tuple(spec.param_keys), mlflow_uri=uri,
                    mlflow_experiment=experiment_name("mlflow"), wandb_project=experiment_name("wandb"),
                    wandb_mode=os.environ.get("WANDB_MODE") or "offline")


def start_parent(tracking: Tracking, run_dir: str | os.PathLike, spec: SweepSpec) -> Tracking:
    """Open (or, on resume, reopen) the sweep's MLflow parent run; returns `tracking` pointing at it."""
    if "mlflow" not in tracking.names:
        return tracking
    from ..training.tracker_clients import mlflow_client, mlflow_experiment
    run_dir = Path(run_dir)
    client = mlflow_client(tracking.mlflow_uri)
    saved = _saved(run_dir)
    parent = saved.get("mlflow_parent") if saved.get("mlflow_uri") == tracking.mlflow_uri else None
    if parent is not None and _exists(client, parent):
        client.update_run(parent, status="RUNNING")
    else:
        experiment = mlflow_experiment(client, tracking.mlflow_experiment or experiment_name("mlflow"))
        parent = client.create_run(experiment, run_name=spec.name, tags={
            "windtunnel.sweep": spec.name, "windtunnel.run_dir": str(run_dir.resolve()),
            "windtunnel.method": spec.method}).info.run_id
        client.log_param(parent, "swept", ", ".join(spec.param_keys))
        write_json(run_dir / TRACKERS_FILE, {"mlflow_uri": tracking.mlflow_uri, "mlflow_parent": parent})
    return dataclasses.replace(tracking, mlflow_parent=parent)


def end_parent(tracking: Tracking | None, *, counts: dict[str, int], best: dict[str, Any] | None, metric: str,
               finished: bool) -> None:
    """Close the MLflow parent run: trial counts and the best value; KILLED when the sweep did not end."""
    if tracking is None or tracking.mlflow_parent is None:
        return
    from mlflow.entities import Metric

    from ..training.tracker_clients import mlflow_client
    from ..typecheck import is_finite
    client = mlflow_client(tracking.mlflow_uri)
    values = {f"trials/{status}": float(n) for status, n in counts.items()}
    if best is not None and is_finite(best.get(metric)):
        values[f"best/{metric}"] = float(best[metric])
        client.set_tag(tracking.mlflow_parent, "best_trial", str(best["trial_id"]))
    client.log_batch(tracking.mlflow_parent, metrics=[Metric(k, v, 0, 0) for k, v in values.items()])
    client.set_terminated(tracking.mlflow_parent, status="FINISHED" if finished else "KILLED")


def trial_tracking(tracking: Tracking | None, point: TrialPoint, trial_dir: str | os.PathLike) -> Tracking | None:
    """One trial's names in the trackers (None: the trial's config decides, as a plain run)."""
    if tracking is None:
        return None
    tags = {"trial_id": point.trial_id, "seed": str(point.seed), "run_dir": str(Path(trial_dir).resolve())}
    return dataclasses.replace(tracking, name=point.trial_id, tags=tags)


def viewer_commands(run_dir: str | os.PathLike) -> list[str]:
    """Commands that open what a sweep folder holds in each tool (those that have something to show).

    Example:
        >>> viewer_commands("runs/lr_init")
        ['optuna-dashboard sqlite:////abs/runs/lr_init/study.db', 'tensorboard --logdir /abs/runs/lr_init/trials']
    """
    run_dir = Path(run_dir).resolve()
    out = []
    trials = run_dir / TRIALS_DIR
    if (run_dir / STUDY_FILE).is_file():
        out.append(f"optuna-dashboard sqlite:///{run_dir / STUDY_FILE}")
    if next(trials.glob(f"*/{TENSORBOARD_DIR}"), None) is not None:
        out.append(f"tensorboard --logdir {trials}")
    if (run_dir / MLFLOW_DB).is_file():
        out.append(f"mlflow ui --backend-store-uri sqlite:///{run_dir / MLFLOW_DB}")
    if next(trials.glob(f"*/{WANDB_DIR}/offline-run-*"), None) is not None:
        out.append(f"wandb sync {trials}/*/{WANDB_DIR}/offline-run-*")
    return out


def _saved(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / TRACKERS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _exists(client, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except Exception:  # noqa: BLE001 - MLflow raises its own error for an unknown id
        return False
