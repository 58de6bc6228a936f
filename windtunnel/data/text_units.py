"""Cutting streamed plain text into split units: whole paragraphs, else whole lines, else blocks.

A plain-text file has no records, so its units (what the train/val hash assigns) are cut at its
own boundaries. A unit closes at the first blank line (empty or whitespace only) at or after
`MIN_UNIT` characters: it holds one or more whole paragraphs. Text with no such blank line within
`MAX_UNIT` characters (e.g. one document per line) closes at the first line end after `MIN_UNIT`
instead, and a line longer than `MAX_UNIT` is cut into `MAX_UNIT`-character blocks. So a unit is
`MIN_UNIT`..`MAX_UNIT` characters (plus the blank lines that close it) except at the end of a file.

Why not one paragraph per unit: each unit costs a hash and a few Python objects, and short
paragraphs (source code, chat logs) would make preparation 8x slower; at 4 Ki characters a 1 MB
file still has ~250 units, ~2.5 of them in a 1 % validation split.

The cut keeps every character (the units of a file, concatenated, are the file) and does not
depend on how the text was read: the decision for a unit waits until `MAX_UNIT` characters past
its start are known.

Example:
    >>> cutter = TextUnits()
    >>> [(len(u.text), u.kind) for u in cutter.feed("a" * 5000 + "\\n\\nb\\n", final=True)]
    [(5002, 'paragraphs'), (2, 'paragraphs')]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["MAX_UNIT", "MIN_UNIT", "TextUnit", "TextUnits"]

MIN_UNIT = 1 << 12
"""Characters: a unit closes at the first blank line (else line end) at or after this many."""
MAX_UNIT = 1 << 16
"""Characters: a unit without a blank line within this many closes at a line end, else it is a block."""

_BLANK = re.compile(r"\n(?:[^\S\n]*\n)+")  # a line end followed by one or more blank lines
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class TextUnit:
    text: str
    kind: str  # paragraphs | lines | block: how the unit was closed
    doc_end: bool  # the file (its one document) ends with this unit


class TextUnits:
    """Feed decoded text in order; get the complete units back (the rest is kept for the next feed)."""

    def __init__(self) -> None:
        self._buf = ""
        self._kind = "paragraphs"  # of the last unit: the file's tail gets the same name

    def feed(self, text: str, *, final: bool) -> Iterator[TextUnit]:
        buf = self._buf + text
        # until the end, hold back trailing whitespace: blank lines there may grow into a separator
        limit = len(buf) if final else len(buf.rstrip())
        pos = 0
        while pos < limit:
            if not final and limit - pos <= MAX_UNIT:
                break  # a unit is decided from MAX_UNIT characters of lookahead: wait for them
            end, kind = _unit_end(buf, pos, min(limit, pos + MAX_UNIT))
            if end is None:  # the file's last unit
                end, kind = limit, self._kind
            elif final and _NON_SPACE.search(buf, end, limit) is None:
                end = limit  # only whitespace follows: it closes the file with this unit
            self._kind = kind
            yield TextUnit(buf[pos:end], kind, final and end == limit)
            pos = end
        self._buf = buf[pos:]


def _unit_end(buf: str, pos: int, stop: int) -> tuple[int | None, str]:
    """Where the unit starting at `pos` closes, looking no further than `stop`; None: at `stop` (EOF)."""
    first = _NON_SPACE.search(buf, pos, stop)  # leading blank lines do not count towards MIN_UNIT
    start = max(pos + MIN_UNIT, first.start() + 1 if first else stop)
    blank = _BLANK.search(buf, start, stop)
    if blank is not None:
        return blank.end(), "paragraphs"
    if stop - pos < MAX_UNIT:  # the end of the file is in sight, with no blank line to close at
        return None, "paragraphs"
    newline = buf.find("\n", start - 1, stop)
    if newline == -1:
        newline = buf.rfind("\n", pos, stop)  # a long line ahead: close at the last line end before it
    if newline != -1:
        return newline + 1, "lines"
    return stop, "block"
