"""Coord check: mean |activation| of every layer over the first training steps, across widths.

Under μP the sizes stay put as width grows (within ~2x); under SP they grow (BRIEF §6). Each width
trains a few steps of the real optimizer (per-role lr from `param_groups`) on one fixed batch at a
large constant lr, so a missing width scaling shows up within steps. Recorded per step:

- `embedding`: what flows into the residual stream (embedding output x scale_emb: the first
  block's input),
- `blocks.<i>.attn`, `blocks.<i>.mlp`: each residual branch's output (before the residual scale,
  a width-free constant),
- `logits`: the readout's output.

Step t is the forward pass of the t-th training step: step 1 sees the initial weights. Under μP the
logits at init shrink like 1/sqrt(width) (the readout divides by m), so that one record is excepted.
This is our own small hook-based check: `mup.coord_check` crashes on modules returning tuples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..config import RunConfig, config_from_dict, config_to_dict
from ..errors import ConfigError

__all__ = ["CoordResult", "Offender", "coord_check", "plot_coord"]

INIT_EXCEPTION = ("logits", 1)  # (layer, step): the readout at init, excepted by BRIEF §6


@dataclass(frozen=True)
class Offender:
    """A recorded tensor whose size moves more than the tolerance across widths."""

    parametrization: str
    layer: str
    step: int
    spread: float
    """max / min of mean |activation| over the widths at that step."""
    direction: str
    """`grows` or `shrinks` from the smallest to the largest width."""

    def __str__(self) -> str:
        return f"{self.layer} {self.direction} {self.spread:.2f}x over the widths at step {self.step}"


@dataclass
class CoordResult:
    """Sizes per parametrization, layer, width and step, and the μP verdict."""

    widths: list[int]
    steps: int
    lr: float
    tolerance: float
    layers: list[str]
    sizes: dict[str, dict[str, list[list[float]]]]
    """sizes[parametrization][layer][width index][step - 1] = mean |activation|."""
    losses: dict[str, list[list[float]]] = field(default_factory=dict)
    """losses[parametrization][width index][step - 1] = training loss of that step."""
    offenders: dict[str, list[Offender]] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """μP's verdict: every tensor within `tolerance` over the widths; None when μP was not run."""
        return None if "mup" not in self.sizes else not self.offenders.get("mup")

    def spread(self, parametrization: str, layer: str, step: int) -> float:
        """max / min of the layer's size over the widths at `step` (1-based); inf if any is 0 or bad."""
        values = [row[step - 1] for row in self.sizes[parametrization][layer]]
        if not all(math.isfinite(v) and v > 0 for v in values):
            return math.inf
        return max(values) / min(values)

    def growth(self, parametrization: str, layer: str, step: int) -> float:
        """size at the largest width / size at the smallest (> 1: grows with width)."""
        rows = self.sizes[parametrization][layer]
        first, last = rows[0][step - 1], rows[-1][step - 1]
        return last / first if first > 0 and math.isfinite(first) and math.isfinite(last) else math.inf

    def summary(self) -> str:
        """A few lines: worst spread per parametrization and the verdict with the offending layers."""
        lines = []
        for p in self.sizes:
            worst = max(((self.spread(p, layer, t), layer, t) for layer in self.layers
                         for t in range(1, self.steps + 1) if (layer, t) != INIT_EXCEPTION), default=None)
            final = max(self.growth(p, layer, self.steps) for layer in self.layers)
            lines.append(f"{p}: worst spread {worst[0]:.2f}x ({worst[1]}, step {worst[2]}); largest growth "
                         f"{self.widths[0]}->{self.widths[-1]} at step {self.steps}: {final:.2f}x")
        if self.passed is not None:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(f"muP coord check: {verdict} (every tensor within {self.tolerance:g}x over widths "
                         f"{self.widths[0]}..{self.widths[-1]}, logits at init excepted)")
            lines += [f"  offending: {o}" for o in self.offenders.get("mup", [])]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"widths": self.widths, "steps": self.steps, "lr": self.lr, "tolerance": self.tolerance,
                "passed": self.passed, "layers": self.layers, "sizes": self.sizes, "losses": self.losses,
                "offenders": {p: [vars(o) for o in offs] for p, offs in self.offenders.items()}}


def coord_check(config: RunConfig, *, widths: Sequence[int] = (64, 128, 256, 512), steps: int = 5,
                lr: float | None = None, seed: int = 0, parametrizations: Sequence[str] = ("mup", "sp"),
                tolerance: float = 2.0) -> CoordResult:
    """Train each width `steps` steps on one fixed batch and record mean |activation| per layer.

    `lr` defaults to the config's peak lr, applied from step 1 (no warmup) and unclipped, so a
    missing width scaling shows within a few steps. Much above the edge of stability the fixed-batch
    dynamics turn chaotic and sizes jump at every width; the check then measures noise, not μP. μP passes when every tensor's size moves at most `tolerance`x over the widths.

    Example:
        >>> result = coord_check(load_config("proxies/xs.yaml"), widths=[64, 128, 256, 512], steps=5)
        >>> result.passed, [str(o) for o in result.offenders["mup"]]
        (True, [])
    """
    import torch

    widths, lr = _check_args(config, widths, steps, lr, tolerance, parametrizations)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    batch = _fixed_batch(config)
    sizes: dict = {}
    losses: dict = {}
    layers: list[str] = []
    for p in parametrizations:
        sizes[p], losses[p] = {}, []
        for w in widths:
            cfg = _at_width(config, w, p, lr)
            record, loss_curve = _run_width(cfg, batch, steps, seed)
            layers = list(record)
            for layer, values in record.items():
                sizes[p].setdefault(layer, []).append(values)
            losses[p].append(loss_curve)
    result = CoordResult(widths, steps, lr, tolerance, layers, sizes, losses)
    result.offenders = {p: _offenders(result, p) for p in parametrizations}
    return result


def plot_coord(result: CoordResult, out_dir: str | Path, *, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """One figure per parametrization (`coord_<p>.png/.svg`): one panel per recorded tensor,
    log-log size against width, one line per step. Offending panels get a red title.

    Example:
        >>> plot_coord(result, "runs/coord_xs")
        [PosixPath('runs/coord_xs/coord_mup.png'), PosixPath('runs/coord_xs/coord_mup.svg'), ...]
    """
    from .figures import colormap, figure_grid, save_figure

    paths = []
    for p, by_layer in result.sizes.items():
        fig, axes = figure_grid(len(result.layers), ncols=min(4, len(result.layers)), size=(3.4, 2.8))
        bad = {o.layer for o in result.offenders.get(p, [])}
        colours = colormap("viridis")([i / max(result.steps - 1, 1) for i in range(result.steps)])
        for ax, layer in zip(axes, result.layers):
            for t in range(result.steps):
                ys = [row[t] for row in by_layer[layer]]
                ax.plot(result.widths, ys, "o-", color=colours[t], ms=3, lw=1.2,
                        label=f"step {t + 1}" + (" (init)" if t == 0 else ""))
            _log_log(ax, result.widths)
            ax.set_title(layer + ("  (over tolerance)" if layer in bad else ""), fontsize=9,
                         color="crimson" if layer in bad else "black")
            ax.set_xlabel("width d_model", fontsize=8)
            ax.set_ylabel("mean |activation|", fontsize=8)
            ax.grid(True, which="both", alpha=0.25)
        axes[0].legend(fontsize=7)
        name = {"mup": "μP", "sp": "SP"}.get(p, p)
        verdict = ""
        if p == "mup" and result.passed is not None:
            verdict = f" — {'PASS' if result.passed else 'FAIL'} (≤{result.tolerance:g}× over widths)"
        fig.suptitle(f"Coord check, {name}: activation size vs width over the first {result.steps} Adam steps "
                     f"at lr={result.lr:.3g}{verdict}\nflat lines = width-stable; μP should be flat, "
                     f"SP grows", fontsize=10)
        paths += save_figure(fig, Path(out_dir) / f"coord_{p}", formats)
    return paths


# --- internals --------------------------------------------------------------------------------


def _log_log(ax, widths: list[int]) -> None:
    """Log axes labelled in plain numbers (mathtext tick labels cost seconds per figure)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels even within a decade
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _check_args(config, widths, steps, lr, tolerance, parametrizations):
    widths = sorted(int(w) for w in widths)
    if len(set(widths)) < 2 or widths[0] <= 0:
        raise ConfigError("--widths", "widths", f"need >= 2 distinct positive widths, got {widths}")
    if steps < 1:
        raise ConfigError("--steps", "steps", f"must be >= 1, got {steps}")
    lr = config.train.lr if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError("--lr", "lr", f"must be a finite number > 0, got {lr}")
    if tolerance <= 1:
        raise ConfigError("--tolerance", "tolerance", f"must be > 1 (a ratio), got {tolerance}")
    bad = [p for p in parametrizations if p not in ("mup", "sp")]
    if bad or not parametrizations:
        raise ConfigError("--parametrizations", "parametrizations", f"expected mup and/or sp, got {bad}")
    return widths, lr


def _at_width(config: RunConfig, width: int, parametrization: str, lr: float) -> RunConfig:
    data = config_to_dict(config)
    data["model"].update(d_model=width, parametrization=parametrization, activation_checkpointing=False)
    data["train"].update(lr=lr, grad_clip=None, compile=False)
    return config_from_dict(data, source=config.source)


def _fixed_batch(config: RunConfig):
    from ..data.sampling import BatchSampler
    from ..data.mixture import load_run_data

    data = load_run_data(config)
    t = config.train
    return BatchSampler(data.train, batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed).batch(0)


def _run_width(cfg: RunConfig, batch, steps: int, seed: int) -> tuple[dict[str, list[float]], list[float]]:
    """Train `steps` steps on `batch`; return mean |activation| per layer per step, and the losses."""
    import torch.nn.functional as F

    from ..training.optim import build_optimizer
    from ..model.parametrization import build_model
    from ..training.distributed import resolve_device

    device = resolve_device(cfg.train.device, cfg.source)
    model = build_model(cfg.model, seed=seed, device=device, source=cfg.source)
    optimizer = build_optimizer(model, cfg)  # constant lr: each group at its peak (lr, or lr / m)
    record: dict[str, list[float]] = {}
    handles = _hooks(model, record)
    x, y = (t.to(device) for t in batch)
    losses = []
    try:
        for _ in range(steps):
            logits = model(x)  # (B, T, vocab); the hooks record this forward
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
    return record, losses


def _hooks(model, record: dict[str, list[float]]) -> list:
    def size(name):
        def put(value):
            record.setdefault(name, []).append(value.detach().float().abs().mean().item())
        return put

    embed = size("embedding")
    handles = [model.blocks[0].register_forward_pre_hook(lambda mod, args: embed(args[0]))]
    for i, block in enumerate(model.blocks):
        for part in ("attn", "mlp"):
            put = size(f"blocks.{i}.{part}")
            handles.append(getattr(block, part).register_forward_hook(lambda mod, args, out, put=put: put(out)))
    logits = size("logits")
    handles.append(model.readout.register_forward_hook(lambda mod, args, out: logits(out)))
    return handles


def _offenders(result: CoordResult, parametrization: str) -> list[Offender]:
    """Per layer, the worst step over tolerance (the readout at init excepted)."""
    out = []
    for layer in result.layers:
        steps = [t for t in range(1, result.steps + 1) if (layer, t) != INIT_EXCEPTION]
        worst = max(steps, key=lambda t: result.spread(parametrization, layer, t), default=None)
        if worst is None:
            continue
        spread = result.spread(parametrization, layer, worst)
        if spread > result.tolerance:
            direction = "grows" if result.growth(parametrization, layer, worst) >= 1 else "shrinks"
            out.append(Offender(parametrization, layer, worst, spread, direction))
    return out
