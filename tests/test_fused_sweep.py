"""Fused sweeps end to end through Ray: grid groups with ASHA, TPE asked K at a time. (SIGKILL + resume
of a fused sweep: tests/test_sweep_run.py, parametrized `fused-groups`.)"""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from windtunnel.sweep import read_results, run_sweep

from support import tiny_set, write_spec

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


def test_fused_grid_keeps_one_row_per_configuration_and_prunes_inside_groups(tmp_path):
    # 6 configurations in 2 groups of 3, run one group at a time; ASHA at steps 6 and 12 judges
    # each configuration (not the group): the tiny lrs fall behind and stop
    spec = write_spec(tmp_path / "f.yaml", name="fused", set={**tiny_set(), "train.steps": 24, "train.eval_every": 6},
                      parameters={"train.lr": {"values": [0.02, 1e-5, 0.01, 1e-6, 2e-6, 0.005]}},
                      budget={"max_concurrent": 1, "fuse": 3},
                      early_terminate={"type": "asha", "grace_period": 6, "reduction_factor": 2})
    result = run_sweep(spec, out_dir=tmp_path / "run", progress=False, plots=False)
    df = read_results(tmp_path / "run").set_index("trial_id")
    assert list(df.index) == [f"t{i:04d}" for i in range(6)]
    assert df.loc["t0000", "status"] == "ok" and df.loc["t0000", "steps"] == 24
    pruned = df[df["status"] == "pruned"]
    assert {"t0001", "t0003", "t0004"} <= set(pruned.index), df[["status", "steps"]]  # every tiny lr
    assert (pruned["steps"] < 24).all() and pruned["val_loss"].map(math.isfinite).all()
    assert (df["seconds"] > 0).all() and (df.loc[df["status"] == "ok", "tokens"] == 24 * 4 * 32).all()
    for tid in pruned.index:  # it stopped training while the rest of its group went on
        assert pd.read_csv(tmp_path / "run" / "trials" / tid / "metrics.csv")["step"].max() < 24
    assert (tmp_path / "run" / "asha.json").is_file()
    assert result.best["trial_id"] == "t0000"


def test_fused_tpe_asks_k_configurations_per_group_and_tells_each(tmp_path):
    fields = {"name": "tpe", "method": "tpe", "budget": {"num_trials": 5, "max_concurrent": 1, "fuse": 2},
              "parameters": {"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1},
                             "model.init_std": {"distribution": "log_uniform", "min": 0.01, "max": 0.2}},
              "first_trials": [{"train.lr": 0.0123}]}  # init_std left to TPE
    run = tmp_path / "run"
    run_sweep(write_spec(tmp_path / "tpe.yaml", **fields), out_dir=run, progress=False, plots=False)
    df = read_results(run)
    assert df.set_index("trial_id").loc["t0000", "train.lr"] == 0.0123
    assert list(df["trial_id"]) == [f"t{i:04d}" for i in range(5)] and (df["status"] == "ok").all()
    assert df["train.lr"].nunique() == 5  # the constant liar keeps a group's asks apart
    groups = sorted(p.name for p in (run / "ray").glob("session-*/group-*"))
    assert groups == ["group-t0000", "group-t0002", "group-t0004"]
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{run / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    for row in df.itertuples():
        assert study.trials[int(row.trial_id[1:])].value == pytest.approx(row.val_loss)
