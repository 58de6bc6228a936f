"""The one owner of what windtunnel puts on disk: every file and folder name of a run, a sweep and a
prepared data folder, the small helpers that build their paths, and the one atomic folder write.

Before this module the names were spread over a dozen modules (the sweep imported the analysis
package to learn what a trial's summary is called); now a reader and a writer cannot disagree on a
name, and tests/test_architecture.py refuses a quoted file name anywhere else in `windtunnel/`.

A run (`windtunnel train --out runs/xs`; also each sweep trial)::

    runs/xs/
      config.yaml          the resolved config                   (training.loop)
      summary.json         status, val_loss, tokens, seconds...  (training.loop; read_summary)
      metrics.csv          one row per logged step               (training.metrics)
      provenance.json      format version, versions, git, corpus (provenance)
      trackers.json        the MLflow run to continue on --resume (training.tracker_clients)
      mlflow.db            MLflow's SQLite store, when no MLFLOW_TRACKING_URI
      checkpoints/         step_XXXXXXXX.pt, or step_XXXXXXXX/ (sharded, with meta.pt)
      tensorboard/, wandb/ the trackers' own files, when tracked
      eval/                context.csv, context.json, calibration.json, calibration_questions.csv, plots/

A sweep (`windtunnel sweep spec.yaml --out runs/lr_init`)::

    runs/lr_init/
      spec.yaml            the resolved sweep spec               (sweep.run)
      results.parquet      one row per trial (and results.csv, the same table for people)
      provenance.json      as above, kind "sweep"
      sweep.lock           held while a sweep runs here          (sweep.lock)
      study.db             Optuna's study (tpe)                  (sweep.study)
      asha.json            fused ASHA rungs (+ asha.json.lock)   (sweep.rungs)
      trackers.json, mlflow.db
      mutransfer_check.json, horizon_check.json, coord_check.json   (the checks' verdicts)
      plots/               the sweep's figures                   (analysis.plots)
      trials/<trial_id>/   a run as above, plus trial.json (id, seed, params) and error.txt on a crash

A prepared data folder (`windtunnel data prepare ... --out data/web`)::

    data/web/
      train.bin, val.bin   token ids, dtype from meta.json
      meta.json            tokenizer, vocab_size, dtype, token counts, sha256 of each .bin
      tokenizer.json       a trained BPE (absent for `byte`)

The data folder's names live here too rather than in `data.token_folder` (which owns that format's
reading and checking): one module to look up any name windtunnel writes, and one architecture rule
without exceptions. A name starting with "." is never a run's: it is a temporary sibling being
written (`write_folder`) or thrown away (`remove_folder`).

    >>> summary_path("runs/xs"), trial_dir("runs/lr_init", "t0003")
    (PosixPath('runs/xs/summary.json'), PosixPath('runs/lr_init/trials/t0003'))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import WindtunnelError
from .fileio import make_temp_dir

__all__ = [
    # a run
    "CONFIG_FILE", "SUMMARY_FILE", "METRICS_FILE", "PROVENANCE_FILE", "TRACKERS_FILE", "MLFLOW_DB",
    "CHECKPOINT_DIR", "CHECKPOINT_MARKER", "TENSORBOARD_DIR", "WANDB_DIR", "EVAL_DIR", "CONTEXT_CSV",
    "CONTEXT_JSON", "CALIBRATION_JSON", "CALIBRATION_QUESTIONS_CSV",
    # a sweep
    "SPEC_FILE", "RESULTS_PARQUET", "RESULTS_CSV", "STUDY_FILE", "LOCK_FILE", "RUNGS_FILE", "TRIALS_DIR",
    "PLOTS_DIR", "TRIAL_FILE", "ERROR_FILE", "MUTRANSFER_CHECK_FILE", "HORIZON_CHECK_FILE", "COORD_CHECK_FILE",
    # a prepared data folder
    "META_FILE", "TRAIN_FILE", "VAL_FILE", "TOKENIZER_FILE",
    # paths and reading
    "config_path", "summary_path", "trials_dir", "trial_dir", "trial_config_paths", "read_summary",
    "is_temporary",
    # the one folder write
    "write_folder", "publish_folder", "remove_folder",
]

# --- a run (windtunnel train; each sweep trial) -------------------------------------------------
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
PROVENANCE_FILE = "provenance.json"
TRACKERS_FILE = "trackers.json"
MLFLOW_DB = "mlflow.db"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_MARKER = "meta.pt"
"""Written last into a sharded checkpoint folder, before its rename: its presence means complete."""
TENSORBOARD_DIR, WANDB_DIR = "tensorboard", "wandb"
EVAL_DIR = "eval"
CONTEXT_CSV, CONTEXT_JSON = "context.csv", "context.json"
CALIBRATION_JSON, CALIBRATION_QUESTIONS_CSV = "calibration.json", "calibration_questions.csv"

# --- a sweep -------------------------------------------------------------------------------------
SPEC_FILE = "spec.yaml"
RESULTS_PARQUET, RESULTS_CSV = "results.parquet", "results.csv"
STUDY_FILE = "study.db"
LOCK_FILE = "sweep.lock"
RUNGS_FILE = "asha.json"
TRIALS_DIR = "trials"
PLOTS_DIR = "plots"
TRIAL_FILE = "trial.json"
ERROR_FILE = "error.txt"
MUTRANSFER_CHECK_FILE = "mutransfer_check.json"
HORIZON_CHECK_FILE = "horizon_check.json"
COORD_CHECK_FILE = "coord_check.json"

# --- a prepared data folder ----------------------------------------------------------------------
META_FILE, TRAIN_FILE, VAL_FILE = "meta.json", "train.bin", "val.bin"
TOKENIZER_FILE = "tokenizer.json"


# --- paths ---------------------------------------------------------------------------------------
def config_path(run_dir: str | os.PathLike) -> Path:
    """A run's resolved config.

    Example:
        >>> config_path("runs/xs")
        PosixPath('runs/xs/config.yaml')
    """
    return Path(run_dir) / CONFIG_FILE


def summary_path(run_dir: str | os.PathLike) -> Path:
    """A run's summary (written when the run ends, whatever its status).

    Example:
        >>> summary_path("runs/lr_init/trials/t0003")
        PosixPath('runs/lr_init/trials/t0003/summary.json')
    """
    return Path(run_dir) / SUMMARY_FILE


def trials_dir(sweep_dir: str | os.PathLike) -> Path:
    """The folder holding a sweep's trial folders.

    Example:
        >>> trials_dir("runs/lr_init")
        PosixPath('runs/lr_init/trials')
    """
    return Path(sweep_dir) / TRIALS_DIR


def trial_dir(sweep_dir: str | os.PathLike, trial_id: str) -> Path:
    """One trial's run folder inside a sweep.

    Example:
        >>> trial_dir("runs/lr_init", "t0003")
        PosixPath('runs/lr_init/trials/t0003')
    """
    return trials_dir(sweep_dir) / str(trial_id)


def trial_config_paths(sweep_dir: str | os.PathLike) -> list[Path]:
    """Every trial's resolved config that exists, in trial-id order.

    Example:
        >>> trial_config_paths("runs/lr_init")[:1]        # doctest: +SKIP
        [PosixPath('runs/lr_init/trials/t0000/config.yaml')]
    """
    return sorted(trials_dir(sweep_dir).glob(f"*/{CONFIG_FILE}"))


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether a folder entry is a hidden temporary sibling (being written or thrown away), never data.

    Example:
        >>> is_temporary("runs/lr_init/trials/.t0003.old-x1y2"), is_temporary("runs/lr_init/trials/t0003")
        (True, False)
    """
    return Path(path).name.startswith(".")


# --- reading ---------------------------------------------------------------------------------------
def read_summary(run_dir: str | os.PathLike, *, missing_ok: bool = True) -> dict[str, Any] | None:
    """A run's `summary.json` as a dict; None when the run has none yet (`missing_ok`, else an error).

    An unreadable or non-mapping file is a WindtunnelError naming it. The folder's format version is
    the caller's to check once per folder (`provenance.check_format`): this layer sits below it.

    Example:
        >>> read_summary("runs/xs")["status"]            # doctest: +SKIP
        'ok'
    """
    path = summary_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise WindtunnelError(f"{path}: missing; the run did not finish (or this is not a run folder)") from None
    except OSError as e:
        raise WindtunnelError(f"{path}: unreadable ({e})") from None
    try:
        payload = json.loads(text)
    except ValueError as e:
        raise WindtunnelError(f"{path}: not JSON ({e}); expected the summary windtunnel writes") from None
    if not isinstance(payload, dict):
        raise WindtunnelError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


# --- the one atomic folder write -------------------------------------------------------------------
@contextlib.contextmanager
def write_folder(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Fill a hidden temporary sibling of `final`, then rename it into place; on any error it is removed
    and `final` is as it was. An existing `final` is replaced only with `replace=True` (else, before
    anything is written and again at the rename, FileExistsError).

    Example:
        >>> with write_folder("data/web") as tmp:          # doctest: +SKIP
        ...     (tmp / "train.bin").write_bytes(b"...")
    """
    final = Path(final)
    if final.exists() and not replace:
        raise FileExistsError(f"{final}: already exists")
    tmp = make_temp_dir(final)
    try:
        yield tmp
        publish_folder(tmp, final, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike, *, replace: bool = False) -> Path:
    """Rename a fully written folder `tmp` into place as `final` (same file system), the step every
    folder write ends with; `write_folder` calls it, and a writer whose temporary folder outlives one
    call (a sharded checkpoint written by every rank) calls it directly.

    With `replace`, an existing `final` is first moved aside, restored if the rename fails, and only
    then deleted: there is always a complete `final`. Without it, an existing non-empty `final` is a
    FileExistsError and `tmp` is left to the caller.

    Example:
        >>> publish_folder("runs/x/checkpoints/.step_00000100.partial", "runs/x/checkpoints/step_00000100",
        ...                replace=True)                    # doctest: +SKIP
    """
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        if not replace:
            raise FileExistsError(f"{final}: already exists")
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.rename(tmp, final)
    except OSError as e:
        if old is not None:
            os.replace(old / final.name, final)
        elif final.exists():  # another writer won the race to create it
            raise FileExistsError(f"{final}: already exists") from None
        raise WindtunnelError(f"{final}: could not move {tmp} into place ({e.strerror or e})") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_folder(path: str | os.PathLike) -> None:
    """Delete a folder by first renaming it to a hidden sibling: a reader (or a worker still writing
    into it for a moment) never sees it half deleted, and a delete cut short leaves only a hidden
    name that `is_temporary` tells apart. A missing folder is fine.

    Example:
        >>> remove_folder("runs/lr_init/trials/t0003")     # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    try:
        os.replace(path, aside / path.name)
    except FileNotFoundError:  # removed by someone else meanwhile
        pass
    shutil.rmtree(aside, ignore_errors=True)
