"""The run config's schema: one dataclass per section (`model`, `train`, `data`) and `RunConfig`
joining them. Every field has its docstring under it; every value rule a user can break raises
`ConfigError` naming the file, the dotted key, the rule and the bad value. Nothing is clamped: a bad
value in a sweep must fail loudly, not train something else. Loading, overrides and saving are in
`windtunnel.config`. No torch here.

    >>> ModelConfig(d_model=128).d_head
    32
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError
from .typecheck import check_non_negative, check_positive, suggest

__all__ = ["ModelConfig", "TrainConfig", "DataConfig", "RunConfig", "SECTIONS", "WEIGHT_KEYS",
           "DEFAULT_WARMUP_STEPS"]

DEFAULT_WARMUP_STEPS = 20
"""train.warmup_steps when the config leaves it null (capped at a tenth of train.steps)."""
WEIGHT_KEYS = ("mixture", "mixture_decay", "val_mixture")
"""The data keys that hold mixture weights by source name."""


@dataclass
class ModelConfig:
    """The decoder's shape and its muP multipliers (see the README's μP table)."""

    d_model: int = 256
    """Width: the residual stream size. The width multiplier is m = d_model / dim_model_base."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Query heads; d_head = d_model / n_heads (grows with width when n_heads is fixed)."""
    head_dim: int | None = None
    """Grow width by heads, as the 1.2B does (24 heads of 64): with head_dim set, n_heads is derived
    as d_model / head_dim (it replaces model.n_heads) and d_head stays head_dim at every width.
    Null: n_heads is fixed and d_head grows with width."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; null means n_heads (plain multi-head)."""
    ffn_mult: float = 2.5
    """SwiGLU hidden size as a multiple of d_model (MiniCPM and Xmodel-2 use 2.5)."""
    vocab_size: int = 256
    """Tokenizer vocabulary; 256 for the byte-level default corpus."""
    max_seq_len: int = 256
    """Longest sequence the rotary tables cover."""
    dim_model_base: int = 64
    """Base width of the muP base shapes: at d_model == dim_model_base, muP and SP coincide in width."""
    parametrization: Literal["mup", "sp"] = "mup"
    """`mup`: width-scaled init, lr and logits; `sp`: the plain control with every multiplier 1."""
    scale_emb: float = 10.0
    """muP: the embedding output is multiplied by this (SP: 1)."""
    scale_depth: float = 1.4
    """muP: the residual-branch constant; how it meets depth is model.depth_scaling (SP: branches x 1)."""
    depth_scaling: Literal["sqrt", "completep"] = "sqrt"
    """muP depth rule. `sqrt`: each residual branch x scale_depth / sqrt(n_layers) and nothing else
    (MiniCPM, Xmodel-2). `completep`: CompleteP (Dey et al. 2025, alpha = 1): branch x
    scale_depth / sqrt(n_layers_base) x n_layers_base / n_layers, i.e. 1/L, with Adam epsilon of the
    tensors inside blocks x n_layers_base / n_layers; their lr and weight-decay shrink carry the
    factor (L / L_base)^(alpha - 1) = 1. At n_layers == n_layers_base both rules give the same model."""
    n_layers_base: int = 2
    """Base depth of the depth rule (like dim_model_base for width): the depth the HPs were tuned at.
    Only `completep` reads it; 2 is the CPU proxies' depth."""
    init_std: float = 0.05
    """Shorthand for both init stds below: each of model.hidden_init_std and model.emb_init_std that is
    null takes this value. A role's own key, when set, wins over the shorthand."""
    hidden_init_std: float | None = None
    """Init std of the hidden matrices (every Linear inside a block) at the base width; muP draws them
    with hidden_init_std / sqrt(m), SP with hidden_init_std at every width. Null: model.init_std."""
    emb_init_std: float | None = None
    """Init std of the token embedding (also the tied readout), the same at every width. Null: model.init_std."""
    attn_mult: float | None = None
    """muP attention scale is attn_mult / d_head, so it depends on d_head alone: adding heads at a
    fixed d_head leaves it unchanged. Null means 8 = sqrt(64): 1/sqrt(d_head) at d_head 64, what
    MiniCPM's and Xmodel-2's code divide by. The CPU ladder sets 4 = sqrt(64 / 4), which equals SP's
    1/sqrt(d_head) at its base width."""
    norm_gain: bool = True
    """RMSNorm with a trainable gain; false gives gain-free norms (reported to transfer better)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""
    base_shapes: str | None = None
    """Path of a mup `.bsh` file (relative to the config file); null derives the shapes for this model
    (in memory). Overriding a shape key (n_layers, dim_model_base, ...) sets it null."""
    attention: Literal["auto", "sdpa", "flash", "cudnn", "efficient", "math", "flash_attn"] = "auto"
    """`auto`: the flash-attn package on CUDA in bf16 when installed, else torch SDPA choosing its own
    kernel; `sdpa`: always SDPA, torch's choice; `flash`, `cudnn`, `efficient`, `math`: SDPA held to
    that one kernel (an error at the first step where it cannot run); `flash_attn`: the flash-attn
    package (CUDA, bf16; a config error where it is not installed)."""
    loss_chunk_tokens: int = 0
    """Compute the loss through the tied readout this many tokens at a time, so the full (tokens x
    vocab) fp32 logits never exist (8 GiB for 8k tokens x 65k vocab); 0 computes the logits whole."""
    activation_checkpointing: bool = False
    """Recompute each block in the backward pass to save activation memory (full runs)."""

    def __post_init__(self) -> None:
        if self.head_dim is not None and self.head_dim > 0 and self.d_model % self.head_dim == 0:
            self.n_heads = self.d_model // self.head_dim  # check() reports a head_dim that does not divide

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def d_ffn(self) -> int:
        return int(round(self.ffn_mult * self.d_model))

    @property
    def hidden_std(self) -> float:
        """The hidden matrices' init std at the base width: model.hidden_init_std, else model.init_std.

            >>> ModelConfig(init_std=0.05, hidden_init_std=0.2).hidden_std, ModelConfig(init_std=0.05).hidden_std
            (0.2, 0.05)
        """
        return self.init_std if self.hidden_init_std is None else self.hidden_init_std

    @property
    def emb_std(self) -> float:
        """The embedding's init std: model.emb_init_std, else model.init_std."""
        return self.init_std if self.emb_init_std is None else self.emb_init_std

    @property
    def width_mult(self) -> float:
        """The muP width multiplier m, derived here and nowhere else."""
        return self.d_model / self.dim_model_base

    def check(self, source: str | None) -> None:
        check_positive(self, source, "model", ("d_model", "n_layers", "n_heads", "vocab_size", "max_seq_len",
                                         "dim_model_base", "ffn_mult", "init_std", "norm_eps",
                                         "rope_theta", "scale_emb", "scale_depth", "n_layers_base"))
        check_non_negative(self, source, "model", ("loss_chunk_tokens",))
        if self.head_dim is not None and (self.head_dim <= 0 or self.d_model % self.head_dim):
            raise ConfigError(source, "model.head_dim", f"must be > 0 and divide model.d_model={self.d_model} "
                              f"(n_heads = d_model / head_dim), got {self.head_dim}")
        if self.head_dim is not None and self.n_kv_heads is not None:
            raise ConfigError(source, "model.n_kv_heads", "must be null with model.head_dim set: when width "
                              f"grows by heads the key/value heads must grow too, got {self.n_kv_heads}")
        if self.n_kv_heads is not None and self.n_kv_heads <= 0:
            raise ConfigError(source, "model.n_kv_heads", f"must be > 0, got {self.n_kv_heads}")
        if self.d_model % self.n_heads:
            raise ConfigError(source, "model.d_model", f"must be divisible by model.n_heads="
                              f"{self.n_heads}, got d_model={self.d_model}")
        if self.n_heads % self.kv_heads:
            raise ConfigError(source, "model.n_heads", f"must be a multiple of model.n_kv_heads="
                              f"{self.kv_heads}, got n_heads={self.n_heads}")
        if self.d_head % 2:
            raise ConfigError(source, "model.d_model", f"d_model / n_heads must be even for rotary "
                              f"embeddings, got d_head={self.d_model}/{self.n_heads}={self.d_head}")
        for key in ("hidden_init_std", "emb_init_std"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ConfigError(source, f"model.{key}", f"must be > 0 or null (null: model.init_std), "
                                  f"got {getattr(self, key)}")
        if self.attn_mult is not None and self.attn_mult <= 0:
            raise ConfigError(source, "model.attn_mult", f"must be > 0, got {self.attn_mult}")


@dataclass
class TrainConfig:
    """The optimisation: one loop serves proxies and the full run."""

    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 16
    """Sequences per micro-batch."""
    seq_len: int = 128
    """Tokens per sequence (must be <= model.max_seq_len)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; tokens/step = batch_size * seq_len * grad_accum."""
    lr: float = 0.01
    """Peak learning rate (base width). Hidden matrices get lr / m under muP."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0
    """Weight decay on matrices (not on norms); its unit depends on weight_decay_mode."""
    weight_decay_mode: Literal["independent", "coupled"] = "independent"
    """`independent`: each step shrinks weights by weight_decay * schedule(t), whatever lr is, so an
    lr sweep does not also sweep the decay. `coupled`: AdamW's units, shrink lr(t) * weight_decay
    with the base lr. Either way the shrink is the same for every width (mup 1.0.0 only gets there
    by multiplying weight decay by m)."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this; null disables."""
    schedule: Literal["wsd", "cosine", "constant"] = "wsd"
    """Learning-rate schedule: warmup-stable-decay, cosine, or warmup then constant."""
    warmup_steps: int | None = None
    """Linear warmup steps (replaced by warmup_fraction when that is set). Null: 20, or a tenth of
    train.steps when that is fewer (a 30-step smoke run warms up for 3 steps, not 20); the resolved
    number is what the saved config shows."""
    warmup_fraction: float | None = None
    """Linear warmup as a fraction of train.steps, in [0, 1) (rounded to whole steps); when set it
    replaces warmup_steps, so runs of different lengths warm up over the same share of training (a
    horizon sweep: a fixed warmup would be a larger share of the short budgets and bend the slope)."""
    decay: Literal["exponential", "linear", "cosine", "1-sqrt"] = "linear"
    """Shape of the WSD decay phase."""
    decay_fraction: float = 0.2
    """WSD decay length as a fraction of steps, rounded, at least one step (ignored when decay_steps
    is set)."""
    decay_steps: int | None = None
    """WSD decay length in steps; overrides decay_fraction."""
    half_life: float | None = None
    """Exponential decay half-life in steps; null picks a quarter of the decay length."""
    min_lr_ratio: float | None = None
    """Where the decay ends, as a fraction of the peak lr; null: 0 for WSD, 0.1 for cosine (MiniCPM)."""
    eval_every: int = 50
    """Held-out evaluation every this many steps (and always at the end)."""
    eval_batches: int = 8
    """Validation micro-batches per evaluation."""
    log_every: int = 10
    """Write a metrics.csv row every this many steps."""
    seed: int = 0
    """Seed of init and data order: the same config and seed give the same losses on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` picks CUDA when available."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """`bf16` runs the forward under bf16 autocast (weights and optimizer stay fp32)."""
    compile: bool = False
    """torch.compile each block's forward (fullgraph), before DDP/FSDP wrap the model; the first steps
    pay for compilation."""
    threads: int | None = None
    """torch CPU threads for this run; null leaves torch's default."""
    diverge_factor: float = 3.0
    """A run is `diverged` when its loss is NaN/inf or exceeds this times its first loss."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (and after the last); 0: none on the way."""
    final_checkpoint: bool = True
    """Save a checkpoint after the last step, weights and optimizer state: `windtunnel eval` reads its
    weights, `--decay-from` branches from it (a few MB for a CPU proxy). Sweeps set it false for their
    trials unless the spec sets it; fused trials keep no weights."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    checkpoint_format: Literal["auto", "file", "sharded"] = "auto"
    """`file`: one `step_N.pt` written by rank 0; `sharded`: a `step_N/` folder written by every rank
    through torch.distributed.checkpoint (resumable on any number of processes); `auto`: sharded
    under `parallel: fsdp`, else file."""
    async_checkpoint: bool = True
    """With several processes, sharded checkpoints are written in the background
    (torch.distributed.checkpoint's async_save, over a gloo group of their own) while training goes
    on; a checkpoint counts only once complete."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How several processes (torchrun) split the work. `ddp`: each holds the whole model and its
    AdamW state (16 bytes per parameter); `fsdp`: FSDP2 shards parameters, gradients and optimizer
    state over the processes (per block, then the root), computing in bf16 with fp32 gradient
    reduction when precision is bf16. One process on CPU cannot shard: a config error."""
    cpu_offload: bool = False
    """FSDP only: keep the sharded parameters and optimizer state in CPU memory (slow; for a model
    that does not fit otherwise)."""
    dist_timeout_s: int = 1800
    """Process-group (NCCL/gloo) timeout in seconds: a collective waiting longer fails the run
    instead of hanging (raise it if checkpoints to slow storage take longer)."""
    track: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] | None = None
    """Experiment trackers to log to besides metrics.csv: TensorBoard (events in the run folder),
    MLflow (`windtunnel[mlflow]`), W&B (`windtunnel[wandb]`, offline unless WANDB_MODE says otherwise).
    Null: TensorBoard when installed; [] none. `--track` on the command line overrides it."""

    def __post_init__(self) -> None:
        if self.warmup_steps is None and isinstance(self.steps, int):
            self.warmup_steps = min(DEFAULT_WARMUP_STEPS, self.steps // 10)

    @property
    def warmup(self) -> int:
        """Warmup steps in effect: round(warmup_fraction * steps) when the fraction is set, else warmup_steps."""
        return self.warmup_steps if self.warmup_fraction is None else round(self.warmup_fraction * self.steps)

    def check(self, source: str | None) -> None:
        check_positive(self, source, "train", ("steps", "batch_size", "seq_len", "grad_accum", "lr", "eps",
                                         "eval_every", "eval_batches", "log_every", "diverge_factor"))
        check_non_negative(self, source, "train", ("weight_decay", "warmup_steps", "checkpoint_every",
                                             "keep_checkpoints"))
        check_positive(self, source, "train", ("dist_timeout_s",))
        if self.cpu_offload and self.parallel != "fsdp":
            raise ConfigError(source, "train.cpu_offload", "needs train.parallel: fsdp (DDP keeps the "
                              "whole model on every GPU), got parallel=ddp")
        if self.parallel == "fsdp" and self.checkpoint_format == "file":
            raise ConfigError(source, "train.checkpoint_format", "must be sharded or auto under "
                              "train.parallel: fsdp (no rank holds the whole state), got file")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(source, f"train.betas[{i}]", f"must be in [0, 1), got {beta}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(source, "train.grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(source, "train.decay_fraction", f"must be in (0, 1], got {self.decay_fraction}")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(source, "train.warmup_fraction", f"must be in [0, 1) or null, got {self.warmup_fraction}")
        problems = self._schedule_problems()
        if problems:  # every broken schedule rule at once, not one per attempt
            (key, first), *more = problems
            raise ConfigError(source, key, "; ".join([first, *(f"and {k}: {m}" for k, m in more)]))
        if self.min_lr_ratio is not None and not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(source, "train.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(source, "train.threads", f"must be > 0 or null, got {self.threads}")

    def _schedule_problems(self) -> list[tuple[str, str]]:
        """(key, rule and value) for each schedule rule the steps break together."""
        problems = []
        warmup_key = "train.warmup_steps" if self.warmup_fraction is None else "train.warmup_fraction"
        if self.warmup >= self.steps:
            problems.append((warmup_key, f"must give a warmup < train.steps={self.steps}, got {self.warmup} steps"
                             if self.warmup_fraction is not None else
                             f"must be < train.steps={self.steps}, got {self.warmup_steps}"))
        if self.schedule != "wsd":
            if self.decay_steps is not None:
                problems.append(("train.decay_steps", f"is only used by train.schedule: wsd, got schedule="
                                 f"{self.schedule}"))
            return problems
        if self.decay_steps is not None and self.decay_steps < 1:
            problems.append(("train.decay_steps", f"must be >= 1 or null, got {self.decay_steps}"))
        elif self.decay_steps_resolved > self.steps - self.warmup:
            key = "train.decay_steps" if self.decay_steps is not None else "train.decay_fraction"
            problems.append((key, f"the decay ({self.decay_steps_resolved} steps) must fit after the warmup: "
                             f"<= train.steps - {warmup_key} = {self.steps} - {self.warmup}"))
        return problems

    @property
    def decay_steps_resolved(self) -> int:
        """WSD decay steps: decay_steps, else decay_fraction x steps rounded, at least one step."""
        if self.decay_steps is not None:
            return self.decay_steps
        return max(1, round(self.decay_fraction * self.steps))


@dataclass
class DataConfig:
    """Where tokens come from."""

    path: str | None = None
    """A prepared data folder (train.bin, val.bin, meta.json); null uses the embedded corpus."""
    embedded_bytes: int = 8_000_000
    """Size of the embedded corpus (Python's own standard-library source, byte-level)."""
    sources: dict[str, str] | None = None
    """Named prepared folders for a mixture, e.g. {web: data/web, code: data/code}; excludes `path`."""
    mixture: dict[str, float] | None = None
    """Sampling weight per source, normalised to sum 1 (0 leaves a source out of training). Each
    sequence of a batch picks its source by weight. Sweepable: data.mixture.<source>=0.3."""
    mixture_decay: dict[str, float] | None = None
    """Weights used from the first step of the WSD decay phase on (Xmodel-2 / MiniCPM change the data
    mix for the decay); null keeps `mixture` throughout."""
    sampling: Literal["random", "sequential"] = "random"
    """`random`: i.i.d. windows at random offsets (proxies: any step's batch is known without state);
    `sequential`: the training tokens read once in order, window after window, without replacement
    (long runs: 1.5T tokens should not repeat some data and skip the rest); rank r of N reads
    micro-batches r, r + N, ... of the stream, and the position is saved in every checkpoint."""
    val_mixture: dict[str, float] | None = None
    """Weights of the per-source val losses in val_loss; null uses `mixture`. Fix it when sweeping
    mixture weights, or each trial is scored on a different target."""

    def check(self, source: str | None) -> None:
        check_positive(self, source, "data", ("embedded_bytes",))
        if self.sampling == "sequential" and self.sources is not None:
            raise ConfigError(source, "data.sampling", "sequential reads one token stream; a mixture "
                              "(data.sources) samples by weight: use sampling: random")
        if self.sources is None:
            for name in WEIGHT_KEYS:
                if getattr(self, name) is not None:
                    raise ConfigError(source, f"data.{name}", "needs data.sources (source name -> prepared "
                                      "data folder) to say what the weights refer to")
            return
        if self.path is not None:
            raise ConfigError(source, "data.sources", "cannot be combined with data.path; list that folder "
                              "in data.sources instead")
        if not self.sources:
            raise ConfigError(source, "data.sources", "expected at least one source name -> folder")
        for name in self.sources:
            if not name or "." in name:
                raise ConfigError(source, f"data.sources.{name}", "a source name must be non-empty and "
                                  "without dots (it becomes the key data.mixture.<name>)")
        if self.mixture is None and len(self.sources) > 1:
            raise ConfigError(source, "data.mixture", f"required with {len(self.sources)} sources: give "
                              f"each of {', '.join(self.sources)} a weight")
        for name in WEIGHT_KEYS:
            self._check_weights(source, name)

    def _check_weights(self, source: str | None, name: str) -> None:
        weights = getattr(self, name)
        if weights is None:
            return
        for key, w in weights.items():
            if key not in self.sources:
                raise ConfigError(source, f"data.{name}.{key}", f"unknown source{suggest(key, self.sources)}; "
                                  f"data.sources has {', '.join(self.sources)}")
            if w < 0:
                raise ConfigError(source, f"data.{name}.{key}", f"must be >= 0, got {w}")
        missing = [k for k in self.sources if k not in weights]
        if missing:
            raise ConfigError(source, f"data.{name}.{missing[0]}", "missing; give every source in "
                              "data.sources a weight (0 leaves it out)")
        if not any(w > 0 for w in weights.values()):
            raise ConfigError(source, f"data.{name}", f"needs at least one weight > 0, got {weights}")

    def weights(self, which: Literal["mixture", "mixture_decay", "val_mixture"] = "mixture") -> dict[str, float]:
        """Normalised weights (sum 1) of `mixture`, `mixture_decay` or `val_mixture`, with their defaults.

        Example:
            >>> DataConfig(sources={"a": "x", "b": "y"}, mixture={"a": 1, "b": 3}).weights()
            {'a': 0.25, 'b': 0.75}
        """
        if self.sources is None:
            raise ValueError("data.weights: no data.sources, so no mixture")
        raw = getattr(self, which) or self.mixture or {name: 1.0 for name in self.sources}
        total = sum(raw.values())
        return {name: raw[name] / total for name in self.sources}


@dataclass
class RunConfig:
    """A whole run: the three sections joined, plus the file it came from (for error messages)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    source: str | None = field(default=None, compare=False)

    def check(self) -> None:
        self.model.check(self.source)
        self.train.check(self.source)
        self.data.check(self.source)
        if self.data.mixture_decay is not None and self.train.schedule != "wsd":
            raise ConfigError(self.source, "data.mixture_decay", f"needs a decay phase (train.schedule: wsd), "
                              f"got train.schedule={self.train.schedule}")
        if self.train.seq_len > self.model.max_seq_len:
            raise ConfigError(self.source, "train.seq_len", f"must be <= model.max_seq_len="
                              f"{self.model.max_seq_len}, got {self.train.seq_len}")

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.train.seq_len * self.train.grad_accum


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
"""The config's sections by name, as YAML spells them."""
