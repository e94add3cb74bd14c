"""Checkers for the partitioned cache (docs/cache.md, "Proof").

- cache-no-lost-write: at the end, every key's last acknowledged write (or a
  newer version) is still held by a running node, unless R nodes holding it
  crashed within one window (the detection bound plus the time the
  survivors take to copy): fewer than R crashes must never lose it.
- cache-monotonic-read: one reader (a node's cache) never returns a version
  of a key older than one it returned before.
- cache-placement: once the views have converged, every key held anywhere
  is held by exactly its R owners among the running nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from hedgeplug.cache import Cache, Placement
from hedgeplug.cache.versions import Version

from .checks import Checker, Report

if TYPE_CHECKING:
    from .cache_world import CacheWorld


@attrs.frozen
class AckedWrite:
    version: Version
    t: float
    writer: str


class CacheChecker(Checker):
    def on_read(self, t: float, reader: str, key: bytes, version: Version, report: Report) -> None:
        pass

    def on_crash(self, node_id: str, cache: Cache) -> None:
        pass


def _held(cache: Cache, key: bytes) -> Version | None:
    entry = cache.store.get(key, touch=False)
    return None if entry is None else entry.version


class NoLostWrites(CacheChecker):
    name = "cache-no-lost-write"

    def __init__(self, world: CacheWorld, window: Callable[[], float]) -> None:
        self.world = world
        self._window = window
        self._crashes: dict[tuple[bytes, Version], list[float]] = {}
        self.excused = 0

    def on_crash(self, node_id: str, cache: Cache) -> None:
        now = self.world.sim.now()
        for key, acked in self.world.acked.items():
            held = _held(cache, key)
            if held is not None and held >= acked.version:
                self._crashes.setdefault((key, acked.version), []).append(now)

    def _excused(self, key: bytes, version: Version) -> bool:
        times = sorted(self._crashes.get((key, version), []))
        r = self.world.replicas
        window = self._window()
        return any(times[i + r - 1] - times[i] <= window for i in range(len(times) - r + 1))

    def finish(self, t: float, report: Report) -> None:
        live = self.world.live_caches()
        for key, acked in sorted(self.world.acked.items()):
            versions = [v for _, c in live if (v := _held(c, key)) is not None]
            if versions and max(versions) >= acked.version:
                continue
            if self._excused(key, acked.version):
                self.excused += 1
                continue
            best = max(versions) if versions else None
            report(
                self.name,
                f"{key!r}: write {acked.version} acknowledged at {acked.t:.2f}s by {acked.writer} "
                f"is gone (newest held: {best}) without {self.world.replicas} holder crashes "
                f"within {self._window():.1f}s",
            )


class MonotonicReads(CacheChecker):
    name = "cache-monotonic-read"

    def __init__(self) -> None:
        self._seen: dict[tuple[str, bytes], Version] = {}

    def on_read(self, t: float, reader: str, key: bytes, version: Version, report: Report) -> None:
        before = self._seen.get((reader, key))
        if before is not None and version < before:
            report(self.name, f"{reader} read {key!r} at {version} after having read {before}")
        else:
            self._seen[(reader, key)] = version


class SettledPlacement(CacheChecker):
    name = "cache-placement"

    def __init__(self, world: CacheWorld, converged_at: Callable[[], float | None]) -> None:
        self.world = world
        self._converged_at = converged_at
        self.checked_keys = 0

    def finish(self, t: float, report: Report) -> None:
        if self._converged_at() is None:
            return  # the convergence checker reports that; placement follows views
        live = self.world.live_caches()
        placement = Placement([node for node, _ in live], self.world.replicas)
        holders: dict[bytes, set[str]] = {}
        for node, cache in live:
            for key, entry in cache.store.items():
                if entry.value is not None:
                    holders.setdefault(key, set()).add(node)
        wrong = [
            (key, nodes) for key, nodes in sorted(holders.items())
            if nodes != set(placement.owners(key))
        ]
        self.checked_keys = len(holders)
        if wrong:
            key, nodes = wrong[0]
            report(
                self.name,
                f"{len(wrong)} of {len(holders)} keys are not held by exactly their owners, e.g. "
                f"{key!r} held by {sorted(nodes)}, owners {sorted(placement.owners(key))}",
            )


def cache_checkers(world: Any) -> list[CacheChecker]:
    sim = world.sim
    repair = float(world.options["repair_interval"])
    return [
        NoLostWrites(world, lambda: sim.bound("detection") + 2 * repair + 2.0),
        MonotonicReads(),
        SettledPlacement(world, lambda: sim.metrics.converged_at),
    ]
