"""Ray Tune runs the trials, one engine contract for every sweep: each Ray trial trains a group of
K >= 1 sweep trials (`windtunnel.sweep.trial.run_group`; K = 1 is an ordinary trial). Grid and
random groups come planned (`windtunnel.sweep.trial_list`) through Tune's grid search; TPE groups are
asked K configurations at a time from the sweep's study (`windtunnel.sweep.searcher.StudySearcher`).
Tune's scheduler is not used: ASHA judges each sweep trial at its rungs through the rung file
(`windtunnel.sweep.rungs`), so ASHA, Optuna and the results table see trials, never groups.
Locally a private Ray instance sized to the machine; with an address (`auto`, `HOST:PORT`) the same
sweep runs on an existing cluster.

Rows reach the results table from a Tune callback in the driver (`windtunnel.sweep.recorder`), so
the table is complete even when trials ran on other nodes. Ray's own console output is switched
off; `Progress` prints ours.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WindtunnelError
from .cluster import AUTH_FIX, describe_cluster, find_token, prepare_join
from .points import TrialPoint
from .results import ResultsTable
from .trial import GROUP_KEY, TrialContext, run_group

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


def run_tune(ctx: TrialContext, *, table: ResultsTable, events: Any, groups: list[list[TrialPoint]] | None,
             k: int = 1, num_trials: int = 0) -> None:
    """Run the sweep's groups on Ray Tune: the planned `groups` (grid/random), else `num_trials` TPE
    trials asked `k` at a time. `events` hears each trial start and end (`study_record.TrialEvents`).

    Example:
        >>> run_tune(ctx, table=table, events=events, groups=[[point]])                  # doctest: +SKIP
        >>> run_tune(ctx, table=table, events=events, groups=None, k=4, num_trials=28)   # doctest: +SKIP
    """
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    from ray import tune

    from .recorder import TrialRecorder
    spec = ctx.spec
    if groups is not None:
        space = {GROUP_KEY: tune.grid_search([[p.to_dict() for p in g] for g in groups])}
        search_alg, num_samples = None, 1
    else:
        from .searcher import StudySearcher
        space, num_samples = {}, math.ceil(num_trials / max(k, 1))
        search_alg = StudySearcher(ctx.run_dir, spec, k=max(k, 1), total=num_trials)
    name = functools.partial(_dirname, fused=k > 1)
    trainable = tune.with_resources(tune.with_parameters(run_group, ctx=ctx),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.metric.name, mode=spec.metric.mode, search_alg=search_alg,
            num_samples=num_samples, max_concurrent_trials=spec.budget.max_concurrent,
            time_budget_s=spec.budget.time_budget_s, reuse_actors=True,
            trial_dirname_creator=name, trial_name_creator=name),
        run_config=tune.RunConfig(
            name=_session_name(Path(ctx.run_dir) / "ray"), storage_path=str(Path(ctx.run_dir) / "ray"),
            verbose=0, callbacks=[TrialRecorder(ctx, table, events)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()


def _session_name(storage: Path) -> str:
    """Each run of the sweep (first, then each --resume) gets its own Tune experiment folder."""
    done = len(list(storage.glob("session-*"))) if storage.is_dir() else 0
    return f"session-{done + 1:03d}"


def _dirname(trial, *, fused: bool) -> str:
    """A Ray trial's Tune folder: its sweep trial's id (K = 1), else group-<first trial id>."""
    points = (trial.config or {}).get(GROUP_KEY)
    if not points:
        return trial.trial_id
    return f"group-{points[0]['trial_id']}" if fused else points[0]["trial_id"]


def check_resources(spec) -> None:
    """Refuse a sweep whose trials could never be placed (Tune would wait for them forever)."""
    import ray
    have = ray.cluster_resources()
    for name, want in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        if want > have.get(name, 0):
            raise WindtunnelError(f"{spec.source}: resources.{name.lower()}: each trial asks for {want:g} "
                                  f"{name}, but the Ray cluster has {have.get(name, 0):g}")
