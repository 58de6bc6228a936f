"""A sweep's progress lines: a line before Ray's silent start, an ETA once trials finish."""

from __future__ import annotations

import io

import pytest

from windtunnel.sweep import progress as progress_module
from windtunnel.sweep.progress import Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_appears_once_a_trial_finishes_at_the_observed_rate(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    out = io.StringIO()
    show = Progress("s", total=6, done=0, param_keys=["train.lr"], metric="val_loss", goal="minimize", stream=out)
    clock.now += 15.0  # Ray starting: not part of the trials' rate
    show.trial_started("t0", {"train.lr": 0.01})
    show.trial_started("t1", {"train.lr": 0.02})
    assert "ETA" not in out.getvalue()  # nothing finished: no rate yet
    clock.now += 10.0
    show.trial_finished({"trial_id": "t0", "status": "ok", "val_loss": 2.0})
    clock.now += 10.0
    show.trial_finished({"trial_id": "t1", "status": "ok", "val_loss": 1.9})
    lines = out.getvalue().splitlines()
    assert "1/6 done" in lines[-2] and "ETA 50s" in lines[-2]  # 5 left at 1 per 10 s
    assert "2/6 done" in lines[-1] and "ETA 40s" in lines[-1]  # 4 left at 2 per 20 s
    assert show.eta() == pytest.approx(40.0)


def test_a_line_says_ray_is_starting_before_its_silence(monkeypatch):
    import ray

    from windtunnel.sweep import ray_engine
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setenv("PYTHONPATH", "")
    said = []
    assert ray_engine.init_ray(starting=said.append) is True
    assert said == ["starting Ray (a private instance on this machine; this takes a few seconds) ..."]
    out = io.StringIO()
    Progress("s", total=1, done=0, param_keys=[], metric="val_loss", goal="minimize", stream=out).status(said[0])
    assert out.getvalue() == f"[s] {said[0]}\n"
    quiet = io.StringIO()
    Progress("s", total=1, done=0, param_keys=[], metric="val_loss", goal="minimize", stream=quiet,
             enabled=False).status(said[0])
    assert quiet.getvalue() == ""


def test_dry_run_wall_time_scales_timed_steps_by_flops_over_the_slots(tmp_path, monkeypatch):
    from windtunnel.sweep import estimate, load_sweep, plan_sweep

    from support import write_spec
    spec = write_spec(tmp_path / "s.yaml", parameters={"train.lr": {"values": [0.01, 0.03]},
                                                        "model.d_model": {"values": [32, 64]}})
    plan = plan_sweep(load_sweep(spec))
    timed = []
    monkeypatch.setattr(estimate, "_timed_run", lambda cfg: timed.append(cfg.model.d_model) or (0.5, 2.0))
    monkeypatch.setattr(estimate.os, "cpu_count", lambda: 2)
    est = estimate.estimate_wall_time(plan)
    assert timed == [64]  # the costliest trial is the one timed
    flops = [c["flops"] for c in plan.costs]
    per_step = max(flops) / 12  # TINY: 12 steps
    expected = estimate.RAY_START_SECONDS + sum(2.0 + 0.5 * f / per_step for f in flops) / 2
    assert est.slots == 2 and est.seconds == pytest.approx(expected)
    text = est.describe()
    costliest = plan.points[flops.index(max(flops))].trial_id
    assert "2 trial(s) at a time" in text and f"timed 10 training steps of {costliest} here" in text


def test_dry_run_wall_time_is_measured_by_training_here(tmp_path, capsys):
    from windtunnel.cli import main

    from support import write_spec
    spec = write_spec(tmp_path / "s.yaml")
    assert main(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("estimated wall time: about "))
    assert "s/step plus" in line and "timed 10 training steps of t0000 here" in line
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(spec), "--dry-run", "--no-estimate"]) == 0
    assert "estimated wall time" not in capsys.readouterr().out
