"""Every axis on which the proxy and the target differ, and what the tunnel has verified on each.

The tunnel's promise holds axis by axis: width is covered by muP and the width transfer check, depth
by the depth rule and the depth transfer check, the horizon by a horizon fit; vocabulary, sequence
length and batch are not checked at all. `axis_rows` puts each axis with its ratio and its status in
the transfer table; `depth_warnings` flags a target much deeper than the proxy that won.

Example:
    >>> rows = axis_rows(plan)
    >>> [r.label for r in rows][:2]
    ['width (d_model)', 'depth (layers)']
"""

from __future__ import annotations

from ..model.accounting import count_params
from .plan import Row, TransferPlan

__all__ = ["DEPTH_RATIO", "SECTION", "axis_rows", "depth_warnings", "horizon_rows"]

DEPTH_RATIO = 4.0
"""Warn when the target has more than this many times the proxy's layers."""
SECTION = "proxy vs target: what the tunnel verified"
_HORIZON_HOW = "not verified: `windtunnel sweep sweeps/horizon.yaml`, then `transfer --horizon runs/horizon`"


def axis_rows(plan: TransferPlan) -> list[Row]:
    """One row per axis: proxy value, target value, and the ratio with what checks it."""
    if plan.proxy is None:
        return []
    p, t = plan.proxy.config, plan.config
    p_params, t_params = count_params(p.model).non_embedding, count_params(t.model).non_embedding
    p_tpp, t_tpp = plan.proxy.tokens / p_params, plan.tokens / t_params
    horizon = _horizon_status(plan)
    items = [
        ("width (d_model)", p.model.d_model, t.model.d_model,
         "muP width rule; `check transfer` on sweeps/width_transfer.yaml spans 8x (64 -> 512)"),
        ("depth (layers)", p.model.n_layers, t.model.n_layers,
         (f"depth_scaling={t.model.depth_scaling}; `check transfer` on sweeps/depth_transfer.yaml spans 8x "
         "(2 -> 16 layers), sqrt vs completep")),
        ("heads (d_head)", f"{p.model.n_heads} ({p.model.d_head})", f"{t.model.n_heads} ({t.model.d_head})",
         _heads_status(p.model, t.model)),
        ("vocabulary", p.model.vocab_size, t.model.vocab_size, ("not verified: the embedding's HPs are tuned at "
         "the proxy's vocabulary")),
        ("sequence length", p.train.seq_len, t.train.seq_len, "not verified: the lr is tuned at the proxy's length"),
        ("batch (tokens per step)", p.tokens_per_step, plan.batch.tokens,
         f"not verified: the lr is tuned at the proxy's batch; "
         f"the target's is from {plan.batch.source.split(' (')[0]}"),
        ("training tokens", int(plan.proxy.tokens), plan.tokens, horizon),
        ("tokens per parameter", p_tpp, t_tpp, horizon),
    ]
    return [Row(SECTION, label, pv, tv, f"{_ratio(pv, tv)}{how}") for label, pv, tv, how in items]


def depth_warnings(plan: TransferPlan) -> list[str]:
    """A warning when the target is more than DEPTH_RATIO x deeper than the proxy that won."""
    if plan.proxy is None:
        return []
    p_layers, t = plan.proxy.config.model.n_layers, plan.config.model
    if t.n_layers <= DEPTH_RATIO * p_layers or t.parametrization != "mup":
        return []
    other = "completep" if t.depth_scaling == "sqrt" else "sqrt"
    return [(f"depth: the target has {t.n_layers} layers, the proxy {p_layers} ({t.n_layers / p_layers:.3g}x): "
            f"whether its optimal lr holds over depth under model.depth_scaling={t.depth_scaling} is not "
            f"verified here; settle it with `windtunnel sweep sweeps/depth_transfer.yaml` and `windtunnel check "
            f"transfer runs/depth_transfer` (it compares {t.depth_scaling} with {other}), then --set "
            "model.depth_scaling=<the one that holds> on the proxy sweep and the transfer")]


def _heads_status(p, t) -> str:
    if p.d_head == t.d_head:
        return "same d_head: the attention scale attn_mult / d_head is unchanged"
    return ("the attention scale attn_mult / d_head follows d_head only; heads grown at a fixed d_head: "
            "sweeps/width_transfer_heads.yaml")


def _horizon_status(plan: TransferPlan) -> str:
    c = plan.horizon
    if c is None:
        return _HORIZON_HOW
    lo, hi = c.slope_interval
    return (f"horizon fit {c.run}: slope {c.slope:+.3f} [{lo:+.3f}, {hi:+.3f}], lr x{c.factor:.3g} "
            f"[x{c.low / c.raw_lr:.3g}, x{c.high / c.raw_lr:.3g}]")


def _ratio(p, t) -> str:
    if isinstance(p, (int, float)) and isinstance(t, (int, float)) and p and t != p:
        return f"{t / p:.3g}x; "
    return ""


def horizon_rows(plan: TransferPlan) -> list[Row]:
    """The carried lr raw and horizon-corrected, side by side with the interval (with `--horizon`)."""
    c = plan.horizon
    if c is None:
        return []
    lo, hi = c.slope_interval
    section = f"horizon correction ({c.run})"
    return [
        Row(section, "peak lr: raw (proxy's optimum) | horizon-corrected", c.raw_lr, c.lr,
            f"95% interval [{c.low:.4g}, {c.high:.4g}]; applied to train.lr" if c.applied else
            f"95% interval [{c.low:.4g}, {c.high:.4g}]; not applied (--set train.lr)"),
        Row(section, "slope d log2 lr* / d log2 tokens", None, c.slope,
            f"[{lo:+.3f}, {hi:+.3f}] from {c.n_budgets} budgets (fit's standard error, t with n-2 dof)"),
        Row(section, "tokens per parameter", c.proxy_tpp, c.target_tpp,
            f"fitted over {c.fitted_tpp[0]:.3g}-{c.fitted_tpp[1]:.3g}"
            + (f"; extrapolated {c.doublings_beyond:.1f} doublings beyond" if c.doublings_beyond > 0 else "")),
    ]
