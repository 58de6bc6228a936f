"""`windtunnel plan`: the tunnel's shapes follow the target, its costs follow the FLOP accounting, its
sweep YAMLs load, and a budget too small, bad widths or an unknown target are refused with nothing written."""

from __future__ import annotations

import pytest

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.errors import WindtunnelError
from windtunnel.fullrun.cost_check import check_costs
from windtunnel.fullrun.presets import load_target
from windtunnel.fullrun.tunnel_plan import ASHA_FRACTION, TIERS, plan_tunnel, proxy_widths, write_tunnel
from windtunnel.model.accounting import PEAK_TFLOPS_BF16, run_flops
from windtunnel.sweep.results import ResultsTable
from windtunnel.sweep.spec import load_sweep


def test_asha_costs_a_ninth_of_a_trial():
    # rungs at T/27, T/9, T/3, T keeping a third each time: 1/27 + 2/27/3 + 6/27/9 + 18/27/27 = 1/9
    assert ASHA_FRACTION == pytest.approx(1 / 9)


def test_widths_grow_by_heads_at_the_targets_d_head():
    t = load_target("1.2b")
    assert proxy_widths(t) == [128, 256, 512, 1024]
    with pytest.raises(WindtunnelError, match="d_head 64"):
        proxy_widths(t, [128, 200, 512])
    with pytest.raises(WindtunnelError, match="narrower than the target"):
        proxy_widths(t, [256, 512, 1536])


def test_plan_for_the_1p2b_costs_its_stages_and_writes_loadable_sweeps(tmp_path):
    plan = plan_tunnel(target="1.2b", budget_gpu_hours=300, nproc=8)
    assert plan.tier.name == "thorough" and plan.gpu_hours <= 300 and plan.share < 0.07
    assert [s.name for s in plan.stages] == ["search", "width_check", "depth_check", "horizon", "ladder"]
    assert "width 1024, 8 layers" in plan.notes[0] and "GiB per GPU" in plan.notes[0]  # memory of the largest proxy
    # the target's cost: the same run_flops transfer uses, at the H100 peak and 40 % MFU
    t = plan.target
    flops = run_flops(t.config(steps=20_001), 1.5e12)
    assert plan.target_gpu_hours == pytest.approx(flops / (PEAK_TFLOPS_BF16["H100 80GB HBM3"] * 1e12 * 0.4) / 3600)
    written = write_tunnel(plan, tmp_path / "tunnel")
    assert sorted(p.name for p in written) == ["depth_check.yaml", "horizon.yaml", "proxy.yaml", "search.yaml",
                                              "width_check.yaml"]
    proxy = load_config(tmp_path / "tunnel" / "proxy.yaml")
    assert proxy.model.d_model == 128 and proxy.model.n_heads == 2 and proxy.model.d_head == 64
    assert proxy.model.vocab_size == 65280 and proxy.model.dim_model_base == 256
    search = load_sweep(tmp_path / "tunnel" / "search.yaml")
    assert search.method == "tpe" and search.early_terminate.type == "asha" and search.budget.fuse == "auto"
    width = load_sweep(tmp_path / "tunnel" / "width_check.yaml")
    assert list(width.parameters["model.d_model"].values) == [128, 256, 512, 1024] and len(width.seeds) == 3
    assert "train.steps" in load_sweep(tmp_path / "tunnel" / "horizon.yaml").parameters


def test_smaller_budget_picks_a_cheaper_tier_and_too_small_says_what_it_takes():
    cheap = plan_tunnel(target="1.2b", budget_gpu_hours=30)
    assert cheap.tier.name != "thorough" and cheap.gpu_hours <= 30
    minimal = plan_tunnel(target="1.2b", budget_gpu_hours=1e6, tier="minimal")
    with pytest.raises(WindtunnelError, match=f"takes {minimal.gpu_hours:,.0f} GPU-hours"):
        plan_tunnel(target="1.2b", budget_gpu_hours=minimal.gpu_hours * 0.9)
    assert TIERS[-1].name == "minimal"


def test_cli_dry_run_writes_nothing_and_bad_input_exits_2(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["plan", "--target", "1.2b", "--budget", "300", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "share of the target's training" in text and "~7 %" in text and not out.exists()
    for argv, words in ((["--target", "nope", "--budget", "300"], "unknown target"),
                        (["--target", "1.2b", "--budget", "0.5"], "below the minimal tunnel"),
                        (["--target", "1.2b", "--budget", "300", "--widths", "100,200,400"], "d_head 64")):
        assert main(["plan", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["plan", "--target", "1.2b", "--budget", "300", "--out", str(out)]) == 0
    assert (out / "search.yaml").is_file()


def test_cost_check_compares_measured_seconds_with_flops_over_peak(tmp_path):
    from windtunnel.config import save_config

    from support import ROOT

    table = ResultsTable(tmp_path / "run", param_keys=["model.d_model"])
    for w, seconds in ((64, 10.0), (128, 30.0)):
        cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=[f"model.d_model={w}", "model.base_shapes=null"])
        save_config(cfg, tmp_path / "run" / "trials" / f"w{w}" / "config.yaml")
        table.add({"trial_id": f"w{w}", "status": "ok", "val_loss": 2.0, "tokens": 1e6, "seconds": seconds, "seed": 0,
                   "model.d_model": w})
    rows = check_costs(tmp_path / "run", mfu=0.5, peak=1e10)
    assert [r.width for r in rows] == [64, 128]
    expected = run_flops(load_config(tmp_path / "run" / "trials" / "w128" / "config.yaml"), 1e6) / (1e10 * 0.5)
    assert rows[1].estimated_s == pytest.approx(expected) and rows[1].ratio == pytest.approx(30.0 / expected)
