"""Where evaluation results go and how they are written (atomically: a reader never sees half a file)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .loading import EvalModel

__all__ = ["default_out_dir", "write_csv", "write_json"]


def default_out_dir(model: EvalModel) -> Path:
    """`<run>/eval` for a windtunnel run or checkpoint, `runs/eval/<model name>` for any other model.

    Example:
        >>> default_out_dir(load_model("runs/xs"))                  # doctest: +SKIP
        PosixPath('runs/xs/eval')
    """
    if model.run_dir is not None:
        return model.run_dir / "eval"
    return Path("runs") / "eval" / (re.sub(r"[^A-Za-z0-9._-]+", "_", model.name).strip("_") or "model")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """JSON with NaN/inf written as null (strict JSON readers reject NaN)."""
    return _write_text(path, json.dumps(_finite(payload), indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _write_text(path, buf.getvalue())


def _write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
