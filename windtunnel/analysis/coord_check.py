"""Coord check: how fast each recorded tensor, and its change under training, grows with width.

Each width trains a few steps of the real optimizer (per-role lr from `param_groups`) on one fixed
batch at a constant lr, so a missing width scaling shows within steps. Recorded per step:

- `embedding`: what flows into the residual stream (embedding output x scale_emb),
- `blocks.<i>.attn_logits`: the attention logits q.k x scale before the softmax (causal part),
- `blocks.<i>.attn`, `blocks.<i>.mlp`: each residual branch's output (before the residual scale),
- `logits`: the readout's output.

For every tensor and step it records the *size* mean |x_t| and, from step 2, the *update*
mean |x_t - x_1| (the same batch through the trained and the initial weights). The verdict uses
the growth exponent of each against width: the slope of log(value) against log(width), fitted
over all widths. μP keeps both Θ(1) in width; a broken parametrization shows as a power of width:

- a size or an update growing faster than width^threshold is a blow-up (hidden lr not / m,
  logits not / m, hidden init not / sqrt(m), attention 1/sqrt(d_head)),
- the embedding's update shrinking faster than width^-threshold means the embedding stops
  learning as width grows (embedding lr / m). Only the embedding is judged for this: its output is
  its own parameters applied to the fixed batch, while every deeper tensor mixes in upstream
  changes, and those shrink by up to width^-0.9 under a correct μP at finite width and high lr.

Shrinking sizes are not judged: the readout and the attention logits at init shrink like
width^-1/2 under μP, and finite widths below the base shrink a little. The default threshold,
0.25, comes from measurements over widths 32..256 (base 64, 2 layers, 4 steps): a correct μP's
largest growth exponent was +0.07 (lr 0.01 and 0.05) and its embedding update at worst -0.03;
the weakest single broken rule, attention 1/sqrt(d_head), reached +0.32 to +0.47 on the
attention logits, embedding lr / m -0.83 to -1.00, the others +0.8 or more.
This is our own small hook-based check: `mup.coord_check` crashes on modules returning tuples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

from ..config import RunConfig, config_from_dict, config_to_dict
from ..errors import ConfigError

__all__ = ["DEFAULT_THRESHOLD", "CoordResult", "Offender", "coord_check", "growth_exponent", "plot_coord"]

DEFAULT_THRESHOLD = 0.25
"""Largest allowed |growth exponent| (see the module docstring for how it was chosen)."""
VANISHING_JUDGED = ("embedding",)
"""Tensors whose update may not vanish with width: their change is their own parameters' alone."""


def growth_exponent(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(width); inf when a value is 0, negative or bad.

    Example:
        >>> round(growth_exponent([64, 128, 256], [1.0, 2.0, 4.0]), 6)
        1.0
    """
    if not all(math.isfinite(v) and v > 0 for v in values):
        return math.inf
    xs, ys = [math.log(w) for w in widths], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@dataclass(frozen=True)
class Offender:
    """A recorded tensor whose size or update scales with width beyond the threshold."""

    parametrization: str
    layer: str
    step: int
    measure: str
    """`size` (mean |x_t|) or `update` (mean |x_t - x_1|)."""
    exponent: float
    """Slope of log(measure) against log(width)."""

    def __str__(self) -> str:
        what = "size" if self.measure == "size" else "update"
        verb = "grows" if self.exponent > 0 else "vanishes"
        return f"{self.layer} {what} {verb} like width^{self.exponent:+.2f} at step {self.step}"


@dataclass
class CoordResult:
    """Sizes and updates per parametrization, layer, width and step, and the μP verdict."""

    widths: list[int]
    steps: int
    lr: float
    threshold: float
    layers: list[str]
    sizes: dict[str, dict[str, list[list[float]]]]
    """sizes[parametrization][layer][width index][step - 1] = mean |x_t|."""
    updates: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    """updates[parametrization][layer][width index][step - 2] = mean |x_t - x_1| (steps 2..)."""
    losses: dict[str, list[list[float]]] = field(default_factory=dict)
    """losses[parametrization][width index][step - 1] = training loss of that step."""
    offenders: dict[str, list[Offender]] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """μP's verdict: no tensor over the threshold; None when μP was not run."""
        return None if "mup" not in self.sizes else not self.offenders.get("mup")

    def exponent(self, parametrization: str, layer: str, step: int, measure: str = "size") -> float:
        """Growth exponent of the layer's size (or update, step >= 2) over the widths at `step` (1-based)."""
        table = self.sizes if measure == "size" else self.updates
        index = step - 1 if measure == "size" else step - 2
        return growth_exponent(self.widths, [row[index] for row in table[parametrization][layer]])

    def spread(self, parametrization: str, layer: str, step: int) -> float:
        """max / min of the layer's size over the widths at `step`; inf if any is 0 or bad."""
        values = [row[step - 1] for row in self.sizes[parametrization][layer]]
        if not all(math.isfinite(v) and v > 0 for v in values):
            return math.inf
        return max(values) / min(values)

    def summary(self) -> str:
        """A few lines: extreme exponents per parametrization and the verdict with the offending layers."""
        lines = []
        for p in self.sizes:
            size = max((self.exponent(p, layer, t), layer, t) for layer in self.layers
                       for t in range(1, self.steps + 1))
            ups = [(self.exponent(p, layer, t, "update"), layer, t) for layer in self.layers
                   for t in range(2, self.steps + 1)]
            text = f"{p}: largest size exponent {size[0]:+.2f} ({size[1]}, step {size[2]})"
            if ups:
                hi, lo = max(ups), min(ups)
                text += (f"; update exponents {lo[0]:+.2f} ({lo[1]}, step {lo[2]}) .. "
                         f"{hi[0]:+.2f} ({hi[1]}, step {hi[2]})")
            lines.append(text)
        if self.passed is not None:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(f"muP coord check: {verdict} (threshold {self.threshold:g}: no size or update grows "
                         f"faster than width^{self.threshold:g} and the embedding's update does not vanish faster "
                         f"than width^-{self.threshold:g}, over widths {self.widths[0]}..{self.widths[-1]}; "
                         "exponent = slope of log mean|x| against log width)")
            lines += [f"  offending: {o}" for o in self.offenders.get("mup", [])]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"widths": self.widths, "steps": self.steps, "lr": self.lr, "threshold": self.threshold,
                "passed": self.passed, "layers": self.layers, "sizes": self.sizes, "updates": self.updates,
                "losses": self.losses,
                "offenders": {p: [vars(o) for o in offs] for p, offs in self.offenders.items()}}


def coord_check(config: RunConfig, *, widths: Sequence[int] = (64, 128, 256, 512), steps: int = 5,
                lr: float | None = None, seed: int = 0, parametrizations: Sequence[str] = ("mup", "sp"),
                threshold: float = DEFAULT_THRESHOLD) -> CoordResult:
    """Train each width `steps` steps on one fixed batch; record each tensor's size and update.

    `lr` defaults to the config's peak lr, applied from step 1 (no warmup) and unclipped, so a
    missing width scaling shows within a few steps. μP passes when no size or update grows faster
    than width^threshold and the embedding's update shrinks no faster than width^-threshold.

    Example:
        >>> result = coord_check(load_config("proxies/xs.yaml"), widths=[32, 64, 128, 256], steps=5)
        >>> result.passed, [str(o) for o in result.offenders["mup"]]
        (True, [])
    """
    import torch

    widths, lr = _check_args(config, widths, steps, lr, threshold, parametrizations)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    batch = _fixed_batch(config)
    sizes: dict = {}
    updates: dict = {}
    losses: dict = {}
    layers: list[str] = []
    for p in parametrizations:
        sizes[p], updates[p], losses[p] = {}, {}, []
        for w in widths:
            cfg = _at_width(config, w, p, lr)
            size, update, loss_curve = _run_width(cfg, batch, steps, seed)
            layers = list(size)
            for layer in layers:
                sizes[p].setdefault(layer, []).append(size[layer])
                updates[p].setdefault(layer, []).append(update[layer])
            losses[p].append(loss_curve)
    result = CoordResult(widths, steps, lr, threshold, layers, sizes, updates, losses)
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
            ax.set_title(layer + ("  (over threshold)" if layer in bad else ""), fontsize=9,
                         color="crimson" if layer in bad else "black")
            ax.set_xlabel("width d_model", fontsize=8)
            ax.set_ylabel("mean |activation|", fontsize=8)
            ax.grid(True, which="both", alpha=0.25)
        axes[0].legend(fontsize=7)
        name = {"mup": "μP", "sp": "SP"}.get(p, p)
        verdict = ""
        if p == "mup" and result.passed is not None:
            verdict = f" — {'PASS' if result.passed else 'FAIL'} (|growth exponent| ≤ {result.threshold:g})"
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


def _check_args(config, widths, steps, lr, threshold, parametrizations):
    widths = sorted(int(w) for w in widths)
    if len(set(widths)) < 2 or widths[0] <= 0:
        raise ConfigError("--widths", "widths", f"need >= 2 distinct positive widths, got {widths}")
    if steps < 1:
        raise ConfigError("--steps", "steps", f"must be >= 1, got {steps}")
    lr = config.train.lr if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError("--lr", "lr", f"must be a finite number > 0, got {lr}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ConfigError("--threshold", "threshold", f"must be a growth exponent > 0, got {threshold}")
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


def _run_width(cfg: RunConfig, batch, steps: int, seed: int):
    """Train `steps` steps on `batch`; per layer the size per step and the update per step (from 2), and
    the losses."""
    import torch.nn.functional as F

    from ..model.parametrization import build_model
    from ..training.distributed import resolve_device
    from ..training.optim import build_optimizer

    device = resolve_device(cfg.train.device, cfg.source)
    model = build_model(cfg.model, seed=seed, device=device, source=cfg.source)
    optimizer = build_optimizer(model, cfg)  # constant lr: each group at its peak (lr, or lr / m)
    recorder = _Recorder()
    handles = recorder.attach(model)
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
        recorder.detach(model, handles)
    return recorder.sizes, recorder.updates, losses


class _Recorder:
    """Forward hooks (and the attention-logit probe) that record mean |x_t| and mean |x_t - x_1|."""

    def __init__(self) -> None:
        self.sizes: dict[str, list[float]] = {}
        self.updates: dict[str, list[float]] = {}
        self._initial: dict = {}

    def put(self, name: str, value) -> None:
        value = value.detach().float()
        self.sizes.setdefault(name, []).append(value.abs().mean().item())
        if name not in self._initial:  # step 1: the initial weights' output on the fixed batch
            self._initial[name] = value.clone()
            self.updates[name] = []
        else:
            self.updates[name].append((value - self._initial[name]).abs().mean().item())

    def attach(self, model) -> list:
        handles = [model.blocks[0].register_forward_pre_hook(lambda mod, args: self.put("embedding", args[0]))]
        for i, block in enumerate(model.blocks):
            block.attn.logits_probe = lambda q, k, scale, name=f"blocks.{i}.attn_logits": \
                self.put(name, _attention_logits(q, k, scale))
            for part in ("attn", "mlp"):
                handles.append(getattr(block, part).register_forward_hook(
                    lambda mod, args, out, name=f"blocks.{i}.{part}": self.put(name, out)))
        handles.append(model.readout.register_forward_hook(lambda mod, args, out: self.put("logits", out)))
        return handles

    @staticmethod
    def detach(model, handles: list) -> None:
        for h in handles:
            h.remove()
        for block in model.blocks:
            block.attn.logits_probe = None


def _attention_logits(q, k, scale: float):
    """The causal pre-softmax logits q.k x scale, flattened; q (B, T, H, D), k (B, T, H_kv, D)."""
    import torch

    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)  # grouped-query: each kv head serves a group
    logits = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scale  # (B, H, T, T)
    causal = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool, device=q.device).tril()
    return logits[..., causal]


def _offenders(result: CoordResult, parametrization: str) -> list[Offender]:
    """Per layer and measure, the step with the most extreme exponent beyond the threshold."""
    out = []
    for layer in result.layers:
        checks = [("size", t, result.exponent(parametrization, layer, t)) for t in range(1, result.steps + 1)]
        checks += [("update", t, result.exponent(parametrization, layer, t, "update"))
                   for t in range(2, result.steps + 1)]
        vanishing_judged = layer in VANISHING_JUDGED
        bad = [c for c in checks if c[2] > result.threshold
               or (vanishing_judged and c[0] == "update" and c[2] < -result.threshold)]
        for measure in ("size", "update"):
            worst = max((c for c in bad if c[0] == measure), key=lambda c: abs(c[2]), default=None)
            if worst is not None:
                out.append(Offender(parametrization, layer, worst[1], measure, worst[2]))
    return out
