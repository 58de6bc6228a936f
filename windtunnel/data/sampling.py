"""Batches from a 1-D token array: random training windows and fixed evaluation windows.

Training batches are a pure function of ``(seed, step)``, so a resumed run or a repeated sweep
trial sees exactly the same data with no sampler state to save. Evaluation batches use evenly
spaced offsets, no RNG at all.

Example:
    >>> from windtunnel.data.corpus import open_data
    >>> data = open_data(path=None)                       # doctest: +SKIP
    >>> sampler = BatchSampler(data.train, batch_size=8, seq_len=256, seed=0)  # doctest: +SKIP
    >>> x, y = sampler.batch(step=0)                      # doctest: +SKIP
    >>> val = eval_batches(data.val, batch_size=8, seq_len=256, n_batches=4)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..typecheck import is_int

if TYPE_CHECKING:  # torch is imported lazily where tensors are built
    import torch

__all__ = ["BatchSampler", "StreamSampler", "eval_batches"]


def _check_pos_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
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
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.tokens = _check_tokens(tokens, self.seq_len, "train tokens")

    def offsets(self, step: int) -> np.ndarray:
        """Start offsets of the ``batch_size`` windows for ``step``."""
        if not is_int(step) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([self.seed, int(step)])
        return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size, dtype=np.int64)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 tensors of shape ``(batch_size, seq_len)``; ``y`` is ``x`` shifted left by one."""
        return _windows(self.tokens, self.offsets(step), self.seq_len)


class StreamSampler:
    """The training tokens read in order, as back-to-back windows, without replacement.

    Sequence ``j`` of the stream is the window starting at ``(j mod W) * seq_len`` (``W`` windows fit
    the array; after the last one the stream starts over: a second epoch). Micro-batch ``i`` holds
    sequences ``start_sequence + (i - start_micro) * batch_size`` onwards, so rank r of N, reading
    micro-batches r, r + N, ..., gets its own disjoint part of the stream, and all ranks together
    read it once. The position (sequences consumed) is saved in each checkpoint; `resume` continues
    from it, even with a different batch size.

    Example:
        >>> s = StreamSampler(np.arange(1001) % 256, batch_size=2, seq_len=10)   # doctest: +SKIP
        >>> s.offsets(0), s.offsets(1)                                           # doctest: +SKIP
        (array([ 0, 10]), array([20, 30]))
    """

    def __init__(self, tokens: np.ndarray, *, batch_size: int, seq_len: int):
        self.batch_size = _check_pos_int("batch_size", batch_size)
        self.seq_len = _check_pos_int("seq_len", seq_len)
        self.tokens = _check_tokens(tokens, self.seq_len, "train tokens")
        self.windows = (len(self.tokens) - 1) // self.seq_len
        self.start_micro = self.start_sequence = 0

    def resume(self, *, micro: int, sequence: int) -> None:
        """Continue the stream at sequence ``sequence`` from micro-batch ``micro`` on."""
        self.start_micro, self.start_sequence = int(micro), int(sequence)

    def position(self, micro: int) -> int:
        """Sequences of the stream consumed by the micro-batches before ``micro``."""
        return self.start_sequence + (micro - self.start_micro) * self.batch_size

    def epochs(self, micro: int) -> float:
        """How many times the stream has been read by then (1.0: every window once)."""
        return self.position(micro) / self.windows

    def offsets(self, micro: int) -> np.ndarray:
        if not is_int(micro) or micro < self.start_micro:
            raise ValueError(f"micro-batch must be an integer >= {self.start_micro}, got {micro!r}")
        first = self.position(micro)
        return ((first + np.arange(self.batch_size, dtype=np.int64)) % self.windows) * self.seq_len

    def batch(self, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of micro-batch ``micro``, shape ``(batch_size, seq_len)``."""
        return _windows(self.tokens, self.offsets(micro), self.seq_len)


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
