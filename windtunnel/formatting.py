"""How windtunnel writes a number for a person: one formatter, so a value reads the same in the
progress lines, the results table, the transfer plan and a plot's labels.

    >>> fmt_number(0.0078125), fmt_number(1_251_755_520), fmt_number(None), fmt_loss(float("inf"))
    ('0.007812', '1.252B', '-', 'inf')
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt_number", "fmt_loss", "fmt_params", "fmt_duration", "fmt_bytes"]


def fmt_number(value: Any, *, digits: int = 4) -> str:
    """`digits` significant digits for floats, thousands separators for ints (SI suffix from 1e7),
    `-` for None and NaN, lists element-wise; anything else as `str`.

    Example:
        >>> fmt_number(3.14159), fmt_number(12_000), fmt_number([0.5, 2])
        ('3.142', '12,000', '[0.5, 2]')
    """
    if value is None:
        return "-"
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) < 1e7 else _si(value, digits)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_number(v, digits=digits) for v in value) + "]"
    return str(value)


def fmt_loss(value: Any) -> str:
    """A loss with 4 decimals (`inf` for a diverged trial, `-` when there is none).

    Example:
        >>> fmt_loss(1.71234), fmt_loss(None)
        ('1.7123', '-')
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return "nan" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.4f}")


def fmt_params(params: dict[str, Any]) -> str:
    """`train.lr=0.008 model.init_std=0.1`: a trial's swept values on one line.

    Example:
        >>> fmt_params({"train.lr": 0.008, "model.init_std": 0.1})
        'train.lr=0.008 model.init_std=0.1'
    """
    return " ".join(f"{k}={fmt_number(v)}" for k, v in params.items())


def fmt_duration(seconds: float, *, compact: bool = False) -> str:
    """A wall time to read at a glance: `45 s`, `3 min 20 s`, `2 h 05 min`; compact (progress lines):
    `45s`, `3m20s`, `2h05m`.

    Example:
        >>> fmt_duration(200), fmt_duration(7500, compact=True)
        ('3 min 20 s', '2h05m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s" if compact else f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if compact else f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if compact else f"{s // 3600} h {s % 3600 // 60:02d} min"


_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_DECIMAL = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def fmt_bytes(n: float, *, decimal: bool = False, digits: int = 3, unit: str | None = None) -> str:
    """A size: binary units by default (KiB, MiB, GiB, TiB: memory, as the GPU reports it), decimal ones
    with `decimal=True` (kB, MB, GB: files and throughput, as `ls -h --si` and a network do); the
    largest unit that keeps the number at least 1, or `unit` to pin one (a column of GiB); `digits`
    significant digits, never an exponent.

    Example:
        >>> fmt_bytes(512), fmt_bytes(7.5 * 2**30), fmt_bytes(2_500_000, decimal=True), fmt_bytes(2**29, unit="GiB")
        ('512 B', '7.5 GiB', '2.5 MB', '0.5 GiB')
    """
    units = _DECIMAL if decimal else _BINARY
    if unit is not None:
        scale = dict(units + (("B", 1),)).get(unit)
        if scale is None:
            raise ValueError(f"unit: expected one of {', '.join(u for u, _ in units)} or B, got {unit!r}")
    else:
        unit, scale = next(((u, s) for u, s in units if abs(n) >= s), ("B", 1))
    value = n / scale
    if unit == "B" and float(value).is_integer():
        return f"{int(value)} B"
    text = f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return f"{text} {unit}"


def _si(value: int, digits: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:,}"
