"""Read back what the trackers wrote, with each tool's own reader: TensorBoard's event accumulator,
MLflow's client, W&B's record protobufs from an offline run file."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tb_run(run_dir: Path):
    """TensorBoard's EventAccumulator over `<run_dir>/tensorboard`, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    acc = tb_run(run_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def tb_session(run_dir: Path) -> tuple[dict, str]:
    """The HParams plugin's session of a run: (hyperparameters, end status name)."""
    from tensorboard.plugins.hparams import api_pb2, metadata
    content = tb_run(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    values = {}
    for key, v in start.hparams.items():
        values[key] = getattr(v, v.WhichOneof("kind"))
    return values, api_pb2.Status.Name(end.status)


def mlflow_runs(uri: str) -> list:
    """Every run in the store (all experiments)."""
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


def mlflow_history(uri: str, run_id: str, key: str) -> dict[int, float]:
    from mlflow import MlflowClient
    return {m.step: m.value for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)}


def wandb_run(run_dir: Path) -> dict:
    """The records of the one offline W&B run under `<run_dir>/wandb`: its run record (name, group,
    config), history rows by step, the summary and the exit code."""
    from wandb.proto import wandb_internal_pb2 as pb
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    out: dict = {"history": {}, "summary": {}, "config": {}}
    for data in _leveldb_records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["group"] = record.run.display_name, record.run.run_group
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"][int(row["_step"])] = row
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def _leveldb_records(raw: bytes):
    """W&B's run file: a 7-byte header (`:W&B`, magic, version), then LevelDB log blocks of 32 KiB,
    each record chunk a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    assert raw[:4] == b":W&B", raw[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        chunk = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def dashboard_trials(storage_url: str) -> list[dict]:
    """The trials optuna-dashboard's own server returns for the one study in a storage (its JSON API,
    called in process through its WSGI app)."""
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard
    from optuna.storages import RDBStorage
    app = optuna_dashboard.wsgi(RDBStorage(storage_url))

    def get(path: str):
        env: dict = {}
        setup_testing_defaults(env)
        env["PATH_INFO"] = path
        status = []
        body = b"".join(app(env, lambda s, headers, exc=None: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:200])
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    return get(f"/api/studies/{study['study_id']}")["trials"]
