"""The run folder's one owner: names and paths, the summary reader, the one atomic folder write, and the
one byte formatter (the two were written three times each before issue 22)."""

from __future__ import annotations

import doctest
import os
import stat

import pytest

import windtunnel.formatting as formatting
import windtunnel.run_folder as rf
from windtunnel.errors import WindtunnelError
from windtunnel.fileio import write_json
from windtunnel.formatting import fmt_bytes


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


# --- write_folder ---------------------------------------------------------------------------------
def test_a_folder_appears_whole_and_nothing_else_is_left(tmp_path):
    final = tmp_path / "data" / "web"
    with rf.write_folder(final) as tmp:
        assert tmp.parent == final.parent and rf.is_temporary(tmp) and not final.exists()
        (tmp / rf.TRAIN_FILE).write_bytes(b"\x01\x02")
        (tmp / rf.META_FILE).write_text("{}")
    assert _entries(final) == [rf.META_FILE, rf.TRAIN_FILE]
    assert _entries(final.parent) == ["web"]  # no temporary sibling left


def test_an_error_mid_write_leaves_nothing(tmp_path):
    final = tmp_path / "web"
    with pytest.raises(RuntimeError, match="disk full"):
        with rf.write_folder(final) as tmp:
            (tmp / rf.TRAIN_FILE).write_bytes(b"half")
            raise RuntimeError("disk full")
    assert _entries(tmp_path) == []


def test_an_existing_folder_is_replaced_only_when_asked(tmp_path):
    final = tmp_path / "web"
    final.mkdir()
    (final / rf.META_FILE).write_text("old")
    with pytest.raises(FileExistsError, match="already exists"):
        with rf.write_folder(final) as tmp:
            pytest.fail("nothing is written when the folder exists and replace is not asked")  # pragma: no cover
    assert (final / rf.META_FILE).read_text() == "old"
    with rf.write_folder(final, replace=True) as tmp:
        (tmp / rf.META_FILE).write_text("new")
    assert (final / rf.META_FILE).read_text() == "new" and _entries(tmp_path) == ["web"]


def test_a_failed_replacement_keeps_the_old_folder(tmp_path):
    final = tmp_path / "web"
    final.mkdir()
    (final / rf.META_FILE).write_text("old")
    with pytest.raises(ValueError):
        with rf.write_folder(final, replace=True) as tmp:
            (tmp / rf.META_FILE).write_text("new")
            raise ValueError("bad input")
    assert (final / rf.META_FILE).read_text() == "old" and _entries(tmp_path) == ["web"]


def test_a_failed_rename_restores_the_old_folder(tmp_path, monkeypatch):
    final = tmp_path / "web"
    final.mkdir()
    (final / rf.META_FILE).write_text("old")
    real_rename = os.rename

    def refuse(src, dst):
        if os.fspath(dst) == os.fspath(final):
            raise OSError(18, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(rf.os, "rename", refuse)
    with pytest.raises(WindtunnelError, match="could not move"):
        with rf.write_folder(final, replace=True) as tmp:
            (tmp / rf.META_FILE).write_text("new")
    assert (final / rf.META_FILE).read_text() == "old" and _entries(tmp_path) == ["web"]


def test_a_race_lost_at_the_rename_is_file_exists(tmp_path, monkeypatch):
    final = tmp_path / "web"
    real_rename = os.rename

    def winner_first(src, dst):
        os.mkdir(dst)
        open(os.path.join(dst, "winner"), "w").close()
        return real_rename(src, dst)  # fails: dst exists and is not empty

    monkeypatch.setattr(rf.os, "rename", winner_first)
    with pytest.raises(FileExistsError):
        with rf.write_folder(final) as tmp:
            (tmp / rf.META_FILE).write_text("loser")
    assert _entries(final) == ["winner"] and _entries(tmp_path) == ["web"]


def test_the_folder_gets_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with rf.write_folder(tmp_path / "web") as tmp:
            (tmp / rf.META_FILE).write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "web").stat().st_mode) == 0o755  # not mkdtemp's 0o700: shared storage


def test_remove_folder_leaves_nothing_and_tolerates_a_missing_one(tmp_path):
    trial = rf.trial_dir(tmp_path, "t0003")
    trial.mkdir(parents=True)
    (trial / rf.CONFIG_FILE).write_text("model: {}\n")
    rf.remove_folder(trial)
    rf.remove_folder(trial)
    assert _entries(rf.trials_dir(tmp_path)) == []


# --- names, paths and the summary ----------------------------------------------------------------------
def test_paths_and_names():
    assert rf.summary_path("runs/xs").as_posix() == "runs/xs/summary.json"
    assert rf.config_path(rf.trial_dir("runs/s", "t0001")).as_posix() == "runs/s/trials/t0001/config.yaml"
    names = [getattr(rf, n) for n in rf.__all__ if n.isupper()]
    assert len(names) == len(set(names)), "two constants name the same file"
    assert doctest.testmod(rf).failed == 0


def test_trial_configs_in_id_order(tmp_path):
    for tid in ("t0002", "t0000"):
        rf.trial_dir(tmp_path, tid).mkdir(parents=True)
        rf.config_path(rf.trial_dir(tmp_path, tid)).write_text("{}")
    rf.trial_dir(tmp_path, "t0001").mkdir()  # no config: not listed
    assert [p.parent.name for p in rf.trial_config_paths(tmp_path)] == ["t0000", "t0002"]


def test_read_summary(tmp_path):
    assert rf.read_summary(tmp_path) is None
    with pytest.raises(WindtunnelError, match="summary.json: missing"):
        rf.read_summary(tmp_path, missing_ok=False)
    write_json(rf.summary_path(tmp_path), {"status": "ok", "val_loss": float("inf")})
    assert rf.read_summary(tmp_path) == {"status": "ok", "val_loss": float("inf")}
    rf.summary_path(tmp_path).write_text('{"status": "ok", "val')
    with pytest.raises(WindtunnelError, match="summary.json: not JSON"):
        rf.read_summary(tmp_path)
    rf.summary_path(tmp_path).write_text("[1, 2]")
    with pytest.raises(WindtunnelError, match="expected a JSON object"):
        rf.read_summary(tmp_path)


# --- fmt_bytes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, kwargs, text", [
    (0, {}, "0 B"), (512, {}, "512 B"), (1536, {}, "1.5 KiB"), (7.5 * 2**30, {}, "7.5 GiB"),
    (80 * 2**30, {}, "80 GiB"), (1000 * 2**20, {}, "1000 MiB"), (1.5 * 2**40, {}, "1.5 TiB"),
    (123_456_789, {}, "118 MiB"), (2**29, {"unit": "GiB"}, "0.5 GiB"), (15.4 * 2**30, {"digits": 2}, "15 GiB"),
    (2_500_000, {"decimal": True}, "2.5 MB"), (999, {"decimal": True}, "999 B"), (1e12, {"decimal": True}, "1 TB"),
    (-3 * 2**20, {}, "-3 MiB"),
])
def test_fmt_bytes(n, kwargs, text):
    assert fmt_bytes(n, **kwargs) == text


def test_fmt_bytes_refuses_an_unknown_unit():
    with pytest.raises(ValueError, match="unit: expected one of"):
        fmt_bytes(1, unit="GB")  # a decimal unit without decimal=True
    assert doctest.testmod(formatting).failed == 0
