"""Loss against context length (Xmodel-2's post-training scaling law, its Figure 5).

Windows of T = max(lengths) tokens are cut from the held-out (`val`) split of a prepared data
folder, evenly spread over it and not overlapping. The token at window position i is predicted
from t = i + 1 tokens of context; its loss (nats) goes to the bucket (previous length, length] of
`lengths`. Per bucket: the mean loss, its standard error over windows, perplexity, and the mean t
of the bucket, at which L(t) = b + (t/c)^a is fitted (weighted by the standard errors). Also per
length: the mean loss over positions 1..length, what a model that only ever saw windows of that
length would score.

Example:
    >>> result = context("runs/xs", lengths=[1, 2, 4, 8, 16, 32, 64, 128])     # doctest: +SKIP
    >>> result["fit"]["a"] < 0                                                  # doctest: +SKIP
    True
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WindtunnelError
from ..run_folder import CONTEXT_CSV, CONTEXT_JSON, META_FILE
from .loading import EvalModel, load_model
from .report import write_csv, write_json
from .scaling_law import fit_context_law

__all__ = ["CSV_FIELDS", "check_lengths", "context", "default_lengths"]

CSV_FIELDS = ["length", "t_from", "t_to", "t_mean", "tokens", "loss", "loss_se", "perplexity",
              "cumulative_loss", "cumulative_perplexity", "fitted_loss"]
LAW = "L(t) = b + (t/c)^a, t = context tokens the predicted token sees (mean over its bucket)"


def default_lengths(max_seq_len: int) -> list[int]:
    """Powers of two up to the model's max_seq_len, and max_seq_len itself.

    Example:
        >>> default_lengths(100)
        [1, 2, 4, 8, 16, 32, 64, 100]
    """
    out = [1 << k for k in range(max_seq_len.bit_length()) if 1 << k <= max_seq_len]
    return out if out[-1] == max_seq_len else [*out, max_seq_len]


def check_lengths(lengths: Sequence[int], *, max_seq_len: int, model: str = "the model") -> list[int]:
    """`lengths` as a list, or a `WindtunnelError` when empty, not increasing or beyond max_seq_len.

    Example:
        >>> check_lengths([4, 8], max_seq_len=8)
        [4, 8]
    """
    lengths = list(lengths)
    if not lengths:
        raise WindtunnelError("--lengths: expected a comma-separated list of context lengths, got an empty list")
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 for x in lengths):
        raise WindtunnelError(f"--lengths: expected positive integers, got {lengths}")
    if any(b <= a for a, b in itertools.pairwise(lengths)):
        raise WindtunnelError(f"--lengths: expected strictly increasing lengths, got {lengths}")
    if lengths[-1] > max_seq_len:
        raise WindtunnelError(f"--lengths: {lengths[-1]} is longer than {model}'s max_seq_len={max_seq_len}; "
                              "expected lengths <= max_seq_len (they are refused, not cut)")
    return [int(x) for x in lengths]


def context(model: str | os.PathLike | EvalModel, *, data: str | os.PathLike | None = None,
            lengths: Sequence[int] | None = None, windows: int = 256, batch_tokens: int = 16384,
            out_dir: str | os.PathLike | None = None, progress: bool = False,
            device: str | None = None) -> dict[str, Any]:
    """Measure loss per context-length bucket on held-out data and fit L(t) = b + (t/c)^a.

    `model`: a run folder, a checkpoint, `hf:PATH_OR_NAME` or a loaded `EvalModel`. `data`: a prepared
    folder (None: the run's own data; required for an HF model). `windows`: at most this many windows
    of max(lengths) tokens. `batch_tokens`: tokens per forward pass. With `out_dir`, writes
    context.json, context.csv and context.png/svg there. Returns what context.json holds.

    Example:
        >>> r = context("runs/xs", lengths=[1, 2, 4, 8, 16, 32, 64, 128], out_dir="runs/xs/eval")  # doctest: +SKIP
        >>> sorted(r["fit"])[:3]                                                                   # doctest: +SKIP
        ['a', 'a_se', 'b']
    """
    if windows < 1 or batch_tokens < 1:
        raise WindtunnelError(f"windows and batch_tokens must be >= 1, got {windows} and {batch_tokens}")
    em = model if isinstance(model, EvalModel) else load_model(model, device=device)
    lengths = check_lengths(lengths if lengths is not None else default_lengths(em.max_seq_len),
                            max_seq_len=em.max_seq_len, model=em.name)
    tokens = _held_out(em, data)
    T = lengths[-1]
    starts = _window_starts(len(tokens.val), T, windows, str(tokens.path))
    losses = _position_losses(em, tokens.val, starts, T, batch_tokens=batch_tokens, progress=progress)
    points = _buckets(losses, lengths)
    fit = fit_context_law([p["t_mean"] for p in points], [p["loss"] for p in points],
                          sigma=[p["loss_se"] for p in points])
    if "a" in fit:
        for p in points:
            p["fitted_loss"] = fit["b"] + (p["t_mean"] / fit["c"]) ** fit["a"]
    result = {**em.describe(), "data": str(tokens.path), "split": "val", "windows": len(starts),
              "window_tokens": T, "tokens_scored": int(losses.size), "lengths": lengths, "law": LAW,
              "fit": fit, "points": points}
    if out_dir is not None:
        result["files"] = _write(result, Path(out_dir))
    return result


def _held_out(em: EvalModel, data):
    """The prepared data to score, checked against the model's vocabulary."""
    from ..data.corpus import open_data
    from ..data.token_folder import load_tokens

    if data is not None:
        tokens = load_tokens(data)
    elif em.config is not None:
        cfg = em.config
        if cfg.data.sources:
            raise WindtunnelError(f"{cfg.source}: data.sources: the run trained on a mixture; expected --data "
                                  "naming the prepared folder to evaluate on")
        tokens = open_data(path=cfg.data.path, max_bytes=cfg.data.embedded_bytes)
    else:
        raise WindtunnelError(f"{em.name}: expected --data PREPARED (a folder prepared with this model's "
                              "tokenizer); an HF model has no run data to default to")
    if tokens.vocab_size > em.vocab_size:
        raise WindtunnelError(f"{tokens.path / META_FILE}: vocab_size {tokens.vocab_size} exceeds the model's "
                              f"vocabulary ({em.vocab_size}, {em.name}); expected data tokenized for this model")
    return tokens


def _window_starts(n_tokens: int, T: int, windows: int, where: str) -> np.ndarray:
    """Up to `windows` non-overlapping windows of T + 1 tokens, spread evenly over the split."""
    slots = (n_tokens - 1) // T
    if slots < 1:
        raise WindtunnelError(f"{where}: the val split has {n_tokens} tokens; expected at least {T + 1} "
                              f"for one window of {T}")
    chosen = np.unique(np.linspace(0, slots - 1, num=min(windows, slots)).round().astype(np.int64))
    return chosen * T


def _position_losses(em: EvalModel, val, starts: np.ndarray, T: int, *, batch_tokens: int,
                     progress: bool) -> np.ndarray:
    """(windows, T) loss in nats of each window's tokens 1..T given the tokens before them."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    per_batch = max(1, batch_tokens // T)
    out = np.empty((len(starts), T), dtype=np.float64)
    batches = range(0, len(starts), per_batch)
    for i in tqdm(batches, desc="context", unit="batch", disable=not progress, dynamic_ncols=True):
        rows = np.stack([np.asarray(val[s:s + T + 1], dtype=np.int64) for s in starts[i:i + per_batch]])
        ids = torch.from_numpy(rows)
        logits = em.logits(ids[:, :-1])  # (B, T, vocab)
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten().to(logits.device), reduction="none")
        out[i:i + len(rows)] = nll.view(len(rows), T).double().cpu().numpy()
    return out


def _buckets(losses: np.ndarray, lengths: list[int]) -> list[dict[str, Any]]:
    points, lo = [], 0
    n = losses.shape[0]
    for length in lengths:
        per_window = losses[:, lo:length].mean(axis=1)  # positions t = lo+1 .. length
        loss = float(per_window.mean())
        se = float(per_window.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        cumulative = float(losses[:, :length].mean())
        points.append({"length": length, "t_from": lo + 1, "t_to": length, "t_mean": (lo + 1 + length) / 2,
                       "tokens": int(n * (length - lo)), "loss": loss, "loss_se": se,
                       "perplexity": math.exp(loss), "cumulative_loss": cumulative,
                       "cumulative_perplexity": math.exp(cumulative), "fitted_loss": None})
        lo = length
    return points


def _write(result: dict[str, Any], out: Path) -> dict[str, str]:
    from .plots import plot_context

    files = {"csv": str(write_csv(out / CONTEXT_CSV, result["points"], CSV_FIELDS))}
    files["plot"] = [str(p) for p in plot_context(result, out / "context")]
    files["json"] = str(out / CONTEXT_JSON)
    write_json(out / CONTEXT_JSON, {**result, "files": files})
    return files
