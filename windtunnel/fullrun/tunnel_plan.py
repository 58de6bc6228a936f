"""Design a wind tunnel for a target and a GPU-hour budget, and cost each stage before anything runs.

The tunnel, for a target such as the 1.2B (d_model 1536, 24 heads of 64, 8 KV heads, 48 layers):

1. **proxies** grow the way the target grows: heads added at the target's d_head (`model.head_dim`),
   so a proxy width is a multiple of d_head (64 for the 1.2B); four widths 8x apart from two heads,
   below the target's width. A sweep grows heads by `model.head_dim`, which takes plain multi-head
   attention: the target's KV grouping is not kept at the proxies (μP scales KV heads as widths too).
   The target's `dim_model_base` stays (base shapes are computed for any base width); a fixed proxy
   depth (`depth`, MiniCPM's 9M proxy has 8 layers) with the target's depth rule.
2. **search**: TPE over the target's μP HPs (lr, init, scale_emb, scale_depth) at the smallest width,
   ASHA stopping the hopeless early (rungs every 3x, a trial costs ~0.11 of a full one on average),
   trials fused K to a GPU (`budget.fuse: auto`).
3. **width check**: lr grid at four widths 8x apart, with seeds (`windtunnel check transfer`).
4. **depth check**: lr grid at half, one and two proxy depths (`check transfer` over depth).
5. **horizon check**: lr grid at four token budgets 8x apart (`check horizon`, `transfer --horizon`).
6. **prediction ladder**: the carried HPs at the four widths x five budgets, by WSD decay branches
   (`bench/ladder.py`, then `windtunnel predict`): the target's loss known before paying for it.

Costs use the same FLOP accounting as `transfer` (`model.accounting.run_flops`: 6N + causal
attention) and GPU-hours = FLOPs / (the GPU's dense bf16 peak x an assumed MFU): 40 % for the target
(MPT-1B reached 41.8 % on H100), 20 % for the proxies (small matmuls use a GPU poorly; on this
machine's CPU the proxy ladder measured 17-56 % from width 64 to 512). Both are flags.
The plan picks the most thorough of three tiers that fits the budget; each tier sets the proxies'
tokens per parameter (the target's own ratio when affordable; else shorter, the horizon check then
carrying the lr to the target's ratio), the search's trials and the checks' seeds.
μTransfer spent ~7 % of GPT-3 6.7B's training on its tunnel; a plan says its share and aims lower.

Example:
    >>> plan = plan_tunnel(target="1.2b", budget_gpu_hours=300)
    >>> plan.tier, round(plan.share, 3)                                        # doctest: +SKIP
    ('standard', 0.021)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import WindtunnelError
from ..model.accounting import PEAK_TFLOPS_BF16, count_params, run_flops
from .presets import Target, load_target
from .tunnel_stages import ASHA_FRACTION, Stage, Tier, TunnelPlan, build_stages, width_unit

__all__ = ["Stage", "Tier", "TunnelPlan", "plan_tunnel", "write_tunnel", "format_tunnel", "proxy_widths",
           "width_unit", "TIERS", "ASHA_FRACTION", "MFU_TARGET", "MFU_PROXY", "DEFAULT_GPU"]

MFU_TARGET, MFU_PROXY = 0.40, 0.20
DEFAULT_GPU = "H100 80GB HBM3"
TIERS = (Tier("thorough", None, 300, 3), Tier("standard", 200.0, 150, 3), Tier("minimal", 20.0, 64, 2, lrs=5))
"""Most thorough first: 300 trials is Xmodel-2's search; 20 tokens per parameter is Chinchilla's ratio."""


def proxy_widths(target: Target, widths: list[int] | None = None) -> list[int]:
    """The proxies' widths: given ones checked against the target's heads, else four widths 8x apart
    from two heads, all narrower than the target.

    Example:
        >>> proxy_widths(load_target("1.2b"))
        [128, 256, 512, 1024]
    """
    unit, top = width_unit(target), int(target.sections["model"]["d_model"])
    if widths is None:
        widths = [2 * unit * 2 ** k for k in range(4)]
        if widths[-1] >= top:  # a small target: the widest proxy just below it
            widths = [w for w in (unit * 2 ** k for k in range(8)) if w < top][-4:]
    bad = [w for w in widths if w <= 0 or w % unit or w >= top]
    if bad:
        raise WindtunnelError(f"--widths: {bad[0]} does not fit target {target.name}'s shapes: a proxy width is a "
                              f"whole number of heads of d_head {unit} (heads added at a fixed d_head, as the "
                              f"target grows) and narrower than the target's {top}; e.g. "
                              f"{', '.join(str(unit * 2 ** k) for k in range(1, 8) if unit * 2 ** k < top)}")
    if len(set(widths)) < 3:
        raise WindtunnelError(f"--widths: the width check and the ladder need 3 widths at least, got {widths}")
    return sorted(set(widths))


def plan_tunnel(*, target: str | os.PathLike = "1.2b", budget_gpu_hours: float, nproc: int = 8,
                widths: list[int] | None = None, depth: int = 8, gpu: str = DEFAULT_GPU,
                mfu_target: float = MFU_TARGET, mfu_proxy: float = MFU_PROXY, tokens: float | None = None,
                tier: str | None = None) -> TunnelPlan:
    """The most thorough tier that fits `budget_gpu_hours` (or the named `tier`), costed stage by stage.

    Raises WindtunnelError (one line) for an unknown target or GPU, widths that do not fit the target's
    heads, or a budget below the cheapest tier (saying what it would take).

    Example:
        >>> plan = plan_tunnel(target="1.2b", budget_gpu_hours=300)
        >>> print(format_tunnel(plan))              # tiers, stage costs, share of the target's cost
        >>> write_tunnel(plan, "runs/tunnel")       # sweep YAMLs that load, ready to run
    """
    if not (math.isfinite(budget_gpu_hours) and budget_gpu_hours > 0):
        raise WindtunnelError(f"--budget: expected positive GPU-hours, got {budget_gpu_hours}")
    if nproc < 1:
        raise WindtunnelError(f"--nproc: expected at least 1 GPU, got {nproc}")
    for name, mfu in (("--mfu-target", mfu_target), ("--mfu-proxy", mfu_proxy)):
        if not 0 < mfu <= 1:
            raise WindtunnelError(f"{name}: expected a utilisation in (0, 1], got {mfu}")
    if gpu not in PEAK_TFLOPS_BF16:
        raise WindtunnelError(f"--gpu: unknown {gpu!r}; one of {', '.join(PEAK_TFLOPS_BF16)}")
    if depth < 2:
        raise WindtunnelError(f"--depth: the depth check halves it: expected at least 2 layers, got {depth}")
    t = load_target(target)
    ws = proxy_widths(t, widths)
    peak = PEAK_TFLOPS_BF16[gpu] * 1e12
    target_tokens = float(tokens) if tokens is not None else t.tokens
    cfg = t.config(steps=100 * (int(t.sections["train"].get("warmup_steps", 0) or 0) + 1))  # room for the decay
    target_hours = run_flops(cfg, target_tokens) / (peak * mfu_target) / 3600
    ratio = target_tokens / count_params(cfg.model).non_embedding
    tiers = [x for x in TIERS if tier in (None, x.name)]
    if not tiers:
        raise WindtunnelError(f"--tier: expected one of {', '.join(x.name for x in TIERS)}, got {tier!r}")
    costed = []
    for x in tiers:
        plan = TunnelPlan(target=t, tier=x, budget_gpu_hours=budget_gpu_hours, nproc=nproc, gpu=gpu, widths=ws,
                          depths=[max(depth // 2, 1), depth, depth * 2], proxy_tokens=0.0,
                          target_gpu_hours=target_hours)
        build_stages(plan, ratio=ratio, peak=peak, mfu=mfu_proxy, target_tokens=target_tokens)
        if plan.gpu_hours <= budget_gpu_hours:
            return plan
        costed.append(plan)
    cheapest = costed[-1]
    raise WindtunnelError(f"--budget {budget_gpu_hours:g} GPU-hours is below the {cheapest.tier.name} tunnel for "
                          f"{t.name}: it takes {cheapest.gpu_hours:,.0f} GPU-hours on {gpu} "
                          f"({cheapest.share:.2%} of the target's {target_hours:,.0f}); raise --budget, or narrow "
                          f"--widths / --depth")


def write_tunnel(plan: TunnelPlan, out: str | os.PathLike) -> list[Path]:
    """Write the plan's files (proxy.yaml and one sweep spec per sweep stage) into `out`, atomically.

    Example:
        >>> write_tunnel(plan_tunnel(target="1.2b", budget_gpu_hours=300), "tunnel/1.2b")   # doctest: +SKIP
    """
    import yaml

    from ..fileio import write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (head, data) in plan.files.items():
        text = head + yaml.safe_dump(data, sort_keys=False)
        paths.append(write_text(out / name, text, mode=0o644))
    return paths


def format_tunnel(plan: TunnelPlan) -> str:
    """The plan as a table: each stage's trials, tokens, GPU-hours and share of the target's training.

    Example:
        >>> print(format_tunnel(plan_tunnel(target="1.2b", budget_gpu_hours=300)))     # doctest: +SKIP
    """
    t, x = plan.target, plan.tier
    per_param = x.tokens_per_param or plan.proxy_tokens  # for the line below only
    lines = [f"tunnel for {t.name} ({t.description}): {x.name} tier, budget {plan.budget_gpu_hours:,.0f} GPU-hours "
             f"on {plan.gpu}, {plan.nproc} GPU(s)",
             f"target training: {t.tokens:.3g} tokens = {plan.target_gpu_hours:,.0f} GPU-hours (at the assumed MFU)",
             f"proxies: widths {plan.widths} (heads of d_head {width_unit(t)}), depths {plan.depths}, "
             f"{plan.proxy_tokens:.3g} tokens per full trial at width {plan.widths[0]} "
             + (f"({per_param:g} tokens per parameter)" if x.tokens_per_param else "(the target's tokens per "
                                                                                    "parameter)"),
             "",
             f"  {'stage':<12} {'trials':>6} {'tokens':>10} {'FLOPs':>9} {'GPU-h':>9} {'share':>7}  what"]
    for s in plan.stages:
        lines.append(f"  {s.name:<12} {s.trials:>6} {s.tokens:>10.3g} {s.flops:>9.3g} {s.gpu_hours:>9,.1f} "
                     f"{s.gpu_hours / plan.target_gpu_hours:>7.2%}  {s.what}")
    trials, flops = sum(s.trials for s in plan.stages), sum(s.flops for s in plan.stages)
    lines += [f"  {'total':<12} {trials:>6} {'':>10} {flops:>9.3g} "
              f"{plan.gpu_hours:>9,.1f} {plan.share:>7.2%}  wall ~{plan.gpu_hours / plan.nproc:,.1f} h on "
              f"{plan.nproc} GPU(s)",
              "",
              f"share of the target's training: {plan.share:.2%} (muTransfer reported ~7 % for GPT-3 6.7B; "
              f"this plan is {'below' if plan.share < 0.07 else 'ABOVE'} it)",
              "run, in order (from the written folder):"]
    lines += [f"  {i}. {s.run}" for i, s in enumerate(plan.stages, 1)]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
