"""Real `hedgeplug run` OS processes on loopback, for tests, benchmarks and
the demo: start a cluster, poll every node's status, kill or stop members,
and always clean up.

    async with ProcessCluster(workdir, overrides=["lock.ttl=3s"]) as cluster:
        await cluster.start(5)
        await cluster.wait_agreed(timeout=20)
        cluster.kill(cluster.leader_process())

Each child prints one "listening on" line on stdout (read here to learn its
address and id) and logs to its own file in the work folder. The lock store
is the embedded sqlite lock in that folder. Times come from the anyio clock.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import Process

from ..control import ControlClient
from ..errors import HedgeplugError
from ..registry import Registry

READY_RE = re.compile(r"^hedgeplug: listening on (?P<address>\S+) id=(?P<id>\S+)")


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


def lock_path_overrides(registry: Registry, folder: Path) -> list[str]:
    """Point the sqlite lock at a database file in `folder`, whatever its option is called."""
    impl = registry.get("lock", "sqlite")
    names = {f.name for f in attrs.fields(impl.options)}
    for candidate in ("path", "database", "file", "db"):
        if candidate in names:
            return ["lock.use=sqlite", f"lock.{candidate}={folder / 'lock.sqlite3'}"]
    raise HedgeplugError(
        f"the sqlite lock has no path option (options: {', '.join(sorted(names))})"
    )


def node_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "hedgeplug", "run", *args]


async def start_node(
    args: Sequence[str], log_path: Path, *, ready_timeout: float = 30.0
) -> NodeProcess:
    """Start `hedgeplug run ARGS` and wait for its "listening on" line."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - the child owns it from here
    try:
        process = await anyio.open_process(
            node_command(args),
            stdin=None,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the parent only
            env={**os.environ, "HEDGEPLUG_DIE_WITH_PARENT": "1"},  # no orphans if we die
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
        raise ProcessError(f"node {why}; log {log_path}:\n{_tail(log_path)}")
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


Status = dict[str, Any]


def agreement(
    statuses: dict[str, Status | None], live_ids: set[str], external: frozenset[str] = frozenset()
) -> tuple[bool, str]:
    """Whether every live node answered, all name the same leader (one of
    them, which says it leads) and every view holds exactly the live set plus
    the `external` ids (members that are not child processes, such as a
    node inside the calling process). The second item says what is missing
    when they do not agree."""
    expected = live_ids | external
    missing = [i for i in sorted(live_ids) if statuses.get(i) is None]
    if missing:
        return False, f"no status from {', '.join(missing)}"
    answered = [statuses[i] for i in sorted(live_ids)]
    leaders = {(s.get("leader") or {}).get("id") for s in answered}  # type: ignore[union-attr]
    if len(leaders) != 1 or None in leaders:
        return False, f"leaders seen: {sorted(map(str, leaders))}"
    (leader,) = leaders
    if leader not in live_ids:
        return False, f"leader {leader} is not a live process"
    if not statuses[leader].get("is_leader"):  # type: ignore[union-attr]
        return False, f"{leader} does not hold a valid lease"
    for s in answered:
        ids = {m["id"] for m in s.get("members", [])}  # type: ignore[union-attr]
        if ids != expected:
            extra, lacking = sorted(ids - expected), sorted(expected - ids)
            return False, f"{s['id']} sees extra {extra} lacking {lacking}"  # type: ignore[index]
    digests = {s.get("view_digest") for s in answered}  # type: ignore[union-attr]
    if len(digests) != 1:
        return False, f"{len(digests)} different view digests"
    return True, "agreed"


class ProcessCluster:
    """A set of child nodes sharing one sqlite lock file in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        cluster: str = "hedgeplug-test",
        overrides: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        registry: Registry | None = None,
        status_timeout: float = 2.0,
        transport: str = "tcp",
    ) -> None:
        self.workdir = Path(workdir)
        self.cluster = cluster
        self.registry = registry or Registry.load()
        # The sqlite lock in `workdir` unless the caller chose another backend.
        own_lock = any(item.startswith("lock.use=") for item in overrides)
        self.overrides = [
            *([] if own_lock else lock_path_overrides(self.registry, self.workdir)),
            f"transport.use={transport}",
            *overrides,
        ]
        self.extra_args = list(extra_args)
        self.status_timeout = status_timeout
        self.nodes: list[NodeProcess] = []
        self.external: set[str] = set()  # member ids expected in views that are not children
        self.client = ControlClient(cluster=cluster, transport=transport, registry=self.registry)
        self._count = 0

    async def __aenter__(self) -> ProcessCluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    # ------------------------------------------------------------ members

    @property
    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.running]

    def args_for(self, node_id: str) -> list[str]:
        args = ["--id", node_id, "--cluster", self.cluster, "--bind", "127.0.0.1:0"]
        for item in self.overrides:
            args += ["--set", item]
        return args + self.extra_args

    async def add(self, ready_timeout: float = 30.0) -> NodeProcess:
        self._count += 1
        node_id = f"n{self._count}"
        node = await start_node(
            self.args_for(node_id), self.workdir / f"{node_id}.log", ready_timeout=ready_timeout
        )
        self.nodes.append(node)
        return node

    async def start(self, count: int, ready_timeout: float = 60.0) -> list[NodeProcess]:
        """Start `count` nodes at once and wait until each reports its address."""
        started: list[NodeProcess] = []
        errors: list[BaseException] = []

        async def one() -> None:
            try:
                started.append(await self.add(ready_timeout))
            except ProcessError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        if errors:
            raise errors[0]
        return started

    def kill(self, node: NodeProcess) -> None:
        """SIGKILL: a crash, no leave, no lease release."""
        node.signal(signal.SIGKILL)

    def terminate(self, node: NodeProcess) -> None:
        """SIGTERM: graceful stop (leave, release)."""
        node.signal(signal.SIGTERM)

    async def wait_exit(self, node: NodeProcess, timeout: float = 10.0) -> int | None:
        with anyio.move_on_after(timeout):
            return await node.process.wait()
        return None

    # ------------------------------------------------------------ observation

    async def status_of(self, node: NodeProcess) -> Status | None:
        try:
            return await self.client.status(node.address, self.status_timeout)
        except (HedgeplugError, OSError, TimeoutError):
            return None

    async def statuses(
        self, nodes: Sequence[NodeProcess] | None = None
    ) -> dict[str, Status | None]:
        """Status of each given (default: running) node, polled at once; None: no answer."""
        targets = list(self.live if nodes is None else nodes)
        out: dict[str, Status | None] = {}

        async def one(node: NodeProcess) -> None:
            out[node.id] = await self.status_of(node)

        async with anyio.create_task_group() as tg:
            for node in targets:
                tg.start_soon(one, node)
        return out

    async def agreed(self) -> tuple[bool, str, dict[str, Status | None]]:
        statuses = await self.statuses()
        ok, why = agreement(statuses, {n.id for n in self.live}, frozenset(self.external))
        return ok, why, statuses

    async def wait_for(
        self,
        condition: Callable[[dict[str, Status | None]], bool],
        timeout: float,
        *,
        poll: float = 0.05,
        describe: str = "condition",
    ) -> float:
        """Poll statuses until `condition` holds; returns the seconds it took.
        Raises ProcessError with the last statuses if it does not within `timeout`."""
        start = anyio.current_time()
        last: dict[str, Status | None] = {}
        with anyio.move_on_after(timeout):
            while True:
                last = await self.statuses()
                if condition(last):
                    return anyio.current_time() - start
                await anyio.sleep(poll)
        raise ProcessError(
            f"{describe} not reached within {timeout}s; last statuses:\n" + summarize(last)
        )

    async def wait_agreed(self, timeout: float, poll: float = 0.05) -> float:
        """Seconds until one leader and one identical view holding exactly the live set."""
        live = {n.id for n in self.live}
        external = frozenset(self.external)
        return await self.wait_for(
            lambda s: agreement(s, live, external)[0],
            timeout,
            poll=poll,
            describe=f"agreement among {sorted(live)}",
        )

    async def wait_new_leader(self, old_leader: str, timeout: float, poll: float = 0.05) -> float:
        """Seconds until a live node other than `old_leader` says it holds a valid lease."""

        def has_new(statuses: dict[str, Status | None]) -> bool:
            return any(
                s and s.get("is_leader") and s.get("id") != old_leader for s in statuses.values()
            )

        return await self.wait_for(has_new, timeout, poll=poll, describe="a new leader")

    def leader_process(self, statuses: dict[str, Status | None]) -> NodeProcess | None:
        for node in self.live:
            s = statuses.get(node.id)
            if s and s.get("is_leader"):
                return node
        return None

    def by_id(self, node_id: str) -> NodeProcess:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    # ------------------------------------------------------------ cleanup

    async def stop(self, node: NodeProcess, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it did not exit in time."""
        self.terminate(node)
        code = await self.wait_exit(node, timeout)
        if code is None:
            node.process.kill()
            code = await self.wait_exit(node, 5)
        return code

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every child: SIGTERM all at once, then SIGKILL whatever is left."""
        for node in self.nodes:
            if node.process.returncode is None:
                node.signal(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            for node in self.nodes:
                await node.process.wait()
        for node in self.nodes:
            if node.process.returncode is None:
                try:
                    node.process.kill()
                except ProcessLookupError:
                    pass
                with anyio.move_on_after(5):
                    await node.process.wait()
            await node.process.aclose()
        await self.client.aclose()

    def kill_all_now(self) -> None:
        """Last-resort synchronous cleanup (for finally blocks outside an event loop)."""
        for node in self.nodes:
            if node.process.returncode is None:
                try:
                    node.process.kill()
                except ProcessLookupError:
                    pass


def summarize(statuses: dict[str, Status | None]) -> str:
    lines = []
    for node_id, s in sorted(statuses.items()):
        if s is None:
            lines.append(f"  {node_id}: no answer")
            continue
        leader = (s.get("leader") or {}).get("id")
        ids = sorted(m["id"] for m in s.get("members", []))
        lines.append(
            f"  {node_id}: leader={leader} is_leader={s.get('is_leader')} token={s.get('token')} "
            f"view={s.get('view_version')} members={ids}"
        )
    return "\n".join(lines)


@attrs.frozen
class FailoverFigures:
    """What `measure_failover` saw, in seconds from the signal."""

    killed_leader_replaced: float
    agreed_after_kill: float
    stopped_leader_replaced: float
    agreed_after_stop: float

    def __str__(self) -> str:
        return (
            f"SIGKILL leader: new leader {self.killed_leader_replaced:.2f}s, "
            f"agreed view {self.agreed_after_kill:.2f}s; SIGTERM leader: new leader "
            f"{self.stopped_leader_replaced:.2f}s, agreed view {self.agreed_after_stop:.2f}s"
        )


async def measure_failover(
    cluster: ProcessCluster,
    *,
    nodes: int = 5,
    ttl: float,
    settle_before_stop: float = 0.0,
    start_timeout: float = 60.0,
) -> FailoverFigures:
    """The core issue's cluster check against any lock backend: start `nodes`
    `hedgeplug run` processes, wait for one leader and one view, SIGKILL the
    leader and time the new leader and the agreed view, then SIGTERM the new
    leader (graceful: release) and time the handover. Raises ProcessError
    (with the statuses) when a step does not happen within its bound's
    generous timeout; callers assert their own bounds on the figures."""
    await cluster.start(nodes, ready_timeout=start_timeout)
    await cluster.wait_agreed(timeout=start_timeout)
    leader = cluster.leader_process(await cluster.statuses())
    if leader is None:
        raise ProcessError("agreement reached but no process reports leading")
    cluster.kill(leader)
    start = anyio.current_time()
    killed_replaced = await cluster.wait_new_leader(leader.id, timeout=ttl + 15)
    await cluster.wait_agreed(timeout=ttl + 15)
    agreed_after_kill = anyio.current_time() - start

    second = cluster.leader_process(await cluster.statuses())
    if second is None:
        raise ProcessError("agreement reached after the kill but no process reports leading")
    if settle_before_stop:
        await anyio.sleep(settle_before_stop)
    cluster.terminate(second)
    start = anyio.current_time()
    stopped_replaced = await cluster.wait_new_leader(second.id, timeout=ttl + 15)
    await cluster.wait_exit(second)
    await cluster.wait_agreed(timeout=ttl + 15)
    agreed_after_stop = anyio.current_time() - start
    return FailoverFigures(killed_replaced, agreed_after_kill, stopped_replaced, agreed_after_stop)
