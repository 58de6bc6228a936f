"""windtunnel's own multiple-choice set: Python-syntax completions cut from the embedded corpus's held-out files.

Each question is a snippet of real Python source (from the validation split of the embedded corpus:
standard-library files a proxy never trains on) that stops just before a token; the choices are
candidates for that token and the answer is the one the file has. Three subjects:

- `bracket`: which of `)`, `]`, `}` comes next, where the next character closes a bracket opened
  inside the snippet (so bracket matching alone decides it);
- `quote`: which of `'`, `"` closes the one-line string literal the snippet ends inside;
- `keyword`: which of four keywords comes next (`for x ` -> `in`, `from os ` -> `import`, ...).

Nothing is downloaded: the questions are a pure function of the Python installation's standard
library, the byte budget and the seed. Choices are joined to the snippet with no delimiter, so
text scoring (`scoring="text"`) asks exactly "how likely is this continuation of the code".

Example:
    >>> qs = make_syntax_tasks(n=30, seed=0, max_bytes=400_000)     # doctest: +SKIP
    >>> sorted({q.subject for q in qs})                             # doctest: +SKIP
    ['bracket', 'keyword', 'quote']
"""

from __future__ import annotations

import re

import numpy as np

from .tasks import Question

__all__ = ["KEYWORDS", "SUBJECTS", "make_syntax_tasks"]

SUBJECTS = ("bracket", "quote", "keyword")
KEYWORDS = ("in", "import", "return", "not", "None", "self", "else", "def")
_OPEN, _CLOSE = "([{", ")]}"
_QUOTE = re.compile(r"""(['"])[^'"\\\n]{1,40}\1""")
_KEYWORD = re.compile(r"(?<=[ \t\n(])(" + "|".join(KEYWORDS) + r")(?=[\s:(.,)])")


def make_syntax_tasks(*, n: int = 600, seed: int = 0, context_chars: int = 96,
                      max_bytes: int | None = None) -> list[Question]:
    """`n` questions (as even a split over the subjects as the source allows), deterministic in `seed`.

    `context_chars`: the snippet's length at most (it starts at a line boundary where one is near);
    keep it below the model's max_seq_len (byte-level: one token per character) with room for the
    choices. `max_bytes`: the embedded corpus's budget (None: its default).

    Example:
        >>> q = make_syntax_tasks(n=3, max_bytes=400_000)[0]       # doctest: +SKIP
        >>> q.choices[q.answer] in q.choices                        # doctest: +SKIP
        True
    """
    from ..data.corpus import open_data

    if n < 1 or context_chars < 8:
        raise ValueError(f"need n >= 1 and context_chars >= 8, got n={n}, context_chars={context_chars}")
    text = bytes(np.asarray(open_data(path=None, max_bytes=max_bytes).val)).decode("utf-8", errors="replace")
    rng = np.random.default_rng(seed)
    finders = {"bracket": _bracket_sites, "quote": _quote_sites, "keyword": _keyword_sites}
    questions: list[Question] = []
    for i, subject in enumerate(SUBJECTS):
        want = n // len(SUBJECTS) + (1 if i < n % len(SUBJECTS) else 0)
        sites = [s for s in finders[subject](text, context_chars) if s[0].isascii()]
        for k in sorted(rng.choice(len(sites), size=min(want, len(sites)), replace=False)):
            context, answer = sites[k]
            questions.append(_question(subject, context, answer, rng))
    return questions


def _question(subject: str, context: str, answer: str, rng: np.random.Generator) -> Question:
    if subject == "bracket":
        choices = list(_CLOSE)
    elif subject == "quote":
        choices = ["'", '"']
    else:
        others = [k for k in KEYWORDS if k != answer]
        choices = [answer, *rng.choice(others, size=3, replace=False).tolist()]
    order = rng.permutation(len(choices))
    choices = [choices[j] for j in order]
    return Question(question=context, choices=tuple(choices), answer=choices.index(answer), subject=subject,
                    delimiter="", scoring="text")  # the choices are code, not an MMLU-style listed prompt


def _snippet(text: str, end: int, context_chars: int) -> str:
    """The `context_chars` characters before `end`, from the first line start in their first half."""
    start = max(0, end - context_chars)
    newline = text.find("\n", start, start + context_chars // 2)
    return text[newline + 1 if newline >= 0 else start:end]


def _bracket_sites(text: str, context_chars: int) -> list[tuple[str, str]]:
    sites = []
    for i, ch in enumerate(text):
        if ch in _CLOSE and i >= context_chars:
            context = _snippet(text, i, context_chars)
            if _innermost_open(context) == _OPEN[_CLOSE.index(ch)]:
                sites.append((context, ch))
    return sites


def _innermost_open(context: str) -> str | None:
    stack = []
    for ch in context:
        if ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE and stack:
            stack.pop()
    return stack[-1] if stack else None


def _quote_sites(text: str, context_chars: int) -> list[tuple[str, str]]:
    sites = []
    for m in _QUOTE.finditer(text):
        close = m.end() - 1
        if close >= context_chars:
            sites.append((_snippet(text, close, context_chars), m.group(1)))
    return sites


def _keyword_sites(text: str, context_chars: int) -> list[tuple[str, str]]:
    return [(_snippet(text, m.start(), context_chars), m.group(1))
            for m in _KEYWORD.finditer(text) if m.start() >= context_chars]
