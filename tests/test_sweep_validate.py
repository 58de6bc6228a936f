"""Every trial's config is checked before a sweep starts Ray: none valid -> exit 2, some -> error rows."""

from __future__ import annotations

import json
import math

import pytest

import windtunnel.sweep.run as sweep_run
from windtunnel.cli import main
from windtunnel.errors import WindtunnelError
from windtunnel.sweep import ray_engine, read_results, run_sweep

from support import write_spec

# TINY has 2 heads: d_model 30 and 34 give odd head sizes (17, 15), which rotary embeddings refuse
ALL_BAD = {"model.d_model": {"values": [30, 34]}}


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start")
    monkeypatch.setattr(ray_engine, "init_ray", refuse)
    monkeypatch.setattr(ray_engine, "run_tune", refuse)


def test_a_sweep_with_no_valid_trial_stops_before_ray_and_writes_nothing(tmp_path, no_ray):
    spec = write_spec(tmp_path / "bad.yaml", parameters=ALL_BAD)
    with pytest.raises(WindtunnelError, match=r"none of the 2 trials has a valid config") as e:
        run_sweep(spec, out_dir=tmp_path / "run", progress=False)
    assert "model.d_model=30" in str(e.value) and "d_head" in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_cli_exits_2_on_one_line_also_in_a_dry_run(tmp_path, capsys, no_ray, dry_run):
    spec = write_spec(tmp_path / "bad.yaml", parameters=ALL_BAD)
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "run")] + (["--dry-run"] if dry_run else []))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "none of the 2 trials" in err
    assert "(t0000: model.d_model=30)" in err and "(t0001: model.d_model=34)" in err
    assert not (tmp_path / "run").exists()


def test_tpe_with_no_valid_draw_stops_too(tmp_path, no_ray):
    spec = write_spec(tmp_path / "bad.yaml", method="tpe", parameters=ALL_BAD, budget={"num_trials": 4})
    with pytest.raises(WindtunnelError, match=r"none of 64 sampled draws has a valid config"):
        run_sweep(spec, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_invalid_trials_are_named_and_recorded_as_errors_without_running(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(ray_engine, "init_ray", lambda address=None, **_: False)
    monkeypatch.setattr(ray_engine, "check_resources", lambda spec: None)
    monkeypatch.setattr(sweep_run, "_run_remaining", lambda run_dir, spec, base, table, events, pending, remaining,
                        **_: ran.extend(p for group in pending.groups for p in group))
    spec = write_spec(tmp_path / "mixed.yaml", parameters={"model.d_model": {"values": [32, 30, 64]}})
    run_sweep(spec, out_dir=tmp_path / "run", plots=False)
    assert [p.trial_id for p in ran] == ["t0000", "t0002"]  # only the valid ones reach the engine
    assert "1 of 3 trials have an invalid config and are recorded as error without running: t0001" \
        in capsys.readouterr().err
    df = read_results(tmp_path / "run")
    row = df[df["trial_id"] == "t0001"].iloc[0]
    assert row["status"] == "error" and math.isnan(row["val_loss"]) and row["model.d_model"] == 30
    assert row["message"].startswith("invalid config (not run): model.d_model: ") and "15" in row["message"]
    summary = json.loads((tmp_path / "run" / "trials" / "t0001" / "summary.json").read_text())
    assert summary["status"] == "error" and not (tmp_path / "run" / "trials" / "t0001" / "config.yaml").exists()
