"""Token data: the embedded default corpus, the byte tokenizer, memory-mapped token arrays and batches.

A *prepared data folder* holds three files:

``meta.json``
    ``{"tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens", "sha256": {...}, ...}``
``train.bin`` / ``val.bin``
    raw little-endian token ids, no header: ``uint8`` when ``vocab_size <= 256``,
    ``uint16`` when ``<= 65536``, else ``uint32``.

The default corpus needs no network and no user files: it is the Python standard library's own
``.py`` sources (byte-level, vocab 256), prepared once into ``$WINDTUNNEL_CACHE`` (default
``~/.cache/windtunnel``) and then opened read-only with ``np.memmap`` by any number of processes.

Batches are a pure function of ``(seed, step)``, so a resumed run or a repeated sweep trial sees
exactly the same data.

Example:
    >>> data = open_data(path=None)                       # doctest: +SKIP
    >>> sampler = BatchSampler(data.train, batch_size=8, seq_len=256, seed=0)  # doctest: +SKIP
    >>> x, y = sampler.batch(step=0)                      # doctest: +SKIP
    >>> val = eval_batches(data.val, batch_size=8, seq_len=256, n_batches=4)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from windtunnel.errors import WindtunnelError

if TYPE_CHECKING:  # torch is imported lazily where tensors are built
    import torch

__all__ = [
    "DEFAULT_MAX_BYTES",
    "VAL_PERCENT",
    "BatchSampler",
    "ByteTokenizer",
    "CorpusFile",
    "DataError",
    "TokenData",
    "cache_root",
    "corpus_files",
    "dtype_for_vocab",
    "embedded_corpus",
    "eval_batches",
    "load_tokens",
    "open_data",
    "write_prepared",
]

DEFAULT_MAX_BYTES = 8_000_000
"""Default byte budget of the embedded corpus (train + val)."""

VAL_PERCENT = 5
"""A corpus file goes to validation when ``zlib.crc32(relative_path) % 100 < VAL_PERCENT``."""

META_FILE, TRAIN_FILE, VAL_FILE = "meta.json", "train.bin", "val.bin"

_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
)
_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


class DataError(WindtunnelError, ValueError):
    """Token data is missing, corrupt or unusable. The message names the file and what was expected.

    Example:
        >>> str(DataError("/data/train.bin: expected 100 bytes, found 40"))
        '/data/train.bin: expected 100 bytes, found 40'
    """


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class ByteTokenizer:
    """Byte-level tokenizer: vocab 256, token id = byte value (UTF-8 for text).

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hi").tolist()
        [104, 105]
        >>> tok.decode([104, 105])
        'hi'
    """

    name = "byte"
    vocab_size = 256

    def encode(self, text: str | bytes) -> np.ndarray:
        """Encode text (as UTF-8) or raw bytes to a ``uint8`` array of token ids."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).copy()

    def decode(self, ids: Any) -> str:
        """Decode token ids (list, array or tensor) back to text; invalid UTF-8 becomes U+FFFD."""
        if hasattr(ids, "detach"):  # torch tensor
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"byte token ids must be in [0, 255], got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def dtype_for_vocab(vocab_size: int) -> str:
    """The on-disk dtype name for a vocabulary: ``uint8`` (≤ 256), ``uint16`` (≤ 65536), else ``uint32``.

    Example:
        >>> dtype_for_vocab(256), dtype_for_vocab(50257), dtype_for_vocab(100_000)
        ('uint8', 'uint16', 'uint32')
    """
    if not _is_int(vocab_size) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if vocab_size <= 1 << 8:
        return "uint8"
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32")


# --------------------------------------------------------------------------------------------
# Embedded corpus
# --------------------------------------------------------------------------------------------


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
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / f"embedded-py{sys.version_info.major}{sys.version_info.minor}-{max_bytes}"
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


# --------------------------------------------------------------------------------------------
# Writing and loading prepared folders
# --------------------------------------------------------------------------------------------


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

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
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
        try:
            os.rename(tmp, folder)
        except OSError:
            if folder.exists() and exist_ok:  # lost the race: use the winner's folder
                return folder
            raise DataError(f"{folder}: could not move the prepared data into place") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class TokenData:
    """A prepared data folder opened read-only: ``train`` and ``val`` are 1-D ``np.memmap`` arrays.

    Pickling a ``TokenData`` (e.g. sending it to a Ray worker) sends only the path; the receiver
    re-opens the memmaps instead of copying the tokens.

    Example:
        >>> data = load_tokens(embedded_corpus())             # doctest: +SKIP
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


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_budget(max_bytes: Any) -> None:
    if not _is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")


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
        >>> data = load_tokens(embedded_corpus(max_bytes=300_000))  # doctest: +SKIP
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
    if not _is_int(vocab) or vocab < 1:
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
        if not _is_int(n) or n < 1:
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


def open_data(
    *,
    path: str | Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    cache_dir: str | Path | None = None,
) -> TokenData:
    """Open a prepared data folder, or the embedded stdlib corpus when ``path`` is None.

    ``max_bytes`` and ``cache_dir`` apply only to the embedded corpus.

    Example:
        >>> data = open_data(path=None)                       # doctest: +SKIP
        >>> data.meta["sources"]                              # doctest: +SKIP
        'python-stdlib'
    """
    if path is None:
        path = embedded_corpus(max_bytes=max_bytes, cache_dir=cache_dir)
    return load_tokens(path)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def _check_pos_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_tokens(tokens: Any, seq_len: int, what: str) -> np.ndarray:
    if not isinstance(tokens, np.ndarray):
        tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise DataError(f"{what}: expected a 1-D token array, got shape {tokens.shape}")
    if tokens.shape[0] < seq_len + 1:
        raise DataError(
            f"{_describe(tokens, what)}: has {tokens.shape[0]} tokens; expected at least seq_len+1 = {seq_len + 1}"
        )
    return tokens


def _describe(tokens: np.ndarray, what: str) -> str:
    filename = getattr(tokens, "filename", None)
    return str(filename) if filename else what


def _windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    buf = np.empty((len(offsets), seq_len + 1), dtype=np.int64)
    for i, off in enumerate(offsets):
        buf[i] = tokens[off : off + seq_len + 1]
    t = torch.from_numpy(buf)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class BatchSampler:
    """Random training windows where ``batch(step)`` is a pure function of ``(seed, step)``.

    Offsets come from ``np.random.default_rng([seed, step])``, so resuming at any step, or rerunning
    a sweep trial, reproduces the same batches with no sampler state to save.

    Example:
        >>> s = BatchSampler(np.arange(1000) % 256, batch_size=4, seq_len=16, seed=0)  # doctest: +SKIP
        >>> x, y = s.batch(0)                                 # doctest: +SKIP
        >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())      # doctest: +SKIP
        (torch.Size([4, 16]), True)
    """

    def __init__(self, tokens: np.ndarray, *, batch_size: int, seq_len: int, seed: int):
        self.batch_size = _check_pos_int("batch_size", batch_size)
        self.seq_len = _check_pos_int("seq_len", seq_len)
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.tokens = _check_tokens(tokens, self.seq_len, "train tokens")

    def offsets(self, step: int) -> np.ndarray:
        """Start offsets of the ``batch_size`` windows for ``step``."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([self.seed, int(step)])
        return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size, dtype=np.int64)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 tensors of shape ``(batch_size, seq_len)``; ``y`` is ``x`` shifted left by one."""
        return _windows(self.tokens, self.offsets(step), self.seq_len)


def eval_batches(
    tokens: np.ndarray, *, batch_size: int, seq_len: int, n_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed evaluation batches: ``n_batches * batch_size`` windows at evenly spaced offsets (no RNG).

    The first window starts at 0 and the last ends at the array's end. Raises :class:`DataError`
    when the array is shorter than ``seq_len + 1``.

    Example:
        >>> batches = eval_batches(np.arange(1000) % 256, batch_size=2, seq_len=8, n_batches=3)  # doctest: +SKIP
        >>> len(batches), batches[0][0].shape                 # doctest: +SKIP
        (3, torch.Size([2, 8]))
    """
    batch_size = _check_pos_int("batch_size", batch_size)
    seq_len = _check_pos_int("seq_len", seq_len)
    n_batches = _check_pos_int("n_batches", n_batches)
    tokens = _check_tokens(tokens, seq_len, "val tokens")
    k = n_batches * batch_size
    last = len(tokens) - seq_len - 1
    offsets = (np.arange(k, dtype=np.int64) * last) // max(k - 1, 1)
    return [
        _windows(tokens, offsets[i * batch_size : (i + 1) * batch_size], seq_len) for i in range(n_batches)
    ]
