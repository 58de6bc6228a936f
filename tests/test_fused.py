"""Fused trial arrays without Ray (`train_group`): fused vs separate equality, a group of one equal to
`train`, a diverging and a pruned slot, the rung file, `budget.fuse` in the spec, plan groups and their refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from windtunnel.cli import main
from windtunnel.config import apply_overrides, config_from_dict, load_config, parse_overrides
from windtunnel.data.token_folder import write_prepared
from windtunnel.errors import ConfigError
from windtunnel.sweep import load_sweep, plan_sweep
from windtunnel.sweep.rungs import RungFile, milestones
from windtunnel.training.loop import train, train_group

from support import ROOT, TINY, write_spec

XS = ROOT / "proxies" / "xs.yaml"


def _cfg(*extra: str):
    base = [o for o in TINY if not o.startswith(("train.steps", "train.eval_every"))]
    return load_config(XS, overrides=base + ["train.steps=20", "train.eval_every=10", *extra])


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_fused_trials_match_separate_runs_step_by_step(tmp_path, float64):
    # K = 4 trials differing in lr, init, seed (data stream), scale_emb, dim_model_base (muP lr/init/logits),
    # weight decay and gradient clip: every step's loss and the val losses agree with separate runs
    points = [("0.01", "0.05", 0, "10", "32", "0.0", "1.0"), ("0.003", "0.02", 1, "4", "16", "0.1", "1.0"),
              ("0.03", "0.1", 2, "8", "32", "0.0", "null"), ("0.001", "0.2", 3, "12", "8", "0.05", "0.5")]
    cfgs = [_cfg(f"train.lr={lr}", f"model.init_std={std}", f"train.seed={seed}", f"model.scale_emb={emb}",
                 f"model.dim_model_base={dmb}", f"train.weight_decay={wd}", f"train.grad_clip={clip}")
            for lr, std, seed, emb, dmb, wd, clip in points]
    separate = [train(c, out_dir=tmp_path / f"sep{i}") for i, c in enumerate(cfgs)]
    fused = train_group(cfgs, out_dirs=[tmp_path / f"fus{i}" for i in range(4)])
    for i in range(4):
        a, b = pd.read_csv(tmp_path / f"sep{i}" / "metrics.csv"), pd.read_csv(tmp_path / f"fus{i}" / "metrics.csv")
        assert list(a["step"]) == list(b["step"]) == list(range(1, 21))
        # logits go through float32 in both paths (the loop's cross-entropy), so "equal" is float32-close
        assert (a["loss"] - b["loss"]).abs().max() < 2e-5, i
        assert b["val_loss"].dropna().tolist() == pytest.approx(a["val_loss"].dropna().tolist(), abs=2e-5)
        assert fused[i]["status"] == separate[i]["status"] == "ok"
        assert fused[i]["val_loss"] == pytest.approx(separate[i]["val_loss"], abs=2e-5)
        assert fused[i]["tokens"] == separate[i]["tokens"] and fused[i]["params"] == separate[i]["params"]
        assert json.loads((tmp_path / f"fus{i}" / "summary.json").read_text())["status"] == "ok"
    losses = [f["val_loss"] for f in fused]
    assert len({round(v, 3) for v in losses}) == 4  # the trials really differ


def test_a_diverged_and_a_pruned_slot_leave_without_disturbing_the_others(tmp_path, float64):
    cfgs = [_cfg("train.lr=0.01"), _cfg("train.lr=1000"), _cfg("train.lr=0.003"), _cfg("train.lr=0.02")]
    alone = train_group([cfgs[0]], out_dirs=[tmp_path / "alone"])[0]
    ended: list[tuple[int, str, int]] = []
    summaries = train_group(cfgs, out_dirs=[tmp_path / f"t{i}" for i in range(4)],
                            on_eval=lambda i, m: i == 2 and m["step"] == 10,   # "ASHA" stops trial 2 at step 10
                            on_end=lambda i, s: ended.append((i, s["status"], s["steps"])))
    assert [s["status"] for s in summaries] == ["ok", "diverged", "pruned", "ok"]
    assert summaries[1]["val_loss"] == math.inf and summaries[1]["steps"] < 20
    assert summaries[2]["steps"] == 10 and math.isfinite(summaries[2]["val_loss"])
    assert pd.read_csv(tmp_path / "t2" / "metrics.csv")["step"].max() == 10  # it really stopped training
    assert summaries[0]["val_loss"] == pytest.approx(alone["val_loss"], abs=2e-5)  # trial 0 unaffected
    assert ended[-2:] == [(0, "ok", 20), (3, "ok", 20)] and {e[0] for e in ended} == {0, 1, 2, 3}
    assert all(s["seconds"] > 0 for s in summaries)


_VOLATILE = {"seconds", "tokens_per_s", "mfu"}  # wall-clock figures: the only columns two equal runs differ in


def test_a_group_of_one_is_exactly_train(tmp_path):
    cfg = _cfg("train.lr=0.01")
    plain = train(cfg, out_dir=tmp_path / "plain")
    ended = []
    group = train_group([cfg], out_dirs=[tmp_path / "group"], on_end=lambda i, s: ended.append((i, s["status"])))[0]
    assert {k: v for k, v in group.items() if k not in _VOLATILE} == \
        {k: v for k, v in plain.items() if k not in _VOLATILE}
    assert "fused" not in group and group["parallel"] == "single" and ended == [(0, "ok")]
    a, b = (pd.read_csv(tmp_path / n / "metrics.csv").drop(columns=sorted(_VOLATILE)) for n in ("plain", "group"))
    pd.testing.assert_frame_equal(a, b)  # bit for bit: the same computation
    files = [sorted(p.name for p in (tmp_path / n).iterdir()) for n in ("plain", "group")]
    assert files[0] == files[1]


def test_a_group_of_one_can_be_pruned_by_on_eval(tmp_path):
    ended = []
    summary = train_group([_cfg()], out_dirs=[tmp_path / "t"], on_eval=lambda i, m: m["step"] == 10,
                          on_end=lambda i, s: ended.append((i, s["status"])))[0]
    assert summary["status"] == "pruned" and summary["steps"] == 10 and ended == [(0, "pruned")]
    assert summary["message"] == "stopped at step 10 (early termination)"
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["status"] == "pruned"
    assert pd.read_csv(tmp_path / "t" / "metrics.csv")["step"].max() == 10


def test_a_fused_summary_has_every_key_of_a_single_one(tmp_path, two_sources):
    cfgs = [_mix_cfg(two_sources, f"train.lr={lr}") for lr in (0.01, 0.03)]
    single = train(cfgs[0], out_dir=tmp_path / "single")
    fused = train_group(cfgs, out_dirs=[tmp_path / "a", tmp_path / "b"])
    for summary in fused:
        assert set(single) <= set(summary) and summary["fused"] is True
        assert set(summary["val_loss_by_source"]) == {"digits", "letters"}
        assert summary["val_loss"] == pytest.approx(sum(summary["val_weights"][k] * v
                                                        for k, v in summary["val_loss_by_source"].items()))
    assert fused[0]["val_loss_by_source"] == pytest.approx(single["val_loss_by_source"], abs=1e-4)
    assert "val_loss.digits" in pd.read_csv(tmp_path / "a" / "metrics.csv").columns


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    for name, alphabet in (("digits", b"0123456789 \n"), ("letters", b"abcdefghijklmnopqrstuvwxyz \n")):
        tokens = np.frombuffer(alphabet, np.uint8)[rng.integers(0, len(alphabet), 60_000)]
        write_prepared(tmp / name, tokens[:50_000], tokens[50_000:], vocab_size=256, tokenizer="byte", sources=name)
    return tmp


def _mix_cfg(two_sources, *extra: str):
    data = {"data": {"sources": {"digits": str(two_sources / "digits"), "letters": str(two_sources / "letters")},
                     "mixture": {"digits": 1, "letters": 1}, "val_mixture": {"digits": 1, "letters": 3}}}
    sets = [o for o in TINY if not o.startswith(("data.", "train.steps", "train.eval_every"))]
    overrides = parse_overrides([*sets, "train.steps=6", "train.eval_every=3", *extra])
    return config_from_dict(apply_overrides(data, overrides, source="mix"), source="mix")


def test_the_divergence_watch_keeps_one_flag_per_trial_and_follows_the_group():
    from windtunnel.training.watch import DivergenceWatch
    watch = DivergenceWatch(device=torch.device("cpu"), vocab_size=256, factor=[3.0, 3.0, 10.0], first_loss=None, k=3)
    watch.record(torch.tensor([6.0, 6.0, 6.0]), torch.ones(3))
    assert watch.first_loss == [6.0, 6.0, 6.0] and watch.limit() == [18.0, 18.0, 60.0] and watch.flags() == [False] * 3
    watch.record(torch.tensor([1.0, 19.0, 19.0]), torch.tensor([math.inf, 1.0, 1.0]))  # each trial its own factor
    assert watch.flags() == [True, True, False] and watch.diverged() and watch.now()
    watch.keep([2])
    assert watch.flags() == [False] and watch.limit() == [60.0] and not watch.now()


def test_trials_that_differ_in_shape_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.d_model"):
        train_group([_cfg(), _cfg("model.d_model=64")], out_dirs=[tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


def test_rung_file_applies_asha_per_configuration(tmp_path):
    assert milestones(grace_period=5, reduction_factor=2, max_t=30) == [20, 10, 5]
    rungs = RungFile(tmp_path / "asha.json", grace_period=5, reduction_factor=2, max_t=30)
    assert not rungs.should_stop("a", step=5, value=2.0)      # the first at a rung always goes on
    assert rungs.should_stop("b", step=5, value=3.0)          # worse than the best half so far
    assert not rungs.should_stop("c", step=5, value=1.5)
    assert not rungs.should_stop("a", step=6, value=9.0)      # already judged at this rung
    again = RungFile(tmp_path / "asha.json", grace_period=5, reduction_factor=2, max_t=30)
    assert again.should_stop("d", step=5, value=2.9)          # the rungs are shared through the file
    assert set(json.loads((tmp_path / "asha.json").read_text())["5"]) == {"a", "b", "c", "d"}


@pytest.mark.parametrize("fuse, message", [(0, "positive integer"), ("many", "positive integer"),
                                           (2.5, "positive integer"), (True, "positive integer")])
def test_bad_fuse_is_one_line_exit_2(tmp_path, capsys, fuse, message):
    spec = write_spec(tmp_path / "s.yaml", budget={"fuse": fuse})
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "budget.fuse" in err and message in err and str(spec) in err


def test_dry_run_shows_groups_of_same_shape_trials(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", budget={"fuse": 3}, parameters={
        "train.lr": {"values": [0.01, 0.02, 0.03]}, "model.d_model": {"values": [32, 64]}})
    plan = plan_sweep(load_sweep(spec))
    assert plan.fuse == 3
    assert [[p.trial_id for p in g] for g in plan.groups] == [["t0000", "t0002", "t0004"],
                                                              ["t0001", "t0003", "t0005"]]
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fused: 2 group(s) of up to 3" in out and "group 1: t0001, t0003, t0005" in out


def test_fuse_auto_is_one_trial_per_group_on_a_cpu_and_fuses_for_a_gpu(tmp_path, capsys):
    """On a CPU a fused step costs more than its K plain ones (bench/fused_sweep.py: 0.79-0.99x), so
    `auto` runs trials unfused there; a GPU trial (resources.gpu) still fuses; a fixed K still fuses."""
    lrs = {"train.lr": {"values": [0.01, 0.02, 0.03, 0.04]}}
    cpu = write_spec(tmp_path / "cpu.yaml", budget={"fuse": "auto", "max_concurrent": 1}, parameters=lrs)
    plan = plan_sweep(load_sweep(cpu))
    assert plan.fuse == 1 and plan.groups is None and plan.on_cpu
    assert main(["sweep", str(cpu), "--dry-run"]) == 0
    assert "fused: no (fuse: auto on a CPU" in capsys.readouterr().out
    gpu = write_spec(tmp_path / "gpu.yaml", budget={"fuse": "auto", "max_concurrent": 1}, parameters=lrs,
                     resources={"cpu": 1, "gpu": 1})
    plan = plan_sweep(load_sweep(gpu))
    assert plan.fuse == 4 and [len(g) for g in plan.groups] == [4] and not plan.on_cpu
    fixed = write_spec(tmp_path / "k2.yaml", budget={"fuse": 2}, parameters=lrs)
    assert plan_sweep(load_sweep(fixed)).fuse == 2


def test_fuse_that_cannot_fuse_or_fit_is_refused_and_auto_falls_back(tmp_path, capsys):
    widths = {"model.d_model": {"values": [32, 64]}}
    spec = write_spec(tmp_path / "s.yaml", budget={"fuse": 4}, parameters=widths)
    with pytest.raises(ConfigError, match="no two trials can be fused: they differ in model.d_model"):
        plan_sweep(load_sweep(spec))
    auto = plan_sweep(load_sweep(write_spec(tmp_path / "a.yaml", budget={"fuse": "auto"}, parameters=widths)))
    assert auto.fuse == 1 and auto.groups is None
    huge = write_spec(tmp_path / "h.yaml", budget={"fuse": 10**7})
    assert main(["sweep", str(huge), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "K=10000000" in err and "GiB" in err and "per trial" in err
