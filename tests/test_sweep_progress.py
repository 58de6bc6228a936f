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
