"""Coord check: a correct μP passes from below to above its base width, SP and each broken μP rule fail."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import windtunnel.training.optim
from windtunnel.analysis.coord_check import (
    coord_check,
    growth_exponent,
    predicted_init_exponent,
)
from windtunnel.analysis.coord_plot import plot_coord
from windtunnel.cli import main
from windtunnel.config import ModelConfig, load_config
from windtunnel.errors import ConfigError
from windtunnel.model import parametrization

from support import ROOT, TINY

WIDTHS = [32, 64, 128, 256]  # base 64: from half the base to four times it
SHAPE = ["model.n_heads=4", "model.n_kv_heads=2", "model.dim_model_base=64", "train.batch_size=8"]
LAYERS = ["embedding", "blocks.0.attn_logits", "blocks.0.attn", "blocks.0.mlp",
          "blocks.1.attn_logits", "blocks.1.attn", "blocks.1.mlp", "logits"]
STEPS = 4
XS = ROOT / "proxies" / "xs.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(XS, overrides=TINY + SHAPE)


@pytest.fixture(scope="module")
def result(cfg):
    return coord_check(cfg, widths=WIDTHS, steps=STEPS, lr=0.01, seeds=[0, 1])


def test_growth_exponent_is_the_log_log_slope():
    assert growth_exponent([32, 64, 128], [3.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert growth_exponent([32, 128], [1.0, 0.5]) == pytest.approx(-0.5)
    assert growth_exponent([32, 64], [1.0, math.nan]) == math.inf


def test_in_memory_base_shapes_at_half_the_base_width():
    model = parametrization.build_model(ModelConfig(d_model=32, dim_model_base=64, n_heads=4, n_kv_heads=2))
    assert model.embed.weight.infshape.width_mult() == 0.5 and model.readout.width_mult() == 0.5


def test_mup_passes_from_below_to_above_the_base_width(result):
    assert result.layers == LAYERS and result.passed is True and result.offenders["mup"] == []
    for layer in LAYERS:  # what is judged: the size at init against the prediction, the first update
        assert result.exponent("mup", layer, 1) - predicted_init_exponent(layer) <= 0.25, layer
        assert result.exponent("mup", layer, 2, "update") <= 0.25, layer
    # at init the readout and the attention logits (q, k independent) shrink like width^-1/2
    assert result.exponent("mup", "logits", 1) == pytest.approx(-0.5, abs=0.1)
    assert result.exponent("mup", "blocks.0.attn_logits", 1) == pytest.approx(-0.5, abs=0.1)
    assert result.exponent("mup", "embedding", 2, "update") == pytest.approx(0.0, abs=0.1)
    assert all(run[-1] < run[0] for seed in result.losses["mup"] for run in seed)  # every width learns


def test_sp_fails_growing_like_a_power_of_width(result):
    assert result.exponent("sp", "blocks.0.mlp", 1) > 1.0  # fixed init std: hidden outputs grow at init
    named = {o.layer for o in result.offenders["sp"] if o.exponent > 0}
    assert {"blocks.0.attn_logits", "blocks.0.attn", "blocks.0.mlp", "blocks.1.mlp"} <= named


def test_mup_at_a_high_lr_passes_though_later_steps_drift(cfg):
    high = coord_check(cfg, widths=WIDTHS, steps=STEPS, lr=0.05, seeds=[1, 2], parametrizations=["mup"])
    assert high.passed is True, high.summary()
    # why later steps are not judged: a correct μP's sizes there drift past the threshold at finite width
    later = max(e for layer in LAYERS for t in range(3, STEPS + 1) for e in high.exponents("mup", layer, t))
    assert later > 0.25


def _groups(*, hidden_lr_times_m=False, embedding_lr_over_m=False):
    original = parametrization.param_groups

    def groups(model, run_cfg, *, roles=None):
        out, m = original(model, run_cfg, roles=roles), run_cfg.model.width_mult
        for g in out:
            if g["role"] == "hidden" and hidden_lr_times_m:
                g["lr"] = g["peak_lr"] = run_cfg.train.lr  # not / m
            if g["role"] == "embedding" and embedding_lr_over_m:
                g["lr"] = g["peak_lr"] = run_cfg.train.lr / m
        return out
    return "optim", groups


def _multipliers(**change):
    original = parametrization.multipliers

    def mults(model_cfg):
        values = {"width_mult": 1.0} if change.get("logits_not_over_m") else {}
        if change.get("attention_sqrt"):
            values["attn_scale"] = 1 / math.sqrt(model_cfg.d_head)
        return dataclasses.replace(original(model_cfg), **values)
    return "multipliers", mults


def _init_not_over_sqrt_m():
    original = parametrization.init_weights

    @torch.no_grad()
    def init(model, model_cfg, *, seed):
        original(model, model_cfg, seed=seed)
        roles = parametrization.param_roles(model)
        for name, p in model.named_parameters():
            if roles[name] == "hidden":
                p.mul_(math.sqrt(model_cfg.width_mult))
    return "init_weights", init


MUTATIONS = {  # one broken rule each, and the tensors that must be named
    "hidden lr not / m": (_groups(hidden_lr_times_m=True), {"blocks.0.mlp", "blocks.1.mlp"}),
    "logits not / m": (_multipliers(logits_not_over_m=True), {"logits"}),
    "hidden init not / sqrt(m)": (_init_not_over_sqrt_m(), {"blocks.0.mlp", "blocks.1.mlp"}),
    "embedding lr / m": (_groups(embedding_lr_over_m=True), {"embedding"}),
    "attention 1/sqrt(d_head)": (_multipliers(attention_sqrt=True), {"blocks.0.attn_logits", "blocks.1.attn_logits"}),
}


@pytest.mark.parametrize("lr", [0.01, 0.05])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_broken_rule_fails_naming_its_tensors(cfg, monkeypatch, mutation, lr):
    (where, patched), expected = MUTATIONS[mutation]
    if where == "optim":
        monkeypatch.setattr(windtunnel.training.optim, "param_groups", patched)
    else:
        monkeypatch.setattr(parametrization, where, patched)
    broken = coord_check(cfg, widths=WIDTHS, steps=2, lr=lr, parametrizations=["mup"])  # judged: steps 1, 2
    assert broken.passed is False
    assert expected <= {o.layer for o in broken.offenders["mup"]}, broken.summary()
    assert "muP coord check: FAIL" in broken.summary() and "  offending: " in broken.summary()


def test_summary_and_json(result):
    text = result.summary()
    assert "muP coord check: PASS (threshold 0.25, mean over 2 seed(s)" in text
    assert "sp: init size exponent at most +1." in text and "later steps, not judged" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True and data["widths"] == WIDTHS and data["threshold"] == 0.25
    assert data["seeds"] == [0, 1] and len(data["sizes"]["mup"]["blocks.1.attn_logits"]) == 2
    assert len(data["sizes"]["mup"]["blocks.1.attn_logits"][0]) == 4
    assert len(data["sizes"]["mup"]["blocks.1.mlp"][0][0]) == STEPS
    assert len(data["updates"]["mup"]["blocks.1.mlp"][1][0]) == STEPS - 1
    assert data["sizes"]["mup"]["embedding"][0] != data["sizes"]["mup"]["embedding"][1]  # own init and batch


def test_the_logit_probe_is_removed_after_the_check(cfg, result):
    model = parametrization.build_model(cfg.model)
    assert all(block.attn.logits_probe is None for block in model.blocks)


def test_plots_have_one_panel_per_layer(result, tmp_path):
    paths = plot_coord(result, tmp_path)
    assert sorted(p.name for p in paths) == ["coord_mup.png", "coord_mup.svg", "coord_sp.png", "coord_sp.svg"]
    svg = (tmp_path / "coord_mup.svg").read_text()
    assert all(f">{layer}" in svg for layer in LAYERS) and "PASS" in svg
    assert svg.count('<g id="axes_') == len(LAYERS)
    assert (tmp_path / "coord_sp.png").stat().st_size > 10_000


def test_bad_arguments_are_config_errors(cfg):
    with pytest.raises(ConfigError, match="distinct"):
        coord_check(cfg, widths=[64, 64])
    with pytest.raises(ConfigError, match="steps"):
        coord_check(cfg, widths=[64, 128], steps=0)
    with pytest.raises(ConfigError, match="seeds"):
        coord_check(cfg, widths=[64, 128], seeds=[3, 3])
    with pytest.raises(ConfigError, match="threshold"):
        coord_check(cfg, widths=[64, 128], threshold=0)
    with pytest.raises(ConfigError, match="model.d_model"):  # 100 / 4 heads = 25: odd head size
        coord_check(cfg, widths=[64, 100], steps=1)


def test_cli_writes_json_and_plots_and_exits_1_naming_offenders(tmp_path, capsys, monkeypatch):
    args = ["check", "coord", str(XS), "--widths", "32,64,128", "--steps", "2", "--parametrizations", "mup",
            "--seeds", "3", "--out", str(tmp_path)] + [a for o in TINY + SHAPE for a in ("--set", o)]
    assert main(args) == 0
    assert "muP coord check: PASS (threshold 0.25" in capsys.readouterr().out
    assert json.loads((tmp_path / "coord_check.json").read_text())["widths"] == [32, 64, 128]
    assert (tmp_path / "coord_mup.png").exists() and not (tmp_path / "coord_sp.png").exists()
    monkeypatch.setattr(windtunnel.training.optim, "param_groups", _groups(hidden_lr_times_m=True)[1])
    assert main(args[:5] + ["--steps", "3"] + args[7:]) == 1
    assert "offending: blocks.0.mlp first update grows like width^+" in capsys.readouterr().out
