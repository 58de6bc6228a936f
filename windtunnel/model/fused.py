"""K same-shape decoders as one computation: every weight carries a leading trial dimension.

Each trial is first built by `build_model` (its own seed, init, base shapes), then its tensors are
stacked, so a fused trial starts from exactly the weights a separate run would. The forward pass is
the decoder of `transformer.py` written with batched matmuls over the trial dimension; what may differ
between trials (the muP multipliers: embedding scale, residual scale, attention scale, logit divisor)
arrives as (K,) tensors instead of Python floats. Trials never mix: slot k's logits depend only on
slot k's weights and tokens, so the gradient of the summed per-trial losses is each trial's own.

Example:
    >>> fused = FusedTransformer([build_model(c.model, seed=c.train.seed) for c in cfgs])
    >>> logits = fused(tokens)          # tokens (K, B, T) -> logits (K, B, T, vocab)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .parametrization import Role, param_roles
from .transformer import Transformer, apply_rope

__all__ = ["FusedTransformer", "shape_signature"]


def shape_signature(model: Transformer) -> tuple:
    """Names and shapes of a model's parameters: models fuse only when these are equal."""
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


class FusedTransformer(nn.Module):
    """K models of one shape as stacked parameters (K, ...) and per-trial multipliers (K,)."""

    def __init__(self, models: list[Transformer]):
        super().__init__()
        if not models:
            raise ValueError("FusedTransformer needs at least one model")
        first = models[0]
        sig = shape_signature(first)
        for i, m in enumerate(models[1:], start=1):
            if shape_signature(m) != sig:
                raise ValueError(f"model {i} differs in shape from model 0; only same-shape trials fuse")
        self.cfg = first.cfg
        self.roles: dict[str, Role] = param_roles(first)
        self.names = [name for name, _ in first.named_parameters()]
        # ParameterDict keys may not contain dots
        self.weights = nn.ParameterDict({
            _key(name): nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in models]))
            for name in self.names})
        mults = [m.mults for m in models]
        self.register_buffer("emb_mult", torch.tensor([x.emb_mult for x in mults]), persistent=False)
        self.register_buffer("residual_mult", torch.tensor([x.residual_mult for x in mults]), persistent=False)
        self.register_buffer("attn_scale", torch.tensor([x.attn_scale for x in mults]), persistent=False)
        # mup's readout: logits = output_mult * x / m
        readout = torch.tensor([m.readout.output_mult / m.readout.width_mult() for m in models])
        self.register_buffer("readout_mult", readout, persistent=False)
        self.register_buffer("rope", first.rope.clone(), persistent=False)

    @property
    def k(self) -> int:
        return self.emb_mult.shape[0]

    def param(self, name: str) -> nn.Parameter:
        return self.weights[_key(name)]

    def named_weights(self):
        """(dotted name as in the single model, stacked parameter), in the single model's order."""
        return [(name, self.param(name)) for name in self.names]

    @torch.no_grad()
    def keep(self, slots: list[int]) -> None:
        """Shrink to the trials in `slots` (in that order): a stopped trial stops costing compute."""
        index = torch.tensor(slots, dtype=torch.long, device=self.emb_mult.device)
        for key, p in self.weights.items():
            self.weights[key] = nn.Parameter(p.detach().index_select(0, index))
        for buf in ("emb_mult", "residual_mult", "attn_scale", "readout_mult"):
            setattr(self, buf, getattr(self, buf).index_select(0, index))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        K, B, T = idx.shape
        cfg = self.cfg
        if T > cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than model.max_seq_len={cfg.max_seq_len}")
        rope = self.rope[:T]
        emb = self.param("embed.weight")  # (K, vocab, d)
        # one embedding lookup for all trials: trial k's ids index rows k*vocab .. (k+1)*vocab - 1
        offsets = torch.arange(K, device=idx.device).view(K, 1, 1) * cfg.vocab_size
        x = F.embedding(idx + offsets, emb.reshape(K * cfg.vocab_size, -1))  # (K, B, T, d)
        x = (x * _per_trial(self.emb_mult, 4)).reshape(K, B * T, -1)     # (K, N, d)
        r = _per_trial(self.residual_mult, 3)
        for i in range(cfg.n_layers):
            pre = f"blocks.{i}."
            h = self._norm(x, pre + "attn_norm.weight")
            x = x + r * self._attention(h, pre + "attn.", B, T, rope)
            h = self._norm(x, pre + "mlp_norm.weight")
            gate, up = self._linear(h, pre + "mlp.gate.weight"), self._linear(h, pre + "mlp.up.weight")
            x = x + r * self._linear(F.silu(gate) * up, pre + "mlp.down.weight")
        x = self._norm(x, "norm.weight") * _per_trial(self.readout_mult, 3)
        logits = torch.bmm(x, emb.transpose(1, 2))  # (K, N, vocab): the tied readout
        return logits.view(K, B, T, -1)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.bmm(x, self.param(name).transpose(1, 2))  # (K, N, in) @ (K, in, out)

    def _norm(self, x: torch.Tensor, gain: str) -> torch.Tensor:
        y = F.rms_norm(x, (x.shape[-1],), None, self.cfg.norm_eps)
        return y * self.param(gain).unsqueeze(1) if _key(gain) in self.weights else y

    def _attention(self, x: torch.Tensor, pre: str, B: int, T: int, rope: torch.Tensor) -> torch.Tensor:
        cfg, K = self.cfg, x.shape[0]
        H, G, D = cfg.n_heads, cfg.kv_heads, cfg.d_head
        q = self._linear(x, pre + "q_proj.weight").view(K * B, T, H, D)
        k = self._linear(x, pre + "k_proj.weight").view(K * B, T, G, D)
        v = self._linear(x, pre + "v_proj.weight").view(K * B, T, G, D)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        # each trial's softmax scale goes into its queries; the kernel then runs with scale 1
        q = (q.view(K, B, T, H, D) * _per_trial(self.attn_scale, 5)).view(K * B, T, H, D)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (K*B, heads, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0, enable_gqa=G != H)
        y = y.transpose(1, 2).reshape(K, B * T, H * D)
        return self._linear(y, pre + "o_proj.weight")


def _key(name: str) -> str:
    return name.replace(".", "__")


def _per_trial(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) with `ndim` dims, to broadcast one number per trial."""
    return values.view(-1, *([1] * (ndim - 1)))
