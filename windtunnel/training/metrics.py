"""The run's logs: `metrics.csv` (always), the experiment trackers (`windtunnel.training.trackers`),
and the console.

`tokens_per_s` and `mfu` in a row are measured over the steps since the previous row, so they show
the current speed of a long run rather than an average that includes start-up and compilation.
Only rank 0 logs; the other ranks get a `MetricsLog(enabled=False)` that does nothing.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..fileio import atomic_write
from ..run_folder import METRICS_FILE

__all__ = ["METRIC_FIELDS", "MetricsLog", "read_metrics"]

METRIC_FIELDS = ["step", "tokens", "lr", "loss", "val_loss", "seconds", "tokens_per_s", "mfu"]


class MetricsLog:
    """Append rows to `<run>/metrics.csv`; mirror them to the run's trackers and the console.

    `resume_step`: keep the rows of an earlier session up to this step (a run interrupted after
    its last checkpoint logged steps that the resumed run will redo) and append after them.
    `console`: "bar" (tqdm progress bar), "lines" (a printed line per row, for logs that are not
    terminals) or "off". `trackers`: a `Trackers` that receives every row (opened and finished by
    the caller, which also knows the summary).
    """

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int = 0, start_seconds: float = 0.0,
                 tokens_per_step: int, flops_per_token: float, peak_flops: float | None, n_devices: int = 1,
                 resume_step: int | None = None, console: str = "off", trackers: Any = None,
                 enabled: bool = True, extra_fields: Sequence[str] = ()):
        self.enabled = enabled
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak, self.n_devices = peak_flops, n_devices
        self.last_step, self.last_seconds = start_step, start_seconds
        self.mfu_values: list[float] = []
        self._speed: tuple[float, float | None] = (0.0, None)  # the last row's tokens/s and MFU
        if not enabled:
            return
        path = run_dir / METRICS_FILE
        fields = METRIC_FIELDS + list(extra_fields)  # e.g. one val_loss column per mixture source
        kept = _rows_up_to(path, resume_step) if resume_step is not None else []
        self._file = open(_rewrite(path, kept, fields), "a", newline="", buffering=1)
        self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
        self.console = console
        self._bar = _progress_bar(total_steps, start_step, run_dir.name) if console == "bar" else None
        self.trackers = trackers

    def row(self, *, step: int, lr: float, loss: float, seconds: float, val_loss: float | None = None,
            extra: Mapping[str, float] | None = None) -> dict:
        """Write one row for optimizer step `step` (1-based: steps done); returns the row."""
        dt = seconds - self.last_seconds
        rate = (step - self.last_step) * self.tokens_per_step / dt if dt > 0 else math.nan
        util = _mfu(self.flops_per_token, rate, self.peak, self.n_devices)
        self.last_step, self.last_seconds = step, seconds
        row = {"step": step, "tokens": step * self.tokens_per_step, "lr": lr, "loss": loss,
               "val_loss": "" if val_loss is None else val_loss, "seconds": round(seconds, 3),
               "tokens_per_s": round(rate, 1) if math.isfinite(rate) else "",
               "mfu": round(util, 4) if util is not None else "", **(extra or {})}
        if util is not None:
            self.mfu_values.append(util)
        self._speed = (rate if math.isfinite(rate) else 0.0, util)
        if self.enabled:
            self._writer.writerow(row)
            self._mirror(row)
        return row

    def progress(self, *, step: int, loss: float, lr: float, val_loss: float) -> None:
        """Advance the progress bar to `step` (cheap; call every step)."""
        if self.enabled and self._bar is not None:
            self._bar.update(step - self._bar.n)
            speed = {"tok_s": f"{self._speed[0]:.3g}"} if self._speed[0] else {}
            if self._speed[1] is not None:
                speed["mfu"] = f"{self._speed[1]:.1%}"
            self._bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                                  val=f"{val_loss:.3f}" if math.isfinite(val_loss) else "-", **speed,
                                  refresh=False)

    def message(self, text: str) -> None:
        """A line for the user (rank 0, when the console is on)."""
        if self.enabled and self.console != "off":
            (self._bar.write if self._bar is not None else _eprint)(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._file.close()

    def _mirror(self, row: dict) -> None:
        step = row["step"]
        if self.trackers is not None:
            self.trackers.log(step, row)
        if self.console == "lines":
            parts = [f"step {step}", f"loss {row['loss']:.4f}", f"lr {row['lr']:.3e}"]
            if row["val_loss"] != "":
                parts.append(f"val {row['val_loss']:.4f}")
            if row["tokens_per_s"] != "":
                parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
            if row["mfu"] != "":
                parts.append(f"MFU {row['mfu']:.1%}")
            _eprint(" | ".join(parts))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a metrics.csv with numbers parsed (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _rows_up_to(path: Path, step: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= step]


def _rewrite(path: Path, rows: list[dict], fields: list[str]) -> Path:
    """Start the CSV with a header and `rows`, atomically; returns the path to append to."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)


def _mfu(flops_per_token: float, rate: float, peak: float | None, n_devices: int) -> float | None:
    from ..model.accounting import mfu
    return mfu(flops_per_token=flops_per_token, tokens_per_s=rate, peak=peak, n_devices=n_devices)


def _progress_bar(total: int, initial: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def _eprint(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _number(value: str):
    if value == "" or value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)
