"""TPE in the engine: a Ray Tune searcher that asks the sweep's Optuna study for K configurations per
Ray trial (K = 1: one trial per Ray trial).

Every ask comes from the sweep's SQLite study (`windtunnel.sweep.study`), so resume, the dashboard
and the trial numbers (t0007 = study trial 7) are the study's. With K > 1 TPE runs with a constant
liar, so the K asked at once differ. The spec's `first_trials` are queued in a new study before
TPE's own; the sampler's seed is `search_seed` plus the trials the study already holds, so a resumed
sweep does not replay the first session's random start. Rows come back in the group's reports
(`windtunnel.sweep.trial.rows_of`) as each trial ends; each is told to the study at once, through the
one status mapping (`study.study_state`). Imports Ray: load it only when a sweep runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from .spec import SweepSpec
from .study import enqueue_first_trials, open_study, optuna_space, tell_row, trial_attrs
from .trial import GROUP_KEY, TRIAL_NUMBER_KEY, evals_of, point_from_config, rows_of

__all__ = ["StudySearcher"]


class StudySearcher(Searcher):
    """Ray Tune searcher: each suggestion is a group of `k` configurations from the sweep's study,
    `total` sweep trials in all.

    Example:
        >>> tune.TuneConfig(search_alg=StudySearcher("runs/tpe", spec, k=4, total=28), num_samples=7)  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | Path, spec: SweepSpec, *, k: int = 1, total: int):
        import optuna
        super().__init__(metric=spec.metric.name, mode=spec.metric.mode)
        self.run_dir, self.spec, self.k, self.total = str(run_dir), spec, k, total
        self.study = open_study(run_dir, spec)
        # a fresh seed per session, so a resumed sweep does not replay the first session's random start
        self.study.sampler = optuna.samplers.TPESampler(seed=spec.search_seed + len(self.study.trials),
                                                        constant_liar=k > 1)
        enqueue_first_trials(self.study, spec)  # after the seed: queued trials do not shift it
        self.space = optuna_space(spec)
        self.asked = 0
        self.live: dict[str, dict[str, Any]] = {}  # Tune trial id -> {sweep trial id: optuna trial}

    def suggest(self, trial_id: str):
        n = min(self.k, self.total - self.asked)
        if n <= 0:
            return Searcher.FINISHED
        asked = [self.study.ask(self.space) for _ in range(n)]
        self.asked += n
        points = [point_from_config({**t.params, TRIAL_NUMBER_KEY: t.number}, self.spec) for t in asked]
        for t, p in zip(asked, points):
            for key, value in trial_attrs(self.run_dir, p.trial_id, p.seed).items():
                t.set_user_attr(key, value)
        self.live[trial_id] = {p.trial_id: t for p, t in zip(points, asked)}
        return {GROUP_KEY: [p.to_dict() for p in points]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._tell(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._tell(trial_id, result)
        for ot in self.live.pop(trial_id, {}).values():  # never reported: crashed (error) or interrupted
            tell_row(self.study, ot, {"status": "error"} if error else None, self.spec.metric.name)

    def _tell(self, trial_id: str, result: dict | None) -> None:
        live = self.live.get(trial_id, {})
        evals = evals_of(result)
        for row in rows_of(result):
            ot = live.pop(row["trial_id"], None)
            if ot is not None:
                tell_row(self.study, ot, row, self.spec.metric.name, evals=evals.get(row["trial_id"], ()))
