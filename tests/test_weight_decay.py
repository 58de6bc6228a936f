"""Weight decay that shrinks weights implausibly fast is warned about, in `train` and in `transfer`."""

from __future__ import annotations

import pytest

from windtunnel.config import load_config
from windtunnel.fullrun.transfer import transfer
from windtunnel.model.parametrization import (
    MAX_SHRINK_PER_STEP,
    peak_shrink,
    weight_decay_warning,
)
from windtunnel.training.loop import train

from support import ROOT

PROXIES = sorted((ROOT / "proxies").glob("*.yaml"))
TARGETS = sorted(p.stem for p in (ROOT / "transfer").glob("*.yaml"))


@pytest.mark.parametrize("path", PROXIES, ids=lambda p: p.stem)
def test_no_proxy_preset_decays_implausibly(path):
    cfg = load_config(path)
    assert peak_shrink(cfg) <= MAX_SHRINK_PER_STEP
    assert weight_decay_warning(cfg) is None


def test_minicpm_proxy_decays_as_adamw_01_at_lr_001():
    cfg = load_config(ROOT / "proxies" / "minicpm_9m.yaml")
    assert cfg.train.weight_decay_mode == "independent"
    assert peak_shrink(cfg) == pytest.approx(0.1 * 0.01)  # MiniCPM: AdamW wd 0.1 at peak lr 0.01


@pytest.mark.parametrize("target", TARGETS)
def test_no_target_preset_decays_implausibly(target):
    plan = transfer(target=target)
    assert peak_shrink(plan.config) <= MAX_SHRINK_PER_STEP
    assert not any("train.weight_decay=" in w for w in plan.warnings)


def test_independent_wd_in_adamw_units_names_the_key_and_the_likely_value(xs_path):
    cfg = load_config(xs_path, overrides=["train.weight_decay=0.1", "train.lr=0.01"])
    line = weight_decay_warning(cfg)
    assert "\n" not in line
    assert "train.weight_decay=0.1" in line and "independent" in line
    assert "train.weight_decay=0.001" in line and "weight_decay_mode=coupled" in line


def test_coupled_wd_warns_only_above_the_threshold(xs_path):
    ok = load_config(xs_path, overrides=["train.weight_decay=0.1", "train.weight_decay_mode=coupled"])
    assert weight_decay_warning(ok) is None  # 0.01 x 0.1 = 1e-3: MiniCPM's own
    bad = load_config(xs_path, overrides=["train.weight_decay=1.0", "train.weight_decay_mode=coupled",
                                          "train.lr=0.05"])
    line = weight_decay_warning(bad)
    assert "train.weight_decay=1" in line and "0.05" in line and "coupled" in line


def test_transfer_warns_when_the_carried_decay_is_implausible(tmp_path, xs_path):
    proxy = tmp_path / "proxy.yaml"
    proxy.write_text(xs_path.read_text().replace("weight_decay: 0.0", "weight_decay: 0.1"))
    plan = transfer(target="cpu", source=proxy)
    assert plan.config.train.weight_decay == 0.1 and plan.config.train.weight_decay_mode == "independent"
    assert [w for w in plan.warnings if w.startswith("train.weight_decay=0.1")]


def test_train_prints_the_warning_once(tmp_path, xs_path, tiny_overrides, capsys):
    cfg = load_config(xs_path, overrides=[*tiny_overrides, "train.device=cpu", "train.steps=3", "train.warmup_steps=1",
                                          "train.eval_every=3", "train.weight_decay=0.1", "train.track=[]"])
    train(cfg, out_dir=tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert err.count("warning: train.weight_decay=0.1") == 1
