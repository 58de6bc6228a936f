"""Pinned values and error messages for windtunnel.training.schedule (pure Python, fast)."""
import doctest
import math
import re

import pytest

from windtunnel.training import schedule as schedule_module
from windtunnel.training.schedule import DECAY_SHAPES, Schedule, build_schedule, lr_multipliers

# total 100, warmup 10, decay 20: decay starts at T = 80, k = step - 80.
BASE = dict(kind="wsd", total_steps=100, warmup_steps=10, decay_steps=20)


def wsd(**overrides):
    return build_schedule(**{**BASE, **overrides})


@pytest.mark.parametrize("decay", DECAY_SHAPES)
def test_warmup_and_stable_are_shared_by_every_shape(decay):
    s = wsd(decay=decay)
    assert s.multiplier(0) == 0.1  # (0 + 1) / 10: the first update is not zero
    assert s.multiplier(4) == 0.5
    assert s.multiplier(9) == 1.0
    assert s.multiplier(10) == s.multiplier(50) == s.multiplier(79) == 1.0
    assert s.multiplier(80) == 1.0  # k = 0: every shape starts at 1
    assert (s.phase(9), s.phase(10), s.phase(79), s.phase(80), s.phase(100)) == (
        "warmup", "stable", "stable", "decay", "decay")
    assert s.decay_start == 80


@pytest.mark.parametrize("decay, step, expected", [
    ("linear", 90, 0.5), ("linear", 85, 0.75), ("linear", 100, 0.0),
    ("cosine", 90, 0.5), ("cosine", 100, 0.0),
    ("1-sqrt", 85, 0.5), ("1-sqrt", 100, 0.0),  # k = D/4 -> 1 - 1/2
    ("exponential", 85, 0.5), ("exponential", 90, 0.25), ("exponential", 100, 0.0625),
])
def test_decay_shapes_pinned(decay, step, expected):
    # Default half_life = D / 4 = 5 steps, so exponential ends at 1/16.
    assert wsd(decay=decay).multiplier(step) == pytest.approx(expected, abs=1e-12)


def test_explicit_half_life_and_min_ratio():
    assert wsd(decay="exponential", half_life=10).multiplier(90) == pytest.approx(0.5)
    # min_ratio rescales the shape: 0.2 + 0.8 * g(k).
    assert wsd(decay="linear", min_ratio=0.2).multiplier(90) == pytest.approx(0.6)
    assert wsd(decay="1-sqrt", min_ratio=0.2).multiplier(100) == pytest.approx(0.2)
    assert wsd(decay="cosine", min_ratio=0.2).multiplier(100) == pytest.approx(0.2)


def test_decay_fraction_and_override():
    assert wsd(decay_steps=None).decay_steps == 10  # default fraction 0.1
    assert wsd(decay_steps=None, decay_fraction=0.25).decay_steps == 25
    assert wsd(decay_steps=30, decay_fraction=0.25).decay_steps == 30  # explicit wins
    assert wsd(decay_steps=None, decay_fraction=0.001).decay_steps == 1  # a fraction of a step: one step


def test_cosine_baseline_endpoints():
    s = build_schedule(kind="cosine", total_steps=110, warmup_steps=10)
    assert s.min_ratio == 0.1 and s.decay_start == 10 and s.decay_steps == 100
    assert s.multiplier(0) == 0.1
    assert s.multiplier(9) == s.multiplier(10) == 1.0
    assert s.multiplier(60) == pytest.approx(0.55)  # midpoint: 0.1 + 0.9 * 0.5
    assert s.multiplier(110) == pytest.approx(0.1)
    assert s.phase(10) == "decay"
    assert build_schedule(kind="cosine", total_steps=110, warmup_steps=10,
                          min_ratio=0.0).multiplier(110) == pytest.approx(0.0)


def test_constant_and_no_warmup():
    s = build_schedule(kind="constant", total_steps=50, warmup_steps=5)
    assert lr_multipliers(s, [0, 4, 5, 49, 50]) == [0.2, 1.0, 1.0, 1.0, 1.0]
    assert s.phase(50) == "stable" and s.decay_start == 50
    s0 = build_schedule(kind="constant", total_steps=3, warmup_steps=0)
    assert lr_multipliers(s0) == [1.0, 1.0, 1.0]


def test_decay_from_checkpoint():
    s = build_schedule(kind="wsd", total_steps=1000, warmup_steps=10,
                       decay_steps=100, decay_start=300)
    assert (s.total_steps, s.decay_start, s.decay_steps) == (400, 300, 100)
    assert s.multiplier(299) == 1.0 and s.multiplier(350) == pytest.approx(0.5)
    assert s.multiplier(400) == 0.0
    default = build_schedule(kind="wsd", total_steps=1000, warmup_steps=10, decay_steps=100)
    assert build_schedule(kind="wsd", total_steps=1000, warmup_steps=10,
                          decay_steps=100, decay_start=900) == default


@pytest.mark.parametrize("kwargs", [
    *({**BASE, "decay": d} for d in DECAY_SHAPES),
    {**BASE, "decay": "cosine", "min_ratio": 0.3},
    {**BASE, "decay_steps": 90},
    {"kind": "cosine", "total_steps": 100, "warmup_steps": 10},
    {"kind": "constant", "total_steps": 100, "warmup_steps": 10},
])
def test_non_increasing_after_warmup_and_in_unit_interval(kwargs):
    s = build_schedule(**kwargs)
    values = lr_multipliers(s, range(s.total_steps + 1))
    assert all(0.0 <= v <= 1.0 for v in values)
    after = values[s.warmup_steps:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    warm = values[:s.warmup_steps]
    assert all(a < b for a, b in zip(warm, warm[1:]))


def test_callable_like_lambda_lr():
    s = wsd()
    assert s(90) == s.multiplier(90)


def _raises(message, **kwargs):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        build_schedule(**kwargs)


@pytest.mark.parametrize("message, kwargs", [
    ("warmup_steps must be < total_steps, got warmup_steps=500, total_steps=300",
     dict(kind="constant", total_steps=300, warmup_steps=500)),
    ("kind must be one of ('wsd', 'cosine', 'constant'), got kind='step'",
     dict(kind="step", total_steps=10, warmup_steps=0)),
    ("decay must be one of ('exponential', 'linear', 'cosine', '1-sqrt'), got decay='exp'",
     {**BASE, "decay": "exp"}),
    ("total_steps must be >= 1, got total_steps=0", dict(kind="wsd", total_steps=0, warmup_steps=0)),
    ("warmup_steps must be >= 0, got warmup_steps=-1", {**BASE, "warmup_steps": -1}),
    ("total_steps must be an int, got total_steps=100.0", {**BASE, "total_steps": 100.0}),
    ("decay_steps must be >= 1, got decay_steps=-5", {**BASE, "decay_steps": -5}),
    ("decay_steps must be <= total_steps - warmup_steps, got decay_steps=91, "
     "total_steps=100, warmup_steps=10", {**BASE, "decay_steps": 91}),
    ("decay_steps must be <= total_steps - warmup_steps, got decay_steps=95, "
     "decay_fraction=0.95, total_steps=100, warmup_steps=10",
     {**BASE, "decay_steps": None, "decay_fraction": 0.95}),
    ("decay_fraction must be a number in (0, 1], got decay_fraction=0.0",
     {**BASE, "decay_steps": None, "decay_fraction": 0.0}),
    ("min_ratio must be a number in [0, 1], got min_ratio=-0.1", {**BASE, "min_ratio": -0.1}),
    ("half_life must be a finite number > 0 for exponential decay, got half_life=0",
     {**BASE, "decay": "exponential", "half_life": 0}),
    ("half_life is only used by kind='wsd' with decay='exponential', got half_life=3, "
     "kind='wsd', decay='linear'", {**BASE, "half_life": 3}),
    ("decay_start must be in [warmup_steps, total_steps - decay_steps], got decay_start=5, "
     "warmup_steps=10, total_steps=100, decay_steps=20", {**BASE, "decay_start": 5}),
    ("decay_start must be in [warmup_steps, total_steps - decay_steps], got decay_start=81, "
     "warmup_steps=10, total_steps=100, decay_steps=20", {**BASE, "decay_start": 81}),
    ("decay_steps is not used by kind='cosine', got decay_steps=5",
     dict(kind="cosine", total_steps=100, warmup_steps=10, decay_steps=5)),
    ("decay_start is not used by kind='constant', got decay_start=50",
     dict(kind="constant", total_steps=100, warmup_steps=10, decay_start=50)),
])
def test_error_messages(message, kwargs):
    _raises(message, **kwargs)


@pytest.mark.parametrize("step", [-1, 101, 2.0, True])
def test_out_of_range_step_is_an_error_not_a_clamp(step):
    with pytest.raises(ValueError, match=re.escape(f"step must be an int in [0, total_steps], "
                                                   f"got step={step!r}, total_steps=100")):
        wsd().multiplier(step)


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match=r"^kind='cosine' needs decay='cosine'"):
        Schedule(kind="cosine", total_steps=10, warmup_steps=0, decay_steps=10)
    with pytest.raises(ValueError, match=r"^kind='constant' needs decay_steps == 0"):
        Schedule(kind="constant", total_steps=10, warmup_steps=0, decay_steps=2)
    assert not math.isnan(Schedule(kind="wsd", total_steps=10, warmup_steps=0,
                                   decay_steps=10).multiplier(10))


def test_docstring_examples():
    assert doctest.testmod(schedule_module).failed == 0
