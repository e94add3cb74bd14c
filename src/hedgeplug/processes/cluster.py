"""A local cluster of real `hedgeplug run` OS processes on loopback, for
the demo, the bench and tests: start members, poll every node's status,
kill or stop members, and always clean up.

    async with ProcessCluster(workdir, overrides=["lock.ttl=3s"]) as cluster:
        await cluster.start(5)
        await cluster.wait_agreed(timeout=20)
        cluster.kill(cluster.leader_process(await cluster.statuses()))

The configuration is read once, in this process, into a typed Config; each
child gets it as a TOML file in the work folder (`write_config`) and logs to
its own file there. The lock store is, unless the configuration chooses
another, the embedded sqlite lock in that folder. Times come from the anyio
clock.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from ..config import Config, Setting, load_config, parse_setting, write_config
from ..control import ControlClient, client_transport_options
from ..errors import HedgeplugError
from ..registry import Registry
from .node import NodeProcess, ProcessError, start_node
from .status import Status, agreement, summarize


def cluster_config(
    workdir: Path,
    *,
    cluster: str,
    transport: str = "tcp",
    overrides: Sequence[str | Setting] = (),
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
) -> Config:
    """The typed Config of a local cluster: the sqlite lock in `workdir`
    (unless `overrides` choose another lock), `transport` on 127.0.0.1 with
    any free port, the caller's `defaults` (shaped like the file), then the
    environment and `overrides` ("section.key=value" or Settings)."""
    settings = [parse_setting(s) if isinstance(s, str) else s for s in overrides]
    own_lock = any((s.section, s.key) == ("lock", "use") for s in settings)
    lock = {} if own_lock else {"use": "sqlite", "path": str(Path(workdir) / "lock.sqlite3")}
    data: dict[str, dict[str, Any]] = {
        "node": {"cluster": cluster},
        "lock": lock,
        "transport": {"use": transport, "bind": "127.0.0.1:0"},
    }
    for section, values in (defaults or {}).items():
        data[section] = {**data.get(section, {}), **values}
    return load_config(data=data, overrides=settings, registry=registry)


class ProcessCluster:
    """A set of child nodes sharing one sqlite lock file in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        cluster: str = "hedgeplug-test",
        config: Config | None = None,
        overrides: Sequence[str | Setting] = (),
        extra_args: Sequence[str] = (),
        registry: Registry | None = None,
        status_timeout: float = 2.0,
        transport: str = "tcp",
    ) -> None:
        self.workdir = Path(workdir)
        self.registry = registry or Registry.load()
        # Read once, here; every child gets this typed Config as its file.
        self.config = config or cluster_config(
            self.workdir, cluster=cluster, transport=transport, overrides=overrides,
            registry=self.registry,
        )
        self.cluster = self.config.node.cluster
        self.extra_args = list(extra_args)
        self.status_timeout = status_timeout
        self.nodes: list[NodeProcess] = []
        self.external: set[str] = set()  # member ids expected in views that are not children
        self.client = ControlClient(
            cluster=self.cluster, key=self.config.node.key, transport=self.config.transport.use,
            registry=self.registry, transport_options=client_transport_options(self.config),
        )
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

    def args_for(self, node_id: str, config: Config | None = None) -> list[str]:
        """`hedgeplug run` arguments of child `node_id`: its config file, written
        from the typed Config (the cluster's, or `config` for this one child)."""
        node_config = (config or self.config).with_node(id=node_id)
        path = write_config(node_config, self.workdir / f"{node_id}.toml")
        return ["--config", str(path), *self.extra_args]

    async def add(self, ready_timeout: float = 30.0, config: Config | None = None) -> NodeProcess:
        """Start one more child; `config` (e.g. the cluster's with other seeds) for it alone."""
        self._count += 1
        node_id = f"n{self._count}"
        node = await start_node(
            self.args_for(node_id, config), self.workdir / f"{node_id}.log",
            ready_timeout=ready_timeout,
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
