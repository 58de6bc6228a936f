"""Multiple-choice calibration (Xmodel-2's Figure 4): accuracy, ECE, MCE, Brier, reliability diagram.

Each choice gets a score from the model's log-likelihood of a continuation of the prompt, and the
scores are normalised over the question's choices (softmax) into probabilities:

- `letter` (default, MMLU-style): the prompt lists the choices as "A. ...", "B. ..." and ends with
  "Answer:"; the continuation is " A", " B", ... (summed log-probability of its tokens);
- `text`: the prompt is the question alone; the continuation is the record's delimiter (default " ")
  followed by the choice's text, scored by its mean log-probability per token (length-normalised).

`shots` solved examples go before each question: the first K other questions of the same subject
in the file, in file order. A prompt longer than the model's context loses its oldest tokens (the
count is reported). Metrics and their conventions are in `windtunnel.eval.metrics`.

Example:
    >>> r = calibration("runs/xs", tasks="tasks.jsonl", scoring="text")     # doctest: +SKIP
    >>> round(r["overall"]["ece"], 3), r["overall"]["bins"]                  # doctest: +SKIP
    (0.041, 15)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import WindtunnelError
from ..run_folder import CALIBRATION_JSON, CALIBRATION_QUESTIONS_CSV
from .loading import EvalModel, load_model
from .metrics import DEFAULT_BINS, calibration_summary, predictions
from .report import write_csv, write_json
from .tasks import LETTERS, SCORINGS, Question, load_tasks, scoring_of

__all__ = ["QUESTION_FIELDS", "calibration", "choice_probabilities", "prompt_and_continuations"]

Scoring = Literal["letter", "text"]
QUESTION_FIELDS = ["index", "subject", "answer", "predicted", "confidence", "correct", "n_choices"]


def calibration(model: str | os.PathLike | EvalModel, *, tasks: str | os.PathLike | Sequence[Question],
                shots: int = 0, scoring: Scoring | None = None, bins: int = DEFAULT_BINS, limit: int | None = None,
                batch_size: int = 32, out_dir: str | os.PathLike | None = None, progress: bool = False,
                device: str | None = None) -> dict[str, Any]:
    """Score every question's choices, then accuracy, ECE (`bins` equal-width bins), MCE, Brier and per subject.

    `tasks`: a .jsonl / .parquet file, `hf:cais/mmlu` (local cache), or a list of `Question`s.
    `scoring`: `letter` or `text`; None takes what the tasks say, else `letter` (see `scoring_of`);
    the result's `scoring_reason` says which and why. With `out_dir`, writes calibration.json,
    calibration_questions.csv and reliability.png/svg there.

    Example:
        >>> r = calibration("runs/xs", tasks="tasks.jsonl", out_dir="runs/xs/eval")    # doctest: +SKIP
        >>> r["overall"]["accuracy"] > r["overall"]["chance_accuracy"]                  # doctest: +SKIP
        True
    """
    if scoring is not None and scoring not in SCORINGS:
        raise WindtunnelError(f"--scoring: expected letter or text, got {scoring!r}")
    if shots < 0 or bins < 1 or batch_size < 1:
        raise WindtunnelError(f"--shots must be >= 0, --bins and batch size >= 1; got {shots}, {bins}, {batch_size}")
    questions = list(tasks) if not isinstance(tasks, (str, os.PathLike)) else load_tasks(tasks, limit=limit)
    if not questions:
        raise WindtunnelError("tasks: expected at least one question")
    scoring, why = (scoring, "as asked") if scoring is not None else scoring_of(questions, source=str(tasks))
    em = model if isinstance(model, EvalModel) else load_model(model, device=device)
    probs, truncated = choice_probabilities(em, questions, shots=shots, scoring=scoring, batch_size=batch_size,
                                            progress=progress)
    answers = np.array([q.answer for q in questions])
    k = np.array([len(q.choices) for q in questions])
    result = {**em.describe(), "tasks": str(tasks) if isinstance(tasks, (str, os.PathLike)) else "(in memory)",
              "scoring": scoring, "scoring_reason": why, "shots": shots, "prompts_truncated": truncated,
              "overall": calibration_summary(probs, answers, bins=bins, n_choices=k),
              "per_subject": _per_subject(questions, probs, answers, k, bins)}
    if out_dir is not None:
        result["files"] = _write(result, questions, probs, answers, Path(out_dir))
    return result


def prompt_and_continuations(question: Question, examples: Sequence[Question],
                             scoring: Scoring) -> tuple[str, list[str]]:
    """The prompt text and one continuation per choice.

    Example:
        >>> q = Question("2+2=", ("4", "5"), 0)
        >>> prompt_and_continuations(q, [], "letter")
        ('2+2=\\nA. 4\\nB. 5\\nAnswer:', [' A', ' B'])
    """
    if scoring == "letter":
        head = (f"The following are multiple choice questions (with answers) about "
                f"{question.subject.replace('_', ' ')}.\n\n" if question.subject else "")
        shots = "".join(f"{_listed(ex)} {LETTERS[ex.answer]}\n\n" for ex in examples)
        return head + shots + _listed(question), [f" {LETTERS[i]}" for i in range(len(question.choices))]
    shots = "".join(f"{ex.question}{ex.delimiter}{ex.choices[ex.answer]}\n\n" for ex in examples)
    return shots + question.question, [question.delimiter + c for c in question.choices]


def _listed(q: Question) -> str:
    options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
    return f"{q.question}{options}\nAnswer:"


def choice_probabilities(em: EvalModel, questions: Sequence[Question], *, shots: int = 0,
                         scoring: Scoring = "letter", batch_size: int = 32,
                         progress: bool = False) -> tuple[np.ndarray, int]:
    """(N, max choices) probabilities (rows sum to 1, zero-padded) and how many prompts were cut to fit."""
    sequences, owners, truncated = [], [], 0
    for i, (q, examples) in enumerate(zip(questions, _shots(questions, shots))):
        prompt, continuations = prompt_and_continuations(q, examples, scoring)
        prompt_ids = [*em.prefix_ids, *em.encode(prompt).tolist()]
        cut = False
        for j, cont in enumerate(continuations):
            cont_ids = em.encode(cont).tolist()
            if not cont_ids:
                raise WindtunnelError(f"question {i + 1}: choice {j} encodes to no tokens; expected non-empty choices")
            if len(cont_ids) >= em.max_seq_len:
                raise WindtunnelError(f"question {i + 1}: choice {j} is {len(cont_ids)} tokens, longer than the "
                                      f"model's max_seq_len={em.max_seq_len}")
            keep = em.max_seq_len + 1 - len(cont_ids)  # the last token is only a target
            cut |= len(prompt_ids) > keep
            sequences.append((prompt_ids[-keep:], cont_ids))
            owners.append((i, j))
        truncated += cut
    scores = _continuation_scores(em, sequences, mean=scoring == "text", batch_size=batch_size, progress=progress)
    width = max(len(q.choices) for q in questions)
    logits = np.full((len(questions), width), -np.inf)
    for (i, j), s in zip(owners, scores):
        logits[i, j] = s
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True), truncated


def _shots(questions: Sequence[Question], k: int) -> list[list[Question]]:
    if k == 0:
        return [[] for _ in questions]
    by_subject: dict[Any, list[int]] = {}
    for i, q in enumerate(questions):
        by_subject.setdefault(q.subject, []).append(i)
    return [[questions[j] for j in by_subject[q.subject] if j != i][:k] for i, q in enumerate(questions)]


def _continuation_scores(em: EvalModel, sequences: list[tuple[list[int], list[int]]], *, mean: bool,
                         batch_size: int, progress: bool) -> np.ndarray:
    """Summed (or per-token mean) log-probability of each continuation given its prompt."""
    import torch
    from tqdm.auto import tqdm

    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]) - len(sequences[i][1]))
    scores = np.empty(len(sequences))
    bar = tqdm(total=len(sequences), desc="calibration", unit="choice", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        rows = [sequences[i][0] + sequences[i][1] for i in chunk]
        width = max(len(r) for r in rows) - 1
        ids = torch.zeros((len(rows), width), dtype=torch.long)  # right-padded; padding is never scored
        for r, row in enumerate(rows):
            ids[r, :len(row) - 1] = torch.tensor(row[:-1])
        logits = em.logits(ids)  # (B, width, vocab); only the continuation's rows get a softmax
        for r, i in enumerate(chunk):
            prompt, cont = sequences[i]
            rows_at = logits[r, len(prompt) - 1:len(prompt) - 1 + len(cont)].double()  # (len(cont), vocab)
            lp = torch.log_softmax(rows_at, dim=-1)[torch.arange(len(cont)), torch.tensor(cont, device=rows_at.device)]
            scores[i] = float(lp.mean() if mean else lp.sum())
        bar.update(len(chunk))
    bar.close()
    return scores


def _per_subject(questions, probs, answers, k, bins) -> list[dict[str, Any]]:
    subjects = sorted({q.subject for q in questions if q.subject})
    rows = []
    for name in subjects:
        idx = np.array([i for i, q in enumerate(questions) if q.subject == name])
        s = calibration_summary(probs[idx], answers[idx], bins=bins, n_choices=k[idx])
        rows.append({"subject": name, **{key: s[key] for key in ("n", "accuracy", "accuracy_95ci", "chance_accuracy",
                                                                  "mean_confidence", "ece", "mce", "brier")}})
    return rows


def _write(result, questions, probs, answers, out: Path) -> dict[str, Any]:
    from .plots import plot_reliability

    conf, correct = predictions(probs, answers)
    rows = [{"index": i, "subject": q.subject or "", "answer": int(answers[i]), "predicted": int(probs[i].argmax()),
             "confidence": float(conf[i]), "correct": int(correct[i]), "n_choices": len(q.choices)}
            for i, q in enumerate(questions)]
    files = {"questions_csv": str(write_csv(out / CALIBRATION_QUESTIONS_CSV, rows, QUESTION_FIELDS)),
             "plot": [str(p) for p in plot_reliability(result, out / "reliability")],
             "json": str(out / CALIBRATION_JSON)}
    write_json(out / CALIBRATION_JSON, {**result, "files": files})
    return files
