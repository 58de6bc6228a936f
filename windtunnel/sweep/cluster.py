"""Joining an existing Ray cluster (`windtunnel sweep --address`): which cluster, and which authentication.

Ray (2.52 on) can require a shared token on every connection (`RAY_AUTH_MODE=token`). A local
`ray.init()` turns it on by default and writes the token to ~/.ray/auth_token; a later `ray start
--head` finds that file and turns it on as well, but a driver given an explicit address does not, so
the head refuses it and Ray retries for twenty seconds before blaming the connection. Here the driver
first asks the head (one quick call without a token, then one with this machine's token, each in a
child process so Ray's C++ warnings stay off the console), takes the head's mode, and reports a
refused token in one line with the fix.

Ray's rules for the token, highest first: the `RAY_AUTH_TOKEN` variable, the file named by
`RAY_AUTH_TOKEN_PATH`, the file ~/.ray/auth_token.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WindtunnelError

__all__ = ["AUTH_FIX", "ClusterJoin", "TokenSource", "describe_cluster", "find_token", "prepare_join"]

AUTH_MODE, TOKEN, TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
_EXPORT_FIX = ("run `ray get-auth-token` on the head and `export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<that "
               "token>` here and on every worker node")
AUTH_FIX = f"fix: start the head with this same token, or {_EXPORT_FIX}"

# One GetClusterId call to the head; exit 3 = refused for authentication, 4 = another failure.
_PROBE = """\
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    sys.exit(3)
except Exception as e:
    print(" ".join(str(e).split())[:300])
    sys.exit(4)
"""


@dataclass(frozen=True)
class TokenSource:
    """Where this process's Ray token comes from by Ray's precedence (a variable's name or a file);
    `where` is None when it has none. `note` says more (e.g. when the default file was written)."""

    where: str | None
    note: str = ""

    def __str__(self) -> str:
        return f"{self.where} ({self.note})" if self.note else str(self.where)


@dataclass(frozen=True)
class ClusterJoin:
    """The cluster a sweep joins: HOST:PORT, how it was chosen, the authentication mode this driver
    uses with it (None: left to Ray), and the other Ray instances seen on this machine (`auto` only)."""

    address: str
    chosen_by: str = "given"
    auth: str | None = None
    token: TokenSource = TokenSource(None)
    others: list[str] = field(default_factory=list)


def find_token() -> TokenSource:
    """The token Ray would use here, by Ray's own rules (variable, token path, default file).

    Example:
        >>> find_token().where                     # doctest: +SKIP
        '/home/me/.ray/auth_token'
    """
    if os.environ.get(TOKEN, "").strip():
        return TokenSource(TOKEN, "environment variable")
    if os.environ.get(TOKEN_PATH):
        path = Path(os.environ[TOKEN_PATH]).expanduser()
        if not _holds_token(path):  # Ray aborts the whole process on this one; say it first
            raise WindtunnelError(f"{TOKEN_PATH}={os.environ[TOKEN_PATH]}: no token in that file (missing or "
                                  f"empty); point it at the cluster's token file or unset it")
        return TokenSource(str(path), f"named by {TOKEN_PATH}")
    default = Path.home() / ".ray" / "auth_token"
    if _holds_token(default):
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(default.stat().st_mtime))
        return TokenSource(str(default), f"written {written}; a local `ray.init()` writes one there")
    return TokenSource(None)


def _holds_token(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def prepare_join(address: str) -> ClusterJoin:
    """Resolve `address` (`auto` or HOST:PORT), check that a head answers there, and set this process's
    `RAY_AUTH_MODE` to the head's, so `ray.init(address=...)` is accepted. Raises WindtunnelError with
    one line when no head answers, when `auto` is ambiguous, or when authentication fails.

    Example:
        >>> join = prepare_join("127.0.0.1:6379")   # doctest: +SKIP
        >>> join.address, join.auth
        ('127.0.0.1:6379', 'token')
    """
    target, chosen_by, others = _resolve(address)
    if target.startswith("ray://"):  # Ray Client: its server handles authentication itself
        return ClusterJoin(address=target, chosen_by=chosen_by)
    _check_reachable(address, target)
    token = find_token()
    auth = _agree_on_auth(address, target, token)
    if auth is not None:
        _set_auth_mode(auth)
    return ClusterJoin(address=target, chosen_by=chosen_by, auth=auth, token=token, others=others)


def _resolve(address: str) -> tuple[str, str, list[str]]:
    """(HOST:PORT to join, how it was chosen, the other Ray instances running on this machine)."""
    if address.startswith("ray://"):
        return address, "given", []
    if address != "auto":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise WindtunnelError(f"--address {address}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379)")
        return address, "given", []
    # Ray's own discovery: RAY_ADDRESS, the file the last `ray start --head` wrote, the running raylets
    from ray._private import services
    running = sorted(services.find_gcs_addresses())
    last = services.find_bootstrap_address(None)
    if os.environ.get("RAY_ADDRESS", "auto") not in ("auto", "local", ""):
        chosen, how = os.environ["RAY_ADDRESS"], "from RAY_ADDRESS"
    elif last and (last in running or not running):
        chosen, how = last, "the last `ray start --head` on this machine"
    elif len(running) == 1:
        chosen, how = running[0], "the only Ray instance on this machine"
    elif running:
        raise WindtunnelError(f"--address auto: {len(running)} Ray instances run on this machine "
                              f"({', '.join(running)}) and none is the last `ray start --head`; "
                              f"pass --address HOST:PORT to choose one")
    else:
        raise WindtunnelError("--address auto: no Ray cluster runs on this machine; start one with "
                              "`ray start --head --port=6379` or pass --address HOST:PORT")
    return chosen, how, [a for a in running if a != chosen]


def _check_reachable(flag: str, target: str) -> None:
    """Ray keeps retrying a dead HOST:PORT for minutes; a plain TCP connect answers in seconds."""
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or e
        raise WindtunnelError(f"--address {flag}: no Ray head answers at {target} ({why}); start one with "
                              f"`ray start --head --port={port}` or check the address") from None


def _agree_on_auth(flag: str, target: str, token: TokenSource) -> str | None:
    """The head's mode, `token` or `disabled`: both sides must agree, or the cluster's workers cannot
    answer this driver. None when this Ray has no way to ask (Ray's own rules then apply)."""
    wanted = os.environ.get(AUTH_MODE, "").strip().lower() or None
    answer = _probe(target, mode="disabled")
    if answer is None:
        return None
    if answer == "ok":
        if wanted == "token":
            raise WindtunnelError(f"--address {flag}: the Ray cluster at {target} runs without token "
                                  f"authentication but {AUTH_MODE}=token here; unset {AUTH_MODE} for this "
                                  f"sweep, or restart every node of the cluster with {AUTH_MODE}=token")
        return "disabled"
    if answer != "auth":
        raise WindtunnelError(f"--address {flag}: cannot reach a Ray cluster at {target} ({answer})")
    if wanted == "disabled":
        raise WindtunnelError(f"--address {flag}: authentication failed: the Ray cluster at {target} requires "
                              f"a token but {AUTH_MODE}=disabled here; unset it. {AUTH_FIX}")
    if token.where is None:
        raise WindtunnelError(f"--address {flag}: authentication failed: the Ray cluster at {target} requires "
                              f"a token and this machine has none ({TOKEN}, {TOKEN_PATH}, ~/.ray/auth_token); "
                              f"fix: {_EXPORT_FIX}")
    answer = _probe(target, mode="token")
    if answer == "auth":
        raise WindtunnelError(f"--address {flag}: authentication failed: the Ray cluster at {target} rejected "
                              f"the token from {token}; {AUTH_FIX}")
    if answer not in ("ok", None):
        raise WindtunnelError(f"--address {flag}: cannot reach a Ray cluster at {target} ({answer})")
    return "token"


def _probe(target: str, *, mode: str) -> str | None:
    """'ok', 'auth' (refused for authentication), another failure's text, or None if this Ray cannot be
    asked. A child process, because Ray reads RAY_AUTH_MODE once per process."""
    env = {**os.environ, AUTH_MODE: mode}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, target], env=env, capture_output=True, check=False,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "no answer within 60 s"
    return {0: "ok", 3: "auth", 4: done.stdout.strip() or "unknown failure"}.get(done.returncode)


def _set_auth_mode(mode: str) -> None:
    """For this process and the processes it starts. Ray reads its config when imported, so an imported
    Ray re-reads it, as Ray itself does when it turns token authentication on."""
    os.environ[AUTH_MODE] = mode
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config
        Config.initialize("")


def describe_cluster(join: ClusterJoin) -> str:
    """One line on the cluster this driver joined: address, nodes, CPUs, GPUs, authentication; with
    `auto`, the other Ray instances on this machine. Call after `ray.init`.

    Example:
        >>> describe_cluster(join)                  # doctest: +SKIP
        'joined the Ray cluster at 10.0.0.5:6379: 3 nodes, 48 CPUs, 0 GPUs, token authentication on'
    """
    import ray
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    have = ray.cluster_resources()
    address = ray.get_runtime_context().gcs_address or join.address
    how = "" if join.chosen_by == "given" else f" ({join.chosen_by})"
    auth = {"token": f", token authentication on (token from {join.token.where})",
            "disabled": ", token authentication off"}
    line = (f"joined the Ray cluster at {address}{how}: {nodes} node{'s' * (nodes != 1)}, "
            f"{have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs{auth.get(join.auth or '', '')}")
    if join.others:
        line += (f"; other Ray instances on this machine: {', '.join(join.others)} "
                 f"(pass --address HOST:PORT to join one of those)")
    return line
