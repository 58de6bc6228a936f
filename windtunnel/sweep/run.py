"""`run_sweep`: the public entry point. Check the spec, prepare `runs/<name>/`, skip what a previous
session finished, run the rest on Ray Tune, return the table and the best trial.

Run folder layout:
    runs/<name>/spec.yaml                 the resolved spec (absolute base path, defaults filled, base config)
    runs/<name>/results.parquet|csv       one row per finished trial (see windtunnel.sweep.results)
    runs/<name>/trials/<id>/              trial.json, config.yaml, metrics.csv, summary.json
    runs/<name>/study.db                  the Optuna study (every method; optuna-dashboard reads it)
    runs/<name>/mlflow.db, trackers.json  with `track: [mlflow]` and no MLFLOW_TRACKING_URI: the local store
    runs/<name>/ray/                      Ray Tune's own experiment state (not needed to resume)
    runs/<name>/provenance.json           format version; versions, commit, hardware, corpus per session
    runs/<name>/sweep.lock                while a sweep runs here: its host and pid (windtunnel.sweep.lock)
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..analysis.runs import read_spec_data
from ..errors import WindtunnelError
from ..fileio import write_text
from ..provenance import write_provenance
from ..run_folder import LOCK_FILE, SPEC_FILE, is_temporary, remove_folder, summary_path, trials_dir
from .growth import check_resumable
from .lock import SweepLock
from .plan import SweepPlan, plan_sweep
from .progress import Progress
from .results import ResultsTable, row_from_trial_dir
from .spec import SweepSpec, base_dict, load_sweep, spec_from_dict, spec_to_dict
from .study_record import StudyRecord, TrialEvents
from .tracking import end_parent, start_parent, sweep_tracking
from .trial_list import Pending
from .validate import record_invalid, refuse_unrunnable

__all__ = ["SweepResult", "run_sweep", "read_spec", "SPEC_FILE"]

@dataclass
class SweepResult:
    """What a sweep left: its folder, its table, the best `ok` row, and how many trials are unfinished."""

    run_dir: Path
    spec: SweepSpec
    table: Any  # pandas.DataFrame, one row per finished trial
    best: dict[str, Any] | None
    counts: dict[str, int]
    unfinished: int
    wall_seconds: float
    plots: list[Path]


def run_sweep(spec: str | os.PathLike | SweepSpec, *, out_dir: str | os.PathLike | None = None,
              address: str | None = None, resume: bool = False, dry_run: bool = False,
              progress: bool = True, plots: bool = True, track: Sequence[str] | None = None,
              break_lock: bool = False) -> SweepResult | SweepPlan:
    """Run a sweep on Ray Tune and return its results; with `dry_run`, return its plan and run nothing.

    `out_dir` defaults to `runs/<name>`. `address` joins an existing Ray cluster (`auto`, `HOST:PORT`);
    without it a private local Ray instance is started (an already-initialised Ray is reused).
    `resume` continues a sweep in `out_dir`: finished trials are kept, the others run; a grid whose
    spec gained values or seeds runs only its new points (`windtunnel.sweep.growth`).
    `plots` draws the sweep's pictures into `out_dir/plots` at the end (see `windtunnel.plot_sweep`).
    `track` (`--track`) names the trackers every trial logs to, over the spec's `track`
    (`windtunnel.sweep.tracking`); one not installed, or an MLflow server that does not answer, is
    refused here, before anything is written.
    While it runs, the folder is locked (`sweep.lock`): a second sweep there raises WindtunnelError naming
    the holder; a dead holder's lock is taken over, and `break_lock` takes it over at once
    (`windtunnel.sweep.lock`).

    Example:
        >>> result = run_sweep("sweeps/lr_init.yaml")
        >>> result.best["train.lr"], result.best["val_loss"]            # doctest: +SKIP
        (0.008, 1.72)
        >>> print(describe(run_sweep("sweeps/lr_init.yaml", dry_run=True)))   # doctest: +SKIP
    """
    started = time.perf_counter()
    spec = spec if isinstance(spec, SweepSpec) else load_sweep(spec)
    plan = plan_sweep(spec)
    refuse_unrunnable(plan)  # every trial invalid: exit 2 before Ray starts or anything is written
    if dry_run:
        return plan
    run_dir = Path(out_dir if out_dir is not None else Path("runs") / spec.name).resolve()
    base = base_dict(spec)
    tracking = sweep_tracking(spec, run_dir, track=track, base=base)  # refused before anything is written
    lock = SweepLock(run_dir, break_lock=break_lock,
                     announce=lambda line: print(f"[{spec.name}] {line}", file=sys.stderr, flush=True))
    if (run_dir / SPEC_FILE).is_file() or (run_dir / LOCK_FILE).exists():
        lock.acquire()  # a live sweep here is named first, whatever else its folder holds
    try:
        resolved, grown = _check_run_dir(run_dir, spec, base, resume=resume)
        if run_dir.is_dir():  # before reading the table: a live sweep's trial folders are never "recovered"
            lock.acquire()
        return _run_locked(spec, plan, run_dir, base, resolved, grown, lock, started, address=address,
                           resume=resume, progress=progress, plots=plots, tracking=tracking)
    finally:
        lock.release()


def _run_locked(spec: SweepSpec, plan: SweepPlan, run_dir: Path, base: dict, resolved: dict, grown: list[str],
                lock: SweepLock, started: float, *, address, resume, progress, plots, tracking) -> SweepResult:
    """The sweep proper, with its folder locked (a new folder: from when it is made)."""
    table = ResultsTable(run_dir, param_keys=spec.param_keys, metric=spec.metric.name,
                         goal=spec.metric.goal).load()
    _recover_rows(run_dir, table)
    pending = plan.pending(table.rows)  # trials already run keep their ids, also in a grown grid
    total, remaining = pending.total, pending.remaining - len(pending.invalid)  # invalid: error rows, never run
    show = Progress(spec.name, total=total, done=len(table.rows), param_keys=spec.param_keys,
                    metric=spec.metric.name, goal=spec.metric.goal, enabled=progress)
    for row in table.rows.values():
        show.offer_best(row)
    if grown and progress:
        show.note(f"grown since the last session: {'; '.join(grown)}")
    if remaining:
        _warm_data(base)
    from .ray_engine import check_resources, init_ray
    # before writing: a bad --address leaves nothing; the cluster joined is named even when quiet
    ray_started = init_ray(address, announce=show.note, starting=show.status) if remaining else False
    record, ended = None, False
    try:
        if remaining:
            check_resources(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not lock.held:
            lock.acquire()
            _check_run_dir(run_dir, spec, base, resume=resume)  # another sweep may have started it meanwhile
        continued = (run_dir / SPEC_FILE).exists()
        write_text(run_dir / SPEC_FILE, yaml.safe_dump(resolved, sort_keys=False))
        if remaining or not continued:  # once per session that trains (a finished sweep re-read adds none)
            write_provenance(run_dir, kind="sweep", data=base.get("data") or {}, continued=continued)
        table.write()  # from the start the folder holds a readable (maybe empty) table
        if pending.invalid:
            record_invalid(run_dir, table, show, pending.invalid, pending.reasons)
        _close_stale_study_trials(run_dir, spec, table)
        record = StudyRecord(run_dir, spec, warn=show.note) if spec.method != "tpe" else None
        if remaining:
            tracking = start_parent(tracking, run_dir, spec)
            _run_remaining(run_dir, spec, base, table, TrialEvents(show, record), pending, remaining,
                           tracking=tracking)
        ended = True
    finally:
        _end_records(record, tracking, table, spec, finished=ended and len(table.rows) >= total, show=show)
        if ray_started:
            import ray
            ray.shutdown()
    drawn = _draw(run_dir, show) if plots and table.rows else []
    return SweepResult(run_dir=run_dir, spec=spec, table=table.frame(), best=table.best(), counts=table.counts(),
                       unfinished=max(total - len(table.rows), 0), wall_seconds=time.perf_counter() - started,
                       plots=drawn)


def _draw(run_dir: Path, show: Progress) -> list[Path]:
    """The sweep's pictures. The table is already safe on disk, so a plotting failure only warns."""
    from ..analysis.plots import plot_sweep
    try:
        return plot_sweep(run_dir)
    except Exception as e:  # noqa: BLE001 - never lose a finished sweep to a figure
        print(f"[{run_dir.name}] warning: plots not drawn ({type(e).__name__}: {e}); "
              f"retry with: windtunnel plot {run_dir}", file=show.stream, flush=True)
        return []


def read_spec(run_dir: str | os.PathLike) -> SweepSpec | None:
    """The resolved spec a sweep folder was run with, or None if it has none."""
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        return None
    data = read_spec_data(run_dir)
    data.pop("base_config", None)
    return spec_from_dict(data, source=str(path))


def _run_remaining(run_dir, spec, base, table, events: TrialEvents, pending: Pending, remaining: int, *,
                   tracking=None) -> None:
    """Run the pending groups (grid/random) or `remaining` TPE trials on Ray Tune."""
    from .ray_engine import run_tune
    from .trial import TrialContext
    show = events.progress
    if show.enabled and table.rows:
        print(f"[{spec.name}] resuming: {len(table.rows)} trials already finished, {remaining} to run",
              flush=True, file=show.stream)
    ctx = TrialContext(spec=spec, base=base, run_dir=str(run_dir), tracking=tracking)
    run_tune(ctx, table=table, events=events, groups=pending.groups, k=pending.k, num_trials=remaining)


def _end_records(record: StudyRecord | None, tracking, table: ResultsTable, spec: SweepSpec, *, finished: bool,
                 show: Progress) -> None:
    """The study gets the rows it lacks; the MLflow parent run ends. Neither can lose the sweep."""
    if record is not None:
        record.sync(table.rows)
    try:
        end_parent(tracking, counts=table.counts(), best=table.best(), metric=spec.metric.name, finished=finished)
    except Exception as e:  # noqa: BLE001 - the table on disk is the sweep's record
        show.note(f"warning: the MLflow parent run was not closed ({type(e).__name__}: {e})")


def _check_run_dir(run_dir: Path, spec: SweepSpec, base: dict, *, resume: bool) -> tuple[dict[str, Any], list[str]]:
    """Refuse to mix two sweeps in one folder; on resume the spec must measure the same thing (a grid
    may grow). Returns the resolved spec to save as spec.yaml and what grew."""
    saved_path = run_dir / SPEC_FILE
    current = {**spec_to_dict(spec), "base_config": base}
    grown: list[str] = []
    if saved_path.exists():
        if not resume:
            raise WindtunnelError(f"{run_dir} already holds sweep {spec.name!r}; pass --resume to continue "
                                  f"it, or --out to start a new one elsewhere")
        grown = check_resumable(read_spec_data(run_dir), current, source=spec.source, saved_path=saved_path)
    elif run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):  # a lock alone: a sweep starting
        raise WindtunnelError(f"{run_dir} exists and is not a sweep folder (no {SPEC_FILE}); choose another --out")
    return current, grown


def _recover_rows(run_dir: Path, table: ResultsTable) -> None:
    """Rows of trials that finished after the last table write; folders of unfinished trials go."""
    trials = trials_dir(run_dir)
    if not trials.is_dir():
        return
    for tdir in sorted(trials.iterdir()):
        if is_temporary(tdir):  # left by an earlier recovery cut short: never a trial
            shutil.rmtree(tdir, ignore_errors=True)
            continue
        if tdir.name in table.rows or not tdir.is_dir():
            continue
        row = row_from_trial_dir(tdir)
        if row is not None:
            table.add(row, write=False)
        elif not summary_path(tdir).exists():
            # half-trained: it runs again (grid) or is replaced (tpe). remove_folder renames it aside first:
            # a killed sweep's worker may still be writing into it for a moment, failing a plain rmtree
            remove_folder(tdir)


def _close_stale_study_trials(run_dir: Path, spec: SweepSpec, table: ResultsTable) -> None:
    from .study import close_stale_trials, open_study
    close_stale_trials(open_study(run_dir, spec), dict(table.rows), spec.metric.name)


def _warm_data(base: dict) -> None:
    """Prepare the embedded corpus once here, not in every trial at once."""
    from ..data.corpus import open_data
    open_data(path=base["data"]["path"], max_bytes=base["data"]["embedded_bytes"])
