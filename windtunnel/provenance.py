"""What made a run folder: its format version and its provenance, in `provenance.json`.

Every sweep folder and every run folder (a `windtunnel train` run, each sweep trial) holds one:

    {"format_version": 1, "kind": "sweep" | "run",
     "created": {written_at, host, windtunnel/torch/mup/ray/optuna versions, git commit, hardware, corpus},
     "resumed": [ the same record for every later session that continued the folder ]}

The corpus is named by the sha256 of its token files that `windtunnel data prepare` stored in each
prepared folder's `meta.json`: nothing is hashed here, so a sweep's trials add no reading of the data.
A reader calls `check_format`: a folder without the file (written before it existed) reads as
version 0, one of a newer, unknown format is refused with one line.

    >>> write_provenance("runs/xs", kind="run", data={"path": None, "embedded_bytes": 300_000})  # doctest: +SKIP
    >>> check_format("runs/xs")                                   # doctest: +SKIP
    1
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from .errors import WindtunnelError
from .fileio import write_json
from .run_folder import META_FILE, PROVENANCE_FILE

__all__ = ["FORMAT_VERSION", "PROVENANCE_FILE", "collect_provenance", "corpus_identity", "write_provenance",
           "read_provenance", "check_format"]

FORMAT_VERSION = 1
"""The run-folder format this code writes and reads; raise it when a file's meaning changes."""
PACKAGES = ("windtunnel", "torch", "mup", "ray", "optuna")


def collect_provenance(data: Any = None) -> dict[str, Any]:
    """This session's record: time, host, package versions, git commit, hardware and corpus.

    `data`: a run's data config (`path`, `embedded_bytes`, `sources`), as `cfg.data` or a plain mapping.

    Example:
        >>> collect_provenance()["packages"]["windtunnel"]          # doctest: +SKIP
        '0.1.0'
    """
    return {"written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "pid": os.getpid(), "python": platform.python_version(), "packages": dict(_packages()),
            "git": _git_commit(), "hardware": _hardware(),
            "corpus": corpus_identity(data) if data is not None else None}


def corpus_identity(data: Any) -> dict[str, Any]:
    """The corpus a run reads: each prepared folder and one sha256 over the hashes its `meta.json` stored.

    `sha256` is None when a folder's `meta.json` holds no hashes (prepared by an older version):
    hashing the token files here would read the whole corpus in every run.

    Example:
        >>> corpus_identity({"path": "data/web"})["sha256"][:12]        # doctest: +SKIP
        '5f0c2d9e41aa'
    """
    folders = _data_folders(data)
    h, known, out = hashlib.sha256(), True, {}
    for name, folder in folders.items():
        meta = _read_meta(folder)
        stored = meta.get("sha256") if isinstance(meta.get("sha256"), dict) else None
        out[name] = {"path": str(folder), "tokenizer": meta.get("tokenizer"), "sha256": stored}
        if not stored:
            known = False
            continue
        h.update(json.dumps([name, stored], sort_keys=True).encode())
    return {"sources": out, "sha256": h.hexdigest() if known and out else None}


def write_provenance(folder: str | os.PathLike, *, kind: str, data: Any = None, continued: bool = False) -> Path:
    """Write `folder/provenance.json` atomically. A new run gets `created`; a `continued` one (a resumed
    run or sweep) adds a `resumed` entry, and `created` stays null when the folder predates the file.
    `data` is the run's data config (`cfg.data`, or the plain `data` section of a sweep's base config).

    Example:
        >>> write_provenance("runs/lr_init", kind="sweep", data=base["data"], continued=True)  # doctest: +SKIP
    """
    folder = Path(folder)
    record = collect_provenance(data)
    old = read_provenance(folder) if continued else None
    if old is None:
        payload = {"format_version": FORMAT_VERSION, "kind": kind, "created": None if continued else record,
                   "resumed": [record] if continued else []}
    else:
        payload = {**old, "format_version": FORMAT_VERSION, "resumed": [*(old.get("resumed") or []), record]}
    return write_json(folder / PROVENANCE_FILE, payload)


def read_provenance(folder: str | os.PathLike) -> dict[str, Any] | None:
    """`folder/provenance.json` as data, checked for its format; None when the folder has none.

    Example:
        >>> read_provenance("runs/lr_init")["created"]["git"]["commit"]     # doctest: +SKIP
        '9fdf781c...'
    """
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WindtunnelError(f"{path}: unreadable ({e}); expected the JSON windtunnel writes") from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WindtunnelError(f"{path}: format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise WindtunnelError(f"{path}: format_version {version} is newer than this windtunnel reads "
                              f"({FORMAT_VERSION}); upgrade windtunnel to read this folder")
    return payload


def check_format(folder: str | os.PathLike) -> int:
    """The folder's format version: 0 for a folder from before versions were recorded (read as is);
    a newer, unknown one raises WindtunnelError naming the file.

    Example:
        >>> check_format("runs/lr_init")                                # doctest: +SKIP
        1
    """
    payload = read_provenance(folder)
    return 0 if payload is None else int(payload["format_version"])


# --- the pieces -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _packages() -> tuple[tuple[str, str | None], ...]:
    from importlib import metadata
    out = []
    for name in PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _git_commit() -> dict[str, Any] | None:
    """The commit of the checkout the code runs from, read from `.git` (no subprocess); None outside one."""
    root = Path(__file__).resolve().parent.parent
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            return None
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "ref": None}
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return {"commit": (base / ref).read_text().strip(), "ref": ref}
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return {"commit": line.split()[0], "ref": ref}
        return {"commit": None, "ref": ref}
    except (OSError, IndexError):
        return None


def _hardware() -> dict[str, Any]:
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}
    torch = sys.modules.get("torch")  # only when the run imported it: recording must not import CUDA
    if torch is not None and torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        out["gpus"] = []
    return out


def _data_folders(data: Any) -> dict[str, Path]:
    get = data.get if isinstance(data, Mapping) else (lambda key: getattr(data, key, None))
    if get("sources"):
        return {str(k): Path(v).resolve() for k, v in dict(get("sources")).items()}
    if get("path"):
        return {"data": Path(get("path")).resolve()}
    from .data.corpus import DEFAULT_MAX_BYTES, embedded_corpus_path  # a path only: recording never prepares
    return {"data": embedded_corpus_path(max_bytes=get("embedded_bytes") or DEFAULT_MAX_BYTES)}


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
