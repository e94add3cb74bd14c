"""The owner side: what a node does with the cache messages it receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hedgeplug.contracts import Message

from . import messages as m
from .batch import serve_read_many
from .errors import ProtocolError, ValueTooLarge
from .leave import LEAVE_ROUNDS, leave_candidates
from .versions import Version, version_from_wire, version_to_wire

if TYPE_CHECKING:
    from .cache import Cache


class Server:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def handle(self, msg: Message) -> Any:
        """A read is answered at once (the channel takes a plain value or an
        awaitable): no coroutine on the hot path of a remote get."""
        payload = msg.payload
        if type(payload) is list and len(payload) == 2 and payload[0] == m.READ and type(payload[1]) is bytes:
            return self.read(payload[1])
        return self.dispatch(msg.sender, payload)

    async def dispatch(self, sender: str, payload: Any) -> Any:
        if not isinstance(payload, list) or not payload or not isinstance(payload[0], str):
            self.cache.counters.add("protocol_errors")
            raise ProtocolError("a cache message is a list whose first item names the operation")
        op = payload[0]
        try:
            if op == m.READ:
                return self.read(m.need_bytes(payload[1], "key"))
            if op == m.READ_MANY:
                return serve_read_many(self.cache, payload[1])
            if op == m.WRITE:
                key, value, version, ttl = m.entry_from_wire(payload[1:5])
                mode = payload[5]
                if mode not in m.MODES:
                    raise ValueError(f"unknown write mode {mode!r}")
                if mode == m.MODE_CLIENT:
                    await self.cache.handoff.catch_up(key)  # order it after a copy still moving here
                return self.write(sender, key, value, version, ttl, mode)
            if op == m.PUSH:
                mode = payload[1]
                if mode not in m.MODES or not isinstance(payload[2], list):
                    raise ValueError("a push is [p, mode, entries]")
                excluded = payload[3] if len(payload) > 3 else []
                if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
                    raise ValueError("excluded members must be a list of ids")
                entries = [m.entry_from_wire(e) for e in payload[2]]
                return self.push(sender, mode, entries, frozenset(excluded))
            if op == m.LEASE:
                wait = payload[2]
                if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 60:
                    raise ValueError("lease wait must be 0..60 seconds")
                return await self.cache.flights.arbitrate(sender, m.need_bytes(payload[1], "key"), wait)
            if op == m.RELEASE:
                self.cache.flights.release(m.need_bytes(payload[1], "key"), int(payload[2]))
                return ["ok"]
            if op == m.HAVE:
                if not isinstance(payload[1], list):
                    raise ValueError("a have is [h, [[key, version], ...]]")
                pairs = [m.key_version_from_wire(kv) for kv in payload[1]]
                return ["ok", self.lacking(pairs)]
            if op == m.DIGEST:
                return await self.cache.antientropy.answer(sender, payload[1])
            if op == m.STATS:
                return self.cache.stats()
            if op == m.ADMIN_GET:
                return await self.cache.get(m.need_bytes(payload[1], "key"))
            if op == m.ADMIN_SET:
                await self.cache.set(m.need_bytes(payload[1], "key"), payload[2], ttl=m.need_ttl(payload[3]))
                return ["ok"]
        except (ValueError, TypeError, IndexError) as exc:
            self.cache.counters.add("protocol_errors")
            raise ProtocolError(f"malformed cache message {op!r}: {exc}") from None
        self.cache.counters.add("protocol_errors")
        raise ProtocolError(f"unknown cache operation {op!r}")

    # ------------------------------------------------------------ operations

    def read(self, key: bytes) -> list[Any]:
        entry = self.cache.store.get(key)
        if entry is None:
            return ["miss"]
        if entry.value is None:
            return ["tomb", version_to_wire(entry.version)]
        ttl = None if entry.expires_at is None else entry.ttl_left(self.cache.now())
        return ["hit", entry.value, version_to_wire(entry.version), ttl]

    def lacking(self, pairs: list[tuple[bytes, Version]]) -> list[int]:
        """Indexes of the (key, version) pairs this node does not hold at least that new."""
        out = []
        for index, (key, version) in enumerate(pairs):
            held = self.cache.store.version_of(key)
            if held is None or held < version:
                out.append(index)
        return out

    def owns(self, key: bytes, mode: str, sender: str, excluded: frozenset[str] = frozenset()) -> bool:
        cache = self.cache
        if cache.leaving:
            return False  # a node on its way out takes nothing new
        placement = cache.placement()
        if cache.node_id in placement.owners(key):
            return True
        if mode != m.MODE_LEAVE:
            return False
        # A leaving sender pushes to the members that rank highest in the view
        # it leaves behind, without the members it found leaving as well.
        return cache.node_id in leave_candidates(placement, key, excluded | {sender}, LEAVE_ROUNDS - 1)

    def write(
        self,
        sender: str,
        key: bytes,
        value: bytes | None,
        version: Version,
        ttl: float | None,
        mode: str,
        excluded: frozenset[str] = frozenset(),
    ) -> list[Any]:
        cache = self.cache
        cache.clock.observe(version)
        if not self.owns(key, mode, sender, excluded):
            cache.counters.add("redirects")
            return ["redirect", m.owners_to_wire(cache.owners_with_addresses(key, leaving_ok=False))]
        duplicate = cache.store.version_of(key) == version
        try:
            refused = cache.store.apply(key, value, version, ttl)
        except ValueTooLarge as exc:
            return ["too-large", str(exc)]
        if refused is not None:
            cache.counters.add("stale_refused")
            return ["stale", version_to_wire(refused)]
        if duplicate:
            return ["ok"]
        if mode != m.MODE_CLIENT:
            cache.counters.add("handoff_keys_in")
            cache.counters.add("handoff_bytes_in", len(key) + len(value or b""))
        cache.flights.written(key)
        return ["ok"]

    def push(
        self, sender: str, mode: str, entries: list[m.WireEntry], excluded: frozenset[str] = frozenset()
    ) -> list[Any]:
        taken = 0
        not_owner: list[int] = []
        for index, (key, value, version, ttl) in enumerate(entries):
            reply = self.write(sender, key, value, version, ttl, mode, excluded)
            if reply[0] == "redirect":
                not_owner.append(index)  # "too-large" counts as taken: retrying cannot help
            else:
                taken += 1
        return ["ok", taken, not_owner]


def parse_version(data: Any) -> Version:
    return version_from_wire(data)
