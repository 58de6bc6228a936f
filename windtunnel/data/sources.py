"""Text sources for `windtunnel data prepare`: files, folders, globs, JSON Lines, Parquet, HF datasets.

A source argument expands to `SourceFile`s (or one Hugging Face dataset); reading one yields `Piece`s:
a piece of text, the *unit key* that decides its split (train or val), what kind of unit it is, and
whether a document ends with it. Everything streams: a text file is read `TEXT_BLOCK` bytes at a time
and cut into units as it goes (`text_units`), JSON Lines line by line, Parquet by record batch, so a
corpus larger than memory is fine.

| source | kind | one document | unit of the split |
|---|---|---|---|
| `*.jsonl`, `*.ndjson` (optionally `.gz`) | jsonl | one record's text field | the record |
| `*.parquet` | parquet | one row's text column | the row |
| `hf:NAME[:CONFIG][@SPLIT]` | hf | one row's text field | the row |
| anything else (optionally `.gz`) | text | the whole file | whole paragraphs of >= 4 Ki characters (`text_units`) |

A folder means every non-hidden file below it; a pattern with `*`, `?` or `[` is a glob (`**` recurses).

Example:
    >>> files = expand_sources(["corpus/"])                       # doctest: +SKIP
    >>> next(iter_pieces(files[0], text_field="text")).text[:20]   # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import DataError
from .text_units import TextUnits

__all__ = ["TEXT_BLOCK", "Piece", "SourceFile", "expand_sources", "iter_pieces", "source_kind"]

TEXT_BLOCK = 1 << 16
"""Bytes of a text file read at a time."""

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_PARQUET_ROWS = 1024  # rows per Parquet record batch


@dataclass(frozen=True)
class Piece:
    """Text that goes to one split as a whole."""

    text: str
    unit: str  # stable key hashed to pick the split, e.g. "web/a.jsonl:17" (record 17)
    doc_end: bool  # a document ends here: the end-of-text token (if any) follows
    kind: str  # what the unit is: record | row | paragraphs | lines | block


@dataclass(frozen=True)
class SourceFile:
    """One input: a file with its kind and its key (the path relative to its source argument's root)."""

    path: str  # the file, or `hf:NAME...` for a Hugging Face dataset
    kind: str  # text | jsonl | parquet | hf
    key: str  # path relative to the folder / glob root / parent: moving the corpus keeps the split
    size: int  # bytes on disk (0 when unknown); drives the progress bar


def source_kind(path: str) -> str:
    """The reader a path gets from its name: ``jsonl``, ``parquet``, ``hf`` or ``text``.

    Example:
        >>> source_kind("a/b.jsonl.gz"), source_kind("x.parquet"), source_kind("notes.md")
        ('jsonl', 'parquet', 'text')
    """
    low = path.lower()
    if low.startswith("hf:"):
        return "hf"
    if low.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if low.endswith(".parquet"):
        return "parquet"
    return "text"


def expand_sources(specs: list[str]) -> list[SourceFile]:
    """Expand source arguments (files, folders, globs, ``hf:`` names) into files, in a stable order.

    Folders are walked in sorted order, skipping hidden names; a file reached twice is kept once.
    A path that does not exist, or a glob or folder that matches no file, raises :class:`DataError`.

    Example:
        >>> [f.key for f in expand_sources(["corpus/*.txt"])]   # doctest: +SKIP
        ['a.txt', 'b.txt']
    """
    if not specs:
        raise DataError("data prepare: no SOURCE given; expected files, folders, globs or hf:NAME")
    out: list[SourceFile] = []
    seen: set[str] = set()
    for spec in specs:
        found = _expand_one(str(spec))
        if not found:
            raise DataError(f"{spec}: matches no file; expected a text, .jsonl or .parquet file")
        for path, key in found:
            real = path if path.startswith("hf:") else os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            size = 0 if path.startswith("hf:") else os.path.getsize(path)
            out.append(SourceFile(path=path, kind=source_kind(path), key=key, size=size))
    return out


def _expand_one(spec: str) -> list[tuple[str, str]]:
    if spec.startswith("hf:"):
        return [(spec, spec)]
    if glob.has_magic(spec):
        root = _glob_root(spec)
        paths = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        return [(p, Path(os.path.relpath(p, root)).as_posix()) for p in paths]
    path = Path(spec).expanduser()
    if path.is_dir():
        return [(str(p), p.relative_to(path).as_posix()) for p in _walk(path)]
    if path.is_file():
        return [(str(path), path.name)]
    raise DataError(f"{spec}: no such file or folder")


def _glob_root(pattern: str) -> str:
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return str(Path(*fixed)) if fixed else "."


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / n for n in sorted(filenames) if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def iter_pieces(src: SourceFile, *, text_field: str = "text",
                on_bytes: Callable[[int], None] | None = None) -> Iterator[Piece]:
    """Stream the pieces of one source. ``on_bytes(n)`` reports n more bytes of the file consumed.

    Unreadable files, bad UTF-8, bad JSON, a missing field or column raise :class:`DataError`
    naming the file (and the line or row).

    Example:
        >>> src = expand_sources(["notes.txt"])[0]                      # doctest: +SKIP
        >>> [(p.unit, p.kind) for p in iter_pieces(src)]                # doctest: +SKIP
        [('notes.txt#0', 'paragraphs'), ('notes.txt#1', 'paragraphs')]
    """
    report = on_bytes or (lambda n: None)
    readers = {"text": _text_pieces, "jsonl": _jsonl_pieces, "parquet": _parquet_pieces, "hf": _hf_pieces}
    try:
        yield from readers[src.kind](src, text_field, report)
    except (OSError, EOFError) as e:  # EOFError: a truncated .gz file
        raise DataError(f"{src.path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def _open_raw(path: str):
    """(raw file, readable stream): the raw file's position tracks progress through a .gz file."""
    raw = open(path, "rb")
    if path.lower().endswith(".gz"):
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


def _text_pieces(src: SourceFile, _field: str, report) -> Iterator[Piece]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    units = TextUnits()
    raw, stream = _open_raw(src.path)
    pos = consumed = index = 0
    with raw, stream:
        while True:
            chunk = stream.read(TEXT_BLOCK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise DataError(f"{src.path}: not UTF-8 text (bad byte at offset {pos + e.start}); "
                                "expected a text file (select text files with a glob, e.g. 'dir/**/*.txt')") from None
            pos += len(chunk)
            for unit in units.feed(text, final=not chunk):
                yield Piece(unit.text, f"{src.key}#{index}", doc_end=unit.doc_end, kind=unit.kind)
                index += 1
            report(raw.tell() - consumed)
            consumed = raw.tell()
            if not chunk:
                break


def _jsonl_pieces(src: SourceFile, field: str, report) -> Iterator[Piece]:
    raw, stream = _open_raw(src.path)
    consumed = 0
    with raw, stream:
        for lineno, line in enumerate(stream, 1):
            text = _jsonl_text(src.path, lineno, line, field) if line.strip() else ""
            if text:  # an empty document would add only an end-of-text token
                yield Piece(text, f"{src.key}:{lineno}", doc_end=True, kind="record")
            if lineno % 256 == 0:
                report(raw.tell() - consumed)
                consumed = raw.tell()
        report(raw.tell() - consumed)


def _jsonl_text(path: str, lineno: int, line: bytes, field: str) -> str:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{path}:{lineno}: no {field!r} field (found {keys}); "
                        "expected one JSON object per line (choose the field with --text-field)")
    text = record[field]
    if not isinstance(text, str):
        raise DataError(f"{path}:{lineno}: field {field!r} is {type(text).__name__}; expected a string")
    return text


def _parquet_pieces(src: SourceFile, field: str, report) -> Iterator[Piece]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:  # pyarrow raises ArrowInvalid / ArrowIOError subclasses of Exception
        raise DataError(f"{src.path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise DataError(f"{src.path}: no column {field!r} (columns: {', '.join(names)}); "
                        "choose the text column with --text-field")
    total_rows = max(pf.metadata.num_rows, 1)
    row = reported = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_ROWS, columns=[field]):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise DataError(f"{src.path}: row {row}: column {field!r} is "
                                f"{'null' if text is None else type(text).__name__}; expected a string")
            if text:
                yield Piece(text, f"{src.key}:{row}", doc_end=True, kind="row")
            row += 1
        done = src.size * row // total_rows
        report(done - reported)
        reported = done


def _hf_pieces(src: SourceFile, field: str, report) -> Iterator[Piece]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{src.path}: Hugging Face datasets need the `datasets` package and network access "
                        "(pip install datasets); or export the data to .jsonl/.parquet and prepare that") from None
    name, config, split = _parse_hf(src.path)
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # network, unknown name, missing config: datasets raises many types
        raise DataError(f"{src.path}: cannot load dataset ({' '.join(str(e).split())})") from None
    for row, record in enumerate(rows):
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{src.path}: row {row}: no string field {field!r} "
                            f"(found {sorted(record) if isinstance(record, dict) else record!r})")
        if text:
            yield Piece(text, f"{src.key}:{row}", doc_end=True, kind="row")


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG][@SPLIT]`` -> (name, config, split); split defaults to ``train``."""
    body, _, split = spec[3:].partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise DataError(f"{spec}: expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:wikitext:wikitext-2-raw-v1@train")
    return name, config or None, split or "train"
