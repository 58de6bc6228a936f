"""Sweeps end to end on one shared Ray instance: grid, TPE + resume, ASHA, SIGKILL + resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml

from windtunnel.cli import main
from windtunnel.sweep import read_results, run_sweep

from support import ROOT, tiny_set, write_spec

pytestmark = pytest.mark.usefixtures("ray_session")


def test_grid_sweep_records_ok_diverged_and_error_trials(tmp_path, capsys):
    # lr 1000 explodes; d_model 30 over 2 heads is an invalid config (odd d_head): the sweep goes on
    spec = write_spec(tmp_path / "grid.yaml", name="grid", parameters={
        "train.lr": {"values": [0.01, 1000.0]}, "model.d_model": {"values": [32, 30]}},
        budget={"max_concurrent": 2})
    result = run_sweep(spec, out_dir=tmp_path / "run", progress=False)
    df = read_results(tmp_path / "run")
    assert list(df.columns[:8]) == ["trial_id", "status", "val_loss", "tokens", "seconds", "seed",
                                    "train.lr", "model.d_model"]
    assert list(df["trial_id"]) == ["t0000", "t0001", "t0002", "t0003"]
    assert list(df["status"]) == ["ok", "error", "diverged", "error"]
    ok, err, div = df.iloc[0], df.iloc[1], df.iloc[2]
    assert 0 < ok["val_loss"] < math.log(256) and ok["tokens"] == 12 * 4 * 32 and ok["seconds"] > 0
    assert math.isinf(div["val_loss"]) and div["steps"] < 12
    assert math.isnan(err["val_loss"]) and "d_head=30/2=15" in err["message"]
    assert result.best["trial_id"] == "t0000" and result.counts == {"ok": 1, "diverged": 1, "pruned": 0, "error": 2}

    trial = tmp_path / "run" / "trials" / "t0000"
    cfg = yaml.safe_load((trial / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.01 and cfg["model"]["d_model"] == 32 and cfg["train"]["threads"] == 1
    metrics = pd.read_csv(trial / "metrics.csv")
    assert metrics["step"].iloc[-1] == 12
    assert json.loads((trial / "summary.json").read_text())["val_loss"] == pytest.approx(ok["val_loss"])
    csv = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False, na_values=[""])
    pd.testing.assert_series_equal(csv["val_loss"], df["val_loss"])

    # the pictures are drawn when the sweep ends (issue 4)
    assert result.plots and all(p.is_file() and p.parent == tmp_path / "run" / "plots" for p in result.plots)
    assert any(p.name.startswith("heatmap_") and p.suffix == ".png" for p in result.plots)

    capsys.readouterr()
    assert main(["results", str(tmp_path / "run"), "--top", "2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in rows] == ["t0000", "t0001"] and rows[1]["val_loss"] is None


def test_tpe_sweep_records_an_optuna_study_that_resume_continues(tmp_path):
    fields = dict(name="tpe", method="tpe", budget={"num_trials": 4, "max_concurrent": 2}, parameters={
        "train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1},
        "model.scale_depth": {"distribution": "uniform", "min": 1, "max": 3, "step": 0.5}},
        first_trials=[{"train.lr": 0.0123, "model.scale_depth": 1.5}])  # e.g. today's defaults, tried first
    run = tmp_path / "run"
    run_sweep(write_spec(tmp_path / "tpe.yaml", **fields), out_dir=run, progress=False)
    first = read_results(run)
    assert list(first["trial_id"]) == ["t0000", "t0001", "t0002", "t0003"]
    t0 = first.set_index("trial_id").loc["t0000"]
    assert t0["train.lr"] == 0.0123 and t0["model.scale_depth"] == 1.5
    assert (first["status"] == "ok").all()
    assert first["train.lr"].between(1e-3, 1e-1).all()
    assert set(first["model.scale_depth"]) <= {1.0, 1.5, 2.0, 2.5, 3.0}

    fields["budget"] = {"num_trials": 6, "max_concurrent": 2}  # the budget may grow on --resume
    run_sweep(write_spec(tmp_path / "tpe.yaml", **fields), out_dir=run, resume=True, progress=False)
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{run / 'study.db'}")
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    after = read_results(run)
    assert list(after["trial_id"]) == [f"t{i:04d}" for i in range(6)]
    pd.testing.assert_frame_equal(after.iloc[:4], first)  # the first session's rows are untouched
    by_number = {t.number: t for t in study.trials}
    for row in after.itertuples():
        assert by_number[int(row.trial_id[1:])].value == pytest.approx(row.val_loss)


def test_asha_stops_poor_trials_and_records_them_pruned(tmp_path):
    # one at a time, best lr first: ASHA's first rung (step 5) keeps the better half of what it has seen
    spec = write_spec(tmp_path / "asha.yaml", name="asha", set={**tiny_set(), "train.steps": 30, "train.eval_every": 5},
                      parameters={"train.lr": {"values": [0.01, 1e-4, 1e-5, 1e-6]}}, budget={"max_concurrent": 1},
                      early_terminate={"type": "asha", "grace_period": 5, "reduction_factor": 2})
    run_sweep(spec, out_dir=tmp_path / "run", progress=False)
    df = read_results(tmp_path / "run").set_index("trial_id")
    assert df.loc["t0000", "status"] == "ok" and df.loc["t0000", "steps"] == 30
    pruned = df[df["status"] == "pruned"]
    assert len(pruned) >= 2, df[["status", "steps", "val_loss"]]
    assert (pruned["steps"] < 30).all() and pruned["val_loss"].map(math.isfinite).all()
    assert (pruned["val_loss"] > df.loc["t0000", "val_loss"]).all()
    for tid in pruned.index:
        metrics = pd.read_csv(tmp_path / "run" / "trials" / tid / "metrics.csv")
        assert metrics["step"].max() < 30  # it really stopped training


@pytest.mark.parametrize("budget", [{"max_concurrent": 2}, {"max_concurrent": 1, "fuse": 2}],  # fuse: issue 14
                         ids=["trials", "fused-groups"])
def test_a_killed_sweep_resumes_without_losing_or_rerunning_trials(tmp_path, budget, capsys):
    spec = write_spec(tmp_path / "kill.yaml", name="kill",
                      set={**tiny_set(), "train.steps": 24, "train.eval_every": 12},
                      parameters={"train.lr": {"values": [0.002, 0.004, 0.008, 0.016]},
                                  "model.init_std": {"values": [0.02, 0.1]}}, budget=budget)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "windtunnel", "sweep", str(spec), "--out", str(run), "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        rows = _wait_for_rows(run / "results.csv", proc, at_least=1, timeout=180)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray instance and the trials with it
        proc.wait()
    assert 1 <= rows < 8
    assert (run / "sweep.lock").is_file()  # left by the killed driver: its pid is gone, so it is taken over
    killed = read_results(run)  # the table a SIGKILL leaves is readable
    before = {tid: (run / "trials" / tid / "summary.json").stat().st_mtime_ns for tid in killed["trial_id"]}

    run_sweep(spec, out_dir=run, resume=True, progress=False)
    assert f"pid {proc.pid} on this host, is gone" in capsys.readouterr().err and not (run / "sweep.lock").exists()
    df = read_results(run)
    assert sorted(df["trial_id"]) == [f"t{i:04d}" for i in range(8)] and df["trial_id"].is_unique
    assert (df["status"] == "ok").all()
    for tid, mtime in before.items():  # finished trials were not run again
        assert (run / "trials" / tid / "summary.json").stat().st_mtime_ns == mtime
    kept = df.set_index("trial_id").loc[list(killed["trial_id"]), "val_loss"]
    assert list(kept) == list(killed["val_loss"])
    prov = json.loads((run / "provenance.json").read_text())  # one record per session: the killed one, this one
    assert prov["kind"] == "sweep" and prov["created"]["pid"] == proc.pid and len(prov["resumed"]) == 1
    assert prov["created"]["corpus"]["sha256"] and prov["resumed"][0]["corpus"] == prov["created"]["corpus"]
    trial = json.loads((run / "trials" / "t0007" / "provenance.json").read_text())  # trials record theirs too
    assert trial["kind"] == "run" and trial["created"]["corpus"] == prov["created"]["corpus"]


def _wait_for_rows(csv, proc, *, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if csv.exists():
            rows = len(pd.read_csv(csv))
            if rows >= at_least:
                return rows
        time.sleep(0.2)
    pytest.fail("no finished trial within the timeout")


def test_sweep_over_a_mixture_weight(tmp_path):
    """A mixture weight is a sweepable key: data.mixture.<source> through the real sweep engine."""
    import numpy as np

    from windtunnel.data.token_folder import write_prepared
    rng = np.random.default_rng(0)
    for name, alphabet in (("digits", b"0123456789 \n"), ("letters", b"abcdefghijklmnopqrstuvwxyz \n")):
        tokens = np.frombuffer(alphabet, np.uint8)[rng.integers(0, len(alphabet), 30_000)]
        write_prepared(tmp_path / name, tokens[:25_000], tokens[25_000:], vocab_size=256, tokenizer="byte",
                       sources=name)
    spec = write_spec(tmp_path / "mix.yaml", name="mix", parameters={
        "data.mixture.letters": {"values": [0.0, 1.0]}}, budget={"max_concurrent": 2})
    data = yaml.safe_load(spec.read_text())
    data["set"].update({"data.sources": {"digits": "digits", "letters": "letters"},  # relative to the spec
                        "data.mixture": {"digits": 1.0, "letters": 1.0},
                        "data.val_mixture": {"digits": 1.0, "letters": 1.0}})
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_sweep(spec, out_dir=tmp_path / "run", progress=False, plots=False)
    df = read_results(tmp_path / "run")
    assert list(df["data.mixture.letters"]) == [0.0, 1.0] and (df["status"] == "ok").all()
    by = {w: json.loads((tmp_path / "run" / "trials" / t / "summary.json").read_text())["val_loss_by_source"]
          for w, t in zip(df["data.mixture.letters"], df["trial_id"])}
    assert by[0.0]["letters"] > by[1.0]["letters"]  # the trial that never saw letters knows them worst
    assert result.best is not None
