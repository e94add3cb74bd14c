"""Supervision of throwaway server processes for tests: the part every test
server shares, whatever it is.

A `ServerHandle` subclass says how to run its server (`command`, `ready`,
`env_vars`); the handle starts it on loopback in a fresh temporary folder,
restarts it in place (same port, same files), kills it, and removes it.
Handles still running when the interpreter exits are stopped by an atexit
hook, and child servers get a parent-death signal, so a killed test run does
not leave them behind. Plugin distributions build their server launchers on
this (see hedgeplug.testing.servers for how they are found).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A test server is missing or did not start; the message says how to fix it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


_running: set[ServerHandle] = set()


def _stop_all_at_exit() -> None:
    for handle in list(_running):
        if not handle.detached:
            handle.cleanup()


atexit.register(_stop_all_at_exit)


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec hook: the kernel sends `sig` to the child when our process dies."""

    def hook() -> None:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return hook


class ServerHandle:
    """A server process this module started (or, with `owned=False`, one given from outside)."""

    name = "server"
    # The signal that shuts the server down quickly without waiting for clients.
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path | None, *, detached: bool = False, owned: bool = True) -> None:
        self.root = root
        self.detached = detached
        self.owned = owned
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    # -- what subclasses provide

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env_vars(self) -> dict[str, str]:
        raise NotImplementedError

    def run_as(self) -> str | None:
        """User name to run the server as (None: the current user)."""
        return None

    # -- life cycle

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def _require_owned(self, what: str) -> None:
        if not self.owned:
            raise ServerError(
                f"cannot {what} the {self.name} server: it was given through the environment, "
                "not started by this test run; start your own with the server_factory fixture"
            )

    def start(self) -> None:
        """Start the server process (again, after stop()) and wait until it accepts clients."""
        self._require_owned("start")
        if self.running:
            return
        user = self.run_as()
        log = open(self.log_path, "ab")
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs["user"] = user
            kwargs["group"] = pwd.getpwnam(user).pw_gid
            kwargs["extra_groups"] = []
        if self.detached:
            kwargs["start_new_session"] = True
        elif threading.current_thread() is threading.main_thread():
            # The kernel ties the death signal to the forking THREAD; a worker
            # thread may end long before the process, so only the main one asks.
            kwargs["preexec_fn"] = _die_with_parent(self.stop_signal)
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                **kwargs,
            )
        finally:
            log.close()
        self.pid = self.process.pid
        _running.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with status {self.process.returncode} while starting; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self.name} did not become ready within {START_TIMEOUT:.0f}s; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server process; files stay, so start() brings it back with its data."""
        self._require_owned("stop")
        if self.pid is None:
            return
        signal_and_wait(self.pid, self.stop_signal, self.process)
        self.process = None
        self.pid = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server (a crash); start() brings it back."""
        self._require_owned("kill")
        if self.pid is not None:
            signal_and_wait(self.pid, signal.SIGKILL, self.process)
        self.process = None
        self.pid = None

    def cleanup(self) -> None:
        """Stop the server and delete its files. Safe to call more than once."""
        if not self.owned:
            return
        try:
            self.stop()
        finally:
            _running.discard(self)
            if self.root is not None and self.root.exists():
                shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- for `up` / `down`

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "root": str(self.root),
                "stop_signal": int(self.stop_signal)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie waiting to be reaped by someone else counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def signal_and_wait(pid: int, sig: int, process: subprocess.Popen[bytes] | None) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if process is not None:
        process.wait(timeout=STOP_TIMEOUT)


def make_root(prefix: str, owner: str | None = None) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"hedgeplug-{prefix}-", dir=_temp_base(owner)))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def _temp_base(owner: str | None) -> str:
    """The temp folder, or /tmp when `owner` could not reach files inside the configured one."""
    base = tempfile.gettempdir()
    if owner is None:
        return base
    path = Path(base).resolve()
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return "/tmp"
    return base



ServerHandleT = TypeVar("ServerHandleT", bound=ServerHandle)


def started(server: ServerHandleT) -> ServerHandleT:
    """Start `server`; on any failure remove what it left (files, process) and re-raise."""
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server




def detach(handle: ServerHandle) -> None:
    """Let `handle`'s server outlive this process (not stopped at exit)."""
    _running.discard(handle)
