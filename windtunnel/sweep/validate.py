"""Every trial's config checked before a sweep starts anything (Ray, folders, data).

A grid or random sweep knows each trial's config up front, so:

- when no trial's config is valid, the sweep stops with one line naming the offending values
  (exit status 2), before Ray starts and before anything is written, also under `--dry-run`;
- when some are invalid, those are named at the start and recorded as `error` rows (with the
  reason, in the table and in `trials/<id>/summary.json`) without running; the valid ones run.
  This is what `--dry-run` announces ("would be recorded as `error`"), and a resume does not
  retry them: an invalid config stays invalid.

TPE chooses its trials as it runs: the sweep stops when none of the plan's sampled draws is valid;
otherwise an invalid draw is recorded as `error` when TPE proposes it.

Example:
    >>> plan = plan_sweep(load_sweep("sweeps/bad.yaml"))       # doctest: +SKIP
    >>> refuse_unrunnable(plan)                                 # doctest: +SKIP
    WindtunnelError: sweeps/bad.yaml: none of the 4 trials has a valid config: ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WindtunnelError
from ..fileio import write_json
from ..formatting import fmt_params
from ..run_folder import SUMMARY_FILE, TRIAL_FILE, trial_dir
from .plan import SweepPlan
from .points import TrialPoint
from .progress import Progress
from .results import ResultsTable, make_row

__all__ = ["record_invalid", "refuse_unrunnable"]

_SHOWN = 3  # distinct reasons named in a refusal


def refuse_unrunnable(plan: SweepPlan) -> None:
    """Raise WindtunnelError (exit 2) naming the offending values when no trial of `plan` can run."""
    if not plan.costs or not all(c.get("error") for c in plan.costs):
        return
    spec = plan.spec
    by_reason: dict[str, list[TrialPoint]] = {}
    for planned in plan.trials if plan.trials is not None else plan.draws:
        by_reason.setdefault(planned.cost["error"], []).append(planned.point)
    parts = []
    for reason, pts in list(by_reason.items())[:_SHOWN]:
        more = f" and {len(pts) - 1} more" if len(pts) > 1 else ""
        parts.append(f"{reason} ({pts[0].trial_id}: {fmt_params(pts[0].params) or 'the fixed settings'}{more})")
    if len(by_reason) > _SHOWN:
        parts.append(f"and {len(by_reason) - _SHOWN} more reasons")
    what = f"the {plan.num_trials} trials" if plan.points is not None else f"{len(plan.costs)} sampled draws"
    raise WindtunnelError(f"{spec.source or spec.name}: none of {what} has a valid config, so nothing was "
                          f"started: {'; '.join(parts)}; fix the spec's `set:` or `parameters:`")


def record_invalid(run_dir: Path, table: ResultsTable, progress: Progress, points: list[TrialPoint],
                   reasons: dict[str, str]) -> None:
    """Write an `error` row (and the trial's trial.json + summary.json) for each invalid trial."""
    if progress.enabled:
        print(f"[{progress.name}] {len(reasons)} of {progress.total} trials have an invalid config and are "
              f"recorded as error without running: {', '.join(sorted(reasons))}", file=progress.stream, flush=True)
    for point in points:
        if point.trial_id not in reasons:
            continue
        outcome: dict[str, Any] = {"status": "error", "val_loss": float("nan"), "train_loss": float("nan"),
                                   "steps": 0, "tokens": 0, "seconds": 0.0,
                                   "message": f"invalid config (not run): {reasons[point.trial_id]}"}
        tdir = trial_dir(run_dir, point.trial_id)
        write_json(tdir / TRIAL_FILE, point.to_dict())
        write_json(tdir / SUMMARY_FILE, outcome)
        row = make_row(point.to_dict(), outcome)
        table.add(row)
        progress.trial_finished(row)
