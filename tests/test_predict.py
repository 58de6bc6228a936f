"""`windtunnel predict`: the loss law recovers known exponents, the holdout check predicts a held-out
rung of a synthetic ladder, and the refusals (too few rungs, a flat axis, another vocabulary) hold."""

from __future__ import annotations

import numpy as np
import pytest

from windtunnel.cli import main
from windtunnel.config import load_config, save_config
from windtunnel.errors import WindtunnelError
from windtunnel.fullrun.predict import predict
from windtunnel.fullrun.scaling_fit import bootstrap, fit_law, loss_law
from windtunnel.model.accounting import count_params
from windtunnel.sweep.results import ResultsTable

from support import ROOT

LAW = {"E": 1.2, "A": 0.5, "alpha": 0.45, "B": 0.8, "beta": 0.35, "n0": 1e6, "d0": 4e5}
SHAPE = ["model.head_dim=16", "model.n_kv_heads=null", "model.base_shapes=null"]


def write_ladder(folder, *, law=LAW, widths=(32, 64, 128, 256), steps=(50, 100, 200), noise=0.003, seeds=(0,),
                 extra=()):
    """A ladder folder in the sweep format whose losses follow `law` (N counted from each trial's config)."""
    rng = np.random.default_rng(0)
    table = ResultsTable(folder, param_keys=["model.d_model", "train.steps"])
    for w in widths:
        for s in steps:
            for seed in seeds:
                cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=SHAPE + list(extra) + [
                    f"model.d_model={w}", f"train.steps={s}", f"train.seed={seed}"])
                tid = f"w{w}_s{seed}_d{s}"
                save_config(cfg, folder / "trials" / tid / "config.yaml")
                n, d = count_params(cfg.model).non_embedding, s * cfg.tokens_per_step
                loss = float(loss_law(n, d, **law)) * float(np.exp(rng.normal(0, noise)))
                table.add({"trial_id": tid, "status": "ok", "val_loss": loss, "tokens": d, "seconds": 1.0,
                           "seed": seed, "model.d_model": w, "train.steps": s}, write=False)
    table.write()
    return folder


def test_fit_recovers_a_known_law_exactly():
    n, d = np.repeat([1e5, 4e5, 1.6e6, 6.4e6], 3), np.tile([2e5, 4e5, 8e5], 4)
    fit = fit_law(n, d, loss_law(n, d, **LAW))
    assert fit.alpha == pytest.approx(0.45, abs=1e-3) and fit.beta == pytest.approx(0.35, abs=1e-3)
    assert fit.E == pytest.approx(1.2, abs=1e-3) and fit.rms < 1e-6


def test_bootstrap_interval_holds_the_true_exponent():
    n, d = np.repeat([1e5, 4e5, 1.6e6, 6.4e6], 4), np.tile([1e5, 2e5, 4e5, 8e5], 4)
    loss = loss_law(n, d, **LAW) * np.exp(np.random.default_rng(1).normal(0, 0.003, len(n)))
    boot = bootstrap(n, d, loss, groups=n, reps=60, seed=0)
    low, high = boot.interval("beta")
    assert low < 0.35 < high and high - low < 0.3
    point, lo, hi = boot.predict(2.56e7, 8e5)
    assert lo < point < hi


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return write_ladder(tmp_path_factory.mktemp("predict") / "ladder")


def test_holdout_predicts_the_largest_rung(ladder):
    pred = predict([ladder], holdout="largest", reps=30)
    assert {p.width for p in pred.fitted} == {32, 64, 128}
    assert [h.width for h in pred.holdout] == [256, 256, 256]
    truth = [float(loss_law(h.n, h.d, **LAW)) for h in pred.holdout]
    assert max(abs(h.predicted - t) for h, t in zip(pred.holdout, truth)) < 0.03
    assert sum(h.inside for h in pred.holdout) >= 2
    assert pred.refusal is None


def test_flat_width_curve_is_refused(tmp_path):
    ladder = write_ladder(tmp_path / "flat", law={**LAW, "A": 0.0}, noise=0.01)
    pred = predict([ladder], holdout="largest", reps=30)
    assert pred.refusal is not None and "alpha" in pred.refusal and "zero" in pred.refusal


def test_too_few_rungs_and_bad_holdout(tmp_path, ladder):
    two = write_ladder(tmp_path / "two", widths=(32, 64))
    with pytest.raises(WindtunnelError, match="too few widths"):
        predict([two], holdout="largest")
    with pytest.raises(WindtunnelError, match="not in the ladder"):
        predict([ladder], holdout="96")
    with pytest.raises(WindtunnelError, match="nothing to predict"):
        predict([ladder])
    with pytest.raises(WindtunnelError, match="leaves no point"):
        predict([ladder], holdout="largest", min_tokens=1e9)
    with pytest.raises(WindtunnelError, match="too few token budgets"):  # only the 200-step budget is left
        predict([ladder], holdout="largest", min_tokens=4e5)


def test_target_with_another_vocabulary_is_refused_unless_allowed(ladder):
    with pytest.raises(WindtunnelError, match="allow-other-data"):
        predict([ladder], target="1.2b")
    pred = predict([ladder], target="1.2b", allow_other_data=True, reps=30)
    assert pred.target.n == 1151485440 and pred.target.d == 1.5e12  # Xmodel-2's non-embedding params
    assert any("decades in N" in w for w in pred.warnings) and any("allow-other-data" in w for w in pred.warnings)


def test_cpu_target_on_the_same_data_is_predicted(ladder):
    pred = predict([ladder], target="cpu", tokens=2e5, reps=30)
    assert pred.target.loss == pytest.approx(float(loss_law(pred.target.n, 2e5, **LAW)), abs=0.05)
    assert pred.target.low <= pred.target.loss <= pred.target.high


def test_cli_prints_writes_the_plot_and_exits_2_on_bad_input(tmp_path, ladder, capsys):
    assert main(["predict", str(ladder), "--holdout", "largest", "--reps", "30"]) == 0
    out = capsys.readouterr().out
    assert "holdout: width 256" in out and "alpha" in out and "max |error|" in out
    assert (ladder / "predict_holdout.png").stat().st_size > 1000
    assert main(["predict", str(ladder), "--target", "1.2b", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocab 65280" in err
    assert main(["predict", str(tmp_path / "nope"), "--holdout", "largest"]) == 2
