"""The engine's contract without Ray (issue 22): the one pass from spec to groups, the one status ->
Optuna mapping, and one group of K = 1 trained, judged per trial at the rung file and recorded."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from windtunnel.sweep import load_sweep, plan_sweep
from windtunnel.sweep.spec import base_dict
from windtunnel.sweep.study import study_state
from windtunnel.sweep.trial import TrialContext, execute_group

from support import tiny_set, write_spec

TS = optuna.trial.TrialState


@pytest.mark.parametrize("row, expected", [
    ({"status": "ok", "val_loss": 2.0}, (TS.COMPLETE, 2.0)),
    ({"status": "diverged", "val_loss": math.inf}, (TS.COMPLETE, math.inf)),
    ({"status": "pruned", "val_loss": 2.5, "steps": 6}, (TS.PRUNED, 2.5)),
    ({"status": "pruned", "val_loss": math.inf}, (TS.FAIL, None)),
    ({"status": "error", "val_loss": math.nan}, (TS.FAIL, None)),
    ({"status": "unfinished"}, (TS.FAIL, None)),
    (None, (TS.FAIL, None)),
])
def test_one_mapping_from_trial_status_to_optuna(row, expected):
    assert study_state(row, "val_loss") == expected


def test_pending_groups_skip_finished_and_set_invalid_trials_apart(tmp_path):
    # 3 lrs x d_model {32, 30}: d_model 30 is invalid (odd d_head); fuse 2 groups same-shape trials
    spec = load_sweep(write_spec(tmp_path / "s.yaml", budget={"fuse": 2}, parameters={
        "train.lr": {"values": [0.01, 0.02, 0.03]}, "model.d_model": {"values": [32, 30]}}))
    plan = plan_sweep(spec)
    assert plan.fuse == 2 and [[p.trial_id for p in g] for g in plan.groups] == [
        ["t0000", "t0002"], ["t0001"], ["t0003"], ["t0004"], ["t0005"]]
    pending = plan.pending({"t0000": {"seed": 0, "train.lr": 0.01, "model.d_model": 32}})
    assert pending.total == 6 and pending.remaining == 5 and pending.k == 2
    assert [[p.trial_id for p in g] for g in pending.groups] == [["t0002", "t0004"]]
    assert [p.trial_id for p in pending.invalid] == ["t0001", "t0003", "t0005"]
    assert pending.reasons["t0001"].startswith("model.d_model: ") and "d_head=30/2=15" in pending.reasons["t0001"]
    unfused = load_sweep(write_spec(tmp_path / "u.yaml"))  # no budget.fuse: every group is one trial
    assert [[p.trial_id for p in g] for g in plan_sweep(unfused).pending({}).groups] == [["t0000"], ["t0001"]]


def test_a_group_of_one_is_judged_at_the_rung_file_and_recorded_pruned(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", set={**tiny_set(), "train.steps": 12, "train.eval_every": 4},
                                 parameters={"train.lr": {"values": [0.02, 1e-6]}},
                                 early_terminate={"type": "asha", "grace_period": 4, "reduction_factor": 2}))
    ctx = TrialContext(spec=spec, base=base_dict(spec), run_dir=str(tmp_path / "run"))
    first, second = plan_sweep(spec).points
    reports = []
    [good] = execute_group(ctx, [first], report=reports.append)
    [bad] = execute_group(ctx, [second], report=reports.append)
    assert good["status"] == "ok" and good["steps"] == 12
    assert bad["status"] == "pruned" and bad["steps"] < 12 and math.isfinite(bad["val_loss"])
    summary = json.loads((tmp_path / "run" / "trials" / "t0001" / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["steps"] == bad["steps"]
    assert [json.loads(r["rows"])[0]["trial_id"] for r in reports] == ["t0000", "t0001"]
    assert json.loads(reports[1]["evals"])["t0001"][-1] == [bad["steps"], pytest.approx(bad["val_loss"])]
    assert (tmp_path / "run" / "asha.json").is_file()
