"""The embedded default corpus: the Python standard library's own ``.py`` sources, byte-level.

It needs no network and no user files. Files are taken in sorted order until a byte budget, each
goes to train or val by a hash of its relative path, and the result is prepared once into
``$WINDTUNNEL_CACHE`` (default ``~/.cache/windtunnel``) as an ordinary prepared data folder (see
:mod:`windtunnel.data.token_folder`), which any number of processes then open read-only.

Example:
    >>> folder = embedded_corpus(max_bytes=300_000)       # doctest: +SKIP
    >>> [f.split for f in corpus_files(100_000)][:2]      # doctest: +SKIP
    ['val', 'train']
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..typecheck import is_int
from .token_folder import META_FILE, TokenData, load_tokens, write_prepared
from .tokenizers import ByteTokenizer

__all__ = [
    "DEFAULT_MAX_BYTES",
    "VAL_PERCENT",
    "CorpusFile",
    "embedded_corpus_path",
    "cache_root",
    "corpus_files",
    "embedded_corpus",
    "open_data",
]

DEFAULT_MAX_BYTES = 8_000_000
"""Default byte budget of the embedded corpus (train + val)."""

VAL_PERCENT = 5
"""A corpus file goes to validation when ``zlib.crc32(relative_path) % 100 < VAL_PERCENT``."""

_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
)


@dataclass(frozen=True)
class CorpusFile:
    """One stdlib source file in the embedded corpus: its relative path, bytes used and split."""

    relpath: str  # POSIX-style path relative to the stdlib root
    nbytes: int  # bytes taken from the file (the last file may be cut to fit the budget)
    split: str  # "train" or "val"


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _split_of(relpath: str) -> str:
    return "val" if zlib.crc32(relpath.encode("utf-8")) % 100 < VAL_PERCENT else "train"


def _stdlib_sources(root: Path) -> list[tuple[str, Path]]:
    """All stdlib ``.py`` files outside excluded dirs, sorted by POSIX relative path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]
        for name in filenames:
            if not name.endswith(".py"):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                found.append((full.relative_to(root).as_posix(), full))
    found.sort(key=lambda item: item[0])
    return found


def corpus_files(max_bytes: int = DEFAULT_MAX_BYTES) -> list[CorpusFile]:
    """The files of the embedded corpus, in order, with their split; files are read until the budget.

    The file that crosses ``max_bytes`` is cut so the corpus holds exactly ``max_bytes`` bytes
    (or the whole eligible stdlib when it is smaller).

    Example:
        >>> files = corpus_files(100_000)
        >>> sum(f.nbytes for f in files)
        100000
        >>> files[0].relpath
        '__future__.py'
    """
    _check_budget(max_bytes)
    out: list[CorpusFile] = []
    total = 0
    for rel, full in _stdlib_sources(_stdlib_root()):
        if total >= max_bytes:
            break
        n = min(full.stat().st_size, max_bytes - total)
        out.append(CorpusFile(rel, n, _split_of(rel)))
        total += n
    return out


def _read_corpus(max_bytes: int) -> tuple[bytes, bytes, int, int]:
    root = _stdlib_root()
    train, val = bytearray(), bytearray()
    n_train_files = n_val_files = 0
    total = 0
    for rel, full in _stdlib_sources(root):
        if total >= max_bytes:
            break
        data = full.read_bytes()[: max_bytes - total]
        total += len(data)
        if _split_of(rel) == "val":
            val += data
            n_val_files += 1
        else:
            train += data
            n_train_files += 1
    return bytes(train), bytes(val), n_train_files, n_val_files


def cache_root() -> Path:
    """The cache directory: ``$WINDTUNNEL_CACHE`` if set, else ``~/.cache/windtunnel``.

    Example:
        >>> cache_root()                                      # doctest: +SKIP
        PosixPath('/home/me/.cache/windtunnel')
    """
    env = os.environ.get("WINDTUNNEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "windtunnel"


def embedded_corpus_path(*, max_bytes: int = DEFAULT_MAX_BYTES, cache_dir: str | Path | None = None) -> Path:
    """Where `embedded_corpus` keeps the embedded corpus for `max_bytes` (prepared or not: nothing is built).

    Example:
        >>> embedded_corpus_path(max_bytes=300_000).name      # doctest: +SKIP
        'embedded-py312-300000'
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / f"embedded-py{sys.version_info.major}{sys.version_info.minor}-{max_bytes}"


def embedded_corpus(*, max_bytes: int = DEFAULT_MAX_BYTES, cache_dir: str | Path | None = None) -> Path:
    """Prepare (once) and return the folder holding the embedded stdlib corpus.

    The folder is ``<cache>/embedded-py{major}{minor}-{max_bytes}``. It is built in a temporary
    folder beside the target and renamed into place, so a crash never leaves a half-written cache;
    when several processes race, the losers discard their copy and use the winner's.

    Example:
        >>> folder = embedded_corpus(max_bytes=300_000)       # doctest: +SKIP
        >>> load_tokens(folder).meta["train_tokens"]          # doctest: +SKIP
        286021
    """
    _check_budget(max_bytes)
    target = embedded_corpus_path(max_bytes=max_bytes, cache_dir=cache_dir)
    if target.exists():
        if not (target / META_FILE).is_file():
            raise DataError(
                f"{target / META_FILE}: missing; {target} is not a prepared data folder "
                "(delete it and it will be rebuilt)"
            )
        return target

    train, val, n_train_files, n_val_files = _read_corpus(max_bytes)
    if not train or not val:
        raise DataError(
            f"{_stdlib_root()}: max_bytes={max_bytes} gives {len(train)} train and {len(val)} val bytes; "
            "expected both splits non-empty (use a larger max_bytes)"
        )
    tok = ByteTokenizer()
    return write_prepared(
        target,
        np.frombuffer(train, dtype=np.uint8),
        np.frombuffer(val, dtype=np.uint8),
        vocab_size=tok.vocab_size,
        tokenizer=tok.name,
        sources="python-stdlib",
        extra={
            "python_version": platform.python_version(),
            "max_bytes": max_bytes,
            "train_files": n_train_files,
            "val_files": n_val_files,
            "val_rule": f"zlib.crc32(relative_path) % 100 < {VAL_PERCENT}",
        },
        exist_ok=True,
    )

def _check_budget(max_bytes: Any) -> None:
    if not is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")


def open_data(
    *,
    path: str | Path | None = None,
    max_bytes: int | None = None,
    cache_dir: str | Path | None = None,
) -> TokenData:
    """Open a prepared data folder, or the embedded stdlib corpus when ``path`` is None.

    ``max_bytes`` (None: ``windtunnel.data.corpus.DEFAULT_MAX_BYTES``) and ``cache_dir`` apply only to
    the embedded corpus.

    Example:
        >>> data = open_data(path=None)                       # doctest: +SKIP
        >>> data.meta["sources"]                              # doctest: +SKIP
        'python-stdlib'
    """
    if path is None:
        budget = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        path = embedded_corpus(max_bytes=budget, cache_dir=cache_dir)
    return load_tokens(path)
