"""Model accounting: parameter counts and training FLOPs per token, by hand and by torch's flop counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from windtunnel.config import load_config
from windtunnel.model.accounting import flops_per_token
from windtunnel.model.parametrization import build_model


@pytest.fixture
def xs(xs_path):
    # d_model 64, 2 layers, 4 heads of 16, 2 KV heads, SwiGLU hidden 160, vocab 256
    return load_config(xs_path, overrides=["model.base_shapes=null"])


def test_flops_per_token_by_hand(xs):
    d, d_head, d_ffn, vocab, layers, T = 64, 16, 160, 256, 2, 128
    d_kv = 2 * d_head                                               # 2 KV heads of d_head
    per_layer = d * d + 2 * d * d_kv + d * d + 3 * d * d_ffn       # q, k, v, o, gate/up/down
    matmul_params = layers * per_layer + d * vocab                  # + the tied readout
    assert matmul_params == 102_400
    # causal attention, per token and layer: QK^T and AV each 2 * (T/2) * d flops forward; x3 to train
    attention = layers * 3 * (2 * 2 * (T / 2) * d)
    assert flops_per_token(xs.model, T) == 6 * matmul_params + attention == 712_704


def test_flops_per_token_matches_torch_flop_counter_on_matmuls(xs):
    # torch counts every mm of forward + backward; SDPA's CPU kernel it does not count, so the
    # counter must equal the 6N part exactly.
    model = build_model(xs.model)
    B, T = 2, 128
    x = torch.randint(0, 256, (B, T))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    attention = flops_per_token(xs.model, T) - flops_per_token(xs.model, 0)
    assert counts.get("aten.mm", 0) / (B * T) == flops_per_token(xs.model, T) - attention == 614_400


def test_param_counts(xs):
    model = build_model(xs.model)
    norms = (2 * 2 + 1) * 64                       # two per block and the final one
    assert model.num_params(non_embedding=True) == 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 160) + norms
    assert model.num_params() == model.num_params(non_embedding=True) + 256 * 64  # readout is tied


def test_rope_scores_depend_only_on_relative_position():
    """Rotary embedding: <rope(q, t), rope(k, s)> is a function of t - s alone, and norms are kept."""
    from windtunnel.model.transformer import apply_rope, rope_tables
    rope = rope_tables(8, 16, 10000.0)
    q, k = torch.randn(8), torch.randn(8)
    at = lambda v, t: apply_rope(v.expand(1, 16, 1, 8).contiguous(), rope)[0, t, 0]  # noqa: E731
    assert torch.dot(at(q, 5), at(k, 2)).item() == pytest.approx(torch.dot(at(q, 13), at(k, 10)).item(), rel=1e-5)
    assert torch.dot(at(q, 5), at(k, 2)).item() != pytest.approx(torch.dot(at(q, 5), at(k, 4)).item(), rel=1e-3)
    assert at(q, 7).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)
    torch.testing.assert_close(at(q, 0), q)  # position 0 is not rotated
