"""`prepare`: text sources -> tokenizer -> a prepared data folder (train.bin, val.bin, meta.json).

It streams: pieces of text are tokenized in batches of about `BATCH_CHARS` characters and appended
to the split files, with sha256 and token counts computed on the way, so memory stays flat whatever
the corpus size. The split is by *unit* (a JSON Lines record, a Parquet row, whole paragraphs of
plain text; see `text_units`): a unit goes to val when ``blake2b(unit key) / 2**64 < val_fraction``, so val holds
whole held-out documents, and the split of a document does not depend on which other files were
prepared with it. With two or more units each split gets at least one: when the hash leaves a split
empty (a small corpus), the unit whose hash lies nearest to it is moved there and the data written
again; `meta.json` names it.

Everything is written into a hidden temporary folder beside ``out`` and renamed into place at the
end: an error (bad line, unreadable file, empty corpus) leaves nothing behind.

Example:
    >>> data = prepare(["corpus/"], out="data/web", tokenizer="bpe:8192")   # doctest: +SKIP
    >>> data.meta["vocab_size"], data.meta["train_tokens"] == len(data.train)  # doctest: +SKIP
    (8192, True)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from ..fileio import write_json
from ..run_folder import META_FILE, TRAIN_FILE, VAL_FILE, write_folder
from .sources import Piece, SourceFile, expand_sources, iter_pieces
from .text_units import MAX_UNIT, MIN_UNIT
from .token_folder import TokenData, dtype_for_vocab, load_tokens
from .tokenizers import HFTokenizer, parse_tokenizer, train_bpe

__all__ = ["BATCH_CHARS", "DEFAULT_BPE_SAMPLE_BYTES", "prepare", "split_of", "describe_units"]

BATCH_CHARS = 1 << 22
"""Characters of text tokenized per batch (the BPE encodes a batch on all cores)."""
DEFAULT_BPE_SAMPLE_BYTES = 50_000_000
"""A trained BPE learns its merges from the first this-many bytes of train-split text."""
_ENTROPY_MAX_VOCAB = 1 << 20  # above this a per-chunk bincount costs more than it tells
_ENTROPY_STRIDE = 16  # unigram entropy from every 16th train token (global positions 0, 16, 32, ...)


def split_of(unit: str, val_fraction: float) -> str:
    """``"val"`` when the unit's 64-bit blake2b hash falls below ``val_fraction``, else ``"train"``.

    Example:
        >>> split_of("a.jsonl:1", 0.0), split_of("a.jsonl:1", 1.0)
        ('train', 'val')
    """
    return "val" if _unit_hash(unit) < val_fraction * 2.0**64 else "train"


def _unit_hash(unit: str) -> int:
    return int.from_bytes(hashlib.blake2b(unit.encode("utf-8"), digest_size=8).digest(), "little")


_UNIT_NAMES = {"paragraphs": ("run of whole paragraphs", "runs of whole paragraphs"),
               "lines": ("run of whole lines", "runs of whole lines"), "block": ("text block", "text blocks"),
               "record": ("JSON record", "JSON records"), "row": ("row", "rows")}


def describe_units(kinds: dict[str, int]) -> str:
    """What the units of a prepared corpus were, from their counts by kind.

    Example:
        >>> describe_units({"paragraphs": 250, "lines": 1})
        '250 runs of whole paragraphs, 1 run of whole lines'
    """
    by_count = sorted(kinds.items(), key=lambda kv: -kv[1])
    parts = [f"{n:,} {_UNIT_NAMES.get(kind, (kind, kind))[n != 1]}" for kind, n in by_count]
    return ", ".join(parts) or "no units"


def prepare(sources: list[str], *, out: str | os.PathLike, tokenizer: str = "byte",
            val_fraction: float = 0.01, text_field: str = "text",
            bpe_sample_bytes: int = DEFAULT_BPE_SAMPLE_BYTES, overwrite: bool = False,
            progress: bool = False) -> TokenData:
    """Tokenize ``sources`` into the prepared data folder ``out`` and open it.

    Args:
        sources: text files, folders, globs, ``.jsonl``/``.parquet`` files, or ``hf:NAME[:CONFIG][@SPLIT]``.
        out: the folder to create; it must not exist unless ``overwrite``.
        tokenizer: ``byte``, ``bpe:VOCAB`` (trained here on the train split, saved as tokenizer.json
            beside the data) or the path of an existing ``tokenizer.json`` (copied beside the data).
        val_fraction: expected fraction of units held out for validation, in (0, 1).
        text_field: the JSON field / Parquet column / dataset field holding the text.
        bpe_sample_bytes: how much train text the BPE learns from.
        overwrite: replace an existing ``out`` (only once the new folder is complete).
        progress: show a progress bar on stderr with MB/s and tokens/s.

    Bad input raises :class:`DataError` naming the file; ``out`` is then left as it was.

    Example:
        >>> data = prepare(["notes/*.txt"], out="data/notes", val_fraction=0.05)   # doctest: +SKIP
        >>> data.meta["tokenizer"], data.vocab_size                                # doctest: +SKIP
        ('byte', 256)
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction: expected a number in (0, 1), got {val_fraction!r}")
    if isinstance(bpe_sample_bytes, bool) or not isinstance(bpe_sample_bytes, int) or bpe_sample_bytes < 1:
        raise DataError(f"--bpe-sample-mb: expected a positive size, got {bpe_sample_bytes!r} bytes")
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists; expected a new folder (or pass --force to replace it)")
    files = expand_sources(list(sources))
    tok = parse_tokenizer(tokenizer)
    if isinstance(tok, int):
        tok = _train_bpe_on(files, vocab_size=tok, val_fraction=val_fraction, text_field=text_field,
                            limit=bpe_sample_bytes, progress=progress)
    bar = _bar(sum(f.size for f in files), enabled=progress, desc="prepare")
    try:
        with write_folder(out, replace=overwrite) as tmp:
            _fill(tmp, files, tok, out, sources=sources, val_fraction=val_fraction, text_field=text_field,
                  bpe_sample_bytes=bpe_sample_bytes, bar=bar)
    except FileExistsError:
        raise DataError(f"{out}: appeared while preparing; expected a new folder") from None
    finally:
        bar.close()
    return load_tokens(out)


def _fill(tmp: Path, files: list[SourceFile], tok: Any, out: Path, *, sources: list[str], val_fraction: float,
          text_field: str, bpe_sample_bytes: int, bar) -> None:
    """Write the splits and meta.json into the temporary folder (twice when a split came out empty)."""
    stats = _write_splits(tmp, files, tok, val_fraction=val_fraction, text_field=text_field, bar=bar)
    forced = _forced_unit(stats)
    if forced:  # the hash left a split empty: move the nearest unit there and write again
        bar.reset()  # the same bar again, so the terminal shows one line, not two identical ones
        bar.set_description("prepare (again: one unit moved to fill an empty split)", refresh=False)
        stats = _write_splits(tmp, files, tok, val_fraction=val_fraction, text_field=text_field,
                              bar=bar, forced=forced)
    bar.close()
    _check_splits(stats, files, out, val_fraction)
    meta = _meta(stats, files, tok, tmp, sources=sources, val_fraction=val_fraction,
                 text_field=text_field, bpe_sample_bytes=bpe_sample_bytes)
    write_json(tmp / META_FILE, meta)


class _SplitWriter:
    """Appends token chunks to one split file, hashing and counting as it goes."""

    def __init__(self, path: Path, dtype: str, vocab_size: int):
        self.path, self.dtype, self.vocab_size = path, np.dtype(dtype).newbyteorder("<"), vocab_size
        self.file = open(path, "wb")
        self.sha = hashlib.sha256()
        self.tokens = self.documents = self.units = 0
        self.kinds: Counter[str] = Counter()
        self.counts = np.zeros(vocab_size, np.int64) if vocab_size <= _ENTROPY_MAX_VOCAB else None

    def write(self, arrays: list[np.ndarray]) -> None:
        if not arrays:
            return
        arr = np.concatenate(arrays)
        if arr.size == 0:
            return
        if int(arr.max()) >= self.vocab_size or int(arr.min()) < 0:
            raise DataError(f"{self.path}: tokenizer produced id {int(arr.max())} outside "
                            f"[0, {self.vocab_size}); its vocab_size is wrong")
        data = arr.astype(self.dtype, copy=False).tobytes()
        self.file.write(data)
        self.sha.update(data)
        if self.counts is not None:  # a 1-in-16 sample: a full bincount would halve byte-level speed
            start = -self.tokens % _ENTROPY_STRIDE  # keeps the sample at global multiples of the stride
            self.counts += np.bincount(arr[start::_ENTROPY_STRIDE], minlength=self.vocab_size)
        self.tokens += arr.size

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def entropy(self) -> float | None:
        if self.counts is None or self.counts.sum() == 0:
            return None
        p = self.counts[self.counts > 0] / self.counts.sum()
        return float(-(p * np.log(p)).sum())


def _write_splits(folder: Path, files: list[SourceFile], tok, *, val_fraction: float, text_field: str,
                  bar, forced: dict[str, str] | None = None) -> dict[str, Any]:
    """Write train.bin and val.bin; `forced` maps unit keys to a split that overrides their hash."""
    forced, threshold = forced or {}, val_fraction * 2.0**64
    nearest = {"val": (2**64, None), "train": (-1, None)}  # (hash, unit): lowest and highest hash seen
    dtype = dtype_for_vocab(tok.vocab_size)
    writers = {"train": _SplitWriter(folder / TRAIN_FILE, dtype, tok.vocab_size),
               "val": _SplitWriter(folder / VAL_FILE, dtype, tok.vocab_size)}
    started, chars = time.perf_counter(), 0
    input_bytes = 0
    try:
        batch: list[tuple[Piece, str]] = []
        for src in files:
            for piece in iter_pieces(src, text_field=text_field, on_bytes=bar.update):
                h = _unit_hash(piece.unit)
                nearest["val"] = min(nearest["val"], (h, piece.unit))
                nearest["train"] = max(nearest["train"], (h, piece.unit))
                batch.append((piece, forced.get(piece.unit) or ("val" if h < threshold else "train")))
                chars += len(piece.text)
                if chars >= BATCH_CHARS:
                    input_bytes += _flush(batch, tok, writers)
                    batch, chars = [], 0
                    _postfix(bar, writers, started)
        input_bytes += _flush(batch, tok, writers)
        _postfix(bar, writers, started)
    finally:
        for w in writers.values():
            w.close()
    return {"writers": writers, "input_bytes": input_bytes, "dtype": dtype, "forced": forced,
            "nearest": {split: unit for split, (_, unit) in nearest.items()}}


def _forced_unit(stats: dict) -> dict[str, str]:
    """{unit: split} for the unit to move when the hash left a split without units (and there are >= 2)."""
    writers = stats["writers"]
    if writers["train"].units + writers["val"].units < 2:
        return {}
    return {stats["nearest"][split]: split for split in ("val", "train") if writers[split].units == 0}


def _flush(batch: list[tuple[Piece, str]], tok, writers: dict[str, _SplitWriter]) -> int:
    """Tokenize a batch of pieces and append each to its split; returns the UTF-8 bytes consumed."""
    if not batch:
        return 0
    texts = [p.text for p, _ in batch]
    encoded = tok.encode_batch(texts)
    eos = None if tok.eos_id is None else np.array([tok.eos_id], np.int64)
    chunks: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for (piece, split), ids in zip(batch, encoded):
        chunks[split].append(ids)
        if piece.text:
            writers[split].units += 1
            writers[split].kinds[piece.kind] += 1
        if piece.doc_end:
            writers[split].documents += 1
            if eos is not None:
                chunks[split].append(eos)
    for split, arrays in chunks.items():
        writers[split].write(arrays)
    if tok.name == "byte":  # one token per UTF-8 byte: no need to encode again to count
        return sum(a.size for a in encoded)
    return sum(len(t.encode("utf-8")) for t in texts)


def _check_splits(stats: dict, files: list[SourceFile], out: Path, val_fraction: float) -> None:
    train, val = stats["writers"]["train"], stats["writers"]["val"]
    names = ", ".join(f.path for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    if train.tokens + val.tokens == 0:
        raise DataError(f"{names}: empty corpus; expected some text to tokenize")
    if val.tokens == 0 or train.tokens == 0:  # only left when there is a single unit
        raise DataError(f"{out}: {names} holds a single unit ({describe_units(train.kinds + val.kinds)}), "
                        f"which cannot be split into train and val; expected at least 2 (add data, or "
                        "separate its documents with blank lines or one per line)")


def _meta(stats: dict, files: list[SourceFile], tok, folder: Path, *, sources, val_fraction: float,
          text_field: str, bpe_sample_bytes: int) -> dict[str, Any]:
    from .. import __version__

    w = stats["writers"]
    tok_file = tok.save(folder)
    meta: dict[str, Any] = {
        "tokenizer": tok.name,
        "vocab_size": int(tok.vocab_size),
        "dtype": stats["dtype"],
        "eos_id": tok.eos_id,
        "train_tokens": int(w["train"].tokens),
        "val_tokens": int(w["val"].tokens),
        "sha256": {TRAIN_FILE: w["train"].sha.hexdigest(), VAL_FILE: w["val"].sha.hexdigest()},
        "unigram_entropy_nats": w["train"].entropy(),
        "unigram_entropy_sample": f"every {_ENTROPY_STRIDE}th train token",
        "sources": [s if str(s).startswith("hf:") else os.path.abspath(os.path.expanduser(s)) for s in sources],
        "files": len(files),
        "input_bytes": int(stats["input_bytes"]),
        "documents": {"train": w["train"].documents, "val": w["val"].documents},
        "units": {"train": w["train"].units, "val": w["val"].units},
        "unit": describe_units(w["train"].kinds + w["val"].kinds),
        "unit_kinds": dict(w["train"].kinds + w["val"].kinds),
        "val_fraction": val_fraction,
        "split_rule": "a unit goes to val when blake2b-64(unit key) / 2**64 < val_fraction (at least one unit "
                      "in each split: see split_forced); a unit is a jsonl record, a parquet row, or in plain text "
                      f"whole paragraphs closed at the first blank line after {MIN_UNIT:,} characters (else at a "
                      f"line end; a line over {MAX_UNIT:,} characters is cut into blocks)",
        "split_forced": [{"unit": unit, "split": split} for unit, split in stats["forced"].items()],
        "text_field": text_field,
        "windtunnel_version": __version__,
    }
    if tok_file:
        meta["tokenizer_file"] = tok_file
        meta["tokenizer_sha256"] = hashlib.sha256((folder / tok_file).read_bytes()).hexdigest()
    if tok.name == "bpe":
        meta["bpe_sample_bytes"] = bpe_sample_bytes
    return meta


def _train_bpe_on(files: list[SourceFile], *, vocab_size: int, val_fraction: float, text_field: str,
                  limit: int, progress: bool) -> HFTokenizer:
    seen = {"bytes": 0}

    def sample() -> Iterator[str]:
        bar = _bar(limit, enabled=progress, desc="bpe sample")
        try:
            for src in files:
                for piece in iter_pieces(src, text_field=text_field):
                    if piece.text and split_of(piece.unit, val_fraction) == "train":
                        n = len(piece.text.encode("utf-8"))
                        seen["bytes"] += n
                        bar.update(n)
                        yield piece.text
                        if seen["bytes"] >= limit:
                            return
        finally:
            bar.close()

    tok = train_bpe(sample(), vocab_size=vocab_size)
    if seen["bytes"] == 0:
        names = ", ".join(f.path for f in files[:3])
        raise DataError(f"{names}: empty corpus (no train text to learn a BPE from); expected some text")
    return tok


def _bar(total: int, *, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total or None, disable=not enabled, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1000, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _postfix(bar, writers: dict[str, _SplitWriter], started: float) -> None:
    tokens = sum(w.tokens for w in writers.values())
    rate = tokens / max(time.perf_counter() - started, 1e-9)
    bar.set_postfix_str(f"{bar.format_sizeof(tokens)} tok, {bar.format_sizeof(rate)} tok/s", refresh=False)

