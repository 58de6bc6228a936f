"""Where evaluation results go and how they are written (atomically: a reader never sees half a file)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import fileio
from ..run_folder import EVAL_DIR
from .loading import EvalModel

__all__ = ["default_out_dir", "write_csv", "write_json"]


def default_out_dir(model: EvalModel) -> Path:
    """`<run>/eval` for a windtunnel run or checkpoint, `runs/eval/<model name>` for any other model.

    Example:
        >>> default_out_dir(load_model("runs/xs"))                  # doctest: +SKIP
        PosixPath('runs/xs/eval')
    """
    if model.run_dir is not None:
        return model.run_dir / EVAL_DIR
    return Path("runs") / EVAL_DIR / (re.sub(r"[^A-Za-z0-9._-]+", "_", model.name).strip("_") or "model")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """JSON with NaN/inf written as null (strict JSON readers reject NaN), atomically."""
    return fileio.write_json(path, payload, strict=True)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    """CSV of `rows` with the columns `fields`, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return fileio.write_text(path, buf.getvalue())
