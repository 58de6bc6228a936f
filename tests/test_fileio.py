"""Atomic writes: whole files or none, readable like any other file, and a failed write leaves nothing."""

from __future__ import annotations

import json
import os
import stat

import pytest

from windtunnel.fileio import atomic_write, write_json, write_text


def test_written_files_get_the_umask_permissions_not_the_temp_files(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import windtunnel.fileio as fileio
        importlib.reload(fileio)  # the default mode is read from the umask at import
        path = fileio.write_text(tmp_path / "a" / "b.txt", "hello\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0o600: other nodes read run folders
        assert stat.S_IMODE(fileio.write_text(tmp_path / "c.yaml", "x", mode=0o600).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_strict_json_writes_null_for_inf_and_nan(tmp_path):
    path = write_json(tmp_path / "r.json", {"drift": float("inf"), "xs": [1.0, float("nan")]}, strict=True)
    assert json.loads(path.read_text()) == {"drift": None, "xs": [1.0, None]}
    loose = write_json(tmp_path / "l.json", {"loss": float("inf")})
    assert json.loads(loose.read_text())["loss"] == float("inf")


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = write_text(tmp_path / "t.txt", "old")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
