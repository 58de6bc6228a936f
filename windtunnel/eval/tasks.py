"""Multiple-choice questions: read from JSON Lines, Parquet or `hf:cais/mmlu`, every record checked.

A record has `question` (text), `choices` (a list of at least two texts), `answer` (the index of
the right choice, or its letter "A", "B", ...), and optionally `subject` (text; MMLU has 57),
`delimiter` (what joins the question and a choice's text when choices are scored by their text;
default one space) and `scoring` (`letter` or `text`: how the set is meant to be scored; windtunnel's
own tasks say `text`). A bad record stops the read with one line naming the file, the record and what
was expected.

Example:
    >>> qs = load_tasks("tasks.jsonl")                          # doctest: +SKIP
    >>> qs[0].choices[qs[0].answer]                             # doctest: +SKIP
    ')'
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import WindtunnelError
from ..fileio import write_text

__all__ = ["LETTERS", "SCORINGS", "Question", "TaskError", "check_record", "load_tasks", "scoring_of", "write_tasks"]

LETTERS = string.ascii_uppercase
HF_PREFIX = "hf:"
SCORINGS = ("letter", "text")


class TaskError(WindtunnelError, ValueError):
    """A tasks file or record is unusable; the message names the file, the record and what was expected."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; `answer` indexes `choices`."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None
    delimiter: str = " "
    scoring: str | None = None
    """How the question is meant to be scored (`letter` or `text`); None: the file does not say."""

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["choices"] = list(self.choices)
        if record["scoring"] is None:
            del record["scoring"]
        return record


def check_record(record: Any, *, where: str) -> Question:
    """A record as a `Question`, or a `TaskError` naming `where` (file and record) and the rule.

    Example:
        >>> check_record({"question": "1+1=", "choices": ["2", "3"], "answer": "A"}, where="t.jsonl: record 1").answer
        0
    """
    if not isinstance(record, dict):
        raise TaskError(f"{where}: expected an object with question, choices, answer; got {type(record).__name__}")
    for key in ("question", "choices", "answer"):
        if key not in record or record[key] is None:
            raise TaskError(f"{where}: {key}: missing; expected question (text), choices (list), answer (index)")
    question, choices = record["question"], record["choices"]
    if not isinstance(question, str):
        raise TaskError(f"{where}: question: expected text, got {type(question).__name__}")
    if hasattr(choices, "tolist"):  # a numpy array from Parquet
        choices = choices.tolist()
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise TaskError(f"{where}: choices: expected a list of texts, got {choices!r:.80}")
    if len(choices) < 2:
        raise TaskError(f"{where}: choices: expected at least 2 choices, got {len(choices)}")
    if len(choices) > len(LETTERS):
        raise TaskError(f"{where}: choices: expected at most {len(LETTERS)} choices, got {len(choices)}")
    answer = _answer_index(record["answer"], len(choices), where)
    subject = record.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise TaskError(f"{where}: subject: expected text, got {type(subject).__name__}")
    delimiter = record.get("delimiter", " ")
    if not isinstance(delimiter, str):
        raise TaskError(f"{where}: delimiter: expected text, got {type(delimiter).__name__}")
    scoring = record.get("scoring")
    if scoring is not None and scoring not in SCORINGS:
        raise TaskError(f"{where}: scoring: expected letter or text, got {scoring!r}")
    return Question(question=question, choices=tuple(choices), answer=answer, subject=subject or None,
                    delimiter=delimiter, scoring=scoring)


def _answer_index(answer: Any, n: int, where: str) -> int:
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    elif hasattr(answer, "item") and not isinstance(answer, str):  # numpy scalar
        index = answer.item()
    else:
        index = answer
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise TaskError(f"{where}: answer: expected an index in [0, {n}) or a letter A-{LETTERS[n - 1]} "
                        f"for {n} choices, got {answer!r}")
    return index


def load_tasks(source: str | os.PathLike, *, limit: int | None = None, split: str = "test") -> list[Question]:
    """Questions from a `.jsonl` file, a `.parquet` file, or `hf:NAME[:CONFIG]` (`datasets`, local cache).

    `limit`: keep the first `limit` questions. `split`: the Hugging Face split (MMLU: test, dev...).

    Example:
        >>> len(load_tasks("tasks.jsonl", limit=10))           # doctest: +SKIP
        10
    """
    text = str(source)
    if text.startswith(HF_PREFIX):
        records, name = _read_hf(text[len(HF_PREFIX):], split), text
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise TaskError(f"{path}: no such tasks file; expected JSON Lines (.jsonl) or Parquet (.parquet)")
        records = _read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path)
        name = str(path)
    questions = []
    for where, record in records:
        questions.append(check_record(record, where=f"{name}: {where}"))
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise TaskError(f"{name}: no questions; expected at least one record")
    return questions


def scoring_of(questions: Sequence[Question], *, source: str = "tasks") -> tuple[str, str]:
    """(scoring, why): the scoring the questions ask for, else `letter` (the MMLU convention).

    Example:
        >>> scoring_of(load_tasks("tasks.jsonl"))                         # doctest: +SKIP
        ('text', 'as the tasks file says')
    """
    said = {q.scoring for q in questions if q.scoring is not None}
    if len(said) > 1:
        raise TaskError(f"{source}: scoring: the records disagree ({', '.join(sorted(said))}); pass --scoring")
    if said:
        return said.pop(), "as the tasks file says"
    return "letter", ("the MMLU convention; the tasks file does not say (--scoring text scores each choice's "
                      "own text)")


def write_tasks(questions: Iterable[Question], path: str | os.PathLike) -> Path:
    """Write questions as JSON Lines, atomically."""
    return write_text(path, "".join(json.dumps(q.to_record(), ensure_ascii=False) + "\n" for q in questions))


def _read_jsonl(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: unreadable ({e}); expected UTF-8 JSON Lines") from None
    n = 0
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        n += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: record {n} (line {line_no}): not valid JSON ({e.msg})") from None
        yield f"record {n} (line {line_no})", record


def _read_parquet(path: Path) -> Iterable[tuple[str, Any]]:
    import pandas as pd
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise TaskError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())[:200]})") from None
    for i, record in enumerate(frame.to_dict(orient="records"), 1):
        yield f"record {i}", record


def _read_hf(spec: str, split: str) -> Iterable[tuple[str, Any]]:
    name, _, config = spec.partition(":")
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # the cache only: evaluation never downloads
    try:
        import datasets
    except ImportError:
        raise TaskError(f"hf:{spec}: needs the datasets package (pip install datasets) and the data in "
                        "its local cache") from None
    config = config or ("all" if name == "cais/mmlu" else None)
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a missing cache entry
        raise TaskError(f"hf:{spec}: not in the local Hugging Face cache (split {split}): "
                        f"{' '.join(str(e).split())[:200]}") from None
    for i, record in enumerate(data, 1):
        yield f"record {i}", record
