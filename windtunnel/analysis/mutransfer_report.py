"""The transfer check's printed table: per shape the optimum with its interval and the regret, then
per parametrization the drift, the regret at the largest shape and the verdict with its reasons."""

from __future__ import annotations

import math

__all__ = ["report_table"]

SHORT = {"model.d_model": "width", "model.n_layers": "depth"}
ROUTINE = ("seed means", "one seed")  # how most regrets are computed: said once below the table


def report_table(report) -> str:
    """Render a TransferReport (see mutransfer_check) as the CLI prints it.

    Example:
        >>> print(report_table(mutransfer_check("runs/width_transfer", write=False)))   # doctest: +SKIP
    """
    shape = SHORT.get(report.shape_key, report.shape_key)
    header = (f"{'param':<8} {shape:>6} {'log2 opt':>8} {'95% interval':>16} {'best loss':>10} {'best lr':>8} "
              f"{'ok/lrs':>6} {'seeds':>5}  {'regret (nats)':<24} note")
    lines = [header]
    for r in report.rows:
        o = r.optimum
        log2 = f"{o.log2_lr:.2f}" if o.log2_lr is not None else "-"
        band = f"[{o.low:.2f}, {o.high:.2f}]" if o.low is not None else "-"
        loss = f"{o.best_loss:.4f}" if o.best_loss is not None else "-"
        best_lr = f"2^{math.log2(o.best_lr):.3g}" if o.best_lr else "-"
        regret = r.regret.text() if r.regret else "-"
        how = r.regret.how if r.regret and not r.regret.how.startswith(ROUTINE) else ""
        note = "; ".join(x for x in (o.note or o.method, how) if x)
        lines.append(f"{r.parametrization:<8} {r.width:>6} {log2:>8} {band:>16} {loss:>10} {best_lr:>8} "
                     f"{f'{r.n_ok}/{r.n_lrs}':>6} {o.n_seeds:>5}  {regret:<24} {note}")
    intervals = sorted({r.optimum.interval for r in report.rows})
    lines.append(f"optimum: weighted quadratic in log2 lr over <= {2 * report.neighbors + 1} points around the best; "
                 f"95% interval (optimum, drift, best loss): {', '.join(intervals)}")
    routine = sorted({r.regret.how for r in report.rows if r.regret and r.regret.how.startswith(ROUTINE)})
    if routine:
        lines.append(f"regret: {', '.join(routine)}")
    for s in report.summaries.values():
        carried = ", ".join(f"{k}={_fmt(v)}" for k, v in (s.carried or {}).items()) or "nothing"
        lines.append(f"{s.parametrization}: carried from {shape} {report.from_width}: {carried} -> {s.verdict}"
                     + "".join(f"\n  - {x}" for x in s.reasons)
                     + (f"\n  - to settle it: {s.settle}" if s.settle else ""))
    lines += [f"note: {n}" for n in report.notes]
    t = report.thresholds
    lines.append(f"verdict (muP: drift interval within ±{t.drift_pass:g} log2 per doubling or regret <= "
                 f"{t.regret_tolerance:g} nats at the largest {shape}, best loss falls, no optimum on the grid's "
                 f"edge, the carried configuration never diverges): {report.verdict}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float) and v > 0:
        return f"2^{math.log2(v):.3g}" if abs(math.log2(v) - round(math.log2(v))) < 1e-9 else f"{v:.4g}"
    return str(v)
