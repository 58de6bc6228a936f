"""Calibration metrics as pure functions on numpy arrays: accuracy, ECE, MCE, Brier, reliability bins.

Conventions (stated once, used everywhere):

- ``probs`` is an (N, K) array of each question's probabilities over its choices (rows sum to 1);
  questions with fewer than K choices are padded with zeros, which add nothing to any metric.
- confidence = the top choice's probability; a prediction is correct when the top choice (first
  one on ties) is the answer.
- Bins are equal-width over [0, 1]: bin i holds confidences in (i/B, (i+1)/B], bin 0 also holds 0.
- ECE = sum_b (n_b / N) |acc_b - conf_b|; MCE = max over non-empty bins of |acc_b - conf_b|;
  Brier = mean over questions of sum_k (p_k - y_k)^2 (the multi-class form, in [0, 2]).

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4]]); answers = np.array([0, 1])
    >>> round(brier_score(probs, answers), 3), round(expected_calibration_error(probs.max(1), [1, 0], bins=10), 3)
    (0.37, 0.35)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "bin_index",
    "bootstrap_ece",
    "brier_score",
    "calibration_summary",
    "expected_calibration_error",
    "max_calibration_error",
    "predictions",
    "reliability_bins",
    "wilson_interval",
]

DEFAULT_BINS = 15
"""Equal-width confidence bins of the ECE (the common choice with 10)."""


def bin_index(confidence, *, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The bin of each confidence: bin i holds (i/bins, (i+1)/bins]; 0 goes to bin 0.

    Example:
        >>> bin_index([0.0, 0.1, 0.1001, 1.0], bins=10).tolist()
        [0, 0, 1, 9]
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    c = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(confidence, correct, *, bins: int = DEFAULT_BINS) -> list[dict]:
    """Per equal-width bin: its edges, count, accuracy and mean confidence (None when empty).

    Example:
        >>> reliability_bins([0.95, 0.85], [1, 0], bins=2)[1]["accuracy"]
        0.5
    """
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    idx = bin_index(c, bins=bins)
    out = []
    for i in range(bins):
        mask = idx == i
        n = int(mask.sum())
        out.append({"lo": i / bins, "hi": (i + 1) / bins, "count": n,
                    "accuracy": float(y[mask].mean()) if n else None,
                    "confidence": float(c[mask].mean()) if n else None})
    return out


def expected_calibration_error(confidence, correct, *, bins: int = DEFAULT_BINS) -> float:
    """ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b|.

    Example:
        >>> expected_calibration_error([0.8, 0.8, 0.8, 0.8, 0.8], [1, 1, 1, 1, 0], bins=10)
        0.0
    """
    count, conf_sum, right_sum = _bin_sums(confidence, correct, bins)
    # n_b / N * |right_b / n_b - conf_b / n_b| = |right_b - conf_b| / N
    return float(np.abs(right_sum - conf_sum).sum() / max(count.sum(), 1))


def max_calibration_error(confidence, correct, *, bins: int = DEFAULT_BINS) -> float:
    """MCE = the largest |accuracy_b - mean confidence_b| over the non-empty bins.

    Example:
        >>> max_calibration_error([0.9, 0.6], [0, 1], bins=10)
        0.9
    """
    count, conf_sum, right_sum = _bin_sums(confidence, correct, bins)
    filled = count > 0
    return float((np.abs(right_sum - conf_sum)[filled] / count[filled]).max(initial=0.0))


def _bin_sums(confidence, correct, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: how many predictions, the sum of their confidences, how many are right."""
    c = np.asarray(confidence, dtype=np.float64)
    idx = bin_index(c, bins=bins)
    return (np.bincount(idx, minlength=bins).astype(np.float64), np.bincount(idx, c, minlength=bins),
            np.bincount(idx, np.asarray(correct, dtype=np.float64), minlength=bins))


def brier_score(probs, answers) -> float:
    """Mean over questions of sum_k (p_k - y_k)^2, y the one-hot answer (0 = perfect, 2 = worst).

    Example:
        >>> brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1])
        0.25
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.zeros_like(p)
    y[np.arange(len(p)), np.asarray(answers, dtype=np.int64)] = 1.0
    return float(((p - y) ** 2).sum(axis=1).mean()) if len(p) else math.nan


def predictions(probs, answers) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct): the top probability of each row and whether its argmax is the answer."""
    p = np.asarray(probs, dtype=np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == np.asarray(answers)).astype(np.float64)


def wilson_interval(successes: float, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (nan, nan) when n = 0.

    Example:
        >>> [round(x, 3) for x in wilson_interval(50, 100)]
        [0.404, 0.596]
    """
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ece(confidence, correct, *, bins: int = DEFAULT_BINS, resamples: int = 200,
                  seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the ECE (questions resampled with replacement, seeded)."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if len(c) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [expected_calibration_error(c[i], y[i], bins=bins)
             for i in (rng.integers(0, len(c), len(c)) for _ in range(resamples))]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def calibration_summary(probs, answers, *, bins: int = DEFAULT_BINS, n_choices=None) -> dict:
    """Accuracy (with its Wilson 95 % interval), chance, ECE (with a bootstrap interval), MCE, Brier, bins.

    `n_choices` (per question) gives the chance accuracy, mean of 1/K; by default K = the row width.

    Example:
        >>> s = calibration_summary([[0.7, 0.3], [0.4, 0.6]], [0, 0], bins=10)
        >>> s["accuracy"], round(s["ece"], 3), s["n"]
        (0.5, 0.45, 2)
    """
    p = np.asarray(probs, dtype=np.float64)
    conf, correct = predictions(p, answers)
    k = np.full(len(p), p.shape[1]) if n_choices is None else np.asarray(n_choices)
    return {
        "n": len(p),
        "accuracy": float(correct.mean()) if len(p) else math.nan,
        "accuracy_95ci": list(wilson_interval(float(correct.sum()), len(p))),
        "chance_accuracy": float((1.0 / k).mean()) if len(p) else math.nan,
        "mean_confidence": float(conf.mean()) if len(p) else math.nan,
        "ece": expected_calibration_error(conf, correct, bins=bins),
        "ece_95ci": list(bootstrap_ece(conf, correct, bins=bins)),
        "mce": max_calibration_error(conf, correct, bins=bins),
        "brier": brier_score(p, answers),
        "bins": bins,
        "reliability": reliability_bins(conf, correct, bins=bins),
    }
