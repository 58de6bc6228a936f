"""Transfer regret on synthetic run folders with known curves: closed-form values, flat basins,
interpolation, unknowns, and the verdict it feeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from windtunnel.analysis.mutransfer_check import mutransfer_check
from windtunnel.analysis.regret import Cell, transfer_regret
from windtunnel.cli import main

from runfolders import TRANSFER_PARAMETERS, transfer_rows, write_run

MUP_ONLY = {k: v for k, v in TRANSFER_PARAMETERS.items() if k != "model.parametrization"}


def seeded(rows, offsets=(-0.02, 0.0, 0.02)):
    """Three seeds per row whose mean is exactly the clean curve."""
    return [{**r, "seed": s, "val_loss": r["val_loss"] + d} for r in rows for s, d in enumerate(offsets)]


def by_width(report, param="mup"):
    return {r.width: r.regret for r in report.rows if r.parametrization == param}


def test_shifted_optimum_gives_the_closed_form_regret(tmp_path):
    # vertex -7 at width 64 moving to -6 at 512 (0.05 nats per log2^2): carrying 2^-7 costs 0.05 * 1^2
    shift = {64: -7.0, 128: -7.0, 256: -6.5, 512: -6.0}
    rows = seeded(transfer_rows(lambda p, w: shift[w], params=("mup",)), (-0.004, 0.0, 0.004))
    run = write_run(tmp_path / "shift", rows, MUP_ONLY)
    report = mutransfer_check(run)
    regret = by_width(report)
    assert regret[64].value == pytest.approx(0.0, abs=1e-12) and regret[128].value == pytest.approx(0.0, abs=1e-12)
    assert regret[256].value == pytest.approx(0.0, abs=1e-12)  # vertex -6.5: 2^-7 and 2^-6 tie for best
    assert regret[512].value == pytest.approx(0.05, abs=1e-9)
    assert regret[512].low <= 0.05 <= regret[512].high and "bootstrap over 3 seeds" in regret[512].how
    s = report.summaries["mup"]
    assert s.carried == {"train.lr": 2.0**-7} and s.regret_verdict == "fail"
    assert s.drift == pytest.approx(1.0, abs=1e-6)


def test_flat_basin_gives_no_regret_despite_a_drifting_vertex(tmp_path):
    # curvature 0.001 nats per log2^2: the vertex wanders 2 units, carrying costs 0.004 nats
    rows = []
    for w, v in {64: -8.0, 128: -7.3, 256: -6.7, 512: -6.0}.items():
        for e in range(-12, -3):
            rows.append({"model.d_model": w, "train.lr": 2.0**e,
                         "val_loss": 3.0 - 0.1 * math.log2(w / 64) + 0.001 * (e - v) ** 2})
    report = mutransfer_check(write_run(tmp_path / "flat", seeded(rows, (-0.0003, 0.0, 0.0003)), MUP_ONLY))
    s = report.summaries["mup"]
    assert s.drift == pytest.approx(2.0, abs=1e-6) and s.drift_verdict == "fail"
    assert s.regret_widest.value == pytest.approx(0.004, abs=1e-9) and s.regret_verdict == "pass"
    assert report.verdict == "pass"  # the regret criterion holds


def test_sp_regret_is_the_control_beside_mup(tmp_path, capsys):
    rows = transfer_rows(lambda p, w: -7.0 if p == "mup" else -7.0 - math.log2(w / 64))
    run = write_run(tmp_path / "both", seeded(rows), TRANSFER_PARAMETERS)
    report = mutransfer_check(run)
    assert report.summaries["mup"].regret_widest.value == pytest.approx(0.0, abs=1e-12)
    assert report.summaries["sp"].regret_widest.value == pytest.approx(0.05 * 9, abs=1e-9)
    assert report.verdict == "pass" and report.summaries["sp"].verdict == "drifts"
    assert main(["check", "transfer", str(run), "--from-width", "512"]) == 0
    out = capsys.readouterr().out
    assert "carried from width 512" in out and "regret at 512 0.000" in out
    assert by_width(mutransfer_check(run, from_width=512), "sp")[64].value == pytest.approx(0.45, abs=1e-9)


def test_carried_lr_not_run_is_interpolated_and_outside_the_range_is_unknown(tmp_path):
    rows = transfer_rows(lambda p, w: -7.0, params=("mup",), exps=range(-12, -3))
    # width 256 ran only even exponents (2^-7 missing), width 512 only 2^-12..2^-9 (2^-7 outside)
    rows = [r for r in rows if not (r["model.d_model"] == 256 and round(math.log2(r["train.lr"])) % 2 != 0)
            and not (r["model.d_model"] == 512 and r["train.lr"] > 2.0**-9)]
    report = mutransfer_check(write_run(tmp_path / "gaps", rows, MUP_ONLY))
    regret = by_width(report)
    assert regret[128].value == pytest.approx(0.0, abs=1e-12)
    assert "interpolated" in regret[256].how and regret[256].low is None
    assert regret[256].value == pytest.approx(0.0, abs=1e-9)  # on the fitted quadratic: its vertex
    assert regret[512].value is None and "outside the lrs run at 512 (2^-12..2^-9)" in regret[512].reason
    assert regret[512].text().startswith("unknown (") and report.summaries["mup"].regret_verdict == "unknown"


def test_unknown_and_diverged_regret_are_never_zero():
    def cell(e, loss, diverged=False):
        return Cell((2.0**e,), e, np.array([] if diverged else [loss]), diverged)

    carried, rows = transfer_regret({64: [cell(-7, 0, True), cell(-6, 0, True)], 512: [cell(-7, 2.5)]}, from_width=64)
    assert carried is None and rows[0].value is None and "no finished, finite trial" in rows[0].reason
    carried, rows = transfer_regret({64: [cell(-7, 3.0), cell(-6, 3.1)], 512: [cell(-7, 0, True), cell(-6, 2.5)]},
                                    from_width=64)
    assert carried == (2.0**-7,) and rows[1].diverged and rows[1].value is None and rows[1].text() == "diverged"


def test_regret_at_the_source_width_is_exactly_zero_with_its_interval(tmp_path):
    rows = transfer_rows(lambda p, w: -7.0, params=("mup",))
    noisy = [{**r, "seed": s, "val_loss": r["val_loss"] + d} for r in rows for s, d in enumerate((-0.05, 0.0, 0.05))]
    report = mutransfer_check(write_run(tmp_path / "src", noisy, MUP_ONLY), from_width=128)
    r128 = by_width(report)[128]
    assert (r128.value, r128.low, r128.high) == (0.0, 0.0, 0.0)
