"""The driver's record of a running sweep: one results row per sweep trial, as each one finishes.

A Ray trial is a group of K >= 1 sweep trials (`windtunnel.sweep.trial`); its reports carry the rows
of the trials that just finished, which this Tune callback adds to the table and announces
(progress lines, the grid/random study record) at once, so the table stays one row per sweep trial,
complete even when groups ran on other nodes. A group whose worker dies leaves `error` rows (and a
summary.json, so a resume sees them) for its unfinished trials; a group stopped by the time budget or
an interrupt leaves them unfinished, for `--resume`. Imports Ray: load it only when a sweep runs.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from ..analysis.runs import SUMMARY_FILE
from ..fileio import write_json
from .results import ResultsTable, make_row
from .trial import TrialContext, group_points, rows_of

__all__ = ["TrialRecorder"]


class TrialRecorder(Callback):
    """Rows into `table` and trial events to `events` (`study_record.TrialEvents` or a `Progress`).

    Example:
        >>> tune.RunConfig(callbacks=[TrialRecorder(ctx, table, events)])               # doctest: +SKIP
    """

    def __init__(self, ctx: TrialContext, table: ResultsTable, events: Any):
        self.ctx, self.table, self.events = ctx, table, events
        self.open: dict[str, set[str]] = {}  # Tune trial id -> its sweep trials not yet recorded

    def on_trial_start(self, iteration, trials, trial, **info):
        points = group_points(trial.config)
        self.open[trial.trial_id] = {p.trial_id for p in points}
        for p in points:
            self.events.trial_started(p.trial_id, p.params)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._record_rows(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record_rows(trial, trial.last_result)
        for tid in sorted(self.open.pop(trial.trial_id, set())):  # stopped by the time budget
            self.events.trial_unfinished(tid)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        message = " ".join(str(error).split())[:500] if error else "the trial's worker failed"
        left = self.open.pop(trial.trial_id, set())
        for p in group_points(trial.config):
            if p.trial_id in left:
                outcome = {"status": "error", "message": message, "steps": 0, "tokens": 0, "seconds": 0.0}
                tdir = self.ctx.trial_dir(p.trial_id)
                if tdir.is_dir():  # on a multi-node cluster without shared storage the folder is elsewhere
                    write_json(tdir / SUMMARY_FILE, outcome)
                self._add(make_row(p.to_dict(), outcome))

    def on_experiment_end(self, trials, **info):
        for left in self.open.values():  # stopped by the time budget or an interrupt
            for tid in sorted(left):
                self.events.trial_unfinished(tid)
        self.open.clear()

    def _record_rows(self, trial, result) -> None:
        left = self.open.get(trial.trial_id, set())
        for row in rows_of(result):
            if row["trial_id"] in left:
                left.discard(row["trial_id"])
                self._add(row)

    def _add(self, row: dict[str, Any]) -> None:
        self.table.add(row)
        self.events.trial_finished(row)
