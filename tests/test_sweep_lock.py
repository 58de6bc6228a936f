"""The live-sweep lock: a live holder is refused (library and CLI), a dead one taken over, the lock
released on every exit. No Ray: a refused sweep stops before Ray starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from windtunnel.cli import main
from windtunnel.errors import WindtunnelError
from windtunnel.sweep import run_sweep
from windtunnel.sweep.lock import LOCK_FILE, SweepLock, _start_time

from support import ROOT, write_spec


def _holder(folder, *, host=None, pid=None, since=None, **extra):
    payload = {"host": host or socket.gethostname(), "pid": os.getpid() if pid is None else pid,
               "pid_start": _start_time(os.getpid() if pid is None else pid),
               "since": time.time() - 125 if since is None else since, **extra}
    (folder / LOCK_FILE).write_text(json.dumps(payload))
    return payload


@pytest.fixture
def sleeper():
    """A live process of this host that is not us."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_holder_on_this_host_is_refused_with_host_pid_and_age(tmp_path, sleeper):
    held = _holder(tmp_path, pid=sleeper.pid)
    with pytest.raises(WindtunnelError) as e:
        SweepLock(tmp_path).acquire()
    msg = str(e.value)
    assert f"host {socket.gethostname()}, pid {sleeper.pid}" in msg and "for 2 min" in msg and "--break-lock" in msg
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == held  # untouched


def test_a_dead_holder_on_this_host_is_taken_over_with_a_line(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    _holder(tmp_path, pid=pid, pid_start=None)
    lines = []
    with SweepLock(tmp_path, announce=lines.append) as lock:
        mine = json.loads((tmp_path / LOCK_FILE).read_text())
        assert lock.held and mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
    assert lines == [f"taking over {tmp_path / LOCK_FILE}: its holder, pid {pid} on this host, is gone"]
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    if _start_time(os.getpid()) is None:
        pytest.skip("no /proc: process start times cannot be read here")
    _holder(tmp_path, pid_start=_start_time(os.getpid()) - 1)  # our pid, but another process's start time
    lines = []
    SweepLock(tmp_path, announce=lines.append).acquire().release()
    assert "now runs another process" in lines[0]


def test_another_hosts_lock_waits_for_staleness_or_break_lock(tmp_path):
    _holder(tmp_path, host="node-17", pid=4242)
    with pytest.raises(WindtunnelError, match=r"host node-17, pid 4242.*10 min without a heartbeat"):
        SweepLock(tmp_path).acquire()
    lines = []
    SweepLock(tmp_path, break_lock=True, announce=lines.append).acquire().release()
    assert lines == [f"taking over {tmp_path / LOCK_FILE}: --break-lock given (held by host node-17, pid 4242)"]

    _holder(tmp_path, host="node-17", pid=4242)
    old = time.time() - 601
    os.utime(tmp_path / LOCK_FILE, (old, old))  # its heartbeat stopped 10 min ago
    lines.clear()
    SweepLock(tmp_path, announce=lines.append).acquire().release()
    assert "has not refreshed it for 10 min (stale after 10 min)" in lines[0]


def test_the_holder_keeps_its_lock_fresh_and_releases_on_an_exception(tmp_path):
    path = tmp_path / LOCK_FILE
    with pytest.raises(ValueError):
        with SweepLock(tmp_path, heartbeat_s=0.05):
            old = time.time() - 300
            os.utime(path, (old, old))
            deadline = time.monotonic() + 5
            while time.time() - path.stat().st_mtime > 60 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert time.time() - path.stat().st_mtime < 60  # the heartbeat touched it
            raise ValueError("a crash inside the sweep")
    assert not path.exists()


def test_a_holder_whose_lock_is_taken_says_so_and_leaves_the_new_lock(tmp_path):
    lines = []
    lock = SweepLock(tmp_path, heartbeat_s=0.02, announce=lines.append).acquire()
    other = _holder(tmp_path, host="node-3", pid=7)  # a --break-lock elsewhere replaced ours
    deadline = time.monotonic() + 5
    while not lines and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lines == [f"warning: {tmp_path / LOCK_FILE} was taken over by host node-3, pid 7; two sweeps may now "
                     "write this folder: stop one of them"]
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == other


def _spec(tmp_path):
    return write_spec(tmp_path / "s.yaml", name="s", parameters={"train.lr": {"values": [0.01]}})


def test_a_second_sweep_in_a_live_sweeps_folder_exits_2_and_writes_nothing(tmp_path, sleeper, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text("name: s\n")  # stands for the live sweep's files: they must stay as they are
    (run / "trials" / "t0000").mkdir(parents=True)  # a trial the live sweep is training
    _holder(run, pid=sleeper.pid)
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    capsys.readouterr()
    assert main(["sweep", str(_spec(tmp_path)), "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {sleeper.pid}" in err[0] and "a sweep is running in this folder" in err[0]
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before


def test_run_sweep_releases_the_lock_when_it_fails(tmp_path, monkeypatch):
    import windtunnel.sweep.ray_engine as engine

    run = tmp_path / "run"
    run.mkdir()

    def no_ray(*a, **k):
        assert (run / LOCK_FILE).is_file()  # held from here on
        raise RuntimeError("the cluster is down")
    monkeypatch.setattr(engine, "init_ray", no_ray)
    with pytest.raises(RuntimeError, match="the cluster is down"):
        run_sweep(_spec(tmp_path), out_dir=run, progress=False, plots=False)
    assert not (run / LOCK_FILE).exists()


def test_sigterm_to_the_sweep_command_removes_its_lock(tmp_path):
    # what `windtunnel sweep` does on SIGTERM (a scheduler's requeue), without Ray: handler + lock + finally
    code = ("import sys, time\n"
            "from windtunnel.cli.sweep import exit_on_sigterm\n"
            "from windtunnel.sweep.lock import SweepLock\n"
            "exit_on_sigterm()\n"
            f"with SweepLock({str(tmp_path)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "held" and (tmp_path / LOCK_FILE).is_file()
        proc.terminate()
        assert proc.wait(timeout=30) == 128 + 15
    finally:
        proc.kill()
    assert not (tmp_path / LOCK_FILE).exists()
