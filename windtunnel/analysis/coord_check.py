"""Coord check: how fast each recorded tensor, and its first update, grows with width.

Each width trains a few steps of the real optimizer (per-role lr from `param_groups`) on one fixed
batch at a constant lr. Recorded per step:

- `embedding`: what flows into the residual stream (embedding output x scale_emb),
- `blocks.<i>.attn_logits`: the attention logits q.k x scale before the softmax (causal part),
- `blocks.<i>.attn`, `blocks.<i>.mlp`: each residual branch's output (before the residual scale),
- `logits`: the readout's output.

For every tensor and step it records the *size* mean |x_t| and, from step 2, the *update*
mean |x_t - x_1| (the same batch through the trained and the initial weights). A tensor's growth
exponent is the slope of log(value) against log(width); each seed (its own init and batch) gives
one, and the verdict uses their mean. The verdict judges only where μP's theory makes a sharp claim:

- at init (step 1), each size's exponent may exceed μP's prediction by at most the threshold.
  The prediction is 0, except -1/2 for the attention logits (q and k are independent at init, so
  q.k / d_head sums d_head random-sign terms) and for the logits (the readout of Θ(1) features by
  init-scale weights, divided by m);
- the first update (step 2 minus step 1) may grow no faster than width^threshold, and the
  embedding's may not vanish faster than width^-threshold (its own parameters' change alone; every
  deeper tensor mixes in upstream changes that may shrink at finite width).

Every single broken width rule moves an exponent by at least 1/2 (init / sqrt(m) and attention
1/d_head are powers 1/2 of width, lr / m and logits / m whole powers), so the default threshold, 0.25,
sits halfway. Later steps are recorded and drawn but not judged: there finite-width corrections
compound (q and k align, the constant-lr steps on one batch oscillate), and a correct μP's exponents
reached +0.5 to +0.7 at steps 3-5 on xs (seq 128) and on other seeds of a small config, as much as
the weakest broken rule shows. Measured (README; widths 32..512 and 32..256, lr 0.01 and 0.05):
a correct μP's judged exponents, mean of 2 seeds, stayed at most +0.04 above the prediction (one
seed alone reached +0.22 on a first update at lr 0.05, hence 2 seeds by default), while attention
1/sqrt(d_head) exceeded it by +0.53, hidden init not / sqrt(m) and logits not / m by +1.0 or more,
hidden lr not / m's first update grew like width^+1.1 or more, embedding lr / m's vanished like width^-1.0.
This is our own small hook-based check: `mup.coord_check` crashes on modules returning tuples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config import RunConfig, config_from_dict, config_to_dict
from ..errors import ConfigError

__all__ = [
    "DEFAULT_THRESHOLD",
    "CoordResult",
    "Offender",
    "coord_check",
    "growth_exponent",
    "predicted_init_exponent",
]

DEFAULT_THRESHOLD = 0.25
"""Largest allowed excess of a judged growth exponent: half the smallest broken rule's 1/2."""
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


def predicted_init_exponent(layer: str) -> float:
    """μP's growth exponent of a recorded tensor's size at init: -1/2 for (attention) logits, else 0.

    Example:
        >>> predicted_init_exponent("blocks.0.attn_logits"), predicted_init_exponent("blocks.0.mlp")
        (-0.5, 0.0)
    """
    return -0.5 if layer == "logits" or layer.endswith("attn_logits") else 0.0


@dataclass(frozen=True)
class Offender:
    """A judged exponent beyond the threshold: a size at init or a first update."""

    parametrization: str
    layer: str
    measure: str
    """`init` (size at step 1) or `update` (mean |x_2 - x_1|)."""
    exponent: float
    """Slope of log(measure) against log(width), mean over seeds."""
    low: float
    high: float
    """The seeds' smallest and largest exponent."""
    predicted: float = 0.0

    def __str__(self) -> str:
        seeds = f" (seeds {self.low:+.2f}..{self.high:+.2f})" if self.high > self.low else ""
        if self.measure == "init":
            return (f"{self.layer} size at init scales like width^{self.exponent:+.2f}{seeds}, "
                    f"muP predicts width^{self.predicted:+.2f}")
        verb = "grows" if self.exponent > 0 else "vanishes"
        return f"{self.layer} first update {verb} like width^{self.exponent:+.2f}{seeds}"


@dataclass
class CoordResult:
    """Sizes and updates per parametrization, layer, seed, width and step, and the μP verdict."""

    widths: list[int]
    steps: int
    lr: float
    threshold: float
    layers: list[str]
    sizes: dict[str, dict[str, list[list[list[float]]]]]
    """sizes[parametrization][layer][seed index][width index][step - 1] = mean |x_t|."""
    updates: dict[str, dict[str, list[list[list[float]]]]] = field(default_factory=dict)
    """updates[parametrization][layer][seed index][width index][step - 2] = mean |x_t - x_1| (steps 2..)."""
    losses: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    """losses[parametrization][seed index][width index][step - 1] = training loss of that step."""
    seeds: list[int] = field(default_factory=lambda: [0])
    offenders: dict[str, list[Offender]] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """μP's verdict: no judged exponent beyond the threshold; None when μP was not run."""
        return None if "mup" not in self.sizes else not self.offenders.get("mup")

    def exponents(self, parametrization: str, layer: str, step: int, measure: str = "size") -> list[float]:
        """Per seed, the growth exponent of the layer's size (or update, step >= 2) at `step` (1-based)."""
        table = self.sizes if measure == "size" else self.updates
        index = step - 1 if measure == "size" else step - 2
        return [growth_exponent(self.widths, [row[index] for row in by_width])
                for by_width in table[parametrization][layer]]

    def exponent(self, parametrization: str, layer: str, step: int, measure: str = "size") -> float:
        """The mean over seeds of `exponents`."""
        return statistics.fmean(self.exponents(parametrization, layer, step, measure))

    def mean_sizes(self, parametrization: str, layer: str) -> list[list[float]]:
        """[width index][step - 1] = mean |x_t| averaged over seeds (what the plots draw)."""
        runs = self.sizes[parametrization][layer]
        return [[statistics.fmean(run[w][t] for run in runs) for t in range(self.steps)]
                for w in range(len(self.widths))]

    def summary(self) -> str:
        """A few lines per parametrization: the judged exponents' extremes, the later steps', the verdict."""
        lines = []
        for p in self.sizes:
            init = max((self.exponent(p, layer, 1) - predicted_init_exponent(layer), layer) for layer in self.layers)
            text = f"{p}: init size exponent at most {init[0]:+.2f} over muP's prediction ({init[1]})"
            if self.steps >= 2:
                ups = [(self.exponent(p, layer, 2, "update"), layer) for layer in self.layers]
                (lo, lo_layer), (hi, hi_layer) = min(ups), max(ups)
                text += f"; first-update exponents {lo:+.2f} ({lo_layer}) .. {hi:+.2f} ({hi_layer})"
            if self.steps >= 3:
                later = max((self.exponent(p, layer, t), layer, t) for layer in self.layers
                            for t in range(3, self.steps + 1))
                text += (f"; later steps, not judged: largest size exponent {later[0]:+.2f} "
                         f"({later[1]}, step {later[2]})")
            lines.append(text)
        if self.passed is not None:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(f"muP coord check: {verdict} (threshold {self.threshold:g}, mean over {len(self.seeds)} "
                         f"seed(s), widths {self.widths[0]}..{self.widths[-1]}: no size at init scales more than "
                         f"width^{self.threshold:g} beyond muP's prediction, no first update grows faster than "
                         f"width^{self.threshold:g}, the embedding's first update does not vanish faster than "
                         f"width^-{self.threshold:g}; exponent = slope of log mean|x| against log width)")
            lines += [f"  offending: {o}" for o in self.offenders.get("mup", [])]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"widths": self.widths, "steps": self.steps, "lr": self.lr, "threshold": self.threshold,
                "seeds": self.seeds, "passed": self.passed, "layers": self.layers, "sizes": self.sizes,
                "updates": self.updates, "losses": self.losses,
                "offenders": {p: [vars(o) for o in offs] for p, offs in self.offenders.items()}}


def coord_check(config: RunConfig, *, widths: Sequence[int] = (32, 64, 128, 256, 512), steps: int = 5,
                lr: float | None = None, seeds: Sequence[int] = (0, 1),
                parametrizations: Sequence[str] = ("mup", "sp"),
                threshold: float = DEFAULT_THRESHOLD) -> CoordResult:
    """Train each width `steps` steps on one fixed batch per seed; record each tensor's size and update.

    `lr` defaults to the config's peak lr, applied from step 1 (no warmup) and unclipped. Each seed
    draws its own init and its own batch. μP passes when, averaged over seeds, no size at init scales
    more than width^threshold beyond μP's prediction, no first update grows faster than
    width^threshold and the embedding's first update shrinks no faster than width^-threshold.

    Example:
        >>> result = coord_check(load_config("proxies/xs.yaml"), widths=[32, 64, 128, 256], steps=5)
        >>> result.passed, [str(o) for o in result.offenders["mup"]]
        (True, [])
    """
    import torch

    widths, lr, seeds = _check_args(config, widths, steps, lr, seeds, threshold, parametrizations)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    sizes: dict = {p: {} for p in parametrizations}
    updates: dict = {p: {} for p in parametrizations}
    losses: dict = {p: [] for p in parametrizations}
    layers: list[str] = []
    for k, seed in enumerate(seeds):
        batch = _fixed_batch(config, seed)
        for p in parametrizations:
            losses[p].append([])
            for w in widths:
                size, update, loss_curve = _run_width(_at_width(config, w, p, lr), batch, steps, seed)
                layers = list(size)
                for layer in layers:
                    sizes[p].setdefault(layer, [[] for _ in seeds])[k].append(size[layer])
                    updates[p].setdefault(layer, [[] for _ in seeds])[k].append(update[layer])
                losses[p][k].append(loss_curve)
    result = CoordResult(widths, steps, lr, threshold, layers, sizes, updates, losses, list(seeds))
    result.offenders = {p: _offenders(result, p) for p in parametrizations}
    return result


# --- internals --------------------------------------------------------------------------------


def _check_args(config, widths, steps, lr, seeds, threshold, parametrizations):
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
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) < len(seeds):
        raise ConfigError("--seeds", "seeds", f"need >= 1 distinct seeds, got {seeds}")
    bad = [p for p in parametrizations if p not in ("mup", "sp")]
    if bad or not parametrizations:
        raise ConfigError("--parametrizations", "parametrizations", f"expected mup and/or sp, got {bad}")
    return widths, lr, seeds


def _at_width(config: RunConfig, width: int, parametrization: str, lr: float) -> RunConfig:
    data = config_to_dict(config)
    data["model"].update(d_model=width, parametrization=parametrization, activation_checkpointing=False)
    data["train"].update(lr=lr, grad_clip=None, compile=False)
    return config_from_dict(data, source=config.source)


def _fixed_batch(config: RunConfig, seed: int):
    from ..data.mixture import load_run_data
    from ..data.sampling import BatchSampler

    data = load_run_data(config)
    t = config.train
    return BatchSampler(data.train, batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed).batch(seed)


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
    """The judged exponents beyond the threshold: sizes at init against μP's prediction, first updates."""
    out = []
    for layer in result.layers:
        judged = [("init", result.exponents(parametrization, layer, 1), predicted_init_exponent(layer))]
        if result.steps >= 2:
            judged.append(("update", result.exponents(parametrization, layer, 2, "update"), 0.0))
        for measure, per_seed, predicted in judged:
            mean = statistics.fmean(per_seed)
            vanishing = measure == "update" and layer in VANISHING_JUDGED and mean < -result.threshold
            if mean - predicted > result.threshold or vanishing:
                out.append(Offender(parametrization, layer, measure, mean, min(per_seed), max(per_seed), predicted))
    return out
