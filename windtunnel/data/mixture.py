"""A run's token sources: one prepared folder, or a weighted mixture of several, and their batches.

`build_samplers(cfg, decay_start=...)` is the one call the training loop makes. It opens the data named
by `cfg.data` (the embedded corpus, `data.path`, or `data.sources` + `data.mixture`), checks it against
the model (vocabulary, sequence length) and returns:

- a sampler whose `batch(step)` is a pure function of `(seed, step)`: `BatchSampler` for one
  source, `MixtureSampler` for a mixture (each sequence picks its source by weight, then an offset);
- a `ValSet`: fixed held-out batches per source; `evaluate` gives the weighted mean as val_loss
  and keeps each source's loss for the metrics.

Example:
    >>> cfg = load_config("proxies/xs.yaml", overrides=["data.sources={web: data/web, code: data/code}",
    ...                                                 "data.mixture={web: 0.7, code: 0.3}"])  # doctest: +SKIP
    >>> sampler, val_set = build_samplers(cfg, decay_start=make_schedule(cfg).decay_start)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, DataError
from .corpus import open_data
from .sampling import BatchSampler, StreamSampler, eval_batches
from .token_folder import TokenData, load_tokens

if TYPE_CHECKING:
    import torch


__all__ = ["MixtureSampler", "ValSet", "build_samplers", "load_run_sources", "load_run_data"]

SINGLE = "data"  # the name of the only source of a run without a mixture


class MixtureSampler:
    """Training windows drawn from several token arrays by weight; ``batch(step)`` is pure in (seed, step).

    For each of the ``batch_size`` sequences, ``np.random.default_rng([seed, step])`` picks a source
    with probability equal to its normalised weight, then a uniform offset inside that source.
    From ``decay_start`` on (a step count in sampler steps, i.e. micro-batches) ``decay_weights``
    are used instead, so a WSD decay phase can train on a different mix.

    Example:
        >>> s = MixtureSampler({"a": np.zeros(500, np.uint8), "b": np.ones(500, np.uint8)},
        ...                    weights={"a": 0.25, "b": 0.75}, batch_size=4, seq_len=8, seed=0)
        >>> x, y = s.batch(0)                                    # doctest: +SKIP
        >>> tuple(x.shape)                                       # doctest: +SKIP
        (4, 8)
    """

    def __init__(self, sources: Mapping[str, np.ndarray], *, weights: Mapping[str, float], batch_size: int,
                 seq_len: int, seed: int, decay_weights: Mapping[str, float] | None = None,
                 decay_start: int | None = None):
        self.names = list(sources)
        self.tokens = [sources[n] for n in self.names]
        self.batch_size, self.seq_len, self.seed = int(batch_size), int(seq_len), int(seed)
        if (decay_weights is None) != (decay_start is None):
            raise ValueError("decay_weights and decay_start go together")
        self.weights = self._normalise(weights)
        self.decay_weights = None if decay_weights is None else self._normalise(decay_weights)
        self.decay_start = decay_start
        if self.batch_size < 1 or self.seq_len < 1 or self.seed < 0:
            raise ValueError(f"batch_size and seq_len must be >= 1 and seed >= 0, got "
                             f"{batch_size}, {seq_len}, {seed}")
        used = self.weights + (0 if self.decay_weights is None else self.decay_weights)
        for name, tokens, w in zip(self.names, self.tokens, used):
            if w > 0:  # BatchSampler's checks: 1-D, at least seq_len + 1 tokens
                BatchSampler(tokens, batch_size=1, seq_len=self.seq_len, seed=0)

    def _normalise(self, weights: Mapping[str, float]) -> np.ndarray:
        if set(weights) != set(self.names):
            raise ValueError(f"weights name {sorted(weights)}, sources are {sorted(self.names)}")
        w = np.array([float(weights[n]) for n in self.names])
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {dict(weights)}")
        return w / w.sum()

    def weights_at(self, step: int) -> np.ndarray:
        """The normalised weights in force at sampler step ``step`` (in source order)."""
        if self.decay_start is not None and step >= self.decay_start:
            return self.decay_weights
        return self.weights

    def choose(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source index, start offset)`` of each sequence of ``step``."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([self.seed, int(step)])
        which = rng.choice(len(self.names), size=self.batch_size, p=self.weights_at(step))
        highs = np.array([len(t) - self.seq_len for t in self.tokens], dtype=np.int64)[which]
        return which, rng.integers(0, np.maximum(highs, 1), dtype=np.int64)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` int64 tensors of shape ``(batch_size, seq_len)``; ``y`` is ``x`` shifted left by one."""
        import torch

        which, offsets = self.choose(step)
        buf = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        for i, (src, off) in enumerate(zip(which, offsets)):
            buf[i] = self.tokens[src][off : off + self.seq_len + 1]
        t = torch.from_numpy(buf)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class ValSet:
    """Fixed held-out batches per source; val_loss is their losses' weighted mean.

    Example:
        >>> vs = ValSet({"web": [], "code": []}, weights={"web": 0.5, "code": 0.5})
        >>> vs.evaluate(lambda batches: 2.0), vs.row()
        (2.0, {'val_loss.web': 2.0, 'val_loss.code': 2.0})
    """

    def __init__(self, batches: Mapping[str, list], *, weights: Mapping[str, float]):
        self.batches = dict(batches)
        total = sum(weights.values())
        self.weights = {name: weights[name] / total for name in self.batches}
        self.last: dict[str, float] = {}

    @property
    def columns(self) -> list[str]:
        """Extra metrics.csv columns: one per source for a mixture, none for a single source."""
        return [f"val_loss.{name}" for name in self.batches] if len(self.batches) > 1 else []

    def evaluate(self, loss_of: Callable[[list], float]) -> float:
        """Call ``loss_of(batches)`` per source; return the weighted mean (sources of weight 0 are still
        measured and reported, but do not count)."""
        self.last = {name: float(loss_of(b)) for name, b in self.batches.items()}
        return sum(self.weights[name] * loss for name, loss in self.last.items() if self.weights[name] > 0)

    def row(self) -> dict[str, float]:
        """The last evaluation's per-source losses under their metrics.csv column names."""
        return {f"val_loss.{name}": loss for name, loss in self.last.items()} if self.columns else {}

    def summary(self) -> dict:
        """What summary.json gains for a mixture: per-source val losses and the val weights."""
        if not self.columns:
            return {}
        return {"val_loss_by_source": dict(self.last), "val_weights": dict(self.weights)}


def load_run_sources(cfg: RunConfig) -> dict[str, TokenData]:
    """Open every source of ``cfg.data`` and check it fits the model; a bad one is a ConfigError.

    Returns ``{"data": ...}`` for the embedded corpus or ``data.path``, else one entry per
    ``data.sources`` name. Checks: the folder exists and is prepared data, all sources share one
    tokenizer, its vocabulary fits ``model.vocab_size``, and each split holds more than
    ``train.seq_len`` tokens.

    Example:
        >>> load_run_sources(load_config("proxies/xs.yaml"))["data"].vocab_size   # doctest: +SKIP
        256
    """
    d = cfg.data
    if d.sources is None:
        try:
            out = {SINGLE: open_data(path=d.path, max_bytes=d.embedded_bytes)}
        except DataError as e:
            raise ConfigError(cfg.source, "data.path" if d.path else "data.embedded_bytes", str(e)) from None
        keys = {SINGLE: "data.path"}
    else:
        out, keys = {}, {}
        for name, path in d.sources.items():
            keys[name] = f"data.sources.{name}"
            if not Path(path).is_dir():
                raise ConfigError(cfg.source, keys[name], f"no prepared data folder at {path}; make one with "
                                  f"`windtunnel data prepare SOURCE... --out {path}`")
            try:
                out[name] = load_tokens(path)
            except DataError as e:
                raise ConfigError(cfg.source, keys[name], str(e)) from None
    _check_sources(cfg, out, keys)
    return out


def load_run_data(cfg: RunConfig) -> TokenData:
    """Open the run's token data (one source, not a mixture) and check it fits the model.

    Example:
        >>> load_run_data(load_config("proxies/xs.yaml")).vocab_size   # doctest: +SKIP
        256
    """
    if cfg.data.sources is not None:
        raise ConfigError(cfg.source, "data.sources", "a mixture has several sources; use "
                          "windtunnel.data.mixture.load_run_sources")
    return load_run_sources(cfg)[SINGLE]


def _tokenizer_id(data: TokenData) -> tuple:
    m = data.meta
    return (m.get("tokenizer"), m.get("vocab_size"), m.get("tokenizer_sha256"))


def _check_sources(cfg: RunConfig, sources: dict[str, TokenData], keys: dict[str, str]) -> None:
    first = next(iter(sources))
    for name, data in sources.items():
        if _tokenizer_id(data) != _tokenizer_id(sources[first]):
            raise ConfigError(cfg.source, keys[name], f"{data.path} was tokenized with {data.meta.get('tokenizer')}"
                              f" (vocab {data.vocab_size}), {sources[first].path} ({keys[first]}) with "
                              f"{sources[first].meta.get('tokenizer')} (vocab {sources[first].vocab_size}); "
                              "every source of a mixture needs the same tokenizer")
        if data.vocab_size > cfg.model.vocab_size:
            raise ConfigError(cfg.source, "model.vocab_size", f"must be >= the vocabulary of {data.path} "
                              f"({keys[name]}: {data.vocab_size}, tokenizer {data.meta.get('tokenizer')}), "
                              f"got {cfg.model.vocab_size}")
        for split in ("train", "val"):
            n = len(getattr(data, split))
            if n <= cfg.train.seq_len + 1:
                raise ConfigError(cfg.source, "train.seq_len", f"{split} split of {data.path} ({keys[name]}) "
                                  f"has only {n} tokens, fewer than seq_len + 1 = {cfg.train.seq_len + 1}")


def build_samplers(cfg: RunConfig, *, decay_start: int | None = None
                   ) -> tuple[BatchSampler | StreamSampler | MixtureSampler, ValSet]:
    """The run's training sampler and validation set (see the module docstring).

    ``decay_start`` (the schedule's first decay step, in optimizer steps) is needed when
    ``data.mixture_decay`` is set: from there (times ``train.grad_accum`` micro-batches) the decay
    mixture takes over. A step number, not the schedule: data does not depend on training.

    Example:
        >>> sampler, val_set = build_samplers(load_config("proxies/xs.yaml"))   # doctest: +SKIP
        >>> x, y = sampler.batch(0)                                             # doctest: +SKIP
    """
    t, d = cfg.train, cfg.data
    sources = load_run_sources(cfg)
    val = {name: eval_batches(data.val, batch_size=t.batch_size, seq_len=t.seq_len, n_batches=t.eval_batches)
           for name, data in sources.items()}
    if d.sources is None:
        if d.sampling == "sequential":
            sampler = StreamSampler(sources[SINGLE].train, batch_size=t.batch_size, seq_len=t.seq_len)
        else:
            sampler = BatchSampler(sources[SINGLE].train, batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed)
        return sampler, ValSet(val, weights={SINGLE: 1.0})
    start = decay_weights = None
    if d.mixture_decay is not None:
        if decay_start is None:
            raise ValueError("build_samplers: data.mixture_decay needs the schedule's decay_start (decay_start=...)")
        start, decay_weights = decay_start * t.grad_accum, d.weights("mixture_decay")
    sampler = MixtureSampler({name: data.train for name, data in sources.items()}, weights=d.weights(),
                             batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed,
                             decay_weights=decay_weights, decay_start=start)
    return sampler, ValSet(val, weights=d.weights("val_mixture"))
