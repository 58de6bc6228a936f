"""Sweeps in the trackers and in optuna-dashboard's storage, end to end through Ray: what each tool
holds per trial (read with its own reader) equals results.parquet, plain and fused."""

from __future__ import annotations

import math

import optuna
import pytest

from windtunnel.sweep import read_results, run_sweep

from support import write_spec
from trackfiles import dashboard_trials, mlflow_runs, tb_scalars, tb_session, wandb_run

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]



def test_grid_sweep_logs_each_trial_to_every_tracker_and_to_the_study(tmp_path):
    # lr 1000 diverges: its trial is in every tool, flagged, with no infinite value
    spec = write_spec(tmp_path / "s.yaml", name="tracked", parameters={"train.lr": {"values": [0.01, 1000.0]}},
                      track=["tensorboard", "mlflow", "wandb"], budget={"max_concurrent": 2})
    run = tmp_path / "run"
    run_sweep(spec, out_dir=run, progress=False, plots=False)
    df = read_results(run).set_index("trial_id")
    assert list(df["status"]) == ["ok", "diverged"]
    ok_loss = df.loc["t0000", "val_loss"]

    for tid, row in df.iterrows():  # TensorBoard: one folder per trial, an HParams session each
        tdir = run / "trials" / tid
        hparams, status = tb_session(tdir)
        assert hparams["train.lr"] == pytest.approx(row["train.lr"])
        assert status == ("STATUS_SUCCESS" if row["status"] == "ok" else "STATUS_FAILURE")
        assert list(tb_scalars(tdir)["final/diverged"].values()) == [float(row["status"] == "diverged")]
    assert list(tb_scalars(run / "trials" / "t0000")["final/val_loss"].values()) == [pytest.approx(ok_loss)]

    runs = {r.info.run_name: r for r in mlflow_runs(f"sqlite:///{run / 'mlflow.db'}")}  # MLflow: a parent, 2 children
    assert set(runs) == {"tracked", "t0000", "t0001"}
    parent = runs["tracked"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best/val_loss"] == pytest.approx(ok_loss)
    assert parent.data.metrics["trials/ok"] == 1 and parent.data.metrics["trials/diverged"] == 1
    for tid in ("t0000", "t0001"):
        child = runs[tid]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(child.data.params["train.lr"]) == df.loc[tid, "train.lr"]
        assert child.data.tags["run_dir"] == str((run / "trials" / tid).resolve())
    assert runs["t0000"].data.metrics["final/val_loss"] == pytest.approx(ok_loss)
    assert runs["t0001"].info.status == "FAILED" and runs["t0001"].data.metrics["final/diverged"] == 1

    for tid in ("t0000", "t0001"):  # W&B: offline, one run per trial in the sweep's group
        w = wandb_run(run / "trials" / tid)
        assert (w["name"], w["group"], w["summary"]["status"]) == (tid, "tracked", df.loc[tid, "status"])
    assert wandb_run(run / "trials" / "t0000")["summary"]["final/val_loss"] == pytest.approx(ok_loss)

    study = optuna.load_study(study_name="tracked", storage=f"sqlite:///{run / 'study.db'}")  # optuna-dashboard's view
    trials = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(trials) == {"t0000", "t0001"}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials.values())
    assert trials["t0000"].value == pytest.approx(ok_loss) and math.isinf(trials["t0001"].value)
    assert [trials[t].user_attrs["diverged"] for t in ("t0000", "t0001")] == [False, True]
    assert trials["t0001"].params == {"train.lr": 1000.0}
    assert trials["t0000"].user_attrs["trial_dir"] == str((run / "trials" / "t0000").resolve())
    shown = dashboard_trials(f"sqlite:///{run / 'study.db'}")  # what optuna-dashboard's server serves
    attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in shown]
    assert sorted((a["trial_id"], a["diverged"], t["state"]) for a, t in zip(attrs, shown)) == [
        ("t0000", "False", "Complete"), ("t0001", "True", "Complete")]


def test_fused_random_sweep_logs_per_trial_not_per_group(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", name="fusedtrack", method="random",
                      parameters={"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1}},
                      budget={"num_trials": 2, "max_concurrent": 1, "fuse": 2}, track=["tensorboard", "mlflow"])
    run = tmp_path / "run"
    run_sweep(spec, out_dir=run, progress=False, plots=False)
    df = read_results(run).set_index("trial_id")
    assert list(df["status"]) == ["ok", "ok"] and df["train.lr"].nunique() == 2
    runs = {r.info.run_name: r for r in mlflow_runs(f"sqlite:///{run / 'mlflow.db'}")}
    assert set(runs) == {"fusedtrack", "t0000", "t0001"}
    for tid, row in df.iterrows():
        tdir = run / "trials" / tid
        assert tb_session(tdir)[0]["train.lr"] == pytest.approx(row["train.lr"])
        assert list(tb_scalars(tdir)["final/val_loss"].values()) == [pytest.approx(row["val_loss"])]
        assert runs[tid].data.metrics["final/val_loss"] == pytest.approx(row["val_loss"])
        assert float(runs[tid].data.params["train.lr"]) == pytest.approx(row["train.lr"])
    study = optuna.load_study(study_name="fusedtrack", storage=f"sqlite:///{run / 'study.db'}")
    values = {t.user_attrs["trial_id"]: (t.params["train.lr"], t.value) for t in study.trials}
    assert values == {tid: (pytest.approx(r["train.lr"]), pytest.approx(r["val_loss"])) for tid, r in df.iterrows()}
