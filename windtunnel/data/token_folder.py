"""Prepared token data: the folder format, writing it atomically, and opening it as memmaps.

A *prepared data folder* holds three files:

``meta.json``
    ``{"tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens", "sha256": {...}, ...}``
``train.bin`` / ``val.bin``
    raw little-endian token ids, no header: ``uint8`` when ``vocab_size <= 256``,
    ``uint16`` when ``<= 65536``, else ``uint32``.

Folders are written once (to a temporary folder, then renamed) and then opened read-only with
``np.memmap`` by any number of processes. Where the tokens come from is elsewhere: the embedded
stdlib corpus in :mod:`windtunnel.data.corpus`, user text in :mod:`windtunnel.data.preparation`; batches
are cut from the arrays by :mod:`windtunnel.data.sampling`.

Example:
    >>> data = open_data(path=None)                       # doctest: +SKIP
    >>> data.vocab_size, data.train.dtype                 # doctest: +SKIP
    (256, dtype('uint8'))
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..run_folder import META_FILE, TRAIN_FILE, VAL_FILE, write_folder
from ..typecheck import is_int

__all__ = [
    "DataError",
    "TokenData",
    "dtype_for_vocab",
    "load_tokens",
    "write_prepared",
]

_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> str:
    """The on-disk dtype name for a vocabulary: ``uint8`` (≤ 256), ``uint16`` (≤ 65536), else ``uint32``.

    Example:
        >>> dtype_for_vocab(256), dtype_for_vocab(50257), dtype_for_vocab(100_000)
        ('uint8', 'uint16', 'uint32')
    """
    if not is_int(vocab_size) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if vocab_size <= 1 << 8:
        return "uint8"
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32")


def _entropy_nats(tokens: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(np.asarray(tokens).reshape(-1), minlength=vocab_size).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def _write_bin(path: Path, arr: np.ndarray) -> str:
    data = np.ascontiguousarray(arr).tobytes()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def write_prepared(
    folder: str | Path,
    train: np.ndarray,
    val: np.ndarray,
    *,
    vocab_size: int,
    tokenizer: str,
    sources: str,
    extra: dict[str, Any] | None = None,
    exist_ok: bool = False,
) -> Path:
    """Atomically write a prepared data folder (``train.bin``, ``val.bin``, ``meta.json``).

    Files are written into a temporary folder beside ``folder`` and renamed into place. If
    ``folder`` already exists (e.g. another process won a race), the new copy is discarded and
    ``folder`` is returned when ``exist_ok``; otherwise :class:`DataError` is raised.

    Example:
        >>> import tempfile
        >>> from windtunnel.data.tokenizers import ByteTokenizer
        >>> tok = ByteTokenizer()
        >>> d = write_prepared(Path(tempfile.mkdtemp()) / "tiny", tok.encode("hello world"),
        ...                    tok.encode("hi there"), vocab_size=256, tokenizer="byte", sources="demo")
        >>> load_tokens(d).meta["train_tokens"]
        11
    """
    folder = Path(folder).expanduser()
    dtype_name = dtype_for_vocab(vocab_size)
    dtype = _DTYPES[dtype_name]
    arrays = {}
    for name, arr in ((TRAIN_FILE, train), (VAL_FILE, val)):
        arr = np.asarray(arr).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise DataError(
                f"{folder / name}: token ids must be in [0, {vocab_size}), got range [{arr.min()}, {arr.max()}]"
            )
        arrays[name] = arr.astype(dtype, copy=False)
    if folder.exists():
        if exist_ok:
            return folder
        raise DataError(f"{folder}: already exists; expected a new folder")

    try:
        with write_folder(folder) as tmp:
            _write_folder(tmp, arrays, vocab_size=vocab_size, dtype_name=dtype_name, tokenizer=tokenizer,
                          sources=sources, extra=extra)
    except FileExistsError:
        if exist_ok:  # lost the race: use the winner's folder
            return folder
        raise DataError(f"{folder}: already exists; expected a new folder") from None
    return folder


def _write_folder(tmp: Path, arrays: dict[str, np.ndarray], *, vocab_size: int, dtype_name: str, tokenizer: str,
                  sources: Any, extra: dict[str, Any] | None) -> None:
    """Fill a new prepared folder: the two token files, then meta.json (with their hashes) last."""
    sha = {name: _write_bin(tmp / name, arr) for name, arr in arrays.items()}
    meta: dict[str, Any] = {
        "tokenizer": tokenizer,
        "vocab_size": int(vocab_size),
        "dtype": dtype_name,
        "train_tokens": int(arrays[TRAIN_FILE].size),
        "val_tokens": int(arrays[VAL_FILE].size),
        "sources": sources,
        "sha256": sha,
        "unigram_entropy_nats": _entropy_nats(arrays[TRAIN_FILE], vocab_size),
    }
    meta.update(extra or {})
    with open(tmp / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class TokenData:
    """A prepared data folder opened read-only: ``train`` and ``val`` are 1-D ``np.memmap`` arrays.

    Pickling a ``TokenData`` (e.g. sending it to a Ray worker) sends only the path; the receiver
    re-opens the memmaps instead of copying the tokens.

    Example:
        >>> data = load_tokens("data/web")                   # doctest: +SKIP
        >>> data.vocab_size, data.train.dtype                 # doctest: +SKIP
        (256, dtype('uint8'))
    """

    path: Path
    meta: dict
    train: np.memmap
    val: np.memmap

    @property
    def vocab_size(self) -> int:
        """Vocabulary size from ``meta.json``."""
        return int(self.meta["vocab_size"])

    def __reduce__(self):
        return (load_tokens, (self.path,))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tokens(path: str | Path, *, verify: bool = False) -> TokenData:
    """Open a prepared data folder: check ``meta.json`` and the bin sizes, then memory-map both splits.

    Raises :class:`DataError` naming the file when ``meta.json`` or a bin is missing, unreadable,
    or its size disagrees with the token counts in ``meta.json``. With ``verify=True`` the sha256
    recorded in ``meta.json`` is also checked (reads every byte; off by default so many
    processes can open the data cheaply).

    Example:
        >>> data = load_tokens("data/web")                   # doctest: +SKIP
        >>> len(data.train) == data.meta["train_tokens"]            # doctest: +SKIP
        True
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: not found; expected a folder with {META_FILE}, {TRAIN_FILE}, {VAL_FILE}")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing; expected the prepared data's metadata (JSON)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: unreadable; expected a JSON object ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")

    vocab = meta.get("vocab_size")
    if not is_int(vocab) or vocab < 1:
        raise DataError(f"{meta_path}: vocab_size: expected a positive integer, got {vocab!r}")
    dtype_name = meta.get("dtype")
    if dtype_name not in _DTYPES:
        raise DataError(f"{meta_path}: dtype: expected one of {sorted(_DTYPES)}, got {dtype_name!r}")
    dtype = _DTYPES[dtype_name]
    if vocab > 1 << (8 * dtype.itemsize):
        raise DataError(f"{meta_path}: dtype: {dtype_name} cannot hold vocab_size {vocab}")

    arrays = {}
    for key, name in (("train_tokens", TRAIN_FILE), ("val_tokens", VAL_FILE)):
        n = meta.get(key)
        if not is_int(n) or n < 1:
            raise DataError(f"{meta_path}: {key}: expected a positive integer, got {n!r}")
        bin_path = folder / name
        if not bin_path.is_file():
            raise DataError(f"{bin_path}: missing; expected {n} {dtype_name} tokens")
        size = bin_path.stat().st_size
        if size != n * dtype.itemsize:
            raise DataError(
                f"{bin_path}: size mismatch; expected {n * dtype.itemsize} bytes "
                f"({key}={n} x {dtype.itemsize}-byte {dtype_name} from {META_FILE}), found {size}"
            )
        if verify:
            want = (meta.get("sha256") or {}).get(name)
            if want is not None and _sha256_file(bin_path) != want:
                raise DataError(f"{bin_path}: sha256 mismatch; expected {want} from {META_FILE}")
        try:
            arrays[name] = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))
        except (OSError, ValueError) as e:
            raise DataError(f"{bin_path}: cannot memory-map ({e})") from None
        if verify and vocab < 1 << (8 * dtype.itemsize) and int(arrays[name].max()) >= vocab:
            raise DataError(f"{bin_path}: token id {int(arrays[name].max())} >= vocab_size {vocab}")

    return TokenData(path=folder, meta=meta, train=arrays[TRAIN_FILE], val=arrays[VAL_FILE])
