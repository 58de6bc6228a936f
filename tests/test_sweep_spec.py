"""Sweep specs without Ray: parsing, every bad-spec error, expansion, dry run, trial configs, the table."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from windtunnel.cli import main
from windtunnel.errors import ConfigError, WindtunnelError
from windtunnel.sweep import ResultsTable, load_sweep, plan_sweep, read_results, run_sweep
from windtunnel.sweep.points import TrialPoint, expand_points, sample_points, trial_config
from windtunnel.sweep.spec import spec_from_dict, spec_to_dict

from support import ROOT, tiny_set, write_spec


def test_presets_load_and_describe_the_jobs_they_are_for():
    lr_init = plan_sweep(load_sweep(ROOT / "sweeps" / "lr_init.yaml"))
    assert lr_init.spec.method == "grid" and lr_init.spec.param_keys == ["train.lr", "model.init_std"]
    assert lr_init.num_trials == 28 and all(not c["error"] for c in lr_init.costs)

    transfer = plan_sweep(load_sweep(ROOT / "sweeps" / "width_transfer.yaml"))
    frame = transfer.frame()
    widths = sorted(frame["model.d_model"].unique())
    assert len(widths) >= 4 and widths[-1] / widths[0] >= 8
    assert set(frame["model.parametrization"]) == {"mup", "sp"}
    assert frame["train.lr"].nunique() >= 5 and (frame["error"] == "").all()

    mup = plan_sweep(load_sweep(ROOT / "sweeps" / "mup_space.yaml"))
    assert mup.spec.method == "tpe" and mup.points is None and mup.num_trials == 300
    assert set(mup.spec.param_keys) == {"model.scale_emb", "model.dim_model_base", "model.scale_depth", "train.lr",
                                        "model.hidden_init_std", "model.emb_init_std"}
    assert list(mup.spec.parameters["model.dim_model_base"].values) == [32, 64, 128, 256, 512, 1024]
    assert all(not c["error"] for c in mup.costs)  # every base width builds on the proxy


def test_grid_expands_row_major_with_seeds_innermost(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", seeds=[0, 7], parameters={
        "train.lr": {"values": [0.01, 0.03]}, "model.parametrization": {"values": ["mup", "sp"]}}))
    points = expand_points(spec)
    assert [p.trial_id for p in points] == [f"t{i:04d}" for i in range(8)]
    assert [(p.params["train.lr"], p.params["model.parametrization"], p.seed) for p in points[:4]] == [
        (0.01, "mup", 0), (0.01, "mup", 7), (0.01, "sp", 0), (0.01, "sp", 7)]
    assert points[4].params["train.lr"] == 0.03


def test_random_draws_are_seeded_in_range_on_step_and_prefix_stable(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", method="random", budget={"num_trials": 40}, parameters={
        "train.lr": {"distribution": "log_uniform", "min": 1e-4, "max": 1e-1},
        "model.scale_depth": {"distribution": "uniform", "min": 1, "max": 5, "step": 0.1},
        "model.d_model": {"distribution": "int_uniform", "min": 32, "max": 96, "step": 32}}))
    points = expand_points(spec)
    lrs = [p.params["train.lr"] for p in points]
    assert len(points) == 40 and all(1e-4 <= x <= 1e-1 for x in lrs)
    assert min(lrs) < 1e-3 and max(lrs) > 1e-2  # log-uniform reaches both decades
    assert all(abs(p.params["model.scale_depth"] * 10 - round(p.params["model.scale_depth"] * 10)) < 1e-9
               for p in points)
    assert {p.params["model.d_model"] for p in points} == {32, 64, 96}
    assert expand_points(spec) == points  # same spec, same draws
    assert [p.params for p in sample_points(spec, 10)] == [p.params for p in points[:10]]


BAD = [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"method": "bayes"}, "method", "expected one of grid, random, tpe"),
    ({"parameters": {"train.lrr": {"values": [0.1]}}}, "parameters.train.lrr", "did you mean 'lr'"),
    ({"parameters": {"optim.lr": {"values": [0.1]}}}, "parameters.optim.lr", "unknown key"),
    ({"parameters": {"train.lr": {"values": []}}}, "parameters.train.lr.values", "is empty"),
    ({"parameters": {"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1}}},
     "parameters.train.lr.distribution", "method grid takes `values"),
    ({"method": "random", "budget": {"num_trials": 4},
      "parameters": {"train.lr": {"distribution": "uniform", "min": 0.1, "max": 0.01}}},
     "parameters.train.lr", "min <= max must hold, got min=0.1, max=0.01"),
    ({"method": "tpe", "budget": {"num_trials": 4},
      "parameters": {"train.lr": {"distribution": "log_uniform", "min": 0, "max": 0.1}}},
     "parameters.train.lr.min", "log_uniform needs min > 0"),
    ({"method": "random", "budget": {"num_trials": 4},
      "parameters": {"model.d_model": {"distribution": "uniform", "min": 32, "max": 64}}},
     "parameters.model.d_model.distribution", "takes integers"),
    ({"parameters": {"train.lr": {"values": ["fast"]}}}, "parameters.train.lr.values[0]", "expected a finite number"),
    ({"set": {"train.stepz": 5}}, "set.train.stepz", "unknown key"),
    ({"base": "nope.yaml"}, "base", "no such file"),
    ({"budget": {"num_trials": 3}}, "budget.num_trials", "the grid has 2 trials"),
    ({"method": "tpe", "seeds": [0, 1], "budget": {"num_trials": 4}}, "seeds", "takes one seed"),
    ({"early_terminate": {"type": "asha", "grace_period": 500}}, "early_terminate.grace_period", "must be <"),
    ({"early_terminate": {"type": "hyperband"}}, "early_terminate.type", "expected one of asha"),
    ({"resources": {"cpu": 0}}, "resources", "expected cpu > 0"),
    ({"first_trials": [{"train.lr": 0.01}]}, "first_trials", "only a tpe search takes first trials"),
    ({"method": "tpe", "budget": {"num_trials": 4}, "first_trials": [{"train.lr": 5.0}],
      "parameters": {"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1}}},
     "first_trials[0].train.lr", "expected a number in [0.001, 0.1]"),
    ({"method": "tpe", "budget": {"num_trials": 4}, "first_trials": [{"train.seed": 1}],
      "parameters": {"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1}}},
     "first_trials[0].train.seed", "is not a swept parameter"),
]


@pytest.mark.parametrize("fields, key, message", BAD, ids=[b[1] for b in BAD])
def test_bad_spec_is_one_line_naming_file_and_key_and_writes_nothing(tmp_path, capsys, fields, key, message):
    spec = write_spec(tmp_path / "bad.yaml", **fields)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"windtunnel: error: {spec}: {key}: "), err
    assert message in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_dry_run_lists_trials_count_and_cost_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", parameters={
        "train.lr": {"values": [0.01, 0.03]}, "model.d_model": {"values": [32, 30]}})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "windtunnel", "sweep", str(spec), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "4 trials" in text and "t0003" in text
    tokens = 12 * 4 * 32  # steps x batch x seq of TINY
    assert f"{tokens / 1e3:.3g}k tokens" in text and "FLOPs" in text
    assert "2 of 4 trials have an invalid config" in text  # d_model 30 over 2 heads: odd d_head
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_trial_config_sweeping_the_base_width_derives_its_own_shapes(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", set=tiny_set("model.base_shapes", "model.dim_model_base"),
                                 parameters={"model.dim_model_base": {"values": [16, 64]}}))
    cfg = trial_config(spec, TrialPoint("t0001", 3, {"model.dim_model_base": 64}))
    assert cfg.model.dim_model_base == 64 and cfg.model.width_mult == 0.5
    assert cfg.model.base_shapes is None  # derived for the trial's own model, as `train --set` does
    assert cfg.train.seed == 3 and cfg.train.threads == 1  # threads = resources.cpu
    assert cfg.source == f"{spec.source} (trial t0001)"
    with pytest.raises(ConfigError, match=r"\(trial t0009\): model.d_model: must be divisible"):
        trial_config(spec, TrialPoint("t0009", 0, {"model.dim_model_base": 16, "model.d_model": 33}))


def test_spec_round_trips_through_its_resolved_form(tmp_path):
    spec = load_sweep(write_spec(tmp_path / "s.yaml", method="tpe", budget={"num_trials": 5},
                                 early_terminate={"type": "asha", "grace_period": 4},
                                 parameters={"train.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
                                             "model.init_std": {"values": [0.02, 0.1]}}))
    again = spec_from_dict(yaml.safe_load(yaml.safe_dump(spec_to_dict(spec))))
    assert again == spec


def test_results_table_writes_parquet_and_csv_that_read_back_the_same(tmp_path):
    table = ResultsTable(tmp_path, param_keys=["train.lr", "model.parametrization"])
    rows = [("t0000", "ok", 2.5, 0.01, "mup"), ("t0001", "diverged", math.inf, 0.1, "sp"),
            ("t0002", "error", math.nan, 0.03, "mup"), ("t0003", "ok", 2.1, 0.003, "sp")]
    for tid, status, loss, lr, par in rows:
        table.add({"trial_id": tid, "status": status, "val_loss": loss, "tokens": 100, "seconds": 1.0, "seed": 0,
                   "train.lr": lr, "model.parametrization": par, "message": "boom" if status == "error" else ""})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp files renamed away
    parquet = read_results(tmp_path)
    csv = pd.read_csv(tmp_path / "results.csv", keep_default_na=False, na_values=[""])
    assert list(parquet.columns[:8]) == ["trial_id", "status", "val_loss", "tokens", "seconds", "seed",
                                         "train.lr", "model.parametrization"]
    assert list(csv.columns) == list(parquet.columns)
    assert math.isinf(csv.loc[1, "val_loss"]) and math.isnan(csv.loc[2, "val_loss"])
    pd.testing.assert_series_equal(parquet["val_loss"], csv["val_loss"])
    assert table.best()["trial_id"] == "t0003"  # the lowest loss among ok trials, never the diverged one
    assert table.counts() == {"ok": 2, "diverged": 1, "pruned": 0, "error": 1}
    with pytest.raises(ValueError, match="status must be one of"):
        table.add({"trial_id": "t0004", "status": "done"})


def test_a_folder_holding_a_sweep_needs_resume_and_the_same_spec(tmp_path):
    spec_path = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "out"
    out.mkdir()
    (out / "spec.yaml").write_text(yaml.safe_dump({"name": "t"}))
    with pytest.raises(WindtunnelError, match="already holds sweep 't'; pass --resume"):
        run_sweep(spec_path, out_dir=out, progress=False)
    with pytest.raises(WindtunnelError, match=r"s.yaml: base: differs from .*spec.yaml"):
        run_sweep(spec_path, out_dir=out, resume=True, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(WindtunnelError, match="is not a sweep folder"):
        run_sweep(spec_path, out_dir=tmp_path / "other", progress=False)
