"""Progress lines of a running sweep: trials done / running / left and the best so far, on stderr."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ..formatting import fmt_duration, fmt_loss, fmt_params

__all__ = ["Progress"]


class Progress:
    """Prints one line when a trial starts or ends. `total` counts every trial of the sweep."""

    def __init__(self, name: str, *, total: int, done: int, param_keys: list[str], metric: str,
                 goal: str, enabled: bool = True, stream: TextIO | None = None):
        self.name, self.total, self.done = name, total, done
        self.param_keys, self.metric, self.goal = param_keys, metric, goal
        self.enabled = enabled
        self._stream = stream  # None: sys.stderr at print time (Ray Tune pickles its callbacks)
        self.running: set[str] = set()
        self.best: dict[str, Any] | None = None
        self.started = time.perf_counter()
        self.first_start: float | None = None  # the ETA's clock starts with the first trial, not with Ray
        self.finished_here = 0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def offer_best(self, row: dict[str, Any]) -> None:
        value = row.get(self.metric)
        if row.get("status") != "ok" or value is None or not math.isfinite(float(value)):
            return
        if self.best is None or (value < self.best[self.metric]) == (self.goal == "minimize"):
            self.best = row

    def trial_started(self, tid: str, params: dict[str, Any]) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()
        self.running.add(tid)
        self._say(f"{tid} started  {fmt_params(params)}")

    def trial_finished(self, row: dict[str, Any]) -> None:
        self.running.discard(row["trial_id"])
        self.done += 1
        self.finished_here += 1
        self.offer_best(row)
        what = f"{row['status']:<8} {self.metric} {fmt_loss(row.get(self.metric))}"
        if row.get("seconds"):
            what += f" in {float(row['seconds']):.1f}s"
        if row.get("message"):
            what += f" ({row['message'][:120]})"
        self._say(f"{row['trial_id']} {what}")

    def trial_unfinished(self, tid: str) -> None:
        self.running.discard(tid)
        self._say(f"{tid} stopped before the end (left for --resume)")

    def status(self, line: str) -> None:
        """A line about what the sweep is doing before trials start (e.g. starting Ray); quiet hides it."""
        if self.enabled:
            print(f"[{self.name}] {line}", file=self.stream, flush=True)

    def eta(self) -> float | None:
        """Seconds until every trial is done, at the rate trials finished so far in this session
        (finished / time since the first trial started, so parallel slots count); None before the
        first trial finishes."""
        if not self.finished_here or self.first_start is None:
            return None
        left = max(self.total - self.done, 0)
        rate = self.finished_here / max(time.perf_counter() - self.first_start, 1e-9)
        return left / rate

    def note(self, line: str) -> None:
        """A line about the sweep as a whole (e.g. the cluster it joined); printed even when quiet."""
        print(f"[{self.name}] {line}", file=self.stream, flush=True)

    def _say(self, event: str) -> None:
        if not self.enabled:
            return
        left = max(self.total - self.done - len(self.running), 0)
        best = ""
        if self.best is not None:
            best = f" | best {fmt_loss(self.best[self.metric])} ({self.best['trial_id']}: " \
                   f"{fmt_params({k: self.best.get(k) for k in self.param_keys})})"
        elapsed = time.perf_counter() - self.started
        eta = self.eta()
        eta = f", ETA {fmt_duration(eta, compact=True)}" if eta is not None and self.done < self.total else ""
        print(f"[{self.name} {elapsed:6.0f}s] {event} | {self.done}/{self.total} done, {len(self.running)} "
              f"running, {left} left{eta}{best}", file=self.stream, flush=True)


