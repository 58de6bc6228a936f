"""A grid can grow: values and seeds added to a finished sweep's spec run on --resume as new trials only;
the old trials keep their ids and rows, and the results stay one table. Other changes stay refused."""

from __future__ import annotations

import pytest
import yaml

from windtunnel.errors import WindtunnelError
from windtunnel.sweep import read_results, run_sweep
from windtunnel.sweep.growth import check_resumable, keep_trial_ids
from windtunnel.sweep.points import TrialPoint, expand_points
from windtunnel.sweep.spec import load_sweep, spec_to_dict

from support import write_spec

LRS = [0.01, 0.03]


def _spec(tmp_path, name="s.yaml", **fields):
    return spec_to_dict(load_sweep(write_spec(tmp_path / name, **fields)))


def _check(old, new):
    return check_resumable(old, new, source="s.yaml", saved_path="runs/t/spec.yaml")


def test_values_and_seeds_may_be_added_on_resume(tmp_path):
    old = _spec(tmp_path, parameters={"train.lr": {"values": LRS}, "model.init_std": {"values": [0.05]}})
    new = _spec(tmp_path, "n.yaml", seeds=[0, 1],
                parameters={"train.lr": {"values": [0.003, *LRS, 0.1]}, "model.init_std": {"values": [0.05]}})
    assert _check(old, new) == ["train.lr: +2 (0.003, 0.1)", "seeds: +1 (1)"]
    assert _check(old, old) == []


@pytest.mark.parametrize("change, words", [
    ({"parameters": {"train.lr": {"values": [0.01, 0.1]}}}, "parameters: differs .* 0.03 dropped; the values already"),
    ({"seeds": [1]}, "seeds: differs .*seeds: 0 dropped"),
    ({"parameters": {"train.lr": {"values": LRS}, "model.init_std": {"values": [0.05]}}},
     "parameter model.init_std added: the trials already run have no value for it"),
    ({"set": {"train.steps": 40}}, r"set: differs from runs/t/spec.yaml \(the sweep being resumed\); only budget, "
                                   "resources, description, track may change on --resume, and a grid may gain"),
    ({"method": "random", "budget": {"num_trials": 2}}, "method: differs"),
])
def test_other_changes_are_refused_with_one_line(tmp_path, change, words):
    old = _spec(tmp_path, parameters={"train.lr": {"values": LRS}})
    with pytest.raises(WindtunnelError, match=words) as err:
        _check(old, _spec(tmp_path, "n.yaml", **change))
    assert "\n" not in str(err.value)


def test_a_tpe_space_cannot_grow(tmp_path):
    tpe = {"method": "tpe", "budget": {"num_trials": 4}}
    old = _spec(tmp_path, parameters={"train.lr": {"values": LRS}}, **tpe)
    new = _spec(tmp_path, "n.yaml", parameters={"train.lr": {"values": [*LRS, 0.1]}}, **tpe)
    with pytest.raises(WindtunnelError, match="parameters: differs"):
        _check(old, new)


def test_grown_points_keep_the_ids_of_the_trials_already_run(tmp_path):
    first = load_sweep(write_spec(tmp_path / "a.yaml", parameters={"train.lr": {"values": LRS}}))
    rows = {p.trial_id: {"seed": p.seed, **p.params} for p in expand_points(first)}  # t0000: 0.01, t0001: 0.03
    grown = load_sweep(write_spec(tmp_path / "b.yaml", seeds=[0, 1],
                                  parameters={"train.lr": {"values": [0.003, *LRS]}}))
    points = keep_trial_ids(expand_points(grown), rows)
    ids = {(p.params["train.lr"], p.seed): p.trial_id for p in points}
    assert ids[(0.01, 0)] == "t0000" and ids[(0.03, 0)] == "t0001"  # kept
    assert len(set(ids.values())) == 6  # unique: new points never take an id already used
    assert ids[(0.003, 0)] == "t0006" and ids[(0.003, 1)] == "t0007"  # t0000/t0001 were taken
    assert ids[(0.01, 1)] == "t0003" and ids[(0.03, 1)] == "t0005"  # their positions' ids were free
    unchanged = keep_trial_ids(expand_points(first), rows)
    assert [p.trial_id for p in unchanged] == ["t0000", "t0001"]
    lone = [TrialPoint("t0000", 0, {"train.lr": 0.01})]
    assert keep_trial_ids(lone, {}) == lone


@pytest.mark.slow  # 5 Ray trials: 75 s on the shared 2-core box at load 20
@pytest.mark.usefixtures("ray_session")
def test_a_finished_grid_grows_on_resume_and_runs_only_the_new_points(tmp_path):
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "g.yaml", name="g", parameters={"train.lr": {"values": [0.01]}},
                      budget={"max_concurrent": 2})
    run_sweep(spec, out_dir=run, progress=False, plots=False)
    before = read_results(run)
    assert list(before["trial_id"]) == ["t0000"]
    mtime = (run / "trials" / "t0000" / "summary.json").stat().st_mtime_ns
    # the optimum looked like the edge: add a smaller lr, and a second seed for every point
    grown = {"train.lr": {"values": [0.003, 0.01]}}
    write_spec(spec, name="g", parameters=grown, seeds=[0, 1], budget={"max_concurrent": 2})
    result = run_sweep(spec, out_dir=run, resume=True, progress=False, plots=False)
    df = read_results(run).set_index("trial_id")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert sorted(zip(df["train.lr"], df["seed"])) == [(0.003, 0), (0.003, 1), (0.01, 0), (0.01, 1)]
    # the old trial was not run again and kept its id and row
    assert (run / "trials" / "t0000" / "summary.json").stat().st_mtime_ns == mtime
    assert df.loc["t0000", "val_loss"] == before["val_loss"].iloc[0] and df.loc["t0000", "train.lr"] == 0.01
    assert result.unfinished == 0 and len(result.table) == 4
    saved = yaml.safe_load((run / "spec.yaml").read_text())
    assert saved["parameters"]["train.lr"]["values"] == [0.003, 0.01] and saved["seeds"] == [0, 1]
    # the same grown spec again: nothing left to run; the smaller spec is refused (its table has more)
    assert len(run_sweep(spec, out_dir=run, resume=True, progress=False, plots=False).table) == 4
    write_spec(spec, name="g", parameters={"train.lr": {"values": [0.01]}}, budget={"max_concurrent": 2})
    with pytest.raises(WindtunnelError, match="0.003 dropped"):
        run_sweep(spec, out_dir=run, resume=True, progress=False, plots=False)
