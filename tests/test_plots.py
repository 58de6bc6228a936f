"""Sweep pictures: heatmaps per pair, loss curves, the μTransfer plot, from synthetic and real folders."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from windtunnel.analysis.plots import plot_sweep
from windtunnel.analysis.runs import aggregate, best_over, load_run
from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.errors import WindtunnelError

from runfolders import TRANSFER_PARAMETERS, transfer_rows, write_run
from support import ROOT, TINY

LRS = [2.0**e for e in range(-10, -3)]
INITS = [0.02, 0.05, 0.1]


def lr_init_rows():
    """Two seeds per cell; the highest lr diverges at every init; one cell pruned."""
    rows = []
    for lr in LRS:
        for init in INITS:
            loss = 2.0 + 0.05 * (math.log2(lr) + 7) ** 2 + abs(math.log(init / 0.05))
            for seed, noise in ((0, 0.01), (1, -0.01)):
                status = "diverged" if lr == LRS[-1] else "pruned" if (lr, init) == (LRS[0], 0.1) else "ok"
                rows.append({"train.lr": lr, "model.init_std": init, "seed": seed, "status": status,
                             "val_loss": math.inf if status == "diverged" else loss + noise})
    return rows


PARAMS = {"train.lr": {"values": LRS}, "model.init_std": {"values": INITS}}


def svg_texts(path):
    return re.findall(r">([^<>]+)</text>", path.read_text())


def test_aggregation_means_seeds_and_keeps_failures(tmp_path):
    res = load_run(write_run(tmp_path / "grid", lr_init_rows(), PARAMS))
    table = aggregate(res, res.params)
    best = table.loc[table["loss"].idxmin()]
    assert (best["train.lr"], best["model.init_std"]) == (2.0**-7, 0.05)
    assert best["loss"] == pytest.approx(2.0) and (best["n_ok"], best["n"]) == (2, 2)
    assert set(table[table["train.lr"] == LRS[-1]]["status"]) == {"diverged"}
    per_lr = best_over(res, ["train.lr"])
    assert per_lr[per_lr["train.lr"] == 2.0**-9]["model.init_std"].item() == 0.05
    assert per_lr[per_lr["train.lr"] == LRS[-1]]["status"].item() == "diverged"


def test_heatmap_shows_values_best_cell_and_failures(tmp_path):
    run = write_run(tmp_path / "lr_init", lr_init_rows(), PARAMS)
    paths = plot_sweep(run)
    assert [p.name for p in paths] == ["heatmap_train.lr__model.init_std.png", "heatmap_train.lr__model.init_std.svg"]
    assert all(p.parent == run / "plots" and p.stat().st_size > 5000 for p in paths)
    texts = svg_texts(paths[1])
    assert texts.count("diverged") == 3 and texts.count("pruned") == 1
    assert "2.000" in texts and "2/2 seeds" in texts
    assert "peak learning rate (train.lr) — log-spaced" in texts
    assert "init std (model.init_std) — log-spaced" in texts  # 0.02, 0.05, 0.1: near-geometric
    assert "validation loss (nats/token)" in texts
    assert any(t.startswith("lr_init: best validation loss") for t in texts)
    svg = paths[1].read_text()
    bold = re.findall(r'font-weight: ?(?:bold|700)[^>]*>([^<]+)<', svg)  # only the best cell is bold
    assert [b.strip() for b in bold] == ["2.000", "2/2 seeds"]


def test_pairs_facets_and_single_parameter(tmp_path):
    rows = [{"train.lr": lr, "model.init_std": i, "model.scale_emb": s, "model.parametrization": p,
             "val_loss": 2 + lr * 10 + i + s / 100 + (p == "sp")}
            for lr in LRS[:3] for i in INITS for s in (4.0, 10.0) for p in ("mup", "sp")]
    params = {**PARAMS, "model.scale_emb": {"values": [4.0, 10.0]}, "model.parametrization": {"values": ["mup", "sp"]}}
    names = {p.name for p in plot_sweep(write_run(tmp_path / "three", rows, params), formats=["svg"])}
    assert names == {"heatmap_train.lr__model.init_std.svg", "heatmap_train.lr__model.scale_emb.svg",
                     "heatmap_model.init_std__model.scale_emb.svg"}
    svg = tmp_path / "three" / "plots" / "heatmap_train.lr__model.init_std.svg"
    assert {"μP", "SP"} <= set(svg_texts(svg))  # one panel per parametrization, not an axis
    single = write_run(tmp_path / "one", [r for r in lr_init_rows() if r["model.init_std"] == 0.05],
                       {"train.lr": {"values": LRS}})
    (curve,) = plot_sweep(single, formats=["svg"])
    assert curve.name == "loss_vs_train.lr.svg"
    assert "2^-7" in svg_texts(curve)


def test_continuous_parameters_are_binned(tmp_path):
    rng = np.random.default_rng(0)
    lrs, inits = 2.0 ** rng.uniform(-12, -4, 40), rng.uniform(0.01, 0.2, 40)
    rows = [{"train.lr": a, "model.init_std": b, "val_loss": 2 + (math.log2(a) + 7) ** 2 / 20 + b}
            for a, b in zip(lrs, inits)]
    params = {"train.lr": {"distribution": "log_uniform", "min": 2**-12, "max": 2**-4},
              "model.init_std": {"distribution": "uniform", "min": 0.01, "max": 0.2}}
    (svg,) = plot_sweep(write_run(tmp_path / "tpe", rows, params, csv=True), formats=["svg"])
    texts = svg_texts(svg)
    assert "peak learning rate (train.lr) — log-spaced, 8 bins" in texts
    assert "init std (model.init_std), 8 bins" in texts


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(WindtunnelError, match="no results.parquet"):
        plot_sweep(tmp_path)
    bad = write_run(tmp_path / "bad", [{"train.lr": 0.01, "val_loss": 2.0}], PARAMS)
    with pytest.raises(WindtunnelError, match="no column for swept parameter 'model.init_std'"):
        plot_sweep(bad)
    status = write_run(tmp_path / "status", [{"train.lr": 0.01, "val_loss": 2.0, "status": "weird"}],
                       {"train.lr": {"values": [0.01]}})
    with pytest.raises(WindtunnelError, match="status: expected one of"):
        plot_sweep(status)


@pytest.fixture(scope="module")
def tiny_width_sweep(tmp_path_factory):
    """A real sweep in miniature: 12 tiny trials through the training loop, in the results format."""
    from windtunnel.training.loop import train
    run = tmp_path_factory.mktemp("sweeps") / "width_transfer"
    rows = []
    for p in ("mup", "sp"):
        for w in (32, 64):
            for e in (-9, -7, -5):
                tid = f"{p}_{w}_{e}"
                cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=TINY + [
                    f"model.parametrization={p}", f"model.d_model={w}", f"train.lr={2.0**e}"])
                s = train(cfg, out_dir=run / "trials" / tid)
                rows.append({"trial_id": tid, "status": s["status"], "val_loss": s["val_loss"],
                             "tokens": s["tokens"], "seconds": s["seconds"], "seed": 0,
                             "model.parametrization": p, "model.d_model": w, "train.lr": 2.0**e})
    params = {"model.parametrization": {"values": ["mup", "sp"]}, "model.d_model": {"values": [32, 64]},
              "train.lr": {"values": [2.0**e for e in (-9, -7, -5)]}}
    return write_run(run, rows, params)


def test_real_small_sweep_gives_heatmap_and_mutransfer_panels(tiny_width_sweep, capsys):
    assert main(["plot", str(tiny_width_sweep)]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in printed)
    assert names == ["heatmap_train.lr__model.d_model.png", "heatmap_train.lr__model.d_model.svg",
                     "mutransfer.png", "mutransfer.svg"]
    plots = tiny_width_sweep / "plots"
    mu = (plots / "mutransfer.svg").read_text()
    assert mu.count('<g id="axes_') == 2  # one panel per parametrization
    texts = svg_texts(plots / "mutransfer.svg")
    assert any(t.startswith("μP: drift") or t.startswith("μP: drift n/a") for t in texts)
    assert any(t.startswith("SP: drift") for t in texts)
    assert sum(t.startswith(("32: ", "64: ")) for t in texts) == 4  # a curve per width in each panel
    heat = (plots / "heatmap_train.lr__model.d_model.svg").read_text()
    assert heat.count('<g id="axes_') == 3  # μP panel, SP panel, colour bar
    assert not (tiny_width_sweep / "mutransfer_check.json").exists()  # plotting does not write checks


def test_spec_goal_is_read_and_checked(tmp_path):
    run = write_run(tmp_path / "goal", lr_init_rows(), PARAMS)
    assert load_run(run).goal == "min"  # the sweep engine writes `minimize`
    spec = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(spec.replace("goal: minimize", "goal: lowest"))
    with pytest.raises(WindtunnelError, match="metric.goal: expected minimize or maximize, got 'lowest'"):
        load_run(run)


def test_a_diverged_seed_sinks_its_heatmap_cell_and_says_how_many_finished(tmp_path):
    rows = lr_init_rows()
    for r in rows:  # seed 1 of the best cell blows up
        if (r["train.lr"], r["model.init_std"], r["seed"]) == (2.0**-7, 0.05, 1):
            r.update(status="diverged", val_loss=math.inf)
    (svg,) = plot_sweep(write_run(tmp_path / "sunk", rows, PARAMS), formats=["svg"])
    texts = svg_texts(svg)
    assert texts.count("diverged") == 4 and "1/2 ok" in texts and "0/2 ok" in texts
    assert "2.000" not in texts  # the survivor's loss no longer stands for the cell


def test_mutransfer_shows_seed_bands_intervals_and_the_carried_lr(tmp_path):
    rows = transfer_rows(lambda p, w: -7.0 + (0.1 if p == "mup" else -1.0) * math.log2(w / 64))
    noisy = [{**r, "seed": s, "val_loss": r["val_loss"] + d} for r in rows for s, d in enumerate((-0.01, 0.0, 0.01))]
    run = write_run(tmp_path / "wt3", noisy, TRANSFER_PARAMETERS)
    paths = plot_sweep(run, formats=["svg"])
    svg = next(p for p in paths if p.name == "mutransfer.svg")
    texts, raw = svg_texts(svg), svg.read_text()
    assert texts.count("carried 2^-7") == 2  # the carried lr, in each panel's legend
    assert any(t.startswith("μP: drift +0.10 [") and t.endswith("log2/doubling") for t in texts)
    assert any(t.startswith("SP: drift -1.00 [") for t in texts)
    assert any(t.startswith("regret at 512: 0.000 [") for t in texts)
    assert len(re.findall(r'id="\w*PolyCollection_', raw)) == 8  # a seed band per width and panel
    assert raw.count('id="LineCollection_') >= 8  # an interval bar per optimum
    assert any("mean of 3 seeds" in t for t in texts)


def test_a_plot_that_cannot_be_drawn_is_one_plain_line_on_the_command_line(tmp_path, capsys):
    """Two lr points per width: the transfer check cannot run, so no muTransfer plot; the heatmap is still
    drawn and the reason is one line, without Python's `UserWarning` and source-line dump."""
    from windtunnel.cli import main
    rows = [{"model.d_model": w, "train.lr": lr, "val_loss": 3.0 + lr} for w in (64, 128) for lr in (0.01, 0.02)]
    run = write_run(tmp_path / "r", rows, {"model.d_model": {"values": [64, 128]},
                                           "train.lr": {"values": [0.01, 0.02]}})
    assert main(["plot", str(run), "--formats", "png"]) == 0
    captured = capsys.readouterr()
    assert "heatmap_train.lr__model.d_model.png" in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("windtunnel: warning: no muTransfer plot: "), captured.err
    assert "needs >= 3" in lines[0] and "UserWarning" not in captured.err and "plots.py" not in captured.err


def test_a_2x2_heatmap_keeps_its_title_and_x_label_inside_the_figure(tmp_path, monkeypatch):
    """Two lrs x two inits made a 2.5-inch-wide figure whose title and x-label ran off both edges."""
    from windtunnel.analysis import plots
    figures = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, base, formats: figures.append(fig) or
                        real_save(fig, base, formats))
    rows = [{"train.lr": lr, "model.init_std": i, "val_loss": 2 + lr * 10 + i} for lr in (0.01, 0.02)
            for i in (0.02, 0.05)]
    run = write_run(tmp_path / "lr_init", rows, {"train.lr": {"values": [0.01, 0.02]},
                                                 "model.init_std": {"values": [0.02, 0.05]}})
    plots.plot_sweep(run, formats=("png",))
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # constrained layout places everything at draw time
    box = fig.bbox
    texts = [fig._suptitle, fig.axes[0].xaxis.label]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (text.get_text(), extent, box)
