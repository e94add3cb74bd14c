"""Real node processes with a cache, and a load generator that reaches them
as `hedgeplug cache get|set -a ADDR` does (the operator requests on the
cache's channel, through any member).

    async with CacheProcessCluster(workdir, cache_options={...}) as cluster:
        await cluster.start(5)
        load = Load(cluster, keys=500)
        async with load.running():
            ...                 # scale, kill; load.phase("name") splits the figures

Every key is written by one writer task only, one write at a time, with a
sequence number as its value: the newest acknowledged sequence number per
key is what a later read must return (or something newer), so a read of an
older one is stale and a final read of an older one, or of nothing, is a
lost acknowledged write.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs

from ..config import Config
from ..errors import HedgeplugError
from ..processes import NodeProcess, ProcessCluster, start_process

CACHE = "scale"
CHANNEL = "app:cache:"  # the node's application channels carry this prefix


async def start_cache_worker(
    config_path: Path, log_path: Path, cache: str, options: dict[str, Any], *, ready_timeout: float
) -> NodeProcess:
    """`python -m hedgeplug.testing.cache_worker ...`, once it listens."""
    command = [
        sys.executable, "-m", "hedgeplug.testing.cache_worker", "--config", str(config_path),
        "--cache", cache, "--options", json.dumps(options),
    ]
    return await start_process(command, log_path, ready_timeout=ready_timeout, what="cache worker")


class CacheProcessCluster(ProcessCluster):
    """ProcessCluster whose members are cache workers, each with the cache `cache`."""

    def __init__(
        self, workdir: Path, *, cache: str = CACHE, cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(workdir, **kwargs)
        self.cache = cache
        self.cache_options = {"max_memory": "64MiB", **(cache_options or {})}

    async def add(self, ready_timeout: float = 60.0, config: Config | None = None) -> NodeProcess:
        self._count += 1
        node_id = f"n{self._count}"
        config_path = Path(self.args_for(node_id, config)[1])
        node = await start_cache_worker(
            config_path, self.workdir / f"{node_id}.log", self.cache, self.cache_options,
            ready_timeout=ready_timeout,
        )
        self.nodes.append(node)
        return node

    async def call(self, node: NodeProcess, payload: list[Any], timeout: float) -> Any:
        return await self.client.call(node.address, payload, timeout, channel=CHANNEL + self.cache)

    async def cache_stats(self, nodes: Sequence[NodeProcess] | None = None) -> dict[str, dict[str, Any] | None]:
        """Every given (default: running) node's cache counters; None: no answer."""
        out: dict[str, dict[str, Any] | None] = {}

        async def one(node: NodeProcess) -> None:
            try:
                out[node.id] = await self.call(node, ["stats"], self.status_timeout)
            except (HedgeplugError, OSError, TimeoutError):
                out[node.id] = None

        async with anyio.create_task_group() as tg:
            for node in list(self.live if nodes is None else nodes):
                tg.start_soon(one, node)
        return out


@attrs.define
class PhaseFigures:
    """What the load saw in one phase of a run."""

    name: str
    started: float
    seconds: float = 0.0
    reads: int = 0
    hits: int = 0  # the acknowledged value or a newer one
    stale: int = 0  # an older value than the newest acknowledged before the read began
    misses: int = 0
    read_errors: int = 0  # the node asked did not answer (stopped, killed, overloaded)
    writes_acked: int = 0
    writes_failed: int = 0

    @property
    def hit_rate(self) -> float | None:
        return round(self.hits / self.reads, 4) if self.reads else None

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "hit_rate": self.hit_rate}


class Load:
    """`writers` + `readers` tasks issuing get and set through random live members."""

    def __init__(
        self, cluster: CacheProcessCluster, *, keys: int, writers: int = 4, readers: int = 4,
        pause: float = 0.005, read_timeout: float = 4.0, write_timeout: float = 8.0, seed: int = 1,
    ) -> None:
        self.cluster = cluster
        self.keys = [f"k{i:06d}".encode() for i in range(keys)]
        self.writers, self.readers, self.pause = writers, readers, pause
        self.read_timeout, self.write_timeout = read_timeout, write_timeout
        self.random = random.Random(seed)  # the load's choices only; the nodes have their own
        self.acked: dict[bytes, int] = {}  # newest acknowledged sequence number per key
        self.failed: dict[bytes, set[int]] = {}  # sequence numbers whose write did not return ok
        self.targets: list[NodeProcess] = []  # members the load may ask (not those being stopped)
        self.phases: list[PhaseFigures] = []
        self.anomalies: list[dict[str, Any]] = []  # the first stale reads and misses, to look into
        self._sequence = 0
        self.phase("start")

    def phase(self, name: str) -> PhaseFigures:
        now = anyio.current_time()
        if self.phases:
            self.phases[-1].seconds = round(now - self.phases[-1].started, 2)
        self.phases.append(PhaseFigures(name, now))
        return self.phases[-1]

    def avoid(self, nodes: Sequence[NodeProcess]) -> None:
        """Stop sending to `nodes` (before they are stopped or killed)."""
        self.targets = [n for n in self.targets if n not in nodes]

    def refresh(self) -> None:
        self.targets = list(self.cluster.live)

    async def write(self, key: bytes) -> bool:
        self._sequence += 1
        sequence = self._sequence
        node = self.random.choice(self.targets)
        figures = self.phases[-1]
        try:
            reply = await self.cluster.call(node, ["cset", key, sequence, None], self.write_timeout)
        except (HedgeplugError, OSError, TimeoutError):
            reply = None
        if reply == ["ok"]:
            self.acked[key] = max(self.acked.get(key, 0), sequence)
            figures.writes_acked += 1
            return True
        self.failed.setdefault(key, set()).add(sequence)
        figures.writes_failed += 1
        return False

    async def read(self, key: bytes) -> None:
        expected = self.acked.get(key)
        if expected is None:
            return
        node = self.random.choice(self.targets)
        figures = self.phases[-1]
        try:
            value = await self.cluster.call(node, ["cget", key], self.read_timeout)
        except (HedgeplugError, OSError, TimeoutError):
            figures.read_errors += 1
            return
        figures.reads += 1
        if isinstance(value, int) and value >= expected:
            figures.hits += 1
            return
        if value is None:
            figures.misses += 1
        else:
            figures.stale += 1
        if len(self.anomalies) < 200:
            self.anomalies.append({
                "t": round(anyio.current_time() - self.phases[0].started, 3), "phase": figures.name,
                "key": key.decode(), "node": node.id, "expected": expected, "got": value,
                "newest_acked_now": self.acked.get(key),
            })

    async def prefill(self, concurrency: int = 8) -> None:
        """Write every key once (retrying a failed write a few times)."""
        pending = list(self.keys)

        async def worker() -> None:
            while pending:
                key = pending.pop()
                for _ in range(3):
                    if await self.write(key):
                        break

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)

    async def _writer(self, index: int) -> None:
        mine = self.keys[index :: self.writers]  # one writer per key: its writes are ordered
        while True:
            await self.write(self.random.choice(mine))
            await anyio.sleep(self.pause)

    async def _reader(self) -> None:
        while True:
            await self.read(self.random.choice(self.keys))
            await anyio.sleep(self.pause)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        self.refresh()
        async with anyio.create_task_group() as tg:
            for index in range(self.writers):
                tg.start_soon(self._writer, index)
            for _ in range(self.readers):
                tg.start_soon(self._reader)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
        self.phase("end")
        self.phases.pop()
