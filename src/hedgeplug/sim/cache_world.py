"""A cache on every simulated node, a workload against them, and what the
cache checkers need to know (see cache_checks.py).

Scenarios drive it instead of the Simulation's own start/resize/stop, so
that a graceful stop hands the node's keys off before the node leaves and a
crash takes the node's store with it. Everything random comes from the
harness's seeded Random; time is virtual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from hedgeplug.cache import Cache, CacheError
from hedgeplug.errors import HedgeplugError

from .cache_checks import AckedWrite, cache_checkers
from .harness import SimNode, Simulation

CACHE = "sim"


@attrs.define
class CacheSample:
    t: float
    size: int
    reads: int
    hits: int
    owned_min: int
    owned_mean: float
    owned_max: int
    handoff_keys: int
    owned: dict[str, int] = attrs.field(factory=dict)  # owned keys per live node


class CacheWorld:
    def __init__(
        self,
        sim: Simulation,
        *,
        keys: int = 300,
        replicas: int = 2,
        op_every: float = 0.1,
        max_memory: str = "16MiB",
        repair_interval: float = 2.0,
        handoff_grace: float = 2.0,
    ) -> None:
        self.sim = sim
        self.keys = [f"key{i:05d}".encode() for i in range(keys)]
        self.replicas = replicas
        self.op_every = op_every
        self.options: dict[str, Any] = {
            "max_memory": max_memory,
            "replicas": replicas,
            "repair_interval": repair_interval,
            "handoff_grace": handoff_grace,
        }
        self.caches: dict[str, Cache] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tg: TaskGroup | None = None
        self.acked: dict[bytes, AckedWrite] = {}
        self.seen: dict[tuple[str, bytes], tuple[int, str]] = {}
        self.samples: list[CacheSample] = []
        self.writes_failed = 0
        self._reads = self._hits = 0
        self.checkers = cache_checkers(self)
        sim.checkers.extend(self.checkers)

    # ------------------------------------------------------------ nodes

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CacheWorld]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._workload)
            tg.start_soon(self._sampler)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def _attach(self) -> None:
        assert self._tg is not None
        for sn in self.sim.running():
            if sn.id in self.caches or sn.node is None:
                continue
            cache = Cache(sn.node, CACHE, **self.options)
            scope = anyio.CancelScope()
            self.caches[sn.id] = cache
            self._scopes[sn.id] = scope

            async def run(cache: Cache = cache, scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await cache.run()

            self._tg.start_soon(run)

    async def start(self, count: int) -> None:
        await self.sim.start(count)
        self._attach()

    def kill(self, sn: SimNode) -> None:
        cache = self.caches.pop(sn.id, None)
        if cache is not None:
            for checker in self.checkers:
                checker.on_crash(sn.id, cache)
            cache.abandon()
            self._scopes.pop(sn.id).cancel()
        self.sim.kill(sn)

    async def stop(self, sn: SimNode) -> None:
        cache = self.caches.pop(sn.id, None)
        if cache is not None:
            stop_timeout = 3.0 if sn.node is None else float(sn.node.config.node.stop_timeout)
            await cache.close(stop_timeout / 2)
            self._scopes.pop(sn.id).cancel()
        await self.sim.stop(sn)

    async def resize(self, target: int, *, crash_share: float = 0.0) -> None:
        """As Simulation.resize, with hand-off before each graceful stop."""
        running = self.sim.running()
        if target > len(running):
            await self.start(target - len(running))
            return
        rng = self.sim.random
        victims = rng.sample(running, len(running) - target)
        crashed = [sn for sn in victims if rng.random() < crash_share]
        for sn in crashed:
            self.kill(sn)
        async with anyio.create_task_group() as tg:
            for sn in victims:
                if sn not in crashed:
                    tg.start_soon(self.stop, sn)

    # ------------------------------------------------------------ workload

    async def prefill(self) -> None:
        """Write every key once (through the first node), so that misses
        afterwards measure hand-off and loss, not keys never written."""
        live = self.live_caches()
        if not live:
            return
        node_id, cache = live[0]
        for serial, key in enumerate(self.keys):
            await self._write(node_id, cache, key, -serial - 1)

    def live_caches(self) -> list[tuple[str, Cache]]:
        return [(sn.id, self.caches[sn.id]) for sn in self.sim.running() if sn.id in self.caches]

    async def _workload(self) -> None:
        rng = self.sim.random
        serial = 0
        while True:
            await anyio.sleep(self.op_every)
            live = self.live_caches()
            if not live:
                continue
            serial += 1
            node_id, cache = rng.choice(live)
            key = rng.choice(self.keys)
            assert self._tg is not None
            if rng.random() < 0.3:
                self._tg.start_soon(self._write, node_id, cache, key, serial)
            else:
                self._tg.start_soon(self._read, node_id, cache, key)

    async def _write(self, node_id: str, cache: Cache, key: bytes, serial: int) -> None:
        try:
            version = await cache.set_versioned(key, [serial, node_id])
        except (CacheError, HedgeplugError):
            self.writes_failed += 1
            return
        if cache.closed:
            return
        held = self.acked.get(key)
        if held is None or version > held.version:
            self.acked[key] = AckedWrite(version, self.sim.now(), node_id)

    async def _read(self, node_id: str, cache: Cache, key: bytes) -> None:
        try:
            _value, version = await cache.get_versioned(key)
        except (CacheError, HedgeplugError):
            return
        if cache.closed:
            return
        self._reads += 1
        if version is not None:
            self._hits += 1
            for checker in self.checkers:
                checker.on_read(self.sim.now(), node_id, key, version, self.sim.report)

    async def _sampler(self) -> None:
        while True:
            await anyio.sleep(1.0)
            live = self.live_caches()
            per_node = {node_id: c.stats()["owned_keys"] for node_id, c in live}
            owned = list(per_node.values()) or [0]
            self.samples.append(
                CacheSample(
                    self.sim.now(),
                    len(live),
                    self._reads,
                    self._hits,
                    min(owned),
                    sum(owned) / len(owned),
                    max(owned),
                    sum(c.counters["handoff_keys_in"] for _, c in live),
                    per_node,
                )
            )
            self._reads = self._hits = 0

    # ------------------------------------------------------------ results

    def summary(self) -> dict[str, Any]:
        reads = sum(s.reads for s in self.samples)
        hits = sum(s.hits for s in self.samples)
        return {
            "acked_keys": len(self.acked),
            "writes_failed": self.writes_failed,
            "reads": reads,
            "hit_rate": round(hits / reads, 4) if reads else None,
        }

    def plot(self, path: str) -> None:
        """Hit rate and owned keys per node over virtual time."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise HedgeplugError("plotting needs matplotlib: pip install 'hedgeplug[plot]'") from None
        t = [s.t for s in self.samples]
        fig, axes = plt.subplots(3, 1, sharex=True, figsize=(10, 7))
        axes[0].step(t, [s.size for s in self.samples], where="post", color="tab:blue")
        axes[0].set_ylabel("nodes with a cache")
        axes[1].plot(t, [s.hits / s.reads if s.reads else None for s in self.samples], color="tab:green")
        axes[1].set_ylabel("hit rate")
        axes[1].set_ylim(-0.05, 1.05)
        # One thin line per node over its lifetime, and the mean across nodes.
        series: dict[str, tuple[list[float], list[int]]] = {}
        for sample in self.samples:
            for node_id, count in sample.owned.items():
                times, counts = series.setdefault(node_id, ([], []))
                times.append(sample.t)
                counts.append(count)
        for times, counts in series.values():
            axes[2].plot(times, counts, linewidth=0.6, alpha=0.5)
        axes[2].plot(t, [s.owned_mean for s in self.samples], color="black", linewidth=1.5, label="mean")
        axes[2].set_ylabel("owned keys per node")
        axes[2].legend(loc="upper right")
        axes[-1].set_xlabel("virtual seconds")
        for ax in axes:
            ax.grid(True, alpha=0.3)
        fig.suptitle(f"cache, seed {self.sim.seed}: {len(self.keys)} keys, R={self.replicas}")
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=100)
        except OSError as exc:
            raise HedgeplugError(f"cannot write plot {path}: {exc}") from None
        finally:
            plt.close(fig)
