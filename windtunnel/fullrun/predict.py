"""Predict a target's loss from a ladder of proxies: the law `scaling_fit` fits, read from run folders.

A ladder is any set of sweep-format folders (`bench/ladder.py` writes one: widths x token budgets x
seeds, the budgets as WSD decay branches) whose trials trained with the carried HPs. Each finished
trial is one point: N its non-embedding parameters (`model.accounting.count_params`, exact), D its
tokens, its final held-out loss. The law is fitted with a bootstrap (`scaling_fit.bootstrap`) and
the target's loss predicted at its own N and D, with an interval.

What a prediction holds for: the data and tokenizer the ladder trained on. A target whose vocabulary
or data differ is refused unless `allow_other_data` (its loss is in other units: bytes are not BPE
tokens). It is also refused when an exponent's interval reaches zero (the ladder shows no gain from
that axis to extrapolate), and warned about, with the decades, when it extrapolates further beyond
the ladder's largest N or D than the ladder itself spans.

`holdout="largest"` (or a width) fits without that rung and reports the error of predicting it:
the prediction validated, not trusted.

Example:
    >>> pred = predict(["runs/ladder"], holdout="largest")
    >>> [round(h.error, 3) for h in pred.holdout]                           # doctest: +SKIP
    [0.004, -0.002, 0.006, 0.003, 0.001]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..analysis.runs import load_run
from ..config import config_to_dict, load_config
from ..errors import WindtunnelError
from ..run_folder import config_path, trial_dir
from .scaling_fit import MIN_BUDGETS, MIN_POINTS, MIN_WIDTHS, Bootstrap, bootstrap

__all__ = ["LadderPoint", "HoldoutRow", "TargetPrediction", "Prediction", "read_ladder", "predict",
           "data_identity", "EXPONENTS"]

EXPONENTS = (("alpha", "N"), ("beta", "D"))
"""The law's exponents and the axis each belongs to."""
_DATA_KEYS = ("path", "sources", "mixture")


@dataclass(frozen=True)
class LadderPoint:
    """One finished ladder trial."""

    trial: str
    width: int
    seed: int
    n: float        # non-embedding parameters
    d: float        # training tokens
    loss: float     # final held-out loss


@dataclass(frozen=True)
class HoldoutRow:
    """The held-out rung at one token budget: measured (mean over its seeds) against predicted."""

    width: int
    n: float
    d: float
    measured: float
    seeds: int
    predicted: float
    low: float
    high: float

    @property
    def error(self) -> float:
        return self.predicted - self.measured

    @property
    def inside(self) -> bool:
        return self.low <= self.measured <= self.high


@dataclass(frozen=True)
class TargetPrediction:
    name: str
    n: float
    d: float
    loss: float
    low: float
    high: float
    decades_n: float    # log10(N / the largest N fitted)
    decades_d: float


@dataclass
class Prediction:
    """What `predict` found: the fit, its intervals, the holdout check, the target's loss (or why not)."""

    points: list[LadderPoint]
    fitted: list[LadderPoint]
    boot: Bootstrap
    level: float
    data: str
    """The ladder's vocabulary and data, which the prediction holds for."""
    holdout: list[HoldoutRow] = field(default_factory=list)
    target: TargetPrediction | None = None
    warnings: list[str] = field(default_factory=list)
    refusal: str | None = None

    def exponent(self, name: str) -> tuple[float, float, float]:
        """(fitted, low, high) of `alpha` or `beta`."""
        return (getattr(self.boot.fit, name), *self.boot.interval(name, self.level))

    def seen(self, axis: str) -> tuple[float, float]:
        """(min, max) of N or D over the fitted points."""
        values = [p.n if axis == "N" else p.d for p in self.fitted]
        return min(values), max(values)


def data_identity(vocab_size: int, data: dict[str, Any]) -> str:
    """What a loss is measured on: the vocabulary and the data (a prepared folder, a mixture, or the
    embedded corpus). Two runs' losses compare only when these are equal.

    Example:
        >>> data_identity(256, {"path": None, "embedded_bytes": 8000000})
        'vocab 256, embedded corpus (8000000 bytes)'
    """
    parts = [f"{k} {data[k]}" for k in _DATA_KEYS if data.get(k)]
    if not parts:
        parts = [f"embedded corpus ({data.get('embedded_bytes', 'default')} bytes)"]
    return f"vocab {vocab_size}, " + ", ".join(parts)


def read_ladder(runs: Sequence[str | os.PathLike]) -> tuple[list[LadderPoint], str]:
    """Every finished trial of the folders as a point, and the one data identity they share.

    Example:
        >>> points, data = read_ladder(["runs/ladder"])                     # doctest: +SKIP
    """
    from ..model.accounting import count_params

    points, identities, counts = [], {}, {}
    for run in runs:
        res = load_run(run)
        frame = res.frame[(res.frame["status"] == "ok") & np.isfinite(res.frame[res.metric].astype(float))]
        for row in frame.to_dict("records"):
            trial = str(row["trial_id"])
            path = config_path(trial_dir(run, trial))
            if not path.is_file():
                raise WindtunnelError(f"{path}: missing; a ladder point needs its trial's resolved config")
            cfg = load_config(path)
            key = repr(cfg.model)
            if key not in counts:
                counts[key] = count_params(cfg.model).non_embedding
            identities.setdefault(data_identity(cfg.model.vocab_size, config_to_dict(cfg)["data"]), str(path))
            points.append(LadderPoint(trial=f"{Path(run).name}/{trial}", width=cfg.model.d_model,
                                      seed=int(cfg.train.seed), n=float(counts[key]), d=float(row["tokens"]),
                                      loss=float(row[res.metric])))
    if not points:
        raise WindtunnelError(f"{', '.join(map(str, runs))}: no finished trial to fit")
    if len(identities) > 1:
        (a, pa), (b, pb) = list(identities.items())[:2]
        raise WindtunnelError(f"the ladder mixes data: {pa} has {a}, {pb} has {b}; a law fits one data set")
    return points, next(iter(identities))


def predict(runs: Sequence[str | os.PathLike], *, target: str | os.PathLike | None = None,
            tokens: float | None = None, holdout: str | int | None = None, allow_other_data: bool = False,
            min_tokens: float | None = None, reps: int = 200, level: float = 0.95, seed: int = 0) -> Prediction:
    """Fit the law to the ladder in `runs`; predict the target (a preset or YAML) at `tokens` (default:
    its own budget) and/or the held-out rung (`"largest"` or a width). `min_tokens` leaves out the points
    trained on fewer tokens (the first steps after warmup fall faster than any power law in D: fit the
    regime the law describes, and say so).

    Example:
        >>> pred = predict(["runs/ladder"], target="cpu")                    # doctest: +SKIP
        >>> pred.target.loss, pred.target.low, pred.target.high              # doctest: +SKIP
        (1.93, 1.90, 1.97)
    """
    if target is None and holdout is None:
        raise WindtunnelError("nothing to predict: give a target (--target) or a rung to hold out (--holdout)")
    points, data = read_ladder(runs)
    if min_tokens is not None:
        kept = [p for p in points if p.d >= min_tokens]
        if not kept:
            raise WindtunnelError(f"--min-tokens {min_tokens:g}: leaves no point (the ladder's largest budget is "
                                  f"{max(p.d for p in points):g} tokens)")
        points = kept
    tgt = _read_target(target, tokens, data, allow_other_data) if target is not None else None
    notes = [] if tgt is None or tgt[3] is None else [tgt[3]]
    if holdout is not None:
        width = _holdout_width(points, holdout)
        fitted = [p for p in points if p.width != width]
        pred = _fit(points, fitted, data, level, reps, seed)
        pred.holdout = _holdout_rows(pred.boot, [p for p in points if p.width == width], level)
        if tgt is not None:  # the target from every rung, the holdout from the others
            full = _fit(points, points, data, level, reps, seed)
            pred.boot, pred.fitted, pred.warnings, pred.refusal = full.boot, full.fitted, full.warnings, full.refusal
    else:
        pred = _fit(points, points, data, level, reps, seed)
    pred.warnings = notes + pred.warnings
    if tgt is not None:
        _predict_target(pred, *tgt[:3])
    return pred


def _fit(points, fitted, data, level, reps, seed) -> Prediction:
    widths = sorted({p.width for p in fitted})
    budgets = sorted({p.d for p in fitted})
    for what, have, need in (("widths (rungs)", len(widths), MIN_WIDTHS), ("token budgets", len(budgets), MIN_BUDGETS),
                             ("points", len(fitted), MIN_POINTS)):
        if have < need:
            raise WindtunnelError(f"too few {what} to fit L = E + A N^-alpha + B D^-beta: {have}, needs {need}; "
                                  "bench/ladder.py builds a ladder of widths x token budgets")
    arrays = [np.array([getattr(p, k) for p in fitted]) for k in ("n", "d", "loss", "width")]
    try:
        boot = bootstrap(*arrays[:3], groups=arrays[3], reps=reps, seed=seed)
    except ValueError as e:
        raise WindtunnelError(f"the law could not be fitted to {len(fitted)} points: {e}") from None
    pred = Prediction(points=points, fitted=fitted, boot=boot, level=level, data=data)
    for name, axis in EXPONENTS:
        value, low, high = pred.exponent(name)
        if low <= 0 < high or high <= 0:
            pred.refusal = (f"no prediction: the {axis} exponent {name} = {value:.3g} has the {level:.0%} interval "
                            f"[{low:.3g}, {high:.3g}], which reaches zero: the ladder shows no reliable gain from "
                            f"{axis} to extrapolate (more widths/budgets, seeds, or a longer horizon)")
            break
    return pred


def _holdout_width(points: list[LadderPoint], holdout: str | int) -> int:
    widths = sorted({p.width for p in points})
    if str(holdout) == "largest":
        return widths[-1]
    try:
        width = int(holdout)
    except (TypeError, ValueError):
        raise WindtunnelError(f"--holdout: expected 'largest' or a width of the ladder, got {holdout!r}") from None
    if width not in widths:
        raise WindtunnelError(f"--holdout: width {width} is not in the ladder (widths {widths})")
    return width


def _holdout_rows(boot: Bootstrap, held: list[LadderPoint], level: float) -> list[HoldoutRow]:
    rows = []
    for d in sorted({p.d for p in held}):
        at = [p for p in held if p.d == d]
        n = at[0].n
        point, low, high = boot.predict(n, d, level=level, noise=True)
        rows.append(HoldoutRow(width=at[0].width, n=n, d=d, measured=float(np.mean([p.loss for p in at])),
                               seeds=len(at), predicted=point, low=low, high=high))
    return rows


def _read_target(target, tokens, data: str, allow_other_data: bool):
    """(name, N, D, note) of the target; refuses other data unless allowed (then the note says so)."""
    from ..model.accounting import count_params
    from .presets import load_target

    t = load_target(target)
    # a placeholder length with room for the warmup and the decay: only the other keys matter here
    cfg = t.config(steps=100 * (int(t.sections["train"].get("warmup_steps", 0) or 0) + 1))
    theirs = data_identity(cfg.model.vocab_size, config_to_dict(cfg)["data"])
    note = None
    if theirs != data:
        why = (f"target {t.name} trains on {theirs}, the ladder on {data}: a loss law holds for the data and "
               f"tokenizer it was fitted on")
        if not allow_other_data:
            raise WindtunnelError(f"{why}; build the ladder on the target's data (--set data.path=... "
                                  "model.vocab_size=...), or pass --allow-other-data to extrapolate anyway")
        note = f"{why}: predicted anyway (--allow-other-data); read it in the ladder's units, not the target's"
    d = float(tokens) if tokens is not None else t.tokens
    if not (math.isfinite(d) and d > 0):
        raise WindtunnelError(f"--tokens: expected a positive number of tokens, got {tokens!r}")
    return t.name, float(count_params(cfg.model).non_embedding), d, note


def _predict_target(pred: Prediction, name: str, n: float, d: float) -> None:
    point, low, high = pred.boot.predict(n, d, level=pred.level, noise=True)
    (n_lo, n_hi), (d_lo, d_hi) = pred.seen("N"), pred.seen("D")
    dec_n, dec_d = math.log10(n / n_hi), math.log10(d / d_hi)
    pred.target = TargetPrediction(name=name, n=n, d=d, loss=point, low=low, high=high, decades_n=dec_n,
                                   decades_d=dec_d)
    for axis, beyond, span in (("N", dec_n, math.log10(n_hi / n_lo)), ("D", dec_d, math.log10(d_hi / d_lo))):
        if beyond > span:
            pred.warnings.append(f"extrapolates {beyond:.1f} decades in {axis} beyond the ladder's largest, which "
                                 f"spans {span:.2f} decades: the law is assumed to hold where no point checks it")
