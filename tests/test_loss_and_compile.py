"""The chunked loss equals the plain one (values and gradients); the block compiles without graph breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from windtunnel.config import load_config
from windtunnel.model.loss import chunked_cross_entropy
from windtunnel.model.parametrization import build_model
from windtunnel.model.transformer import attention_context

from support import ROOT, TINY


def _plain_and_chunked(dtype_ctx, chunk):
    torch.manual_seed(0)
    h = torch.randn(3, 10, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (3, 10))
    with dtype_ctx:
        plain = F.cross_entropy(F.linear(h * 0.5, w).float().flatten(0, 1), t.flatten())
    gh, gw = torch.autograd.grad(plain * 2.0, (h, w))  # a non-unit upstream gradient
    with dtype_ctx:
        chunked = chunked_cross_entropy(h, w, t, scale=0.5, chunk=chunk)
    ch, cw = torch.autograd.grad(chunked * 2.0, (h, w))
    return (plain, gh, gw), (chunked, ch, cw)


@pytest.mark.parametrize("chunk", [1, 7, 30, 1000])  # one token, uneven chunks, exact fit, one chunk
def test_chunked_loss_equals_plain_loss_values_and_gradients(chunk):
    import contextlib
    (p, gh, gw), (c, ch, cw) = _plain_and_chunked(contextlib.nullcontext(), chunk)
    assert c.item() == pytest.approx(p.item(), rel=1e-6)
    torch.testing.assert_close(ch, gh, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cw, gw, rtol=1e-5, atol=1e-7)


def test_chunked_loss_under_bf16_autocast_is_close_to_plain():
    (p, _, gw), (c, _, cw) = _plain_and_chunked(torch.autocast("cpu", dtype=torch.bfloat16), 8)
    assert c.item() == pytest.approx(p.item(), rel=1e-2)
    torch.testing.assert_close(cw, gw, rtol=0.05, atol=2e-3)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunked_cross_entropy(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), scale=1, chunk=0)


def test_model_loss_with_chunks_matches_logits_loss():
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*TINY, "model.loss_chunk_tokens=20"])
    model = build_model(cfg.model, seed=0)
    x, y = torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32))
    plain = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
    plain.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked = model(x, targets=y)
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_block_compiles_as_one_graph_with_sdpa():
    # the unit the full run compiles is a block (before FSDP wraps it): RoPE and SDPA must not break it
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=TINY)
    model = build_model(cfg.model, seed=0)
    x, rope = torch.randn(2, 16, cfg.model.d_model), model.rope[:16]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.blocks[0])(x, rope)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_an_sdpa_backend_choice_holds_torch_to_that_kernel():
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=TINY)
    model = build_model(cfg.model, seed=0)
    x = torch.randint(0, 256, (2, 16))
    with attention_context("math"):
        math_logits = model(x)
    torch.testing.assert_close(math_logits, model(x), rtol=1e-4, atol=1e-5)
    with attention_context("cudnn"), pytest.raises(RuntimeError):  # no cuDNN kernel on CPU: it says so
        model(x)


def test_one_precision_recipe_keeps_norms_rope_and_block_inputs_in_fp32():
    from windtunnel.training.precision import Precision
    policy = Precision("bf16").fsdp_policy()["mp_policy"]
    assert (policy.param_dtype, policy.reduce_dtype, policy.cast_forward_inputs) == (
        torch.bfloat16, torch.float32, False)  # the fp32 residual stream and RoPE table enter a block uncast
    assert Precision("bf16").fsdp_policy(root=True)["mp_policy"].param_dtype == torch.float32
    assert Precision("fp32").fsdp_policy() == {}
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[*TINY, "train.precision=bf16"])
    model = build_model(cfg.model, seed=0)
    x = torch.randint(0, 256, (2, 16))
    seen = {}
    model.blocks[0].attn_norm.register_forward_hook(lambda m, i, o: seen.update(norm=o.dtype))
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.update(block=o.dtype, rope=i[1].dtype))
    model.blocks[0].attn.q_proj.register_forward_hook(lambda m, i, o: seen.update(matmul=o.dtype))
    with Precision.of(cfg).autocast(torch.device("cpu")):
        loss = model(x, targets=x)
    assert seen == {"norm": torch.float32, "block": torch.float32, "rope": torch.float32, "matmul": torch.bfloat16}
    assert loss.dtype == torch.float32
