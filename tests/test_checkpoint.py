"""Checkpoints: atomic files, resume equal to an uninterrupted run, WSD decay branches, DDP on CPU."""

from __future__ import annotations

import os

import pytest
import torch

from windtunnel.config import load_config
from windtunnel.errors import WindtunnelError
from windtunnel.model.parametrization import build_model
from windtunnel.training.checkpoint_file import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from windtunnel.training.loop import train
from windtunnel.training.metrics import read_metrics
from windtunnel.training.optim import build_optimizer

from support import ROOT, TINY, torchrun


def tiny(*extra):
    return load_config(ROOT / "proxies" / "xs.yaml", overrides=[*TINY, *extra])


def losses(run):
    return [(r["step"], r["lr"], r["loss"], r["val_loss"]) for r in read_metrics(run / "metrics.csv")]


def test_checkpoint_files_are_atomic_weights_only_and_pruned(tmp_path):
    cfg = tiny()
    model = build_model(cfg.model, seed=0)
    opt = build_optimizer(model, cfg)
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step=step, model=model, optimizer=opt, state={"first_loss": 5.0, "seconds": 1.5})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000006.pt", "step_00000009.pt"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp left
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))  # weights_only=True inside
    assert ckpt["step"] == 9 and ckpt["state"] == {"first_loss": 5.0, "seconds": 1.5}
    assert torch.equal(ckpt["model"]["embed.weight"], model.embed.weight)
    assert [p.name for p in prune_checkpoints(tmp_path, keep=2)] == ["step_00000003.pt"]
    (tmp_path / "checkpoints" / "step_00000012.pt").write_bytes(b"truncated")
    with pytest.raises(WindtunnelError, match="step_00000012.pt: not a readable checkpoint"):
        load_checkpoint(latest_checkpoint(tmp_path))


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    cfg = tiny("train.checkpoint_every=4", "train.keep_checkpoints=2")
    whole = train(cfg, out_dir=tmp_path / "whole")
    stopped = train(cfg, out_dir=tmp_path / "split", stop_after=6)
    assert stopped["status"] == "stopped" and stopped["steps"] == 6
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step_00000004.pt", "step_00000006.pt"]
    resumed = train(cfg, out_dir=tmp_path / "split", resume=True)
    assert resumed["resumed_from"].endswith("step_00000006.pt")
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")  # exact, every step, lr and val loss
    assert resumed["val_loss"] == whole["val_loss"] and resumed["steps"] == 12


def test_resume_from_an_older_checkpoint_rewrites_the_later_metrics(tmp_path):
    # a crash after step 6 but with its checkpoint lost: resume from step 4 redoes 5 and 6, no duplicates
    cfg = tiny("train.checkpoint_every=4", "train.keep_checkpoints=3")
    train(cfg, out_dir=tmp_path / "whole")
    train(cfg, out_dir=tmp_path / "crash", stop_after=6)
    os.remove(tmp_path / "crash" / "checkpoints" / "step_00000006.pt")
    train(cfg, out_dir=tmp_path / "crash", resume=True)
    assert losses(tmp_path / "crash") == losses(tmp_path / "whole")


def test_decay_branches_off_a_stable_checkpoint(tmp_path):
    # 12 steps: warmup 2, stable to step 8, linear decay over the last 4; checkpoints every 4
    cfg = tiny("train.decay_steps=4", "train.checkpoint_every=4", "train.keep_checkpoints=3")
    train(cfg, out_dir=tmp_path / "main")
    branch = train(cfg, out_dir=tmp_path / "branch", decay_from=tmp_path / "main/checkpoints/step_00000004.pt")
    rows = read_metrics(tmp_path / "branch" / "metrics.csv")
    assert [r["step"] for r in rows] == [5, 6, 7, 8] and branch["steps"] == 8
    assert [r["lr"] / cfg.train.lr for r in rows] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    # the branch starts where the main run was at step 4: same step-5 loss (lr is 1.0 x peak in both)
    assert rows[0]["loss"] == read_metrics(tmp_path / "main" / "metrics.csv")[4]["loss"]
    with pytest.raises(WindtunnelError, match="step 12 is not in the stable phase"):
        train(cfg, out_dir=tmp_path / "late", decay_from=tmp_path / "main/checkpoints/step_00000012.pt")


def test_resume_without_checkpoint_starts_fresh_and_a_wrong_shape_is_refused(tmp_path, capsys):
    cfg = tiny("train.checkpoint_every=12")
    assert train(cfg, out_dir=tmp_path / "a", resume=True)["steps"] == 12
    assert "no checkpoint in" in capsys.readouterr().err
    wider = tiny("model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2")
    with pytest.raises(WindtunnelError, match="does not fit this model"):
        train(wider, out_dir=tmp_path / "b", resume=tmp_path / "a/checkpoints/step_00000012.pt")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    # grad_accum counts micro-batches across all ranks: 2 processes x 1 == 1 process x 2, same data
    overrides = [*TINY, "train.grad_accum=2", "train.steps=6", "train.eval_every=3"]
    single = train(load_config(ROOT / "proxies" / "xs.yaml", overrides=overrides), out_dir=tmp_path / "one")
    sets = [arg for o in overrides for arg in ("--set", o)]
    torchrun(["-m", "windtunnel", "train", str(ROOT / "proxies" / "xs.yaml"), *sets, "--out", str(tmp_path / "two"),
              "--quiet"], timeout=240)
    one, two = read_metrics(tmp_path / "one" / "metrics.csv"), read_metrics(tmp_path / "two" / "metrics.csv")
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    assert [r["step"] for r in two if r["val_loss"]] == [3, 6]
    assert [r["val_loss"] for r in two if r["val_loss"]] == pytest.approx([r["val_loss"] for r in one if r["val_loss"]],
                                                                          rel=1e-5)
    assert single["status"] == "ok"


def test_resume_honours_a_changed_lr_and_schedule_and_logs_the_optimizers_lr(tmp_path, capsys):
    # the reported reproduction: stopped at step 10, resumed to 20 as it was and with train.lr=0.002
    base = ("train.steps=20", "train.checkpoint_every=10", "train.eval_every=10")
    for name in ("same", "lower", "constant"):
        train(tiny(*base), out_dir=tmp_path / name, stop_after=10)
    same = train(tiny(*base), out_dir=tmp_path / "same", resume=True)
    capsys.readouterr()
    lower = train(tiny(*base, "train.lr=0.002"), out_dir=tmp_path / "lower", resume=True)
    assert "train.lr: 0.01 -> 0.002" in capsys.readouterr().err  # named, and applied
    constant = train(tiny(*base, "train.schedule=constant"), out_dir=tmp_path / "constant", resume=True)
    assert lower["train_loss"] != same["train_loss"] and constant["train_loss"] != same["train_loss"]
    for name, peak in (("same", 0.01), ("lower", 0.002), ("constant", 0.01)):
        rows = read_metrics(tmp_path / name / "metrics.csv")
        ckpt = load_checkpoint(tmp_path / name / "checkpoints" / "step_00000020.pt")
        embedding = next(g for g in ckpt["optimizer"]["param_groups"] if g["role"] == "embedding")
        assert rows[-1]["lr"] == pytest.approx(embedding["lr"])  # the optimizer's own lr, not the config's
        assert embedding["peak_lr"] == pytest.approx(peak)
        assert max(r["lr"] for r in rows if r["step"] > 10) <= peak + 1e-12
    assert all(r["lr"] == pytest.approx(0.01) for r in read_metrics(tmp_path / "constant" / "metrics.csv")
               if r["step"] > 10)
