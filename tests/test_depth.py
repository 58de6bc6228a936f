"""Shape direction and depth: the attention scale follows d_head only, and each depth rule's numbers."""

from __future__ import annotations

import math

import pytest

from windtunnel.config import config_from_dict, load_config
from windtunnel.errors import ConfigError
from windtunnel.fullrun.axes import SECTION
from windtunnel.fullrun.hparams import effective_hparams
from windtunnel.fullrun.presets import load_target
from windtunnel.fullrun.transfer import transfer
from windtunnel.model.parametrization import (
    build_model,
    depth_rule,
    multipliers,
    param_groups,
    param_roles,
)
from windtunnel.training.optim import build_optimizer

from support import ROOT


def cfg_at(d_model=64, n_layers=2, train=None, **model):
    base = {"d_model": d_model, "n_layers": n_layers, "n_heads": 4, "dim_model_base": 64, "max_seq_len": 32,
            "init_std": 0.1, **model}
    train = train or {}
    return config_from_dict({"model": base, "train": {"lr": 0.02, "steps": 10, "warmup_steps": 2, "seq_len": 32,
                                                      "weight_decay": 0.1, **train}})


# --- attention scale: a function of d_head alone ---------------------------------------------


def test_adding_heads_at_fixed_d_head_leaves_the_attention_scale_unchanged():
    scales = [multipliers(cfg_at(16 * h, n_heads=h).model).attn_scale for h in (4, 8, 24, 32)]
    assert scales == pytest.approx([8.0 / 16] * 4)
    # the same through model.head_dim, which derives n_heads = d_model / head_dim
    grown = cfg_at(512, head_dim=16).model
    assert grown.n_heads == 32 and grown.d_head == 16
    assert multipliers(grown).attn_scale == pytest.approx(8.0 / 16)


def test_growing_d_head_at_fixed_heads_scales_attention_as_one_over_d_head():
    small, big = (multipliers(cfg_at(d, n_heads=4).model).attn_scale for d in (64, 512))
    assert small / big == pytest.approx(8.0)  # d_head 16 -> 128
    assert big == pytest.approx(8.0 / 128)


def test_1p2b_preset_without_a_proxy_gets_one_over_sqrt_64():
    cfg = load_target("1.2b").config(steps=20_001)
    assert cfg.model.attn_mult is None
    assert effective_hparams(cfg)["attn_scale"] == pytest.approx(0.125)


def test_null_attn_mult_is_carried_as_the_number_the_proxy_used(tmp_path):
    proxy = tmp_path / "p.yaml"
    proxy.write_text((ROOT / "proxies" / "xs.yaml").read_text().replace("  attn_mult: 4.0", "  attn_mult: null"))
    plan = transfer(target="cpu", source=proxy)
    assert plan.config.model.attn_mult == pytest.approx(8.0)
    assert effective_hparams(plan.config)["attn_scale"] == pytest.approx(8.0 / plan.config.model.d_head)


def test_heads_grown_model_has_width_mult_and_muP_lr_of_its_width():
    cfg = cfg_at(256, head_dim=16)
    model = build_model(cfg.model)
    assert model.embed.weight.infshape.width_mult() == pytest.approx(4.0)
    assert {g["role"]: g["lr"] for g in param_groups(model, cfg)}["hidden"] == pytest.approx(0.02 / 4)


@pytest.mark.parametrize("model, key", [({"head_dim": 24}, "model.head_dim"),
                                         ({"head_dim": 16, "n_kv_heads": 2}, "model.n_kv_heads"),
                                         ({"depth_scaling": "cubic"}, "model.depth_scaling"),
                                         ({"n_layers_base": 0}, "model.n_layers_base")])
def test_bad_shape_and_depth_keys_name_the_key(model, key):
    with pytest.raises(ConfigError) as e:
        cfg_at(64, **model)
    assert e.value.key == key


# --- depth rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_layers", [2, 8, 24])
def test_sqrt_scales_the_branches_only(n_layers):
    cfg = cfg_at(128, n_layers, scale_depth=1.4, depth_scaling="sqrt")
    rule = depth_rule(cfg.model)
    assert rule.residual_mult == pytest.approx(1.4 / math.sqrt(n_layers))
    groups = param_groups(build_model(cfg.model), cfg)
    assert {g["eps"] for g in groups} == {cfg.train.eps}
    assert {g["role"]: g["lr"] for g in groups} == pytest.approx({"embedding": 0.02, "hidden": 0.01, "vector": 0.02})


def test_completep_branch_is_one_over_depth_and_equals_sqrt_at_the_base_depth():
    def branch(n, rule):
        return multipliers(cfg_at(64, n, scale_depth=1.4, depth_scaling=rule, n_layers_base=2).model).residual_mult
    assert [branch(n, "completep") * n for n in (2, 4, 16, 48)] == pytest.approx([2 * 1.4 / math.sqrt(2)] * 4)
    assert branch(2, "completep") == pytest.approx(branch(2, "sqrt"))
    assert branch(16, "completep") == pytest.approx(branch(16, "sqrt") / math.sqrt(8))  # 1/L vs 1/sqrt(L)
    blocks = build_model(cfg_at(64, 8, depth_scaling="completep").model).blocks
    assert [b.residual_mult for b in blocks] == pytest.approx([1.4 / math.sqrt(2) / 4] * 8)


def _groups_by_place(cfg):
    """{(role, inside a block?): group} for the optimizer of `cfg`."""
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {(g["role"], ids[id(g["params"][0])].startswith("blocks.")): g for g in opt.param_groups}


@pytest.mark.parametrize("n_layers", [4, 16])
def test_completep_eps_inside_blocks_is_divided_by_depth_and_lr_unchanged(n_layers):
    cfg = cfg_at(128, n_layers, depth_scaling="completep", n_layers_base=2)
    g = _groups_by_place(cfg)
    d, eps = n_layers / 2, cfg.train.eps
    assert g[("hidden", True)]["eps"] == pytest.approx(eps / d)
    assert g[("vector", True)]["eps"] == pytest.approx(eps / d)
    assert g[("embedding", False)]["eps"] == g[("vector", False)]["eps"] == eps  # final norm and embedding
    # alpha = 1: the lr of block tensors carries (L / L_base)^0 = 1: hidden lr / m, norm gains lr
    assert g[("hidden", True)]["lr"] == pytest.approx(0.02 / 2)
    assert g[("vector", True)]["lr"] == g[("vector", False)]["lr"] == pytest.approx(0.02)
    roles = param_roles(build_model(cfg.model))
    assert sum(len(x["params"]) for x in g.values()) == len(roles)  # every tensor in exactly one group


@pytest.mark.parametrize("mode", ["independent", "coupled"])
def test_completep_weight_decay_shrink_is_the_same_at_every_depth(mode):
    shrinks = []
    for n_layers in (2, 8):
        cfg = cfg_at(128, n_layers, depth_scaling="completep", train={"weight_decay_mode": mode})
        hidden = _groups_by_place(cfg)[("hidden", True)]
        shrinks.append(hidden["lr"] * hidden["weight_decay"])
    assert shrinks[1] == pytest.approx(shrinks[0]) and shrinks[0] > 0


def test_sp_ignores_the_depth_rule():
    cfg = cfg_at(64, 16, parametrization="sp", depth_scaling="completep")
    assert depth_rule(cfg.model).residual_mult == 1.0
    assert {g["eps"] for g in param_groups(build_model(cfg.model), cfg)} == {cfg.train.eps}


# --- transfer: depth warning and the axes table --------------------------------------------------


def test_transfer_warns_when_the_target_is_much_deeper_and_lists_every_axis():
    plan = transfer(target="1.2b", source=ROOT / "proxies" / "xs.yaml")
    depth = [w for w in plan.warnings if w.startswith("depth:")]
    assert len(depth) == 1 and "48 layers, the proxy 2 (24x)" in depth[0]
    assert "model.depth_scaling" in depth[0] and "sweeps/depth_transfer.yaml" in depth[0]
    assert "check transfer" in depth[0]
    axes = {r.label: r for r in plan.rows if r.section == SECTION}
    assert list(axes) == ["width (d_model)", "depth (layers)", "heads (d_head)", "vocabulary", "sequence length",
                          "batch (tokens per step)", "training tokens", "tokens per parameter"]
    assert (axes["depth (layers)"].proxy, axes["depth (layers)"].target) == (2, 48)
    assert axes["vocabulary"].note.startswith("255x; not verified")
    assert "sweeps/horizon.yaml" in axes["tokens per parameter"].note
    horizon = [w for w in plan.warnings if w.startswith("horizon:")]
    assert len(horizon) == 1 and "--horizon" in horizon[0]


def test_no_depth_warning_within_four_times_the_proxy_depth():
    plan = transfer(target="cpu", source=ROOT / "proxies" / "xs.yaml")  # 4 layers vs 2
    assert not [w for w in plan.warnings if w.startswith("depth:")]


def test_depth_transfer_preset_sweeps_both_rules_at_four_depths():
    from windtunnel.sweep.spec import load_sweep
    spec = load_sweep(ROOT / "sweeps" / "depth_transfer.yaml")
    assert spec.parameters["model.depth_scaling"].values == ("sqrt", "completep")
    assert spec.parameters["model.n_layers"].values == (2, 4, 8, 16)
    base = load_config(spec.base, overrides=spec.set)
    assert base.model.d_model == 64 and base.model.base_shapes is None
