"""Checks that a wind tunnel tells the truth (BRIEF §6).

- `windtunnel.checks.coord`: coord check — activation sizes across widths over the first steps.
- `windtunnel.checks.transfer`: transfer check — the optimal learning rate across widths.
"""

__all__: list[str] = []
