"""The decoder, and nothing but modules: Llama-style, pre-RMSNorm, SwiGLU, RoPE, GQA, tied embeddings.

The muP multipliers arrive as plain numbers (`Multipliers`) computed by `windtunnel.model.parametrization`;
this file never decides a scale, so a reader can audit the parametrization in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from mup import MuSharedReadout
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from .loss import chunked_cross_entropy

__all__ = ["Multipliers", "Transformer", "RMSNorm", "TiedReadout", "flash_attn_available", "flash_attn_compiles",
           "attention_context", "apply_rope", "rope_tables"]

try:  # optional, CUDA only
    from flash_attn import flash_attn_func
except Exception:  # noqa: BLE001 - any import failure (no CUDA, ABI mismatch) means "not available"
    flash_attn_func = None


def flash_attn_available() -> bool:
    return flash_attn_func is not None and torch.cuda.is_available()


def flash_attn_compiles() -> bool:
    """flash-attn >= 2.7 registers its kernel as a torch custom op, so a compiled block that calls it
    stays one graph; older versions break the graph (compile then runs without fullgraph)."""
    if flash_attn_func is None:
        return True
    import flash_attn
    major, minor = (int(x) for x in flash_attn.__version__.split(".")[:2])
    return (major, minor) >= (2, 7)


@dataclass(frozen=True)
class Multipliers:
    """Forward-pass constants of a parametrization (see `parametrization.multipliers`)."""

    emb_mult: float        # embedding output scale (muP: scale_emb)
    residual_mult: float   # residual branch scale (muP: scale_depth / sqrt(n_layers))
    attn_scale: float      # softmax scale (muP: attn_mult / d_head, SP: 1 / sqrt(d_head))
    width_mult: float      # logits are divided by this (muP: m, SP: 1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, *, eps: float, gain: bool):
        super().__init__()
        self.eps, self.shape = eps, (dim,)
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in fp32 at least (bf16 runs too: training.precision); fused: ~30 % faster than by hand on CPU
        dtype = torch.promote_types(x.dtype, torch.float32)
        weight = self.weight.to(dtype) if self.weight is not None else None
        return F.rms_norm(x.to(dtype), self.shape, weight, self.eps)


def rope_tables(d_head: int, max_seq_len: int, theta: float) -> torch.Tensor:
    """Rotations e^(i t f) per position t and frequency f as (T, d_head/2, 2) real pairs.

    Kept real, not complex, so DDP and `.to()` treat the buffer like any other."""
    # computed on the CPU whatever the default device: arange on the meta device (base shapes) goes
    # through torch's reference implementation and imports torch._dynamo (~1 s per process)
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, dtype=torch.float64, device="cpu") / d_head)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64, device="cpu"), inv_freq)  # (T, d_head/2)
    return torch.stack((angles.cos(), angles.sin()), dim=-1).float()


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    # x: (B, T, H, D); rotate each adjacent pair (x[2i], x[2i+1]) by the angle of (t, i) with real
    # cos/sin arithmetic: torch.compile fuses it into one kernel (complex tensors break its graphs)
    pairs = x.float().unflatten(-1, (-1, 2))                          # (B, T, H, D/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]  # (1, T, 1, D/2)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH"}


def attention_context(choice: str):
    """The context that holds torch SDPA to the kernel `model.attention` names (none for auto/sdpa).

    Entered around the forward and backward by the training loop, outside any compiled region, so
    the choice costs compile no graph break.

    Example:
        >>> with attention_context("math"):
        ...     logits = model(x)          # doctest: +SKIP
    """
    import contextlib
    if choice not in SDPA_BACKENDS:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[choice])])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, attn_scale: float):
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.scale = attn_scale
        self.backend = cfg.attention
        self.q_proj = nn.Linear(cfg.d_model, self.n_heads * self.d_head, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv * self.d_head, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv * self.d_head, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.d_head, cfg.d_model, bias=False)
        self.logits_probe = None  # the coord check sets a callable(q, k, scale) to record attention logits

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head)
        k = self.k_proj(x).view(B, T, self.n_kv, self.d_head)
        v = self.v_proj(x).view(B, T, self.n_kv, self.d_head)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if self.logits_probe is not None:  # off (None) outside the coord check
            self.logits_probe(q, k, self.scale)
        if self._use_flash(q):
            y = flash_attn_func(q, k, v, softmax_scale=self.scale, causal=True)  # (B, T, H, D)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                               enable_gqa=self.n_kv != self.n_heads)
            y = y.transpose(1, 2)  # (B, T, H, D)
        return self.o_proj(y.reshape(B, T, self.n_heads * self.d_head))

    def _use_flash(self, q: torch.Tensor) -> bool:
        if self.backend not in ("auto", "flash_attn") or flash_attn_func is None or not q.is_cuda:
            return False
        return q.dtype in (torch.bfloat16, torch.float16)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_ffn, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, mults: Multipliers):
        super().__init__()
        self.residual_mult = mults.residual_mult
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, gain=cfg.norm_gain)
        self.attn = Attention(cfg, mults.attn_scale)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, gain=cfg.norm_gain)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        # x + residual_mult * f(x) in one pass (alpha=), not a multiply then an add
        x = torch.add(x, self.attn(self.attn_norm(x), rope), alpha=self.residual_mult)
        return torch.add(x, self.mlp(self.mlp_norm(x)), alpha=self.residual_mult)


class TiedReadout(MuSharedReadout):
    """mup's shared readout (logits = W_emb · x / m) with m cached as a float.

    mup reads m from `weight.infshape`, which `deepcopy`, `state_dict` and FSDP2 lose; caching the
    number once keeps the readout right whatever wraps the model later.
    """

    def __init__(self, weight: nn.Parameter, width_mult: float):
        super().__init__(weight, bias=False)
        self.cached_width_mult = width_mult

    def width_mult(self) -> float:
        return self.cached_width_mult

    @property
    def scale(self) -> float:
        """What the hidden state is multiplied by before the (tied) weight: output_mult / m."""
        return self.output_mult / self.width_mult()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mup's MuReadout computes output_mult * x / m in two passes over x; one scalar does it in one
        return F.linear(x * self.scale, self.weight, self.bias)

    def loss(self, x: torch.Tensor, targets: torch.Tensor, *, chunk: int) -> torch.Tensor:
        """Mean cross-entropy of this readout's logits against `targets`; with `chunk` > 0 the logits
        are computed and freed `chunk` tokens at a time (`windtunnel.model.loss`)."""
        if chunk:
            return chunked_cross_entropy(x, self.weight, targets, scale=self.scale, chunk=chunk)
        return F.cross_entropy(self(x).float().flatten(0, -2), targets.flatten())


class Transformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab). Build it with `windtunnel.build_model`, which also
    attaches base shapes and initialises the weights; constructing it directly leaves torch's init."""

    def __init__(self, cfg: ModelConfig, mults: Multipliers):
        super().__init__()
        self.cfg, self.mults = cfg, mults
        # _weight skips torch's default init (init_weights sets every tensor); on the meta device, where
        # base shapes are computed, normal_ would import torch._dynamo (~1 s per process)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, _weight=torch.empty(cfg.vocab_size, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg, mults) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, gain=cfg.norm_gain)
        self.readout = TiedReadout(self.embed.weight, mults.width_mult)
        rope = rope_tables(cfg.d_head, cfg.max_seq_len, cfg.rope_theta).to(self.embed.weight.device)
        self.register_buffer("rope", rope, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab); with `targets` (B, T), the mean cross-entropy instead (through the
        chunked loss when model.loss_chunk_tokens > 0). The loss is computed inside forward so that
        wrappers (FSDP, DDP) see the readout weight used within their hooks."""
        T = idx.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}")
        rope = self.rope[:T]
        x = self.embed(idx) * self.mults.emb_mult  # (B, T, d_model)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        if targets is not None:
            return self.head_loss(x, targets)
        return self.readout(self.norm(x))  # (B, T, vocab), divided by m inside mup's readout

    def head_loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Final norm and mean cross-entropy of the last block's output `x` (B, T, d_model): the unit
        compiled right after the last block (`training.wrapping`), so under compile the chunked loss
        is one graph whose logits exist one chunk at a time."""
        return self.readout.loss(self.norm(x), targets, chunk=self.cfg.loss_chunk_tokens)

    def num_params(self, *, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied readout shares the embedding)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n
