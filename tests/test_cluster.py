"""`windtunnel sweep --address`: joining a head made by `ray start --head`, with Ray token authentication.

The slow tests start their own head (`ray start --head --block` on a free loopback port, a temporary
HOME and a private --temp-dir) and stop exactly that head by signalling its `ray start` process; Ray
instances of anyone else on the machine are never touched.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from windtunnel.config import load_config
from windtunnel.errors import WindtunnelError
from windtunnel.sweep import read_results
from windtunnel.sweep.cluster import find_token, prepare_join
from windtunnel.training.loop import train

from support import ROOT, write_spec

RAY = str(Path(sys.executable).parent / "ray")
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_TMPDIR")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """This checkout first on the path (head workers and driver alike), a private HOME, no inherited
    Ray authentication or address settings (a local ray.init in this process sets RAY_AUTH_MODE)."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


@contextlib.contextmanager
def ray_head(env: dict[str, str], *, cpus: int = 2):
    """A head of our own; yields (port, ray temp root). Stopped by SIGTERM to its `ray start --block`,
    on which Ray drains and ends that node's processes (and only those)."""
    root = Path(tempfile.mkdtemp(prefix="wt-head-", dir="/tmp"))  # short: Ray's socket paths are limited
    port, log = _free_port(), root / "head.log"
    cmd = [RAY, "start", "--head", "--block", f"--port={port}", f"--temp-dir={root / 'ray'}",
           f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
           f"--dashboard-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}"]
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield port, root
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(root, ignore_errors=True)


def _sweep(spec: Path, out: Path, address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "windtunnel", "sweep", str(spec), "--out", str(out), "--address", address,
           "--no-plots"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          check=False)


def _generate_token(env: dict[str, str]) -> str:
    """What a local run leaves behind: Ray's own `ray get-auth-token --generate` -> ~/.ray/auth_token."""
    done = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def _join(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Only the join (init_ray with the announce line), no sweep: a few seconds instead of tens."""
    code = "import sys; from windtunnel.sweep.ray_engine import init_ray; init_ray(sys.argv[1], announce=print)"
    return subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def head_after_local_run(tmp_path_factory):
    """The issue's order: a local run left ~/.ray/auth_token, then `ray start --head` in that home
    (which turns token authentication on because it finds the file). Yields (port, root, home, token)."""
    home = tmp_path_factory.mktemp("home")
    env = _env(home)
    token = _generate_token(env)
    assert (home / ".ray" / "auth_token").read_text().strip() == token
    with ray_head(env) as (port, root):
        yield port, root, home, token


@pytest.mark.slow
def test_sweep_joins_a_head_started_after_a_local_run_left_a_token(tmp_path, head_after_local_run):
    port, root, home, _ = head_after_local_run
    spec = write_spec(tmp_path / "s.yaml", name="cl", budget={"max_concurrent": 2})
    done = _sweep(spec, tmp_path / "run", f"127.0.0.1:{port}", _env(home))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f":{port}: 1 node, 2 CPUs, 0 GPUs, token authentication on (token from " \
           f"{home / '.ray' / 'auth_token'})" in done.stderr
    assert "gcs_client" not in done.stderr and "Unauthenticated" not in done.stderr
    df = read_results(tmp_path / "run")
    assert list(df["trial_id"]) == ["t0000", "t0001"] and list(df["status"]) == ["ok", "ok"]
    assert list(df["train.lr"]) == [0.01, 0.03] and all(0 < v < math.log(256) for v in df["val_loss"])
    # the head's workers computed what this process computes from the same trial config
    cfg = load_config(tmp_path / "run" / "trials" / "t0000" / "config.yaml")
    local = train(cfg, out_dir=tmp_path / "local_t0000")
    assert local["val_loss"] == pytest.approx(df["val_loss"].iloc[0], rel=1e-6)

    # `auto` finds this head through the address file its `ray start` wrote, and says which it joined
    auto = _join("auto", _env(home, RAY_TMPDIR=str(root)))
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert f":{port} (the last `ray start --head` on this machine): 1 node, 2 CPUs" in auto.stdout


@pytest.mark.slow
def test_a_stale_token_file_is_reported_as_an_authentication_failure(tmp_path, head_after_local_run):
    port, _, _, head_token = head_after_local_run
    home = tmp_path / "home"  # this driver's ~/.ray/auth_token is another run's, not the head's
    driver = _env(home)
    assert _generate_token(driver) != head_token
    spec = write_spec(tmp_path / "s.yaml", name="st", parameters={"train.lr": {"values": [0.01]}})
    address = f"127.0.0.1:{port}"
    done = _sweep(spec, tmp_path / "run", address, driver)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"[st] joining the Ray cluster at {address} ..."  # said before Ray's silent start
    lines = lines[1:]
    assert len(lines) == 1, done.stderr  # one error line, no retry noise from Ray's gcs_client
    assert lines[0].startswith(f"windtunnel: error: --address {address}: authentication failed: the Ray "
                               f"cluster at {address} rejected the token from {home / '.ray' / 'auth_token'}")
    assert "start the head with this same token" in lines[0] and "ray get-auth-token" in lines[0]
    assert not (tmp_path / "run").exists()

    refused = _join(address, _env(home, RAY_AUTH_MODE="disabled"))
    assert refused.returncode != 0 and "requires a token but RAY_AUTH_MODE=disabled here" in refused.stderr

    # the fix the message gives: the head's token, exported
    fixed = _join(address, _env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head_token))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "token authentication on (token from RAY_AUTH_TOKEN)" in fixed.stdout


def test_token_is_found_by_rays_precedence(tmp_path, monkeypatch):
    for var in AUTH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_token().where is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("  \n")
    assert find_token().where is None  # an empty file is no token
    (tmp_path / ".ray" / "auth_token").write_text("abc\n")
    assert find_token().where == str(tmp_path / ".ray" / "auth_token")
    (tmp_path / "t").write_text("def")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert find_token().where == str(tmp_path / "t")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ghi")
    assert find_token().where == "RAY_AUTH_TOKEN"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(WindtunnelError, match="RAY_AUTH_TOKEN_PATH=.*missing: no token in that file"):
        find_token()


def test_bad_or_dead_address_is_one_clear_line():
    with pytest.raises(WindtunnelError, match=r"--address nowhere: expected auto or HOST:PORT"):
        prepare_join("nowhere")
    port = _free_port()  # nothing listens there
    with pytest.raises(WindtunnelError, match=rf"--address 127.0.0.1:{port}: no Ray head answers at 127.0.0.1:"):
        prepare_join(f"127.0.0.1:{port}")
