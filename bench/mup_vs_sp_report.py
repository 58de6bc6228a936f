"""The figures of `bench/mup_vs_sp.py`: per width and arm the seed mean with its 95 % t interval, the
differences the goals are judged on (Welch's 95 % interval of a difference of means over seeds), the
compute of each arm in FLOPs (the project's accounting, training tokens) and seconds, and the picture.

    >>> mean_interval([2.0, 2.1, 2.2])                                   # mean, low, high
    (2.1, 1.85..., 2.34...)
"""

from __future__ import annotations

import math

ARMS = {"mup_carried": "μP tuned at the smallest width, carried", "sp_tuned": "SP tuned at each width",
        "sp_carried": "SP tuned at the smallest width, carried"}
MAX_GAP, MAX_GAP_HIGH, MAX_SHARE, GOAL_SEEDS = 0.005, 0.01, 0.25, 3
"""Goals: μP carried at the widest width <= SP tuned there + MAX_GAP nats, the difference interval's
upper bound <= MAX_GAP_HIGH; μP's compute <= MAX_SHARE of SP's, in FLOPs and in seconds, counted as the
goal defines the arms: GOAL_SEEDS seeds per carried width and at each SP best (a run with more seeds
for tighter loss intervals is judged on its trials of seeds 0..GOAL_SEEDS-1; its whole spend is
printed beside)."""


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Seed mean and its 95 % t interval (the mean itself for one value)."""
    from scipy import stats
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with Welch's 95 % interval."""
    from scipy import stats
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((v - ma) ** 2 for v in a) / (na - 1)
    vb = sum((v - mb) ** 2 for v in b) / (nb - 1)
    se2 = va / na + vb / nb
    if se2 == 0:
        return ma - mb, ma - mb, ma - mb
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    return ma - mb, ma - mb - half, ma - mb + half


def summarise(args, base: list[str], phases: dict, *, winner: dict, sp_best: dict, minutes: float) -> dict:
    """summary.json's content: per width and arm, the goals, the compute."""
    from windtunnel.config import load_config
    from windtunnel.model.accounting import flops_per_token

    fpt = {w: flops_per_token(load_config(args.config, overrides=base + [f"model.d_model={w}"]).model, args.seq_len)
           for w in args.widths}
    w0 = args.widths[0]
    grid0 = {w: [r for r in phases["sp_grid"]["rows"] if int(r["model.d_model"]) == w and r["status"] == "ok"
                 and _same(r, sp_best[w])] for w in args.widths}
    rows_of = {
        "mup_carried": {w: [r for r in phases["mup_carried"]["rows"] if r["model.d_model"] == w] for w in args.widths},
        "sp_tuned": {w: grid0[w][:1] + [r for r in phases["sp_seeds"]["rows"] if r["model.d_model"] == w]
                     for w in args.widths},
    }
    rows_of["sp_carried"] = {w: rows_of["sp_tuned"][w0] if w == w0 else
                             [r for r in phases["sp_carried"]["rows"] if r["model.d_model"] == w]
                             for w in args.widths}
    widths = {}
    for w in args.widths:
        widths[str(w)] = {}
        for arm, by_width in rows_of.items():
            rows = [r for r in by_width[w] if r["status"] == "ok" and math.isfinite(r["val_loss"])]
            losses = [float(r["val_loss"]) for r in rows]
            entry = {"losses": losses, "seeds": [int(r["seed"]) for r in rows],
                     "n_failed": len(by_width[w]) - len(rows)}
            if losses:
                mean, low, high = mean_interval(losses)
                entry |= {"mean": mean, "low": low, "high": high}
            hps = winner if arm == "mup_carried" else sp_best[w if arm == "sp_tuned" else w0]
            entry["hparams"] = {k: _number(v) for k, v in hps.items()}
            if arm == "sp_tuned":  # an optimum on the grid's edge may lie beyond it: SP's loss is then an upper bound
                entry["lr_on_grid_edge"] = round(math.log2(hps["train.lr"])) in (min(args.sp_lrs), max(args.sp_lrs))
            widths[str(w)][arm] = entry
    compute = {name: _compute([phases[p] for p in parts], fpt)
               for name, parts in (("mup", ("mup_search", "mup_carried")), ("sp", ("sp_grid", "sp_seeds")),
                                   ("sp_carried", ("sp_carried",)))}
    compute["phases"] = {p: _compute([phase], fpt) for p, phase in phases.items()}
    n_goal = min(GOAL_SEEDS, args.seeds)  # a smoke run with fewer seeds is judged on all it has, and says so
    first = {p: {**phase, "rows": [r for r in phase["rows"] if int(r["seed"]) < n_goal]}
             for p, phase in phases.items() if p in ("mup_carried", "sp_seeds")}
    compute["goal_basis"] = {"seeds": n_goal,
                             "mup": _compute([phases["mup_search"], first["mup_carried"]], fpt),
                             "sp": _compute([phases["sp_grid"], first["sp_seeds"]], fpt)}
    search = phases["mup_search"]
    return jsonable({"config": str(args.config), "widths": args.widths, "steps": args.steps,
            "tokens_per_trial": args.steps * args.batch_size * args.seq_len, "seeds": args.seeds,
            "search_trials": args.search_trials, "sp_lrs_log2": args.sp_lrs, "sp_hidden_inits": args.sp_inits,
            "sp_emb_init_std": args.sp_emb_init, "quick": args.quick,
            "mup_search_best": {"val_loss": float(search["best"]["val_loss"]), "trial_id": search["best"]["trial_id"],
                                "n_trials": len(search["rows"]),
                                "n_pruned": sum(r["status"] == "pruned" for r in search["rows"])},
            "winner": {k: _number(v) for k, v in winner.items()},
            "per_width": widths, "goals": _goals(widths, args.widths, compute), "compute": compute,
            "wall_minutes": round(minutes, 2)})


def jsonable(x):
    """numpy scalars to Python, NaN and inf to None, recursively (summary.json is strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _same(row: dict, point: dict) -> bool:
    return all(math.isclose(float(row[k]), float(v)) for k, v in point.items())


def _number(v):
    return v.item() if hasattr(v, "item") else v


def _compute(phases: list[dict], fpt: dict) -> dict:
    flops = seconds = 0.0
    for phase in phases:
        for r in phase["rows"]:
            tokens = r.get("tokens")
            if tokens is not None and math.isfinite(float(tokens)):
                flops += float(tokens) * fpt[int(r["model.d_model"])]
            s = r.get("seconds")
            seconds += float(s) if s is not None and math.isfinite(float(s)) else 0.0
    walls = [p["wall_s"] for p in phases]
    return {"flops": flops, "trial_seconds": seconds, "trials": sum(len(p["rows"]) for p in phases),
            "wall_seconds": None if None in walls else sum(walls)}


def _goals(widths: dict, ladder: list[int], compute: dict) -> dict:
    top = widths[str(ladder[-1])]
    mup, sp = top["mup_carried"]["losses"], top["sp_tuned"]["losses"]
    gap = difference(mup, sp) if len(mup) > 1 and len(sp) > 1 else (math.nan,) * 3
    doublings = []
    for a, b in zip(ladder, ladder[1:]):
        la, lb = widths[str(a)]["mup_carried"]["losses"], widths[str(b)]["mup_carried"]["losses"]
        d = difference(la, lb) if len(la) > 1 and len(lb) > 1 else (math.nan,) * 3
        doublings.append({"from": a, "to": b, "drop": d[0], "low": d[1], "high": d[2], "met": bool(d[1] > 0)})
    basis = compute["goal_basis"]
    share_f = basis["mup"]["flops"] / basis["sp"]["flops"]
    share_s = basis["mup"]["trial_seconds"] / basis["sp"]["trial_seconds"]
    return {"widest_gap": {"width": ladder[-1], "mup_minus_sp": gap[0], "low": gap[1], "high": gap[2],
                           "met": bool(gap[0] <= MAX_GAP and gap[2] <= MAX_GAP_HIGH)},
            "mup_falls": {"doublings": doublings, "met": all(d["met"] for d in doublings)},
            "compute_share": {"flops": share_f, "trial_seconds": share_s,
                              "met": bool(share_f <= MAX_SHARE and share_s <= MAX_SHARE)}}


def goals(summary: dict) -> str:
    """The printed table and one line per goal."""
    lines = [f"{'width':>6}  " + "  ".join(f"{a:>26}" for a in ARMS)]
    for w, arms in summary["per_width"].items():
        cells = [f"{arms[a]['mean']:.4f} [{arms[a]['low']:.4f}, {arms[a]['high']:.4f}]" if "mean" in arms[a]
                 else "n/a" for a in ARMS]
        lines.append(f"{w:>6}  " + "  ".join(f"{c:>26}" for c in cells))
    edges = [w for w, arms in summary["per_width"].items() if arms["sp_tuned"].get("lr_on_grid_edge")]
    if edges:
        lines.append(f"note: SP's best lr lies on its grid's edge at width {', '.join(edges)}: its tuned loss there is "
                     "an upper bound (extend --sp-lrs)")
    g = summary["goals"]
    gap = g["widest_gap"]
    lines.append(f"goal 1, muP carried at {gap['width']} - SP tuned there: {gap['mup_minus_sp']:+.4f} "
                 f"[{gap['low']:+.4f}, {gap['high']:+.4f}] nats (<= {MAX_GAP} with upper bound <= {MAX_GAP_HIGH}): "
                 f"{'met' if gap['met'] else 'NOT met'}")
    drops = ", ".join(f"{d['from']}->{d['to']} {d['drop']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                      for d in g["mup_falls"]["doublings"])
    lines.append(f"goal 2, muP carried loss falls at every doubling (interval above 0): {drops}: "
                 f"{'met' if g['mup_falls']['met'] else 'NOT met'}")
    c, comp = g["compute_share"], summary["compute"]
    basis = comp["goal_basis"]
    lines.append(f"goal 3, muP compute / SP compute at {basis['seeds']} seeds per width: FLOPs {c['flops']:.1%} "
                 f"({basis['mup']['flops']:.3g} / {basis['sp']['flops']:.3g}), trial seconds {c['trial_seconds']:.1%} "
                 f"({basis['mup']['trial_seconds']:.0f} / {basis['sp']['trial_seconds']:.0f} s) "
                 f"(<= {MAX_SHARE:.0%} in FLOPs and seconds): {'met' if c['met'] else 'NOT met'}; "
                 f"the whole run ({summary['seeds']} seeds): FLOPs "
                 f"{comp['mup']['flops'] / comp['sp']['flops']:.1%}, trial seconds "
                 f"{comp['mup']['trial_seconds'] / comp['sp']['trial_seconds']:.1%}")
    lines.append(f"muP winner: {summary['winner']} (search best {summary['mup_search_best']['val_loss']:.4f}, "
                 f"{summary['mup_search_best']['n_trials']} trials, {summary['mup_search_best']['n_pruned']} pruned)")
    return "\n".join(lines)


def plot(summary: dict, path) -> None:
    """Loss against width, one line per arm with its seed band (95 % t interval)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"mup_carried": ("tab:blue", "o-"), "sp_tuned": ("tab:orange", "s-"), "sp_carried": ("tab:gray", "^--")}
    for arm, label in ARMS.items():
        pts = [(int(w), a[arm]) for w, a in summary["per_width"].items() if "mean" in a[arm]]
        if not pts:
            continue
        xs = [w for w, _ in pts]
        color, style = styles[arm]
        ax.plot(xs, [e["mean"] for _, e in pts], style, color=color, label=label)
        ax.fill_between(xs, [e["low"] for _, e in pts], [e["high"] for _, e in pts], color=color, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(summary["widths"], [str(w) for w in summary["widths"]])
    ax.set_xlabel("width d_model")
    ax.set_ylabel(f"held-out loss after {summary['steps']} steps (nats/token)")
    ax.set_title(f"μP carried vs SP tuned per width ({summary['seeds']} seeds, 95 % bands)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["ARMS", "mean_interval", "difference", "summarise", "goals", "plot", "jsonable"]
