"""Experiment trackers, read back with each tool's own reader and compared with what the run folder
holds: TensorBoard's event files (scalars and the HParams session), MLflow's client on the local
store, W&B's offline run file. Bad input: a tracker that is not installed, an MLflow server that
does not answer. (Sweeps, fused groups and study.db: tests/test_tracker_sweeps.py.)"""

from __future__ import annotations

import math
import socket
import time

import pandas as pd
import pytest

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.sweep.tracking import viewer_commands
from windtunnel.training import trackers
from windtunnel.training.loop import train

from support import ROOT, TINY, write_spec
from trackfiles import mlflow_history, mlflow_runs, tb_scalars, tb_session, wandb_run

SHORT = [*TINY, "train.steps=6", "train.eval_every=3", "train.log_every=2"]



def test_train_logs_tensorboard_by_default_with_an_hparams_session(tmp_path):
    run = tmp_path / "run"
    summary = train(load_config(ROOT / "proxies" / "xs.yaml", overrides=SHORT), out_dir=run)
    metrics = pd.read_csv(run / "metrics.csv")
    scalars = tb_scalars(run)
    assert scalars["train/loss"] == pytest.approx(dict(zip(metrics["step"], metrics["loss"])))
    val = metrics.dropna(subset=["val_loss"])
    assert scalars["train/val_loss"] == pytest.approx(dict(zip(val["step"], val["val_loss"])))
    assert scalars["final/val_loss"] == {6: pytest.approx(summary["val_loss"])}
    assert scalars["final/diverged"] == {6: 0.0}
    hparams, status = tb_session(run)
    assert hparams["train.lr"] == pytest.approx(0.01) and hparams["model.d_model"] == 32
    assert status == "STATUS_SUCCESS"


def test_a_diverged_run_ends_as_failed_with_the_flag_set(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*SHORT, "train.lr=1000", "train.track=[tensorboard]"])
    assert train(cfg, out_dir=run)["status"] == "diverged"
    scalars = tb_scalars(run)
    assert list(scalars["final/diverged"].values()) == [1.0] and "final/val_loss" not in scalars  # no inf
    assert tb_session(run)[1] == "STATUS_FAILURE"


@pytest.mark.slow
def test_train_logs_the_same_keys_to_mlflow_and_wandb(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*SHORT, "train.track=[mlflow, wandb]"])
    summary = train(cfg, out_dir=run)
    metrics = pd.read_csv(run / "metrics.csv")
    assert not (run / "tensorboard").exists()  # the list replaces the default

    uri = f"sqlite:///{run / 'mlflow.db'}"  # the local store sits in the run folder
    (logged,) = mlflow_runs(uri)
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"
    assert logged.data.params["train.lr"] == "0.01" and logged.data.tags["status"] == "ok"
    assert logged.data.metrics["final/val_loss"] == pytest.approx(summary["val_loss"])
    assert mlflow_history(uri, logged.info.run_id, "train/loss") == pytest.approx(
        dict(zip(metrics["step"], metrics["loss"])))

    w = wandb_run(run)
    assert w["name"] == "run" and w["group"] == "" and w["exit_code"] == 0
    assert w["config"]["train.lr"] == 0.01 and w["config"]["run_dir"] == str(run.resolve())
    assert {s: r["train/loss"] for s, r in w["history"].items()} == pytest.approx(
        dict(zip(metrics["step"], metrics["loss"])))
    assert w["summary"]["final/val_loss"] == pytest.approx(summary["val_loss"]) and w["summary"]["status"] == "ok"


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*SHORT, "train.track=[mlflow]"])
    assert train(cfg, out_dir=run, stop_after=2)["status"] == "stopped"
    summary = train(cfg, out_dir=run, resume=True)
    uri = f"sqlite:///{run / 'mlflow.db'}"
    (logged,) = mlflow_runs(uri)  # one run over both sessions
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["final/val_loss"] == pytest.approx(summary["val_loss"])
    metrics = pd.read_csv(run / "metrics.csv")  # rows of both sessions
    assert mlflow_history(uri, logged.info.run_id, "train/loss") == pytest.approx(
        dict(zip(metrics["step"], metrics["loss"])))


def test_a_tracker_not_installed_is_one_line_exit_2_and_no_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trackers, "tracker_available", lambda name: name != "wandb")
    out = tmp_path / "run"
    code = main(["train", str(ROOT / "proxies" / "xs.yaml"), "--out", str(out), "--quiet", "--track",
                 "tensorboard,wandb", *[a for o in SHORT for a in ("--set", o)]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.count("\n") == 0 and "wandb is not installed; pip install 'windtunnel[wandb]'" in err
    spec = write_spec(tmp_path / "s.yaml", track=["wandb"])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sweep"), "--quiet"]) == 2
    assert "track: wandb is not installed" in capsys.readouterr().err and not (tmp_path / "sweep").exists()


def test_an_unknown_tracker_name_is_refused(capsys):
    assert main(["train", str(ROOT / "proxies" / "xs.yaml"), "--track", "tensorbord"]) == 2
    assert "--track: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)" in capsys.readouterr().err


def test_an_mlflow_server_that_does_not_answer_fails_before_the_sweep_starts(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    spec = write_spec(tmp_path / "s.yaml")
    started = time.perf_counter()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sweep"), "--track", "mlflow", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - started < 5
    assert f"MLflow tracking server http://127.0.0.1:{port} does not answer" in err and err.count("\n") == 1
    assert not (tmp_path / "sweep").exists()
    out = tmp_path / "run"
    assert main(["train", str(ROOT / "proxies" / "xs.yaml"), "--out", str(out), "--track", "mlflow"]) == 2
    assert not out.exists()


def test_flat_params_and_metric_keys():
    cfg = load_config(ROOT / "proxies" / "xs.yaml")
    params = trackers.flat_params(cfg)
    assert params["train.betas"] == "[0.9, 0.95]" and params["model.d_model"] == cfg.model.d_model
    row = {"step": 4, "tokens": 512, "lr": 0.01, "loss": 3.0, "val_loss": "", "tokens_per_s": math.nan,
           "mfu": "", "seconds": 1.0, "val_loss.web": 2.5}
    assert trackers.step_metrics(row) == {"train/tokens": 512.0, "train/lr": 0.01, "train/loss": 3.0,
                                          "train/val_loss.web": 2.5}
    assert trackers.final_metrics({"status": "diverged", "val_loss": math.inf, "steps": 3}) == {
        "final/diverged": 1.0, "final/steps": 3.0}
    assert trackers.parse_track("mlflow, wandb,mlflow") == ("mlflow", "wandb") and trackers.parse_track("none") == ()


def test_viewer_commands_name_what_a_sweep_folder_holds(tmp_path):
    run = tmp_path / "run"
    (run / "trials" / "t0000" / "tensorboard").mkdir(parents=True)
    (run / "study.db").touch()
    assert viewer_commands(run) == [f"optuna-dashboard sqlite:///{run / 'study.db'}",
                                    f"tensorboard --logdir {run / 'trials'}"]
    (run / "mlflow.db").touch()
    (run / "trials" / "t0000" / "wandb" / "offline-run-1-x").mkdir(parents=True)
    assert viewer_commands(run)[2:] == [f"mlflow ui --backend-store-uri sqlite:///{run / 'mlflow.db'}",
                                        f"wandb sync {run / 'trials'}/*/wandb/offline-run-*"]
