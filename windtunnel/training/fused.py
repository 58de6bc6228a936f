"""Deprecated: `train_fused` is `training.loop.train_group`, the one loop for one or many trials.

Kept so that code written against the old name still runs; new code imports `train_group`.

Example:
    >>> from windtunnel.training.fused import train_fused   # the same function as train_group
"""

from __future__ import annotations

from .loop import train_group

__all__ = ["train_fused"]

train_fused = train_group
"""Deprecated alias of `windtunnel.training.loop.train_group` (same arguments, same summaries)."""
