"""Calibration metrics against closed forms, the context-law fit, and the context buckets on a model
whose loss at each position is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from windtunnel.data.token_folder import write_prepared
from windtunnel.eval import context, context_law, fit_context_law
from windtunnel.eval.loading import EvalModel
from windtunnel.eval.metrics import (
    bin_index,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    max_calibration_error,
    reliability_bins,
    wilson_interval,
)
from windtunnel.eval.scaling_law import fit_warning


def test_hand_made_table_matches_closed_forms():
    probs = np.array([[0.9, 0.1, 0.0],   # conf 0.9, right
                      [0.2, 0.7, 0.1],   # conf 0.7, wrong (answer 0)
                      [0.25, 0.3, 0.45],  # conf 0.45, right
                      [0.55, 0.45, 0.0]])  # conf 0.55, wrong (answer 1)
    answers = np.array([0, 0, 2, 1])
    conf, correct = np.array([0.9, 0.7, 0.45, 0.55]), np.array([1, 0, 1, 0])
    # 10 bins: each confidence alone in its bin, so ECE = mean |correct - conf|, MCE = max of them
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx((0.1 + 0.7 + 0.55 + 0.55) / 4)
    assert max_calibration_error(conf, correct, bins=10) == pytest.approx(0.7)
    # 2 bins: (0, .5] holds 0.45 (right): gap 0.55; (.5, 1] holds 0.9, 0.7, 0.55 with accuracy 1/3
    high_gap = abs(1 / 3 - (0.9 + 0.7 + 0.55) / 3)
    assert expected_calibration_error(conf, correct, bins=2) == pytest.approx((1 * 0.55 + 3 * high_gap) / 4)
    brier = ((0.1**2 + 0.1**2) + (0.8**2 + 0.7**2 + 0.1**2) + (0.25**2 + 0.3**2 + 0.55**2)
             + (0.55**2 + 0.55**2)) / 4
    assert brier_score(probs, answers) == pytest.approx(brier)
    s = calibration_summary(probs, answers, bins=10, n_choices=[3, 3, 3, 2])
    assert s["accuracy"] == 0.5 and s["n"] == 4 and s["bins"] == 10
    assert s["ece"] == pytest.approx(0.475) and s["brier"] == pytest.approx(brier)
    assert s["chance_accuracy"] == pytest.approx((1 / 3 * 3 + 1 / 2) / 4)
    assert [b["count"] for b in s["reliability"]] == [0, 0, 0, 0, 1, 1, 1, 0, 1, 0]


def test_bins_are_right_closed_and_zero_goes_to_the_first():
    assert bin_index([0.0, 0.1, 0.10001, 0.5, 0.99, 1.0], bins=10).tolist() == [0, 0, 1, 4, 9, 9]
    bins = reliability_bins([0.95, 0.85, 0.05], [1, 0, 0], bins=2)
    assert [(b["lo"], b["hi"], b["count"]) for b in bins] == [(0.0, 0.5, 1), (0.5, 1.0, 2)]
    assert bins[1]["accuracy"] == 0.5 and bins[1]["confidence"] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        bin_index([0.5], bins=0)


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    rng = np.random.default_rng(0)
    n = 100_000
    p = rng.uniform(0.5, 1.0, n)  # binary questions: the top choice's probability
    right = rng.uniform(size=n) < p  # ... is right exactly that often
    probs = np.stack([p, 1 - p], axis=1)
    answers = np.where(right, 0, 1)
    s = calibration_summary(probs, answers, bins=15)
    assert s["ece"] < 0.008 and s["ece_95ci"][0] <= s["ece"] <= s["ece_95ci"][1]
    assert s["accuracy"] == pytest.approx(0.75, abs=0.005)


def test_constant_overconfident_predictor_scores_the_known_values():
    n = 1000  # always 90 % sure, right 60 % of the time
    probs = np.tile([0.9, 0.1], (n, 1))
    answers = np.array([0] * 600 + [1] * 400)
    s = calibration_summary(probs, answers, bins=15)
    assert s["ece"] == pytest.approx(0.3) and s["mce"] == pytest.approx(0.3)
    assert s["brier"] == pytest.approx(0.6 * 0.02 + 0.4 * 1.62)
    lo, hi = s["accuracy_95ci"]
    assert lo < 0.6 < hi and hi - lo < 0.07


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.404, 0.596)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_fit_recovers_the_law_exact_and_noisy():
    t = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096.0])
    fit = fit_context_law(t, context_law(t, a=-0.575, b=1.772, c=32.84))
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((-0.575, 1.772, 32.84), rel=1e-5)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 13
    rng = np.random.default_rng(1)
    sigma = np.full(len(t), 0.01)
    noisy = fit_context_law(t, context_law(t, a=-0.4, b=2.5, c=10.0) + rng.normal(0, 0.01, len(t)), sigma=sigma)
    for key, true in (("a", -0.4), ("b", 2.5), ("c", 10.0)):
        assert abs(noisy[key] - true) < 4 * noisy[f"{key}_se"], key
    assert 0.99 < noisy["r2"] < 1.0 and noisy["weighted"]


def test_fit_warns_when_it_does_not_constrain_its_parameters():
    """A model that ignores its context gives a flat noisy curve: the fit's numbers (b = 1.9 ± 725,
    R² 0.03) mean nothing, and the result says so; a clean law gets no warning."""
    t = np.array([1, 2, 4, 8, 16, 32, 64, 128.0])
    assert fit_context_law(t, context_law(t, a=-0.575, b=1.772, c=32.84))["warning"] is None
    flat = 1.9 + np.random.default_rng(0).normal(0, 0.01, len(t))
    fit = fit_context_law(t, flat)
    assert "error" not in fit
    assert fit["warning"] and "do not read these numbers" in fit["warning"]
    assert "does not constrain" in fit["warning"] or "explains little" in fit["warning"]
    assert fit_warning({"a": -0.5, "b": 1.9068, "c": 3.0, "a_se": 0.1, "b_se": 725.3, "c_se": 1.0,
                        "r2": 0.03}).startswith("the fit does not constrain b (standard error larger than the value) "
                                                "and explains little (R² 0.03 < 0.5)")


def test_fit_reports_too_few_points_instead_of_raising():
    assert "error" in fit_context_law([1, 2, 4], [3.0, 2.0, 1.5])


class _KnownLoss(torch.nn.Module):
    """A 'model' for the sequence 0, 1, 2, ... (mod V): its loss at context t is exactly L(t)."""

    def __init__(self, vocab: int, law):
        super().__init__()
        self.vocab, self.law = vocab, law

    def forward(self, ids):
        B, T = ids.shape
        loss = torch.tensor(self.law(np.arange(1, T + 1)), dtype=torch.float64)  # (T,)
        # correct-token logit s with all others 0: loss = log(1 + (V-1) e^-s)
        s = -torch.log(torch.expm1(loss) / (self.vocab - 1))
        logits = torch.zeros(B, T, self.vocab, dtype=torch.float64)
        logits.scatter_(2, ((ids + 1) % self.vocab).unsqueeze(-1), s.expand(B, T).unsqueeze(-1))
        return logits


def test_context_buckets_and_fit_on_a_model_with_known_loss(tmp_path):
    vocab = 256
    seq = np.arange(20_000) % vocab
    data = write_prepared(tmp_path / "counting", seq, seq, vocab_size=vocab, tokenizer="byte", sources="test")

    def law(t):
        return context_law(t, a=-0.6, b=1.2, c=6.0)

    model = EvalModel(name="known", forward=_KnownLoss(vocab, law), vocab_size=vocab, max_seq_len=64,
                      device=torch.device("cpu"), encode=lambda s: np.frombuffer(s.encode(), np.uint8))
    exact = context(model, data=data, lengths=list(range(1, 65)), windows=16)
    assert exact["windows"] == 16 and exact["tokens_scored"] == 16 * 64
    assert (exact["fit"]["a"], exact["fit"]["b"], exact["fit"]["c"]) == pytest.approx((-0.6, 1.2, 6.0), rel=1e-4)
    r = context(model, data=data, lengths=[4, 16, 64], windows=8, batch_tokens=100, out_dir=tmp_path / "out")
    first = r["points"][0]
    assert (first["t_from"], first["t_to"], first["tokens"]) == (1, 4, 8 * 4)
    assert first["loss"] == pytest.approx(law(np.arange(1, 5)).mean())
    assert r["points"][2]["cumulative_loss"] == pytest.approx(law(np.arange(1, 65)).mean())
    assert r["points"][1]["perplexity"] == pytest.approx(math.exp(law(np.arange(5, 17)).mean()))
    assert "error" in r["fit"]  # three points cannot carry a 3-parameter fit with errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["context.csv", "context.json", "context.png",
                                                                    "context.svg"]
