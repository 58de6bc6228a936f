"""Evaluation after training, as in the Xmodel-2 report: loss against context length with its law
L(t) = b + (t/c)^a, and multiple-choice calibration (accuracy, ECE, MCE, Brier, reliability diagram).

Names load on first use (torch only when a model is needed); submodules are named unlike the
functions (`context_length`, `calibrate`) so importing one never hides a function of this package.

Example:
    >>> import windtunnel.eval as ev
    >>> r = ev.context("runs/xs", lengths=[1, 2, 4, 8, 16, 32, 64, 128], out_dir="runs/xs/eval")  # doctest: +SKIP
    >>> c = ev.calibration("runs/xs", tasks="tasks.jsonl", scoring="text")                          # doctest: +SKIP
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "context": "context_length", "default_lengths": "context_length", "check_lengths": "context_length",
    "calibration": "calibrate", "choice_probabilities": "calibrate", "prompt_and_continuations": "calibrate",
    "context_law": "scaling_law", "fit_context_law": "scaling_law",
    "EvalModel": "loading", "load_model": "loading",
    "Question": "tasks", "TaskError": "tasks", "load_tasks": "tasks", "write_tasks": "tasks",
    "make_syntax_tasks": "syntax_tasks",
    "expected_calibration_error": "metrics", "max_calibration_error": "metrics", "brier_score": "metrics",
    "reliability_bins": "metrics", "calibration_summary": "metrics",
    "plot_context": "plots", "plot_reliability": "plots",
    "default_out_dir": "report",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the names are the keys of _EXPORTS


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
