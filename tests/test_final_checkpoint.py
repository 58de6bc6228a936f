"""A run keeps its final weights by default, so the README's eval line works on a plain `train`;
sweep trials keep none unless their spec asks."""

from __future__ import annotations

import json

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.sweep.points import TrialPoint, trial_config
from windtunnel.sweep.spec import load_sweep
from windtunnel.training.checkpoint_file import list_checkpoints, load_checkpoint

from support import ROOT, write_spec

SHORT = ["train.steps=6", "train.warmup_steps=1", "train.eval_every=3", "train.eval_batches=1",
         "train.batch_size=2", "data.embedded_bytes=400000"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_train_then_eval_context_and_calibration_as_the_workflow_writes_them(tmp_path, capsys, xs_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    # no checkpoint flag: `windtunnel train proxies/xs.yaml` into runs/xs, as the README's workflow does
    assert main(["train", str(xs_path), *_sets(SHORT), "--quiet"]) == 0
    run = tmp_path / "runs" / "xs"
    [ckpt] = list_checkpoints(run)
    assert ckpt.name == "step_00000006.pt" and load_checkpoint(ckpt)["step"] == 6
    assert main(["eval", "tasks", "--out", "tasks.jsonl", "-n", "12", "--embedded-bytes", "400000"]) == 0
    capsys.readouterr()
    assert main(["eval", "context", "runs/xs", "--windows", "4", "--quiet"]) == 0
    assert main(["eval", "calibration", "runs/xs", "--tasks", "tasks.jsonl", "--scoring", "text", "--quiet"]) == 0
    result = json.loads((run / "eval" / "calibration.json").read_text())
    assert result["overall"]["n"] == 12 and 0 <= result["overall"]["accuracy"] <= 1
    assert (run / "eval" / "context.json").is_file()


def test_final_checkpoint_false_keeps_no_weights_and_eval_says_why(tmp_path, capsys, xs_path):
    out = tmp_path / "run"
    assert main(["train", str(xs_path), *_sets(SHORT), "--set", "train.final_checkpoint=false", "--out", str(out),
                 "--quiet"]) == 0
    assert not (out / "checkpoints").exists()
    capsys.readouterr()
    assert main(["eval", "context", str(out), "--windows", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "kept no weights" in err and "train.final_checkpoint" in err and len(err.strip().splitlines()) == 1


def test_sweep_trials_keep_no_weights_unless_the_spec_asks(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", set={"train.steps": 40}))
    assert trial_config(spec, TrialPoint("t0000", 0, {"train.lr": 0.01})).train.final_checkpoint is False
    keep = load_sweep(write_spec(tmp_path / "k.yaml", set={"train.steps": 40, "train.final_checkpoint": True}))
    assert trial_config(keep, TrialPoint("t0000", 0, {"train.lr": 0.01})).train.final_checkpoint is True
    assert load_config(ROOT / "proxies" / "xs.yaml").train.final_checkpoint is True  # outside sweeps: kept

