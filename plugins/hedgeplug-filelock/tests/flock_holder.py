"""Another process holding the lease file's flock until its stdin closes: to
every backend on that file, a store it cannot change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


class FlockHolder:
    """stop()/start() and stall()/resume() for the store contract suites."""

    def __init__(self, path: Path) -> None:
        self.guard = Path(str(path) + ".lock")
        self.proc: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(self.guard)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def start(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc = None

    stall = stop
    resume = start
