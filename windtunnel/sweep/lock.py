"""One live sweep per folder: `sweep.lock`, created atomically, kept fresh by a heartbeat.

A second `windtunnel sweep SPEC --out SAME --resume` started while the first is alive (a requeued
cluster job does exactly this) would train the remaining trials again into the same folders. The
lock refuses it, naming the holder's host, pid and how long it has held the folder. A lock is taken
over, with a line saying so, when its holder is gone:
  - same host: the pid no longer runs (or runs a different process: the pid was reused);
  - another host: its pid cannot be checked from here, so the heartbeat decides — the holder touches
    the file every `HEARTBEAT_S` seconds and a lock untouched for `STALE_AFTER_S` is stale;
  - `break_lock=True` (`--break-lock`): at once, for a holder known to be dead.

    >>> with SweepLock("runs/lr_init", announce=print):      # doctest: +SKIP
    ...     run_the_trials()
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import WindtunnelError
from ..run_folder import LOCK_FILE

__all__ = ["SweepLock", "LOCK_FILE", "HEARTBEAT_S", "STALE_AFTER_S"]

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
"""20 missed heartbeats: long enough for a loaded file server or clocks a little apart, short enough
for a requeued job to go on by itself."""


class SweepLock:
    """Hold `run_dir/sweep.lock` while a sweep runs there; `release()` (or leaving the `with`) frees it.

    Example:
        >>> lock = SweepLock("runs/lr_init").acquire()        # doctest: +SKIP
        >>> lock.release()                                    # doctest: +SKIP
    """

    def __init__(self, run_dir: str | os.PathLike, *, break_lock: bool = False, announce: Callable[[str], Any]
                 | None = None, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.path = Path(run_dir) / LOCK_FILE
        self.break_lock = break_lock
        self.announce = announce or (lambda line: None)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.held = False
        self._mine: dict[str, Any] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> SweepLock:
        """Create the lock, or take over a dead holder's; a live holder raises WindtunnelError."""
        if self.held:
            return self
        self._mine = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
                      "since": time.time()}
        if not self._create():
            holder, age = _read(self.path), _age(self.path)
            if holder is None and self._create():  # released in between
                return self._start()
            holder = holder or {}
            why = self._dead(holder, age)
            if why is None:
                raise WindtunnelError(self._refusal(holder, age))
            self.announce(f"taking over {self.path}: {why}")
            self._remove_if(holder)
            if not self._create():
                raise WindtunnelError(f"{self.path}: another process took the lock at the same moment; "
                                      f"it runs this sweep ({_describe(_read(self.path) or {})})")
        return self._start()

    def _start(self) -> SweepLock:
        self.held = True
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="windtunnel-sweep-lock", daemon=True)
        self._beat.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours. Safe to call twice."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self._remove_if(self._mine)

    # --- inside ---------------------------------------------------------------------------
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._mine, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _remove_if(self, expected: dict) -> None:
        """Remove the lock file only if it still holds `expected` (never someone else's fresh lock)."""
        current = _read(self.path)
        if current is not None and expected and current != expected:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = _read(self.path)
            if holder != self._mine:  # a --break-lock (or a takeover race) elsewhere: say so once, loudly
                self.announce(f"warning: {self.path} was taken over by {_describe(holder or {})}; two sweeps "
                              f"may now write this folder: stop one of them")
                return
            try:
                os.utime(self.path)
            except OSError:
                return

    def _dead(self, holder: dict, age: float) -> str | None:
        """Why the holder is gone, or None when it may be alive."""
        if self.break_lock:
            return f"--break-lock given (held by {_describe(holder)})"
        if not holder:
            return "the lock file is empty or unreadable (its writer died while creating it)"
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            pid = holder["pid"]
            if not _alive(pid):
                return f"its holder, pid {pid} on this host, is gone"
            start = _start_time(pid)
            if holder.get("pid_start") is not None and start is not None and start != holder["pid_start"]:
                return f"pid {pid} on this host now runs another process (the holder is gone)"
            return None
        if age > self.stale_after_s:
            return (f"its holder ({_describe(holder)}) has not refreshed it for {_duration(age)} "
                    f"(stale after {_duration(self.stale_after_s)})")
        return None

    def _refusal(self, holder: dict, age: float) -> str:
        held = _duration(time.time() - holder["since"]) if isinstance(holder.get("since"), (int, float)) else "?"
        other_host = holder.get("host") != socket.gethostname()
        wait = (f"; taken over by itself once it is {_duration(self.stale_after_s)} without a heartbeat "
                f"(now {_duration(age)})" if other_host else "")
        return (f"{self.path.parent}: a sweep is running in this folder ({_describe(holder)}, for {held}); "
                f"wait for it, or use another --out{wait}; if it is dead, pass --break-lock")


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _age(path: Path) -> float:
    try:
        return max(time.time() - path.stat().st_mtime, 0.0)
    except OSError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _describe(holder: dict) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"


def _duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
