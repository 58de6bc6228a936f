"""Coord check: μP's activations stay flat in width, SP's grow, a broken μP (no lr / m) is caught."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, TINY

import windtunnel.training.optim
from windtunnel.analysis.coord_check import coord_check, plot_coord
from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.errors import ConfigError
from windtunnel.model.parametrization import param_groups

WIDTHS = [64, 128, 256, 512]  # 8x; narrower than 64 (d_head 8-16) attention alone moves ~2x
SHAPE = ["model.n_heads=4", "model.n_kv_heads=2", "model.dim_model_base=64", "train.batch_size=8"]
LAYERS = ["embedding", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp", "logits"]


XS = ROOT / "proxies" / "xs.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(XS, overrides=TINY + SHAPE)


@pytest.fixture(scope="module")
def result(cfg):
    return coord_check(cfg, widths=WIDTHS, steps=4, lr=0.01, seed=0)


def test_mup_is_flat_in_width_and_passes(result):
    assert result.layers == LAYERS
    assert result.passed is True and result.offenders["mup"] == []
    for layer in LAYERS:
        for step in range(1, 5):
            if (layer, step) != ("logits", 1):
                assert result.spread("mup", layer, step) <= 2.0, (layer, step)
    # the readout at init shrinks like 1/sqrt(width) under muP: the one excepted record
    assert result.growth("mup", "logits", 1) == pytest.approx(1 / math.sqrt(8), rel=0.25)
    # every width learns on the fixed batch
    assert all(row[-1] < row[0] for row in result.losses["mup"])


def test_sp_grows_with_width(result):
    # SP's hidden outputs grow ~sqrt(width) at init (fixed init std), and much faster once Adam moves them
    assert result.growth("sp", "blocks.0.mlp", 1) > 2.0
    assert result.growth("sp", "blocks.0.mlp", 4) > 20.0
    grown = {o.layer for o in result.offenders["sp"] if o.direction == "grows"}
    assert {"blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"} <= grown


def test_summary_and_json(result):
    text = result.summary()
    assert "muP coord check: PASS" in text and "sp: worst spread" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True and data["widths"] == WIDTHS
    assert len(data["sizes"]["mup"]["blocks.1.mlp"]) == 4 and len(data["sizes"]["mup"]["blocks.1.mlp"][0]) == 4


def test_broken_mup_without_lr_scaling_fails_naming_layers(cfg, monkeypatch):
    def flat_lr(model, run_cfg, *, roles=None):  # hidden matrices get lr, not lr / m
        groups = param_groups(model, run_cfg, roles=roles)
        for g in groups:
            g["lr"] = g["peak_lr"] = run_cfg.train.lr
        return groups

    monkeypatch.setattr(windtunnel.training.optim, "param_groups", flat_lr)
    broken = coord_check(cfg, widths=WIDTHS, steps=4, lr=0.01, seed=0, parametrizations=["mup"])
    assert broken.passed is False
    named = {o.layer: o for o in broken.offenders["mup"]}
    assert {"blocks.0.mlp", "blocks.1.mlp"} <= set(named)
    assert all(o.direction == "grows" and o.spread > 4.0 for o in named.values() if "mlp" in o.layer)
    assert "offending: blocks.0.mlp grows" in broken.summary()


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
    with pytest.raises(ConfigError, match="model.d_model"):  # 100 / 4 heads = 25: odd head size
        coord_check(cfg, widths=[64, 100], steps=1)


def test_cli_writes_json_and_plots(tmp_path, capsys):
    args = ["check", "coord", str(XS), "--widths", "64,128", "--steps", "2", "--parametrizations", "mup",
            "--out", str(tmp_path)] + [a for o in TINY + SHAPE for a in ("--set", o)]
    assert main(args) == 0
    assert "muP coord check: PASS" in capsys.readouterr().out
    assert json.loads((tmp_path / "coord_check.json").read_text())["widths"] == [64, 128]
    assert (tmp_path / "coord_mup.png").exists() and not (tmp_path / "coord_sp.png").exists()
