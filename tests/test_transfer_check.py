"""Transfer check: the parabola fit on synthetic curves, drift and verdicts on synthetic run folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from runfolders import TRANSFER_PARAMETERS, transfer_rows, write_run

from windtunnel.analysis.transfer_check import fit_optimum, transfer_check
from windtunnel.cli import main
from windtunnel.errors import WindtunnelError

GRID = [2.0**e for e in range(-12, -3)]  # 2^-12 .. 2^-4


def curve(vertex: float, lrs=GRID, *, a: float = 0.07, a_right: float | None = None):
    x = np.log2(lrs)
    steep = np.where(x > vertex, a if a_right is None else a_right, a)
    return (2.5 + steep * (x - vertex) ** 2).tolist()


@pytest.mark.parametrize("vertex", [-9.0, -6.3, -5.75, -10.4])
@pytest.mark.parametrize("neighbors", [1, 2])
def test_known_vertex_is_recovered(vertex, neighbors):
    opt = fit_optimum(GRID, curve(vertex), neighbors=neighbors)
    assert opt.method == "parabola" and not opt.on_edge
    assert opt.log2_lr == pytest.approx(vertex, abs=1e-9)
    assert opt.lr == pytest.approx(2.0**vertex)
    assert opt.fit_loss == pytest.approx(2.5, abs=1e-9)
    assert opt.n_points == 2 * neighbors + 1


def test_unsorted_input_and_half_step_grid():
    lrs = [2.0 ** (e / 2) for e in range(-20, -7)]
    order = np.random.default_rng(0).permutation(len(lrs))
    losses = curve(-7.2, lrs)
    opt = fit_optimum([lrs[i] for i in order], [losses[i] for i in order])
    assert opt.log2_lr == pytest.approx(-7.2, abs=1e-9)


def test_skewed_curve_stays_within_a_grid_step():
    # real curves rise faster at high lr; a 3-point fit must still land within half a grid step
    for vertex in (-7.0, -7.3, -6.6):
        opt = fit_optimum(GRID, curve(vertex, a=0.05, a_right=0.3))
        assert opt.method == "parabola" and abs(opt.log2_lr - vertex) < 0.5


@pytest.mark.parametrize("vertex,side", [(-13.0, "smallest"), (-3.0, "largest")])
def test_best_point_on_the_edge_names_no_optimum(vertex, side):
    opt = fit_optimum(GRID, curve(vertex))
    assert opt.on_edge and opt.lr is None and opt.log2_lr is None and opt.method == "none"
    assert side in opt.note and "extend the grid" in opt.note
    assert opt.best_lr == (GRID[0] if side == "smallest" else GRID[-1])


def test_diverged_points_bound_the_grid_but_are_not_fitted():
    losses = curve(-6.0)
    losses[-2:] = [math.inf, math.nan]  # 2^-5 and 2^-4 diverged: 2^-6 is the last finite point
    opt = fit_optimum(GRID, losses)
    assert not opt.on_edge and opt.method == "grid" and opt.log2_lr == -6.0
    assert "diverged" in opt.note


def test_all_diverged_and_bad_inputs():
    assert fit_optimum(GRID[:3], [math.inf] * 3).method == "none"
    with pytest.raises(ValueError, match="distinct"):
        fit_optimum([0.01, 0.01, 0.02], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="> 0"):
        fit_optimum([0.0, 0.01, 0.02], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="equal-length"):
        fit_optimum([0.01, 0.02], [1.0])
    with pytest.raises(ValueError, match="neighbors"):
        fit_optimum(GRID, curve(-7), neighbors=0)


def mup_holds_sp_moves(p, w):
    doublings = math.log2(w / 64)
    return -6.5 + 0.1 * doublings if p == "mup" else -6.0 - 1.0 * doublings


def test_transfer_check_passes_when_mup_holds_and_sp_moves(tmp_path):
    run = write_run(tmp_path / "wt", transfer_rows(mup_holds_sp_moves), TRANSFER_PARAMETERS)
    report = transfer_check(run)
    mup, sp = report.summaries["mup"], report.summaries["sp"]
    assert mup.drift == pytest.approx(0.3, abs=1e-6) and mup.slope == pytest.approx(0.1, abs=1e-6)
    assert sp.drift == pytest.approx(3.0, abs=1e-6) and sp.slope == pytest.approx(-1.0, abs=1e-6)
    assert mup.loss_falls and mup.verdict == "pass" and report.verdict == "pass"
    assert sp.verdict == "drifts"
    saved = json.loads((run / "transfer_check.json").read_text())
    assert saved["verdict"] == "pass"
    assert saved["parametrizations"]["sp"]["drift"] == pytest.approx(3.0, abs=1e-6)
    assert len(saved["optima"]) == 8
    table = report.table()
    assert "mup" in table and "-6.50" in table and "-9.00" in table and "verdict" in table


def test_transfer_check_fails_on_drift_and_on_flat_loss(tmp_path):
    drifting = write_run(tmp_path / "drift", transfer_rows(lambda p, w: -6.0 - 0.6 * math.log2(w / 64)),
                         TRANSFER_PARAMETERS)
    report = transfer_check(drifting)
    assert report.verdict == "fail" and report.summaries["mup"].drift == pytest.approx(1.8)
    assert any("drifts 1.80" in r for r in report.summaries["mup"].reasons)
    flat = write_run(tmp_path / "flat", transfer_rows(mup_holds_sp_moves, floor_of=lambda p, w: 3.0 + w / 1e4),
                     TRANSFER_PARAMETERS)
    report = transfer_check(flat)
    assert report.verdict == "fail" and not report.summaries["mup"].loss_falls
    assert "best loss does not fall with width" in report.summaries["mup"].reasons


def test_edge_optimum_makes_the_check_inconclusive(tmp_path):
    rows = transfer_rows(lambda p, w: -6.5 if w < 512 else -3.0)  # widest still improving at 2^-4
    report = transfer_check(write_run(tmp_path / "edge", rows, TRANSFER_PARAMETERS))
    mup = report.summaries["mup"]
    assert mup.edge_widths == [512] and report.verdict == "inconclusive"
    assert mup.drift == pytest.approx(0.0)
    assert next(r for r in report.rows if r.width == 512 and r.parametrization == "mup").optimum.lr is None


def test_seeds_are_averaged_and_diverged_trials_count_as_failures(tmp_path):
    rows = transfer_rows(mup_holds_sp_moves, params=("mup",))
    noisy = []
    for r in rows:  # two seeds whose mean is the clean curve
        noisy += [{**r, "seed": 0, "val_loss": r["val_loss"] + 0.3}, {**r, "seed": 1, "val_loss": r["val_loss"] - 0.3}]
    noisy.append({**rows[-1], "seed": 2, "status": "diverged", "val_loss": math.inf})
    params = {k: v for k, v in TRANSFER_PARAMETERS.items() if k != "model.parametrization"}
    report = transfer_check(write_run(tmp_path / "seeds", noisy, params))
    assert list(report.summaries) == ["mup"]  # parametrization not swept: taken as the default
    assert report.summaries["mup"].drift == pytest.approx(0.3, abs=1e-6)


def test_a_run_without_widths_or_lr_is_refused(tmp_path):
    rows = [{"train.lr": lr, "val_loss": v} for lr, v in zip(GRID, curve(-7))]
    run = write_run(tmp_path / "lr_only", rows, {"train.lr": {"values": GRID}})
    with pytest.raises(WindtunnelError, match="several widths"):
        transfer_check(run)
    assert not (run / "transfer_check.json").exists()
    with pytest.raises(WindtunnelError, match="no such run folder"):
        transfer_check(tmp_path / "missing")


def test_cli_exit_status_follows_the_verdict(tmp_path, capsys):
    good = write_run(tmp_path / "good", transfer_rows(mup_holds_sp_moves), TRANSFER_PARAMETERS)
    bad = write_run(tmp_path / "bad", transfer_rows(lambda p, w: -6.0 - 0.6 * math.log2(w / 64)),
                    TRANSFER_PARAMETERS)
    assert main(["check", "transfer", str(good)]) == 0
    assert "verdict (muP, drift <= 1 log2 and loss falls): pass" in capsys.readouterr().out
    assert main(["check", "transfer", str(bad)]) == 1
    assert main(["check", "transfer", str(bad), "--max-drift", "2"]) == 0
    assert main(["check", "transfer", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
