"""`train.warmup_fraction`: a warmup that is the same share of every budget (the horizon sweep's)."""

from __future__ import annotations

import pytest

from windtunnel.config import load_config
from windtunnel.errors import ConfigError
from windtunnel.training.schedule import make_schedule

from support import ROOT

XS = ROOT / "proxies" / "xs.yaml"


@pytest.mark.parametrize("steps,warmup", [(75, 8), (150, 15), (600, 60)])
def test_the_fraction_replaces_warmup_steps_at_every_budget(steps, warmup):
    cfg = load_config(XS, overrides=[f"train.steps={steps}", "train.warmup_fraction=0.1", "train.warmup_steps=10"])
    assert cfg.train.warmup == warmup and make_schedule(cfg).warmup_steps == warmup
    unset = make_schedule(load_config(XS, overrides=[f"train.steps={steps}"])).warmup_steps
    assert unset == min(20, steps // 10)  # no fraction: warmup_steps (xs leaves it null: 20 or a tenth of the steps)


@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5"])
def test_a_fraction_outside_0_1_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as e:
        load_config(XS, overrides=[f"train.warmup_fraction={value}"])
    assert "train.warmup_fraction" in str(e.value) and "[0, 1)" in str(e.value) and value.lstrip("-") in str(e.value)


def test_the_horizon_preset_warms_up_by_a_fraction():
    import yaml
    spec = yaml.safe_load((ROOT / "sweeps" / "horizon.yaml").read_text())
    assert spec["set"]["train.warmup_fraction"] > 0 and "train.warmup_steps" not in spec["set"]
    steps = spec["parameters"]["train.steps"]["values"]
    fraction = spec["set"]["train.warmup_fraction"]
    shares = {load_config(XS, overrides=[f"train.steps={s}", f"train.warmup_fraction={fraction}"]).train.warmup / s
              for s in steps}
    assert max(shares) - min(shares) < 0.01  # the same share of every budget, give or take rounding
