"""`windtunnel results`: fixed decimals per column, --filter, --group-seeds, --sort, --columns."""

from __future__ import annotations

import json
import math

import pytest

from windtunnel.cli import main

from runfolders import write_run


@pytest.fixture
def run(tmp_path):
    """Two lrs x two seeds (one diverged seed at the high lr), with losses of mixed decimal lengths."""
    rows = [{"train.lr": 0.001, "seed": 0, "val_loss": 1.9, "seconds": 2.0},
            {"train.lr": 0.001, "seed": 1, "val_loss": 1.95, "seconds": 4.0},
            {"train.lr": 0.01, "seed": 0, "val_loss": 2.832, "seconds": 3.0},
            {"train.lr": 0.01, "seed": 1, "val_loss": math.inf, "seconds": 1.0, "status": "diverged"}]
    for row in rows:
        row["message"] = ""  # as the sweep writes it
    return write_run(tmp_path / "r", rows, {"train.lr": {"values": [0.001, 0.01]}, "seed": {"values": [0, 1]}})


def table(capsys, run, *flags) -> list[list[str]]:
    assert main(["results", str(run), *flags]) == 0
    return [line.split() for line in capsys.readouterr().out.strip().splitlines()]


def test_each_column_has_fixed_decimals(capsys, run):
    rows = table(capsys, run)
    col = rows[0].index("val_loss")
    assert [r[col] for r in rows[1:]] == ["1.9000", "1.9500", "2.8320", "inf"]
    lr = rows[0].index("train.lr")
    assert {r[lr] for r in rows[1:]} == {"0.001", "0.010"}


def test_filter_keeps_matching_rows_and_refuses_unknown_columns(capsys, run):
    rows = table(capsys, run, "--filter", "status=ok")
    assert len(rows) == 4 and all(r[rows[0].index("status")] == "ok" for r in rows[1:])
    rows = table(capsys, run, "--filter", "train.lr<0.005", "--filter", "seed!=0")
    assert len(rows) == 2 and rows[1][rows[0].index("val_loss")] == "1.9500"
    assert main(["results", str(run), "--filter", "stauts=ok"]) == 2
    assert "did you mean 'status'" in capsys.readouterr().err
    assert main(["results", str(run), "--filter", "status"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_group_seeds_means_over_seeds_and_a_diverged_seed_sinks_the_configuration(capsys, run):
    assert main(["results", str(run), "--group-seeds", "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert [c["train.lr"] for c in cells] == [0.001, 0.01]
    assert cells[0]["mean_val_loss"] == pytest.approx(1.925) and cells[0]["n_ok"] == 2 and cells[0]["n"] == 2
    assert cells[0]["std_val_loss"] == pytest.approx(0.0353553, rel=1e-5)
    assert cells[0]["seconds"] == pytest.approx(3.0)
    assert cells[1]["mean_val_loss"] == "inf" and cells[1]["status"] == "diverged"
    # filtering first leaves only the ok seed of lr 0.01: its configuration is then ok
    assert main(["results", str(run), "--filter", "status=ok", "--group-seeds", "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert cells[1]["mean_val_loss"] == pytest.approx(2.832) and cells[1]["n"] == 1


def test_sort_and_columns_choose_order_and_fields(capsys, run):
    rows = table(capsys, run, "--sort=-seconds", "--columns", "trial_id,seconds")
    assert rows[0] == ["trial_id", "seconds"]
    assert [r[1] for r in rows[1:]] == ["4.0", "3.0", "2.0", "1.0"]
    rows = table(capsys, run, "--sort", "seed,val_loss", "--columns", "seed,val_loss", "--top", "2")
    assert rows[1:] == [["0", "1.9000"], ["0", "2.8320"]]
    assert main(["results", str(run), "--columns", "trial_id,loss"]) == 2
    assert "--columns: no column 'loss'" in capsys.readouterr().err
