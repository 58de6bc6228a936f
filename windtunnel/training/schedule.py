"""Learning-rate schedules as pure multipliers of the peak learning rate.

Three kinds, all starting with a linear warmup of ``warmup_steps`` steps:

* ``"wsd"``: warmup, a stable phase at 1.0, then a decay over the last
  ``decay_steps`` steps with one of the shapes in ``DECAY_SHAPES``.
* ``"cosine"``: the MiniCPM-style baseline, a cosine from 1.0 at the end of
  warmup down to ``min_ratio`` (default 0.1) at ``total_steps``.
* ``"constant"``: warmup, then 1.0 for ever.

Step ``s`` is the index of an optimizer update (0-based); ``s == total_steps``
is also accepted and gives the end point of the decay, so a schedule driven by
``torch.optim.lr_scheduler.LambdaLR(opt, schedule)`` never goes out of range.

>>> s = build_schedule(kind="wsd", total_steps=100, warmup_steps=10, decay_steps=20)
>>> [s.multiplier(i) for i in (0, 9, 50, 80, 90, 100)]
[0.1, 1.0, 1.0, 1.0, 0.5, 0.0]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Iterable, Literal, NoReturn

from ..errors import ConfigError, WindtunnelError

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = ["KINDS", "DECAY_SHAPES", "Schedule", "build_schedule", "lr_multipliers", "make_schedule"]

KINDS = ("wsd", "cosine", "constant")
DECAY_SHAPES = ("exponential", "linear", "cosine", "1-sqrt")
Kind = Literal["wsd", "cosine", "constant"]
DecayShape = Literal["exponential", "linear", "cosine", "1-sqrt"]
Phase = Literal["warmup", "stable", "decay"]


def _fail(rule: str, **values: object) -> NoReturn:
    # One message format everywhere: the rule first, then every value involved.
    got = ", ".join(f"{k}={v!r}" for k, v in values.items())
    raise ValueError(f"{rule}, got {got}")


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an Integral, but True steps is always a bug.
    if isinstance(value, bool) or not isinstance(value, Integral):
        _fail(f"{name} must be an int", **{name: value})
    if value < minimum:
        _fail(f"{name} must be >= {minimum}", **{name: value})


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule; ``multiplier(step)`` is in ``[0, 1]``.

    Prefer :func:`build_schedule`, which resolves fractions and defaults.
    Warmup is ``(s + 1) / warmup_steps`` so the very first update is non-zero.
    Every decay shape is ``min_ratio + (1 - min_ratio) * g(k)`` with ``k``
    steps into the decay and ``g`` going from 1 down (to 0 at ``k ==
    decay_steps``, except exponential, which halves every ``half_life``).

    >>> s = Schedule(kind="constant", total_steps=10, warmup_steps=4, decay_steps=0)
    >>> s.multiplier(0), s.phase(0), s.multiplier(7), s.phase(7)
    (0.25, 'warmup', 1.0, 'stable')
    """

    kind: Kind
    total_steps: int
    warmup_steps: int
    decay_steps: int
    decay: DecayShape = "linear"
    half_life: float | None = None
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            _fail(f"kind must be one of {KINDS}", kind=self.kind)
        if self.decay not in DECAY_SHAPES:
            _fail(f"decay must be one of {DECAY_SHAPES}", decay=self.decay)
        _check_int("total_steps", self.total_steps, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("decay_steps", self.decay_steps, 0)
        if not (_is_real(self.min_ratio) and 0.0 <= self.min_ratio <= 1.0):  # `not` catches NaN
            _fail("min_ratio must be a number in [0, 1]", min_ratio=self.min_ratio)
        S, W, D = self.total_steps, self.warmup_steps, self.decay_steps
        if W >= S:
            _fail("warmup_steps must be < total_steps", warmup_steps=W, total_steps=S)
        if self.kind == "wsd" and not 1 <= D <= S - W:
            _fail("decay_steps must be in [1, total_steps - warmup_steps]",
                  decay_steps=D, total_steps=S, warmup_steps=W)
        if self.kind == "cosine" and (self.decay != "cosine" or D != S - W):
            _fail("kind='cosine' needs decay='cosine' and decay_steps == total_steps - warmup_steps",
                  decay=self.decay, decay_steps=D, total_steps=S, warmup_steps=W)
        if self.kind == "constant" and D != 0:
            _fail("kind='constant' needs decay_steps == 0", decay_steps=D)
        self._check_half_life()

    def _check_half_life(self) -> None:
        h = self.half_life
        if self.kind == "wsd" and self.decay == "exponential":
            if not (_is_real(h) and 0 < h < math.inf):
                _fail("half_life must be a finite number > 0 for exponential decay", half_life=h)
        elif h is not None:
            # Accepting it would silently ignore it.
            _fail("half_life is only used by kind='wsd' with decay='exponential'",
                  half_life=h, kind=self.kind, decay=self.decay)

    @property
    def decay_start(self) -> int:
        """First decay step T (``total_steps`` for ``"constant"``: never decays)."""
        return self.total_steps - self.decay_steps

    def _step(self, step: object) -> int:
        # Out-of-range steps are caller bugs; clamping would hide them.
        if isinstance(step, bool) or not isinstance(step, Integral) or not 0 <= step <= self.total_steps:
            _fail("step must be an int in [0, total_steps]", step=step, total_steps=self.total_steps)
        return int(step)

    def phase(self, step: int) -> Phase:
        """Which phase ``step`` is in: ``"warmup"``, ``"stable"`` or ``"decay"``."""
        s = self._step(step)
        if s < self.warmup_steps:
            return "warmup"
        if self.decay_steps and s >= self.decay_start:
            return "decay"
        return "stable"

    def multiplier(self, step: int) -> float:
        """Learning-rate multiplier at ``step``, in ``[0, 1]``."""
        s = self._step(step)
        if s < self.warmup_steps:
            return (s + 1) / self.warmup_steps
        k = s - self.decay_start
        if k < 0 or self.decay_steps == 0:
            return 1.0
        return self.min_ratio + (1.0 - self.min_ratio) * self._shape(k)

    __call__ = multiplier  # so a Schedule can be passed straight to LambdaLR

    def _shape(self, k: int) -> float:
        x = k / self.decay_steps
        if self.decay == "exponential":
            return 0.5 ** (k / self.half_life)
        if self.decay == "linear":
            return 1.0 - x
        if self.decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * x))
        return 1.0 - math.sqrt(x)  # "1-sqrt"


def _resolve_decay_steps(total_steps: int, decay_fraction: float, decay_steps: int | None) -> int:
    if decay_steps is not None:  # an explicit count wins over the fraction
        _check_int("decay_steps", decay_steps, 1)
        return int(decay_steps)
    if not (_is_real(decay_fraction) and 0 < decay_fraction <= 1):
        _fail("decay_fraction must be a number in (0, 1]", decay_fraction=decay_fraction)
    return max(1, round(decay_fraction * total_steps))  # a short run still gets one decay step


def build_schedule(*, kind: Kind, total_steps: int, warmup_steps: int,
                   decay: DecayShape = "linear", decay_fraction: float = 0.1,
                   decay_steps: int | None = None, half_life: float | None = None,
                   min_ratio: float | None = None, decay_start: int | None = None) -> Schedule:
    """Resolve schedule options into a validated :class:`Schedule`.

    ``wsd`` only: ``decay``, ``decay_fraction`` (of ``total_steps``, rounded, at least 1),
    ``decay_steps`` (overrides the fraction), ``half_life`` (exponential only,
    default ``decay_steps / 4`` so the decay ends at 1/16) and ``decay_start``
    (branch a decay off a stable-phase checkpoint: any step in ``[warmup_steps,
    total_steps - decay_steps]``; the result then has ``total_steps =
    decay_start + decay_steps``). ``min_ratio`` defaults to 0.1 for
    ``cosine`` (MiniCPM's baseline ends at 0.1 * peak) and 0.0 otherwise.
    ``decay``, ``decay_fraction`` (and ``min_ratio`` for ``constant``) have no
    effect on the other kinds; ``decay_steps``, ``decay_start`` and
    ``half_life`` raise there instead of being ignored.

    >>> s = build_schedule(kind="wsd", total_steps=1000, warmup_steps=10,
    ...                    decay_steps=100, decay_start=500)
    >>> s.total_steps, s.decay_start, s.multiplier(499), s.multiplier(600)
    (600, 500, 1.0, 0.0)
    >>> build_schedule(kind="cosine", total_steps=110, warmup_steps=10).multiplier(110)
    0.1
    """
    if kind not in KINDS:
        _fail(f"kind must be one of {KINDS}", kind=kind)
    if decay not in DECAY_SHAPES:  # checked for every kind so a typo never passes
        _fail(f"decay must be one of {DECAY_SHAPES}", decay=decay)
    _check_int("total_steps", total_steps, 1)
    _check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps >= total_steps:
        _fail("warmup_steps must be < total_steps", warmup_steps=warmup_steps, total_steps=total_steps)
    if kind != "wsd":
        for name, value in (("decay_steps", decay_steps), ("decay_start", decay_start)):
            if value is not None:  # would otherwise be silently ignored
                _fail(f"{name} is not used by kind={kind!r}", **{name: value})
        shape, D = ("cosine", total_steps - warmup_steps) if kind == "cosine" else ("linear", 0)
        ratio = (0.1 if kind == "cosine" else 0.0) if min_ratio is None else min_ratio
        return Schedule(kind=kind, total_steps=total_steps, warmup_steps=warmup_steps,
                        decay_steps=D, decay=shape, half_life=half_life, min_ratio=ratio)
    D = _resolve_decay_steps(total_steps, decay_fraction, decay_steps)
    if D > total_steps - warmup_steps:
        source = {"decay_fraction": decay_fraction} if decay_steps is None else {}
        _fail("decay_steps must be <= total_steps - warmup_steps", decay_steps=D,
              **source, total_steps=total_steps, warmup_steps=warmup_steps)
    if decay_start is not None:
        _check_int("decay_start", decay_start, 0)
        if not warmup_steps <= decay_start <= total_steps - D:
            _fail("decay_start must be in [warmup_steps, total_steps - decay_steps]",
                  decay_start=decay_start, warmup_steps=warmup_steps,
                  total_steps=total_steps, decay_steps=D)
        total_steps = decay_start + D
    if decay == "exponential" and half_life is None:
        half_life = D / 4
    return Schedule(kind="wsd", total_steps=total_steps, warmup_steps=warmup_steps,
                    decay_steps=D, decay=decay, half_life=half_life,
                    min_ratio=0.0 if min_ratio is None else min_ratio)


def lr_multipliers(schedule: Schedule, steps: Iterable[int] | None = None) -> list[float]:
    """Multipliers at ``steps`` (default: every update step, ``range(total_steps)``).

    >>> lr_multipliers(build_schedule(kind="constant", total_steps=5, warmup_steps=2))
    [0.5, 1.0, 1.0, 1.0, 1.0]
    """
    steps = range(schedule.total_steps) if steps is None else steps
    return [schedule.multiplier(s) for s in steps]


def make_schedule(cfg: "RunConfig", *, decay_start: int | None = None) -> Schedule:
    """The lr schedule of `cfg.train` (the config-to-schedule adapter); a rule it breaks becomes a
    ConfigError naming the key.

    Example:
        >>> make_schedule(load_config("proxies/xs.yaml")).total_steps   # doctest: +SKIP
        200

    `decay_start`: branch the WSD decay off this (stable-phase) step; the schedule then ends at
    decay_start + decay_steps.
    """
    t = cfg.train
    kwargs = {"kind": t.schedule, "total_steps": t.steps, "warmup_steps": t.warmup,
              "min_ratio": t.min_lr_ratio}
    if t.schedule == "wsd":
        kwargs.update(decay=t.decay, decay_fraction=t.decay_fraction, decay_steps=t.decay_steps,
                      half_life=t.half_life if t.decay == "exponential" else None, decay_start=decay_start)
    elif decay_start is not None:
        raise ConfigError(cfg.source, "train.schedule",
                          f"a decay branched off a checkpoint needs wsd, got {t.schedule}")
    try:
        return build_schedule(**kwargs)
    except ValueError as e:
        if decay_start is not None and "decay_start" in str(e):
            raise WindtunnelError(f"the checkpoint's step {decay_start} is not in the stable phase of "
                                  f"{cfg.source or 'the config'} ({e}); branch the decay from a stable-phase "
                                  "checkpoint or raise train.steps") from None
        key = next((k for k in ("decay_steps", "half_life", "warmup_steps", "min_ratio", "decay_fraction")
                    if k in str(e)), "schedule")
        raise ConfigError(cfg.source, f"train.{key.replace('min_ratio', 'min_lr_ratio')}", str(e)) from None
