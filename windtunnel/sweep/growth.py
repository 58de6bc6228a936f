"""What a sweep's spec may change between sessions (`--resume`), and how a grown grid keeps its trials.

How the sweep runs may change (`budget`, `resources`, `description`, `track`); what it measures may not, with
one exception: a grid may *grow*. When the check says the optimum is on the grid's edge, the natural
move is to add lr values (or seeds) and resume. Every value and seed already run must stay; then the
trials already finished keep their ids and rows, only the new points run, and the results stay one
table. A random sweep may gain seeds (its draws stay the same); a TPE sweep's space is its study's
and cannot change.

Trial ids follow the expansion order of the spec that first ran (`t0000`, ...). In a grown grid a
point already run keeps its row's id; a new point takes its position's id when no row holds it, else
the next id after every other, so ids never collide.

Example:
    >>> grown = check_resumable(saved, current, source="sweeps/lr_init.yaml", saved_path="runs/lr_init/spec.yaml")
    >>> grown                                                                    # doctest: +SKIP
    ['train.lr: +2 values (0.0005, 0.128)']
    >>> points = keep_trial_ids(expand_points(spec), table.rows)                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..errors import WindtunnelError
from .points import TrialPoint, trial_id

__all__ = ["MAY_CHANGE", "check_resumable", "keep_trial_ids"]

MAY_CHANGE = ("budget", "resources", "description", "track")
"""Spec keys that may change on --resume: how the sweep runs, not what it measures."""


def check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], *, source: str | None,
                    saved_path: Any) -> list[str]:
    """Raise WindtunnelError unless the spec `current` may continue the sweep `saved` (both as in
    spec.yaml); return one line per parameter or seed list that grew (empty when none did)."""
    grown: list[str] = []
    for key in sorted(set(saved) | set(current)):
        if key in MAY_CHANGE or saved.get(key) == current.get(key):
            continue
        method = current.get("method")
        if key == "parameters" and method == "grid" and saved.get("method") == "grid":
            why, lines = _grown_parameters(saved["parameters"], current["parameters"])
        elif key == "seeds" and method in ("grid", "random") and saved.get("method") == method:
            why, lines = _grown_list("seeds", saved["seeds"], current["seeds"])
        else:
            why, lines = "", []
        if why is not None:
            raise WindtunnelError(f"{source}: {key}: differs from {saved_path} (the sweep being resumed"
                                  f"{'; ' + why if why else ''}); only {', '.join(MAY_CHANGE)} may change on "
                                  "--resume, and a grid may gain parameter values and seeds")
        grown += lines
    return grown


def keep_trial_ids(points: list[TrialPoint], rows: Mapping[str, Mapping[str, Any]]) -> list[TrialPoint]:
    """`points` (a grid or random expansion) with the ids their finished trials already have.

    Example:
        >>> rows = {"t0000": {"seed": 0, "train.lr": 0.01}}
        >>> [p.trial_id for p in keep_trial_ids([TrialPoint("t0000", 0, {"train.lr": 0.005}),
        ...                                      TrialPoint("t0001", 0, {"train.lr": 0.01})], rows)]
        ['t0002', 't0000']
    """
    keys = sorted(points[0].params) if points else []
    done = {_identity({k: row.get(k) for k in keys}, row.get("seed")): tid for tid, row in rows.items()}
    numbers = [int(t[1:]) for t in rows if t[1:].isdigit()]
    fresh = max([len(points) - 1, *numbers]) + 1
    out = []
    for p in points:
        tid = done.get(_identity(p.params, p.seed))
        if tid is None and p.trial_id in rows:  # its position's id belongs to another point already run
            tid, fresh = trial_id(fresh), fresh + 1
        out.append(dataclasses.replace(p, trial_id=tid or p.trial_id))
    return out


# --- internals --------------------------------------------------------------------------------


def _grown_parameters(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(None, lines) when every parameter kept its values (adding some); else (why not, [])."""
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    if added:
        return f"parameter {added[0]} added: the trials already run have no value for it", []
    if removed:
        return f"parameter {removed[0]} removed", []
    lines = []
    for key in old:
        a, b = old[key], new[key]
        if a == b:
            continue
        if "values" not in a or "values" not in b:
            return f"{key}: only a list of values can grow", []
        why, grown = _grown_list(key, a["values"], b["values"])
        if why is not None:
            return why, []
        lines += grown
    return None, lines


def _grown_list(name: str, old: list, new: list) -> tuple[str | None, list[str]]:
    kept = {_plain(v) for v in new}
    dropped = [v for v in old if _plain(v) not in kept]
    if dropped:
        return f"{name}: {', '.join(map(str, dropped))} dropped; the values already run must stay", []
    had = {_plain(v) for v in old}
    added = [v for v in new if _plain(v) not in had]
    return None, [f"{name}: +{len(added)} ({', '.join(map(str, added))})"] if added else []


def _identity(params: Mapping[str, Any], seed: Any) -> tuple:
    return tuple((k, _plain(params[k])) for k in sorted(params)), _plain(seed)


def _plain(x: Any) -> Any:
    """One comparable form for a value read back from YAML, JSON or parquet (numpy scalars, 1 vs 1.0)."""
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else str(x)
    return str(x)
