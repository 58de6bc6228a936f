"""Writing files so that a reader never sees half of one: every file windtunnel writes goes through here.

A killed sweep, a crashed run or a full disk leaves either the old file or the new one, never a torn
mix: the content goes to a temp file beside the target, is flushed, and is renamed into place.

    >>> write_json("runs/x/summary.json", {"status": "ok", "val_loss": 1.93})
    >>> write_text("runs/x/config.yaml", "model: {}\\n")
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "make_temp_dir", "write_text", "write_json", "jsonable"]


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


_DEFAULT_MODE = 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, mode: int | None = None) -> Path:
    """Call `write(temp_path)` beside `path`, then rename the temp file into place.

    The parent folder is created when missing. The file gets `mode`, else the permissions a plain
    `open()` would give (0o666 minus the umask) — a temp file alone would be private (0o600), and a
    run folder on shared storage must stay readable by the other nodes and users. On any error the
    temp file is removed and `path` is untouched.

    Example:
        >>> atomic_write("runs/x/table.csv", lambda tmp: df.to_csv(tmp, index=False))   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_temp_dir(final: str | os.PathLike) -> Path:
    """A new empty folder beside `final`, to fill and then rename into place as `final`.

    It gets the permissions a plain `mkdir` would give (0o777 minus the umask): `tempfile.mkdtemp`
    alone makes it private (drwx------), and a prepared data folder on a shared cluster file system
    must be readable by the other nodes and users.

    Example:
        >>> tmp = make_temp_dir("data/web")   # doctest: +SKIP
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # read at call time: a job may set its umask after import
    return tmp


def write_text(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """Write `text` (UTF-8) to `path` atomically.

    Example:
        >>> write_text("runs/x/notes.txt", "hello\\n")   # doctest: +SKIP
    """
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mode=mode)


def write_json(path: str | os.PathLike, payload: Any, *, strict: bool = False) -> Path:
    """Write `payload` as indented JSON atomically; numpy/torch scalars become plain numbers.

    With `strict=True`, inf and NaN are written as null (strict JSON readers such as jq reject
    `Infinity`); otherwise as `Infinity` / `NaN`, which Python's json reads back.

    Example:
        >>> write_json("runs/x/check.json", {"drift": float("inf")}, strict=True)   # doctest: +SKIP
    """
    data = _finite_or_null(payload) if strict else payload
    text = json.dumps(data, indent=2, default=jsonable, allow_nan=not strict)
    return write_text(path, text)


def jsonable(x: Any) -> Any:
    """A plain value for json: `.item()` of numpy/torch scalars, `.tolist()` of arrays, else `str`."""
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return str(x)


def _finite_or_null(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        return _finite_or_null(x.item())
    return x
