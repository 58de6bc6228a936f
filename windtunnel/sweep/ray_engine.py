"""Ray Tune runs the trials: grid and random points through Tune's BasicVariantGenerator, TPE through
`OptunaSearch`, ASHA when the spec asks. Locally a private Ray instance sized to the machine; with an
address (`auto`, `HOST:PORT`) the same sweep runs on an existing cluster.

Rows reach the results table from a Tune callback in the driver, so the table is complete even when
trials ran on other nodes. Ray's own console output is switched off; `Progress` prints ours.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..analysis.runs import SUMMARY_FILE
from ..errors import WindtunnelError
from ..fileio import write_json
from .cluster import AUTH_FIX, describe_cluster, find_token, prepare_join
from .points import TrialPoint
from .progress import Progress
from .results import ResultsTable, make_row
from .trial import TrialContext, point_from_config, run_trial

__all__ = ["init_ray", "check_resources", "run_tune"]

# Set before Ray Tune is imported: no Tune tables on the console, no per-trial Tune loggers (our
# trial folders hold the metrics), trials keep the driver's working directory.
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
              "RAY_CHDIR_TO_TRIAL_DIR": "0"}


def init_ray(address: str | None = None, *, announce: Callable[[str], None] | None = None,
             starting: Callable[[str], None] | None = None) -> bool:
    """Start (or join) Ray; returns True when this call started it (the caller then shuts it down).

    An already-initialised Ray is reused as it is. Without an address, a private local instance with
    one CPU slot per core; with `auto` or `HOST:PORT`, the existing cluster, after agreeing with its
    head on token authentication (see `windtunnel.sweep.cluster`). `announce` receives one line
    naming the cluster joined (address, nodes, CPUs, GPUs); `starting` one line before Ray starts,
    which takes seconds (about 15 on a loaded 2-core machine) with nothing else to show.

    Example:
        >>> started = init_ray()          # private instance on this machine
        >>> started = init_ray("auto", announce=print)    # the cluster `ray start --head` made
        joined the Ray cluster at 10.0.0.5:6379 (the last `ray start --head` on this machine): 1 node, ...
    """
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    if ray.is_initialized():
        return False
    if starting is not None:
        starting(f"joining the Ray cluster at {address} ..." if address else
                 "starting Ray (a private instance on this machine; this takes a few seconds) ...")
    common = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if not address:
        find_token()  # a bad RAY_AUTH_TOKEN_PATH makes Ray abort the process; one line instead
        _workers_import_this_windtunnel()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **common)
        return True
    join = prepare_join(address)
    try:
        ray.init(address=join.address, **common)
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        detail = " ".join(str(e).split())[:200]
        if _refused_for_authentication(e):
            raise WindtunnelError(f"--address {address}: authentication failed ({detail}); {AUTH_FIX}") from None
        raise WindtunnelError(f"--address {address}: cannot reach a Ray cluster ({detail})") from None
    if announce is not None:
        announce(describe_cluster(join))
    return True


def _refused_for_authentication(error: BaseException) -> bool:
    """Ray wraps the head's refusal in a ConnectionError; the words survive in the chain."""
    while error is not None:
        if type(error).__name__ == "AuthenticationError" or any(
                w in str(error) for w in ("Unauthenticated", "InvalidAuthToken", "authentication token")):
            return True
        error = error.__cause__ or error.__context__
    return False


def _workers_import_this_windtunnel() -> None:
    """Local workers inherit the driver's environment: put this package first on their path, so they
    run the same windtunnel as the driver even from a source checkout that is not installed."""
    root = str(Path(__file__).resolve().parents[2])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])


def run_tune(ctx: TrialContext, *, table: ResultsTable, progress: Progress, points: list[TrialPoint] | None,
             num_samples: int = 1, fuse: int = 1, groups: list[list[TrialPoint]] | None = None) -> None:
    """Run the trials on Ray Tune: `points` for grid/random, else `num_samples` TPE trials.
    With `fuse` > 1, one Ray trial trains a fused group: `groups` (grid/random) or `fuse` TPE asks."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    from ray import tune
    spec = ctx.spec
    pruned: set[str] = set()
    scheduler = _asha(spec, pruned) if spec.early_terminate and fuse <= 1 else None
    callback, trainable = _recorder(ctx, table, progress, pruned), run_trial
    if fuse > 1:
        from .fused_engine import group_setup
        setup = group_setup(ctx, table=table, progress=progress, groups=groups, k=fuse, remaining=num_samples)
        trainable, param_space, search_alg = setup.trainable, setup.param_space, setup.search_alg
        num_samples, callback = setup.num_samples, setup.callback
    elif points is not None:
        search_alg, param_space = None, {"trial": tune.grid_search([p.to_dict() for p in points])}
        num_samples = 1
    else:
        from .study import make_searcher
        search_alg, param_space = make_searcher(ctx.run_dir, spec, pruned=pruned), {}
    trainable = tune.with_resources(tune.with_parameters(trainable, ctx=ctx),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric.name, mode=spec.metric.mode, search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, max_concurrent_trials=spec.budget.max_concurrent,
            time_budget_s=spec.budget.time_budget_s, reuse_actors=True,
            trial_dirname_creator=_dirname, trial_name_creator=_dirname),
        run_config=tune.RunConfig(
            name=_session_name(Path(ctx.run_dir) / "ray"), storage_path=str(Path(ctx.run_dir) / "ray"),
            verbose=0, callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()


def _session_name(storage: Path) -> str:
    """Each run of the sweep (first, then each --resume) gets its own Tune experiment folder."""
    done = len(list(storage.glob("session-*"))) if storage.is_dir() else 0
    return f"session-{done + 1:03d}"


def _dirname(trial) -> str:
    cfg = trial.config or {}
    if "trial" in cfg:
        return cfg["trial"]["trial_id"]
    if cfg.get("group"):  # a fused group: named by its first trial
        return f"group-{cfg['group'][0]['trial_id']}"
    return f"t{int(cfg['trial_number']):04d}" if "trial_number" in cfg else trial.trial_id


def check_resources(spec) -> None:
    """Refuse a sweep whose trials could never be placed (Tune would wait for them forever)."""
    import ray
    have = ray.cluster_resources()
    for name, want in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        if want > have.get(name, 0):
            raise WindtunnelError(f"{spec.source}: resources.{name.lower()}: each trial asks for {want:g} "
                                  f"{name}, but the Ray cluster has {have.get(name, 0):g}")


def _asha(spec, pruned: set[str]):
    """ASHA on optimizer steps; the trials it stops are remembered, so they are recorded `pruned`."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from .spec import base_dict, max_steps

    class _RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and not result.get("final"):
                pruned.add(trial.trial_id)
            return action

    et = spec.early_terminate
    max_t = max_steps(spec, base_dict(spec)["train"]["steps"])
    return _RecordingASHA(time_attr="step", max_t=max_t, grace_period=et.grace_period,
                          reduction_factor=et.reduction_factor)


def _recorder(ctx: TrialContext, table: ResultsTable, progress: Progress, pruned: set[str]):
    """A Tune callback that writes a row when a trial ends and keeps the progress lines going."""
    from ray.tune import Callback

    class _Recorder(Callback):
        def __init__(self):
            self.open: set[str] = set()  # started, not yet recorded

        def on_trial_start(self, iteration, trials, trial, **info):
            point = point_from_config(trial.config, ctx.spec)
            self.open.add(point.trial_id)
            progress.trial_started(point.trial_id, point.params)

        def on_trial_complete(self, iteration, trials, trial, **info):
            point = point_from_config(trial.config, ctx.spec)
            result = trial.last_result or {}
            if result.get("final"):
                self._record(point, make_row(point.to_dict(), result))
            elif trial.trial_id in pruned:
                outcome = {"status": "pruned", "message": f"stopped by ASHA at step {result.get('step')}",
                           **{k: result.get(k) for k in ("val_loss", "train_loss", "tokens")},
                           "seconds": round(float(result.get("seconds") or 0.0), 3), "steps": result.get("step")}
                _write_summary(ctx, point, outcome)
                self._record(point, make_row(point.to_dict(), outcome))
            else:
                self.open.discard(point.trial_id)
                progress.trial_unfinished(point.trial_id)

        def on_trial_error(self, iteration, trials, trial, **info):
            point = point_from_config(trial.config, ctx.spec)
            error = trial.get_error()
            message = " ".join(str(error).split())[:500] if error else "the trial's worker failed"
            outcome = {"status": "error", "message": message, "steps": 0, "tokens": 0, "seconds": 0.0}
            _write_summary(ctx, point, outcome)
            self._record(point, make_row(point.to_dict(), outcome))

        def on_experiment_end(self, trials, **info):
            for tid in sorted(self.open):  # stopped by the time budget or an interrupt
                progress.trial_unfinished(tid)
            self.open.clear()

        def _record(self, point: TrialPoint, row: dict[str, Any]) -> None:
            self.open.discard(point.trial_id)
            table.add(row)
            progress.trial_finished(row)

    return _Recorder()


def _write_summary(ctx: TrialContext, point: TrialPoint, outcome: dict[str, Any]) -> None:
    """Pruned and crashed trials end without train's summary.json; write one so resume sees them."""
    tdir = ctx.trial_dir(point.trial_id)
    if tdir.is_dir():  # on a multi-node cluster without shared storage the folder is elsewhere
        write_json(tdir / SUMMARY_FILE, outcome)
