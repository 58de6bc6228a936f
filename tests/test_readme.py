"""The README's quick start and its workflow block, run as written at CPU size, so they cannot drift.

The commands are read from the README's code blocks (an edited README is what is tested) and run top to
bottom in one temporary folder holding copies of `proxies/` and `sweeps/`, in this process on the
session's Ray. Only the sizes shrink: each sweep spec is cut to a few lrs, two shapes, one seed and a
few steps, and `train`, `check coord` and `eval` get `--set` / size flags appended. A command that needs
the network, a GPU or a cluster is listed in SKIPPED with the reason; any other command must run:
exit 0, or 0/1 for the checks (1 is a verdict, e.g. "inconclusive" at this size; 2 is bad input).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from windtunnel.cli import main

from support import ROOT

SKIPPED = {
    "pip install": "installs from a package registry (the network); the test runs in the installed checkout",
    "python -m pytest": "the test suite itself, of which this test is a part",
}
"""Commands of the tested blocks that do not run here, by prefix, with the reason."""

DATA = {"data.embedded_bytes": 400_000}  # the tests' shared slice of the embedded corpus
SMALL_RUN = {"train.steps": 6, "train.warmup_steps": 1, "train.eval_every": 3, "train.eval_batches": 2,
             "train.batch_size": 2, "train.seq_len": 32, **DATA}
# At this size (xs, 2 x 32 tokens a step, the shipped defaults) the optimal lr lies near 2^-7 at 6, 12 and
# 24 steps (fitted vertices 2^-7.1, -7.4, -7.2; seed 0): five lrs two units apart keep it inside the grid
# with room to spare, and give each budget's quadratic two degrees of freedom (three points would leave
# none), so the horizon check names three optima with intervals and `transfer --horizon` works.
SMALL_LRS = [2.0 ** -12, 2.0 ** -10, 2.0 ** -8, 2.0 ** -6, 2.0 ** -4]
SMALL_STEPS = [6, 12, 24]  # a swept train.steps (the horizon): three budgets
SHRINK = {  # extra arguments appended to a command, by its first words
    ("train",): [a for k, v in SMALL_RUN.items() for a in ("--set", f"{k}={v}")],
    ("check", "coord"): ["--widths", "32,64,128", "--steps", "2", "--seeds", "0", "--set",
                         "data.embedded_bytes=400000", "--set", "train.batch_size=2", "--set", "train.seq_len=32"],
    ("eval", "context"): ["--windows", "4"],
    ("eval", "tasks"): ["-n", "12", "--embedded-bytes", "400000"],
    ("predict",): ["--min-tokens", "0", "--no-plot"],  # the shrunk ladder's budgets are a few hundred tokens
}
SCRIPTS = {  # the project's own bench scripts a block runs: run from the checkout, shrunk the same way
    ("python", "bench/ladder.py"): ["--widths", "32,64,128,256", "--budgets", "10,20", "--extra-seeds", "",
                                    *[a for k, v in SMALL_RUN.items() if k != "train.steps"
                                      for a in ("--set", f"{k}={v}")]],
}
CHECKS = ("check", "predict")  # exit 1 is a verdict (fail / inconclusive / refused fit), not a broken command


def readme_block(heading: str) -> str:
    """The first ```bash block under the README's `## heading`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"README: no bash block under '## {heading}'"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """Each command of a block as its words: comments dropped, `a && b` split into two."""
    out: list[list[str]] = []
    for line in block.splitlines():
        current: list[str] = []
        for word in shlex.split(line, comments=True) + ["&&"]:
            if word == "&&":
                out += [current] if current else []
                current = []
            else:
                current.append(word)
    return out


def shrink_spec(path: Path) -> None:
    """Cut a sweep spec to CPU-test size: 3 lrs, 2 widths or depths, 3 budgets, one value of any other
    key, one seed, a few steps (train.steps and train.lr are replaced, not cut: see SMALL_LRS)."""
    spec = yaml.safe_load(path.read_text())
    for key, param in spec["parameters"].items():
        values = param.get("values")
        if values is None:  # a distribution (random / tpe): the budget below cuts those
            continue
        if key == "train.lr":
            param["values"] = SMALL_LRS
        elif key == "train.steps":
            param["values"] = SMALL_STEPS
        else:  # two shapes, so the transfer checks have something to compare; one value of the rest
            param["values"] = values[:2] if key in ("model.d_model", "model.n_layers") else values[:1]
    small = {k: v for k, v in SMALL_RUN.items() if k not in spec["parameters"]}
    spec["set"] = {**(spec.get("set") or {}), **small}
    spec["seeds"] = [0]
    spec["budget"] = {"max_concurrent": 2, **({"num_trials": 2} if spec.get("method") != "grid" else {})}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A working folder laid out like the repository root, with shrunk sweep specs."""
    shutil.copytree(ROOT / "proxies", tmp_path / "proxies")
    shutil.copytree(ROOT / "sweeps", tmp_path / "sweeps")
    for spec in (tmp_path / "sweeps").glob("*.yaml"):
        shrink_spec(spec)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str]) -> int | None:
    """Run one README command in this process; None when it is skipped."""
    command = shlex.join(argv)
    if any(command.startswith(prefix) for prefix in SKIPPED):
        return None
    for prefix, extra in SCRIPTS.items():
        if tuple(argv[:len(prefix)]) == prefix:
            script = [sys.executable, str(ROOT / argv[1]), *argv[2:], *extra]
            return subprocess.run(script, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    assert argv[0] == "windtunnel", f"README command not runnable here and not in SKIPPED: {command!r}"
    args = argv[1:]
    for prefix, extra in SHRINK.items():
        if tuple(args[:len(prefix)]) == prefix:
            args += extra
    return main(args)


def test_the_commands_are_read_from_the_readme():
    quick, flow = commands(readme_block("Quick start")), commands(readme_block("The workflow"))
    assert quick[0][:2] == ["pip", "install"] and ["windtunnel", "sweep", "sweeps/lr_init.yaml"] in quick
    assert len(flow) >= 12 and all(c[0] == "windtunnel" or tuple(c[:2]) in SCRIPTS for c in flow)
    assert "windtunnel eval calibration runs/xs --tasks tasks.jsonl --scoring text" in map(shlex.join, flow)
    assert commands("a x && b y  # note\n# only a comment\nc 'q r'\n") == [["a", "x"], ["b", "y"], ["c", "q r"]]


@pytest.mark.slow  # four shrunk sweeps (24 Ray trials), a run, the checks and eval
@pytest.mark.usefixtures("ray_session")
def test_quick_start_then_workflow_run_as_written(checkout, capsys):
    ran, skipped = [], []
    for argv in commands(readme_block("Quick start")) + commands(readme_block("The workflow")):
        code = run(argv)
        out = capsys.readouterr()
        if code is None:
            skipped.append(argv[0])
            continue
        allowed = (0, 1) if argv[1] in CHECKS else (0,)
        assert code in allowed, f"{shlex.join(argv)!r} exited {code}:\n{out.err[-1500:]}\n{out.out[-1500:]}"
        ran.append(argv)
    assert skipped == ["pip", "python"]
    assert len(ran) >= 14
    # what the workflow promises is there: tables, plots, verdicts, the plan, a run with weights, eval
    runs = checkout / "runs"
    for name in ("lr_init", "width_transfer", "depth_transfer", "horizon"):
        assert (runs / name / "results.csv").is_file(), name
    assert (runs / "lr_init" / "plots").is_dir()
    assert (runs / "width_transfer" / "mutransfer_check.json").is_file()
    assert (runs / "horizon" / "horizon_check.json").is_file()
    assert (runs / "ladder" / "results.csv").is_file()
    assert list((runs / "xs" / "checkpoints").glob("step_*.pt"))
    assert (runs / "xs" / "eval" / "context.json").is_file() and (runs / "xs" / "eval" / "calibration.json").is_file()
