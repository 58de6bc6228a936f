"""muP: init, lr groups, logits and base shapes per width, against mup's own MuAdamW and the μP rules."""

from __future__ import annotations

import math

import mup
import pytest
import torch

from windtunnel.config import config_from_dict
from windtunnel.errors import ConfigError
from windtunnel.model.parametrization import build_model, multipliers, param_groups, param_roles, write_base_shapes
from windtunnel.training.optim import build_optimizer


def cfg_at(d_model, **model):
    base = {"d_model": d_model, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "dim_model_base": 64,
            "max_seq_len": 32, "init_std": 0.1, **model}
    return config_from_dict({"model": base, "train": {"lr": 0.02, "steps": 10, "warmup_steps": 2, "seq_len": 32}})


@pytest.mark.parametrize("d_model", [64, 128, 256, 512])
def test_hidden_lr_is_lr_over_m_and_matches_mupadamw(d_model):
    cfg = cfg_at(d_model)
    model = build_model(cfg.model)
    m = d_model / 64
    lrs = {g["role"]: g["lr"] for g in param_groups(model, cfg)}
    assert lrs == pytest.approx({"embedding": 0.02, "hidden": 0.02 / m, "vector": 0.02})
    # mup's own optimizer, built from the infshapes we attached, gives the same per-tensor lr
    ours = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    theirs = {id(p): g["lr"] for g in mup.MuAdamW(model.parameters(), lr=0.02).param_groups for p in g["params"]}
    assert ours == pytest.approx(theirs)


@pytest.mark.parametrize("d_model", [64, 256, 1024])
def test_init_std_scales_as_one_over_sqrt_m(d_model):
    cfg = cfg_at(d_model)
    model = build_model(cfg.model, seed=1)
    m = d_model / 64
    roles = param_roles(model)
    hidden = torch.cat([p.flatten() for n, p in model.named_parameters() if roles[n] == "hidden"])
    assert hidden.std().item() == pytest.approx(0.1 / math.sqrt(m), rel=0.03)
    assert model.embed.weight.std().item() == pytest.approx(0.1, rel=0.05)
    assert all(torch.all(p == 1) for n, p in model.named_parameters() if roles[n] == "vector")


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_hidden_and_embedding_init_stds_are_separate_and_the_shorthand_fills_the_rest(parametrization):
    m = 4.0
    shrink = math.sqrt(m) if parametrization == "mup" else 1.0

    def stds(**model):
        net = build_model(cfg_at(256, parametrization=parametrization, **model).model, seed=2)
        roles = param_roles(net)
        hidden = torch.cat([p.flatten() for n, p in net.named_parameters() if roles[n] == "hidden"])
        return hidden.std().item(), net.embed.weight.std().item()

    # the shorthand sets both; a role's own key wins over it, whichever order they are given in
    assert stds(init_std=0.05) == pytest.approx((0.05 / shrink, 0.05), rel=0.05)
    assert stds(init_std=0.05, hidden_init_std=0.2) == pytest.approx((0.2 / shrink, 0.05), rel=0.05)
    assert stds(emb_init_std=0.3, init_std=0.05) == pytest.approx((0.05 / shrink, 0.3), rel=0.05)
    assert stds(init_std=0.05, hidden_init_std=0.2, emb_init_std=0.01) == pytest.approx((0.2 / shrink, 0.01),
                                                                                        rel=0.05)


@pytest.mark.parametrize("key", ["hidden_init_std", "emb_init_std"])
def test_a_role_init_std_must_be_positive(key):
    with pytest.raises(ConfigError, match=f"model.{key}.*> 0 or null"):
        cfg_at(64, **{key: 0.0})


def test_logits_are_divided_by_m():
    cfg = cfg_at(256)
    model = build_model(cfg.model)
    h = torch.randn(3, 256)
    expected = h @ model.embed.weight.T / 4.0
    torch.testing.assert_close(model.readout(h), expected)


def test_mup_equals_sp_at_base_width():
    """At d_model == dim_model_base with neutral multipliers, muP and SP are the same model."""
    neutral = {"scale_emb": 1.0, "scale_depth": math.sqrt(2), "attn_mult": 4.0}  # 4 / 16 = 1 / sqrt(16)
    mup_cfg = cfg_at(64, **neutral)
    sp_cfg = cfg_at(64, parametrization="sp", **neutral)
    a, b = build_model(mup_cfg.model, seed=3), build_model(sp_cfg.model, seed=3)
    assert multipliers(mup_cfg.model) == multipliers(sp_cfg.model)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(a(x), b(x))
    ga = [(g["role"], g["lr"]) for g in param_groups(a, mup_cfg)]
    gb = [(g["role"], g["lr"]) for g in param_groups(b, sp_cfg)]
    assert ga == gb


def test_sp_has_no_width_scaling():
    cfg = cfg_at(256, parametrization="sp")
    mults = multipliers(cfg.model)
    assert (mults.emb_mult, mults.residual_mult, mults.width_mult) == (1.0, 1.0, 1.0)
    assert mults.attn_scale == pytest.approx(1 / math.sqrt(64))
    assert {g["lr"] for g in param_groups(build_model(cfg.model), cfg)} == {0.02}


def test_mup_multipliers_follow_brief():
    cfg = cfg_at(256, scale_emb=12.0, scale_depth=1.4)
    mults = multipliers(cfg.model)
    assert mults.emb_mult == 12.0
    assert mults.residual_mult == pytest.approx(1.4 / math.sqrt(2))
    # attention: attn_mult / d_head with the default attn_mult 8 = sqrt(64)
    assert mults.attn_scale == pytest.approx(8.0 / 64)
    assert multipliers(cfg_at(256, attn_mult=4.0).model).attn_scale == pytest.approx(4.0 / 64)


def test_gqa_shapes():
    model = build_model(cfg_at(128, n_heads=8, n_kv_heads=2).model)
    attn = model.blocks[0].attn
    assert attn.q_proj.weight.shape == (128, 128)
    assert attn.k_proj.weight.shape == (2 * 16, 128)
    assert attn.v_proj.weight.shape == (2 * 16, 128)
    assert attn.o_proj.weight.shape == (128, 128)
    assert model(torch.randint(0, 256, (2, 10))).shape == (2, 10, 256)


def test_gqa_equals_mha_with_repeated_kv_heads():
    """GQA with the KV heads repeated by hand must give plain multi-head attention's output."""
    gqa = build_model(cfg_at(64, n_heads=4, n_kv_heads=2).model, seed=0)
    mha = build_model(cfg_at(64, n_heads=4, n_kv_heads=4).model, seed=0)
    with torch.no_grad():
        for bg, bm in zip(gqa.blocks, mha.blocks):
            for name in ("q_proj", "o_proj"):
                getattr(bm.attn, name).weight.copy_(getattr(bg.attn, name).weight)
            for name in ("k_proj", "v_proj"):
                w = getattr(bg.attn, name).weight.view(2, 16, 64)  # (kv_heads, d_head, d_model)
                getattr(bm.attn, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(64, 64))
            bm.mlp.load_state_dict(bg.mlp.state_dict())
        mha.embed.weight.copy_(gqa.embed.weight)
    x = torch.randint(0, 256, (2, 12))
    torch.testing.assert_close(gqa(x), mha(x))


def test_causal():
    model = build_model(cfg_at(64).model)
    x = torch.randint(0, 256, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 256
    torch.testing.assert_close(model(x)[0, :8], model(y)[0, :8])


def test_weight_decay_is_width_independent():
    for mode, expected in (("independent", 1e-3), ("coupled", 1e-3 * 0.02)):
        shrinks = set()
        for d_model in (64, 256):
            cfg = config_from_dict({"model": {"d_model": d_model, "n_heads": 4, "dim_model_base": 64},
                                    "train": {"lr": 0.02, "weight_decay": 1e-3, "weight_decay_mode": mode}})
            for g in build_optimizer(build_model(cfg.model), cfg).param_groups:
                if g["role"] != "vector":
                    shrinks.add(round(g["lr"] * g["weight_decay"], 12))
        assert len(shrinks) == 1 and shrinks.pop() == pytest.approx(expected), mode


def test_base_shapes_file_round_trip(tmp_path):
    cfg = cfg_at(256)
    path = write_base_shapes(cfg.model, tmp_path / "s.bsh")
    text = path.read_text()
    assert "embed.weight" in text and "null" in text  # vocab is a finite dim
    from_file = cfg_at(256, base_shapes=str(path))
    model = build_model(from_file.model)
    assert model.embed.weight.infshape.width_mult() == 4.0
    assert model.blocks[0].mlp.down.weight.infshape.width_mult() == 4.0


def test_base_shapes_file_for_other_base_width_is_refused(tmp_path):
    path = write_base_shapes(cfg_at(256, dim_model_base=32).model, tmp_path / "s.bsh")
    with pytest.raises(ConfigError, match="model.base_shapes"):
        build_model(cfg_at(256, base_shapes=str(path)).model)


def test_base_width_need_not_divide_into_heads():
    """MiniCPM: dim_model_base 256 over 24 heads; multipliers stay exact."""
    cfg = config_from_dict({"model": {"d_model": 384, "n_heads": 24, "n_kv_heads": 8, "dim_model_base": 256,
                                      "n_layers": 1, "max_seq_len": 16}, "train": {"seq_len": 16}})
    model = build_model(cfg.model)
    assert model.blocks[0].attn.k_proj.weight.infshape.width_mult() == pytest.approx(1.5)


def test_deepcopy_keeps_readout_scale():
    import copy
    model = build_model(cfg_at(256).model)
    clone = copy.deepcopy(model)
    x = torch.randint(0, 256, (1, 8))
    torch.testing.assert_close(clone(x), model(x))
