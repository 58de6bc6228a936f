"""The CLI: a thin shell over the library; bad input is one line on stderr, exit 2, and no files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.model.parametrization import build_model

ROOT = Path(__file__).resolve().parents[1]


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *code.split(), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "shapes" in out and "examples:" in out
    assert main([]) == 2  # no command: the help, and a usage error status


def test_help_in_a_fresh_process_does_not_import_torch():
    code = ("import sys, windtunnel.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'mup', 'optuna', 'numpy') if m in sys.modules))")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
    done = run_python("-m windtunnel", "train", "--help")
    assert done.returncode == 0 and "--set KEY=VALUE" in done.stdout and "--out" in done.stdout


@pytest.mark.parametrize("bad, key, source", [
    ("model.d_modle=128", "model.d_modle", "--set"),       # the typo is on the command line, not in the file
    ("train.lr=fast", "train.lr", "--set"),
    ("model.d_model=66", "model.d_model", None),           # breaks a rule with the file's n_heads
    ("data.path=/no/such/folder", "data.path", None),          # found only when the data is opened
    ("model.base_shapes=/no/such.bsh", "model.base_shapes", None),  # found only when the model is built
])
def test_train_bad_set_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, xs_path, tiny_overrides,
                                                                 bad, key, source):
    out = tmp_path / "run"
    code = main(["train", str(xs_path), *sets(tiny_overrides), "--set", bad, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"windtunnel: error: {source or xs_path}: {key}: "), captured.err
    assert captured.out == ""
    assert not out.exists()


def test_train_prints_json_summary_and_writes_the_run(tmp_path, capsys, xs_path, tiny_overrides):
    out = tmp_path / "run"
    code = main(["train", str(xs_path), *sets(tiny_overrides), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert summary["status"] == "ok" and summary["steps"] == 12
    assert summary == json.loads((out / "summary.json").read_text())
    # TensorBoard events come along when a writer is installed (tensorboardX arrives with ray)
    assert {p.name for p in out.iterdir()} - {"tensorboard"} == {"config.yaml", "metrics.csv", "summary.json",
                                                                 "provenance.json", "checkpoints"}
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000012.pt"]  # the final weights
    assert f"run folder: {out}" in captured.err


def test_train_diverged_exits_1_with_its_summary(tmp_path, capsys, xs_path, tiny_overrides):
    code = main(["train", str(xs_path), *sets(tiny_overrides), "--set", "train.lr=1000", "--set",
                 "train.grad_clip=null", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["status"] == "diverged"


def test_shapes_writes_a_file_build_model_accepts(tmp_path, capsys, xs_path):
    path = tmp_path / "shapes" / "xs.bsh"
    assert main(["shapes", str(xs_path), "--out", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    # the file is width-independent: a 4x wider model uses it and gets m = 4
    cfg = load_config(xs_path, overrides=["model.d_model=256", f"model.base_shapes={path}"])
    model = build_model(cfg.model)
    assert model.embed.weight.infshape.width_mult() == 4.0
    assert model.blocks[0].mlp.up.weight.infshape.width_mult() == 4.0
    assert main(["shapes", str(xs_path), "--set", "model.n_heads=3", "--out", str(tmp_path / "bad.bsh")]) == 2
    assert not (tmp_path / "bad.bsh").exists()


def test_train_as_a_subprocess(tmp_path, xs_path, tiny_overrides):
    out = tmp_path / "run"
    done = run_python("-m windtunnel", "train", str(xs_path), *sets(tiny_overrides), "--set", "train.steps=4",
                      "--set", "train.eval_every=4", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 4 and (out / "summary.json").is_file()
