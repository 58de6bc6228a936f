"""Horizon check: optimum per token budget, the fitted slope and its interval, and `transfer --horizon`."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from windtunnel.analysis.horizon_check import HORIZON_FILE, horizon_check, horizon_fit
from windtunnel.cli import main
from windtunnel.errors import WindtunnelError
from windtunnel.fullrun.transfer import transfer

from runfolders import write_run
from support import ROOT

TRUE_SLOPE = -0.35
STEPS = (100, 200, 400, 800)
EXPS = [e / 2 for e in range(-24, -5)]  # lr 2^-12 .. 2^-3 in half steps
TOKENS_PER_STEP = 2048


def true_log2_opt(steps):
    return -5.0 + TRUE_SLOPE * math.log2(steps * TOKENS_PER_STEP / (100 * TOKENS_PER_STEP))


def horizon_rows(*, seeds=(0, 1, 2), noise=0.0, steps=STEPS, exps=EXPS, rng_seed=0):
    """Loss curves, parabolas in log2(lr) whose vertex moves as TRUE_SLOPE x log2 tokens, plus noise."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in steps:
        v = true_log2_opt(s)
        for seed in seeds:
            for e in exps:
                loss = 2.5 - 0.1 * math.log2(s) + 0.04 * (e - v) ** 2 + noise * rng.standard_normal()
                rows.append({"train.steps": s, "train.lr": 2.0**e, "val_loss": loss, "seed": seed,
                             "tokens": s * TOKENS_PER_STEP})
    return rows


def write_horizon(folder, rows, steps=STEPS, exps=EXPS):
    run = write_run(folder, rows, {"train.steps": {"values": list(steps)},
                                   "train.lr": {"values": [2.0**e for e in exps]}})
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["base"] = str(ROOT / "proxies" / "xs.yaml")  # the horizon model's size comes from its base
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    return run


def test_noise_free_curves_give_the_true_slope(tmp_path):
    report = horizon_check(write_horizon(tmp_path / "h", horizon_rows(seeds=(0,))), tokens=1e9)
    assert report.fit.slope == pytest.approx(TRUE_SLOPE, abs=1e-6)
    assert [r.optimum.log2_lr for r in report.rows] == pytest.approx([true_log2_opt(s) for s in STEPS], abs=1e-6)
    lr, lo, hi = report.fit.predict(1e9)
    assert math.log2(lr) == pytest.approx(-5.0 + TRUE_SLOPE * math.log2(1e9 / (100 * TOKENS_PER_STEP)), abs=1e-5)
    assert lo <= lr <= hi
    saved = json.loads((tmp_path / "h" / HORIZON_FILE).read_text())
    assert saved["verdict"] == "fitted" and saved["extrapolation"]["tokens"] == 1e9
    assert "bootstrap resample" in saved["interval"] and saved["extrapolation"]["doublings_beyond"] > 9


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_noisy_seeds_interval_contains_the_true_slope(tmp_path, rng_seed):
    rows = horizon_rows(noise=0.01, rng_seed=rng_seed)
    report = horizon_check(write_horizon(tmp_path / "h", rows), write=False)
    lo, hi = report.fit.slope_interval
    assert lo < TRUE_SLOPE < hi
    assert hi - lo < 1.0  # an interval, not everything
    assert abs(report.fit.slope - TRUE_SLOPE) > 1e-4  # the noise did move the estimate


def asymmetric_rows(rng_seed, ratio=6.0, noise=0.01, seeds=(0, 1, 2)):
    """Basins sqrt(ratio) steeper above the optimum and sqrt(ratio) flatter below it (real curves rise
    faster at high lr): a quadratic's vertex is pulled toward the flat side, alike at every budget."""
    rng, rows = np.random.default_rng(rng_seed), []
    for s in STEPS:
        v = true_log2_opt(s)
        for seed in seeds:
            for e in EXPS:
                a = 0.04 * (math.sqrt(ratio) if e > v else 1 / math.sqrt(ratio))
                rows.append({"train.steps": s, "train.lr": 2.0**e, "seed": seed, "tokens": s * TOKENS_PER_STEP,
                             "val_loss": 2.5 - 0.1 * math.log2(s) + a * (e - v) ** 2 + noise * rng.standard_normal()})
    return rows


@pytest.mark.parametrize("rng_seed", [0, 1])
def test_asymmetric_basins_keep_the_slope_and_its_interval(tmp_path, rng_seed):
    report = horizon_check(write_horizon(tmp_path / "asym", asymmetric_rows(rng_seed)), write=False)
    lo, hi = report.fit.slope_interval
    assert lo <= TRUE_SLOPE <= hi and hi - lo < 0.5
    assert all(r.optimum.n_points == 5 and r.optimum.interval == "bootstrap over 3 seeds" for r in report.rows)


def test_a_budget_whose_best_lr_is_on_the_edge_is_left_out(tmp_path):
    rows = [r for r in horizon_rows(seeds=(0,)) if not (r["train.steps"] == 800 and r["train.lr"] < 2.0**-5.5)]
    report = horizon_check(write_horizon(tmp_path / "h", rows), write=False)
    edge = [r for r in report.rows if r.optimum.on_edge]
    assert [r.budget for r in edge] == [800] and report.fit.n == 3
    assert report.fit.slope == pytest.approx(TRUE_SLOPE, abs=1e-6)
    assert "1 degree of freedom" in " ".join(report.notes)


@pytest.mark.parametrize("make, missing", [
    (lambda: (horizon_rows(seeds=(0,), steps=(200,)), {"train.steps": {"values": [200]},
                                                       "train.lr": {"values": [2.0**e for e in EXPS]}}),
     "needs >= 3 budgets"),
    (lambda: ([r for r in horizon_rows(seeds=(0,)) if r["train.steps"] != 400 or r["train.lr"] in (2**-6, 2**-5)],
              None), "train.steps=400 has 2 lr point(s)"),
    (lambda: ([{k: v for k, v in r.items() if k != "train.steps"} for r in horizon_rows(seeds=(0,), steps=(100,))],
              {"train.lr": {"values": [2.0**e for e in EXPS]}}), "needs a swept token budget"),
])
def test_bad_runs_name_the_folder_and_what_is_missing_and_write_nothing(tmp_path, capsys, make, missing):
    rows, params = make()
    run = write_run(tmp_path / "bad", rows, params or {"train.steps": {"values": list(STEPS)},
                                                       "train.lr": {"values": [2.0**e for e in EXPS]}})
    with pytest.raises(WindtunnelError, match=re.escape(missing)) as e:
        horizon_check(run)
    assert str(run) in str(e.value)
    assert main(["check", "horizon", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0]
    assert not (run / HORIZON_FILE).exists()


def test_cli_prints_the_fit_and_exits_0(tmp_path, capsys):
    run = write_horizon(tmp_path / "h", horizon_rows(noise=0.01))
    assert main(["check", "horizon", str(run), "--proxy-tokens", "1.6e6"]) == 0
    out = capsys.readouterr().out
    assert "slope" in out and "bootstrap resample" in out
    assert "extrapolated to 1.6e+06 tokens of this sweep's model, 0.0 doublings beyond" in out
    assert "note: extrapolated" not in out


def test_target_tokens_are_converted_through_tokens_per_parameter(tmp_path, capsys):
    from windtunnel.analysis.horizon_check import horizon_params
    from windtunnel.analysis.runs import load_run
    run = write_horizon(tmp_path / "h", horizon_rows(noise=0.01))
    n_params = horizon_params(load_run(run))
    report = horizon_check(run, tokens_per_param=1300.0, write=False)
    assert report.tokens == pytest.approx(1300.0 * n_params)  # the target's horizon, on this sweep's model
    far = report.fit.doublings_beyond(report.tokens)
    assert far == pytest.approx(math.log2(report.tokens / (800 * TOKENS_PER_STEP)))
    warned = f"extrapolated {far:.1f} doublings of tokens beyond the largest budget"
    assert any(n.startswith(warned) for n in report.notes)
    assert main(["check", "horizon", str(run), "--target", "1.2b"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\(1\.3\d*e\+03 tokens per parameter\), \d+\.\d doublings beyond the largest budget", out)
    # the old flag still works (the sweep model's own tokens), with a warning saying so
    assert main(["check", "horizon", str(run), "--tokens", "1.5e12"]) == 0
    captured = capsys.readouterr()
    assert "--tokens is deprecated" in captured.err
    assert "extrapolated to 1.5e+12 tokens of this sweep's model" in captured.out
    with pytest.raises(SystemExit) as e:  # one horizon to extrapolate to, not two
        main(["check", "horizon", str(run), "--target", "1.2b", "--tokens-per-param", "5"])
    assert e.value.code == 2


# --- transfer --horizon ------------------------------------------------------------------------


def test_transfer_horizon_corrects_the_carried_lr_with_its_interval(tmp_path, capsys):
    run = write_horizon(tmp_path / "h", horizon_rows(noise=0.01))
    proxy = ROOT / "proxies" / "xs.yaml"
    plain = transfer(target="1.2b", source=proxy)
    plan = transfer(target="1.2b", source=proxy, horizon=run)
    c = plan.horizon
    ratio = c.target_tpp / c.proxy_tpp
    assert c.raw_lr == plain.config.train.lr == 0.01
    assert plan.config.train.lr == pytest.approx(0.01 * ratio ** c.slope)
    assert c.low < plan.config.train.lr < c.high
    assert plan.config.train.lr < c.raw_lr  # a negative slope and a longer horizon: a lower lr
    section = [r for r in plan.rows if r.section.startswith("horizon correction")]
    assert section[0].proxy == 0.01 and section[0].target == pytest.approx(plan.config.train.lr)
    assert "95% interval" in section[0].note
    assert any("extrapolated" in w for w in plan.warnings)
    assert main(["transfer", "--target", "1.2b", "--from", str(proxy), "--horizon", str(run), "--dry-run"]) == 0
    assert "peak lr: raw (proxy's optimum) | horizon-corrected" in capsys.readouterr().out


def test_set_lr_wins_over_the_horizon_correction(tmp_path):
    run = write_horizon(tmp_path / "h", horizon_rows(seeds=(0,)))
    plan = transfer(target="1.2b", source=ROOT / "proxies" / "xs.yaml", horizon=run, overrides=["train.lr=0.003"])
    assert plan.config.train.lr == 0.003 and not plan.horizon.applied


def test_transfer_horizon_on_a_run_without_a_fit_is_exit_2(tmp_path, capsys):
    # every budget's best lr on the grid's edge: no optimum anywhere, so no fit
    rows = [r for r in horizon_rows(seeds=(0,)) if r["train.lr"] < 2.0**-7]
    run = write_horizon(tmp_path / "edge", rows, exps=[e for e in EXPS if e < -7])
    out = tmp_path / "out.yaml"
    code = main(["transfer", "--target", "1.2b", "--from", str(ROOT / "proxies" / "xs.yaml"), "--horizon", str(run),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(run) in err[0] and "no horizon fit" in err[0]
    assert not out.exists() and not (run / HORIZON_FILE).exists()


def test_transfer_horizon_needs_a_proxy(tmp_path, capsys):
    run = write_horizon(tmp_path / "h", horizon_rows(seeds=(0,)))
    assert main(["transfer", "--target", "1.2b", "--horizon", str(run), "--dry-run"]) == 2
    assert "needs --from" in capsys.readouterr().err


def test_one_seed_three_point_fits_do_not_make_the_slope_exact():
    # one seed, three lrs per budget: each optimum has no interval of its own, so the resampled slope
    # stood still ([-0.076, -0.076] on a shrunk horizon sweep); the line's own scatter must widen it
    x = [-10.0, -8.0, -6.0]
    vertices = [-7.1, -7.4, -7.2]  # no clean line: the optima scatter about it
    curves = [[[4.0 + 0.05 * (v - c) ** 2] for v in x] for c in vertices]
    optima, fit = horizon_fit([384, 768, 1536], [x] * 3, curves)
    assert all(o.samples is None for o in optima)
    lo, hi = fit.slope_interval
    assert hi - lo > 0.5 and lo < fit.slope < hi  # one degree of freedom: wide, never exact
    lr, low, high = fit.predict(1e6)
    assert low < lr < high and high / low > 2
    assert "Student-t" in fit.interval
