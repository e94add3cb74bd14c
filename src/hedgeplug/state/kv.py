"""The key/value log as a node offers it: `node.kv`.

    entry = await node.kv.put("config/mode", b"fast")     # from any node
    latest = await node.kv.get("config/mode")              # LogEntry or None
    older = await node.kv.history("config/mode", limit=10)
    async for entry in node.kv.watch("config/"): ...

Writes go to the leader (kv_leader.py), which appends them fenced by its
lease token; `put` retries through failovers until its timeout and raises
NoLeader when no leader accepted it in time. Reads go straight to the store
from this node; each node keeps the newest entry it has seen per key (its
high-water mark, for the `remembered` most recently used keys), so one
reader never sees a key go back in time, and sees its own acknowledged writes.

A put whose outcome was unknown (the leader died after the store committed
but before it answered) is retried, so it can land twice: as two
consecutive versions of the key with the same value.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import anyio

from ..contracts import FencedLog, LogEntry
from ..errors import HedgeplugError, NoLeader, RemoteError, RequestTimeout, TransportError
from .kv_leader import KV_CHANNEL, NOT_LEADER, RETRY_MARKS, LogLeader, entry_from_wire
from .kv_limits import check_keep, check_key, check_prefix, check_value, value_limit
from .kv_watch import HELD_AT_ONCE, wait_for_append

REMEMBERED_KEYS = 4096
WATCH_POLL = 2.0  # the safety read's interval: the leader wakes watchers on every append
WATCH_BATCH = 256


class KeyValueLog:
    """One node's access to the cluster's fenced key/value log."""

    def __init__(self, parts: Any, *, remembered: int = REMEMBERED_KEYS) -> None:
        self._lock = parts.lock
        self._election = parts.election
        self._dispatcher = parts.dispatcher
        self.max_value = value_limit(int(getattr(parts.transport, "max_frame", 1 << 20)))
        # Once: isinstance against a runtime-checkable protocol costs tens of µs.
        self._fenced = isinstance(self._lock, FencedLog)
        self._latest: OrderedDict[str, LogEntry] = OrderedDict()
        self._remembered = remembered
        self._held_waits: anyio.CapacityLimiter | None = None  # made by the first watch (needs the loop)
        self.leader = LogLeader(self._lock, self._election, self._count, self.max_value)
        self._dispatcher.channel(KV_CHANNEL).handle(self.leader.on_request)

    def _count(self, what: str, n: int = 1) -> None:
        self._dispatcher.count(what, n)

    @property
    def available(self) -> bool:
        return self._fenced

    def _log(self) -> Any:
        if not self._fenced:
            raise HedgeplugError(
                f"the lock backend {type(self._lock).__name__} offers no key/value log "
                "(sqlite, postgres, etcd, spanner and memory do)"
            )
        return self._lock

    # ------------------------------------------------------------ writes (through the leader)

    async def put(self, key: str, value: bytes | str, *, timeout: float = 10.0) -> LogEntry:
        """Append `value` to `key` through the leader; the stored entry."""
        request = {"op": "append", "key": check_key(key), "value": check_value(value, self.max_value)}
        self._log()
        entry = entry_from_wire(await self._to_leader(request, timeout))
        self._count("kv-puts")
        self._remember(entry)
        return entry

    async def trim(self, key: str, keep: int, *, timeout: float = 10.0) -> int:
        """Drop all but the newest `keep` entries of `key` (through the leader, fenced)."""
        request = {"op": "trim", "key": check_key(key), "keep": check_keep(keep)}
        self._log()
        reply = await self._to_leader(request, timeout)
        if not isinstance(reply, dict) or not isinstance(reply.get("dropped"), int):
            raise HedgeplugError(f"malformed trim reply: {reply!r:.100}")
        return int(reply["dropped"])

    async def _to_leader(self, request: dict[str, Any], timeout: float) -> Any:
        deadline = anyio.current_time() + timeout
        delay = 0.02
        last: Exception | None = None
        while anyio.current_time() < deadline:
            lease = self._election.leader
            if lease is not None:
                try:
                    return await self._dispatcher.request(
                        lease.address, KV_CHANNEL, request, max(0.01, deadline - anyio.current_time())
                    )
                except RemoteError as exc:
                    if not any(mark in str(exc) for mark in RETRY_MARKS):
                        raise
                    last = exc
                except (TransportError, TimeoutError, OSError) as exc:
                    last = exc
                self._count("kv-put-retries")
            self._election.poke()
            with anyio.move_on_after(min(delay, max(0.0, deadline - anyio.current_time()))):
                await self._election.wait_change()
            delay = min(delay * 2, 0.5)
        if last is None or NOT_LEADER in str(last):
            raise NoLeader(f"no leader accepted the write within {timeout:g}s"
                           + (f" (last: {last})" if last else ""))
        raise RequestTimeout(f"write through the leader failed within {timeout:g}s: {last}")

    # ------------------------------------------------------------ reads (straight to the store)

    def _remember(self, entry: LogEntry) -> LogEntry:
        """The newer of `entry` and the newest seen for its key (the high-water mark)."""
        seen = self._latest.get(entry.key)
        if seen is not None and seen.revision > entry.revision:
            self._count("kv-stale-reads-masked")
            self._latest.move_to_end(entry.key)
            return seen
        self._latest[entry.key] = entry
        self._latest.move_to_end(entry.key)
        while len(self._latest) > self._remembered:
            self._latest.popitem(last=False)
        return entry

    async def get(self, key: str) -> LogEntry | None:
        """The latest entry of `key` (never older than one this node saw before)."""
        check_key(key)
        found = await self._log().log_read(key, limit=1)
        self._count("kv-gets")
        if not found:
            return self._latest.get(key)
        return self._remember(found[0])

    async def history(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        """Entries of `key`, newest first: the `limit` latest, all, or (oldest_first)
        the oldest retained ones, each with the store's commit time."""
        check_key(key)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise HedgeplugError(f"limit must be a whole number of at least 1, got {limit!r}")
        entries: list[LogEntry] = await self._log().log_read(key, limit=limit, oldest_first=oldest_first)
        self._count("kv-gets")
        if entries and not oldest_first:
            self._remember(entries[0])
        return entries

    async def keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = await self._log().log_keys(check_prefix(prefix))
        return keys

    async def watch(
        self, prefix: str = "", *, since: int | None = None, poll: float = WATCH_POLL
    ) -> AsyncIterator[LogEntry]:
        """Yield every entry appended under `prefix` from now on (or after
        revision `since`), in revision order. The leader wakes the watch on
        every append (kv_watch.py); it also reads the store when the leader
        changes and at least every `poll` seconds. A store error is raised
        to the caller."""
        log = self._log()
        check_prefix(prefix)
        if self._held_waits is None:
            self._held_waits = anyio.CapacityLimiter(HELD_AT_ONCE)
        held = self._held_waits
        revision = await log.log_last_revision() if since is None else int(since)
        known = revision  # every entry up to here was committed before our last read
        while True:
            batch = await log.log_since(revision, prefix, WATCH_BATCH)
            for entry in batch:
                revision = max(revision, entry.revision)
                self._remember(entry)
                yield entry
            if len(batch) < WATCH_BATCH:
                # Entries outside `prefix` move the leader on but not `revision`:
                # wait past what the last read covered, or we would wake at once.
                newest = await wait_for_append(
                    self._election, self._dispatcher, self.leader, max(revision, known), poll, held
                )
                known = max(known, newest or 0)

    # ------------------------------------------------------------ control (shell clients)

    async def control(self, op: str, request: dict[str, Any]) -> Any:
        """kv.put / kv.get / kv.history / kv.keys / kv.trim on a shell client's behalf."""
        timeout = request.get("timeout", 10.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise HedgeplugError("control timeout must be a number of seconds in (0, 300]")
        if op == "kv.put":
            return (await self.put(request.get("key"), request.get("value"), timeout=timeout)).to_json()  # type: ignore[arg-type]
        if op == "kv.trim":
            return {"dropped": await self.trim(request.get("key"), request.get("keep"), timeout=timeout)}  # type: ignore[arg-type]
        if op == "kv.get":
            entry = await self.get(request.get("key"))  # type: ignore[arg-type]
            return None if entry is None else entry.to_json()
        if op == "kv.history":
            entries = await self.history(
                request.get("key"), limit=request.get("limit"),  # type: ignore[arg-type]
                oldest_first=bool(request.get("oldest_first", False)),
            )
            return [e.to_json() for e in entries]
        if op == "kv.keys":
            return await self.keys(request.get("prefix", ""))
        raise HedgeplugError(f"unknown control operation {op!r}")
