"""One child `hedgeplug run` process: start it, wait for its "listening
on" line, signal it, read its log.

The line is printed only once the node serves, catches signals and watches
its parent, so a caller may use, signal or abandon the child right after.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import attrs
from anyio.abc import Process

from ..config import SECTIONS
from ..errors import HedgeplugError

# What `hedgeplug run` prints when ready, and the variable naming the pid it watches.
from ..readiness import DIE_WITH_PARENT, READY_PREFIX

READY_RE = re.compile("^" + re.escape(READY_PREFIX) + r"(?P<address>\S+) id=(?P<id>\S+)")


class ProcessError(HedgeplugError):
    """A child node did not start or misbehaved; the message quotes its log."""


@attrs.define(eq=False)
class NodeProcess:
    """One child `hedgeplug run` process."""

    process: Process
    id: str
    address: str
    log_path: Path
    running: bool = True
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def signal(self, signum: signal.Signals) -> None:
        if self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass
        self.running = False

    def cpu_seconds(self) -> float:
        """utime + stime of the child so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")


def node_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "hedgeplug", "run", *args]


def child_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The child's environment: ours without HEDGEPLUG_<SECTION>_<KEY>
    settings (its config file already holds the values, read once here) and
    with our pid to watch, so it stops if we die without cleaning up."""
    prefixes = tuple(f"HEDGEPLUG_{section.upper()}_" for section in SECTIONS)
    env = {k: v for k, v in environ.items() if not k.startswith(prefixes)}
    env[DIE_WITH_PARENT] = str(os.getpid())
    return env


async def start_node(
    args: Sequence[str], log_path: Path, *, ready_timeout: float = 30.0
) -> NodeProcess:
    """Start `hedgeplug run ARGS` and wait for its "listening on" line."""
    return await start_process(node_command(args), log_path, ready_timeout=ready_timeout)


async def start_process(
    command: Sequence[str],
    log_path: Path,
    *,
    ready_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    what: str = "node",
) -> NodeProcess:
    """Start any command that ends up in `hedgeplug run` (or prints its ready
    line the same way: a wrapper such as `ip netns exec`, a test worker) and
    wait for that line. The child is killed if it fails to report or we are
    cancelled meanwhile; stderr goes to `log_path`."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - the child owns it from here
    try:
        process = await anyio.open_process(
            list(command),
            stdin=None,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the parent only
            env=dict(env) if env is not None else child_environment(),  # no orphans if we die
        )
    finally:
        log_file.close()
    started = anyio.current_time()
    try:
        line = await _first_line(process, ready_timeout)
    except BaseException:
        await _reap(process)  # cancelled or failed: never leave the child running
        raise
    match = READY_RE.match(line or "")
    if match is None:
        await _reap(process)
        if line is None:
            why = f"did not report its address within {ready_timeout}s"
        elif not line:
            why = f"exited with status {process.returncode} before it listened"
        else:
            why = f"printed {line!r} instead of its address"
        raise ProcessError(f"{what} {why}; log {log_path}:\n{_tail(log_path)}")
    return NodeProcess(process, match["id"], match["address"], log_path, True, started)


async def _first_line(process: Process, timeout: float) -> str | None:
    """The child's first stdout line; None if it gave none within `timeout`."""
    assert process.stdout is not None
    buffer = b""
    with anyio.move_on_after(timeout):
        while b"\n" not in buffer:
            try:
                buffer += await process.stdout.receive()
            except anyio.EndOfStream:
                break
        return buffer.split(b"\n", 1)[0].decode(errors="replace")
    return None


async def _reap(process: Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
        with anyio.move_on_after(5):
            await process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
