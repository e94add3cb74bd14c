"""Anti-entropy between the owners of the same keys.

Hand-off moves keys when the view changes, assuming the owners of the old
view held them. A write that reached only some owners (it raised
WriteIncomplete), an eviction on one owner, or a partition that the
membership saw on one side only leaves owners that disagree. Every
`anti_entropy_interval` each node compares, with each member it shares keys
with, a digest of those keys in 64
buckets: XOR of a hash of (key, version) per bucket. Only the buckets that
differ are exchanged, and within them each side takes the newer version.
A settled cluster whose owners agree sends 64 numbers per pair of co-owners
per interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .placement import hash64

if TYPE_CHECKING:
    from .cache import Cache

BUCKETS = 64
YIELD_EVERY = 256


def _bucket(key: bytes) -> int:
    return hash64(key) % BUCKETS


class AntiEntropy:
    def __init__(self, cache: Cache, interval: float) -> None:
        self.cache = cache
        self.interval = interval
        self.rounds = 0

    async def shared(self, peer: str | None = None) -> dict[str, dict[int, list[bytes]]]:
        """Keys this node owns with each co-owner (or with `peer` only), by bucket."""
        cache = self.cache
        me = cache.node_id
        placement = cache.placement()
        out: dict[str, dict[int, list[bytes]]] = {}
        for index, key in enumerate(cache.store.keys()):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await anyio.lowlevel.checkpoint()  # a large store must not stall the node
            owners = placement.owners(key)
            if me not in owners:
                continue
            for owner in owners:
                if owner != me and (peer is None or owner == peer):
                    out.setdefault(owner, {}).setdefault(_bucket(key), []).append(key)
        return out

    def digests(self, buckets: dict[int, list[bytes]]) -> list[int]:
        out = [0] * BUCKETS
        for bucket, keys in buckets.items():
            for key in keys:
                version = self.cache.store.version_of(key)
                if version is not None:
                    out[bucket] ^= hash64(key + b"\0" + str(version).encode())
        return out

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval * (0.75 + 0.5 * self.cache.random.random()))
            await self.round()

    async def round(self) -> None:
        cache = self.cache
        self.rounds += 1
        for peer, buckets in sorted((await self.shared()).items()):
            member = cache.node.view.get(peer)
            if member is None:
                continue
            try:
                await self._compare(peer, member.address, buckets)
            except (HedgeplugError, TimeoutError, OSError, ValueError, TypeError, IndexError):
                continue  # the next round tries again

    async def _compare(self, peer: str, address: str, mine: dict[int, list[bytes]]) -> None:
        cache = self.cache
        reply = await cache.channel.request(
            address, [m.DIGEST, self.digests(mine)], cache.request_timeout
        )
        if not isinstance(reply, list) or reply[:1] != ["ok"]:
            return
        theirs = {
            key: version
            for key, version in (m.key_version_from_wire(kv) for kv in reply[1])
        }
        differing = {int(b) for b in reply[2]}
        # Take their newer entries (they sent them), send ours that they lack or hold older.
        for entry in reply[3]:
            key, value, version, ttl = m.entry_from_wire(entry)
            cache.server.write(peer, key, value, version, ttl, m.MODE_HANDOFF)
        send: list[list[Any]] = []
        now = cache.now()
        for bucket in differing:
            for key in mine.get(bucket, []):
                entry_now = cache.store.get(key, touch=False)
                if entry_now is None:
                    continue
                held = theirs.get(key)
                if held is None or held < entry_now.version:
                    send.append(m.entry_to_wire(key, entry_now.value, entry_now.version, entry_now.ttl_left(now)))
        if send:
            await cache.channel.request(address, [m.PUSH, m.MODE_HANDOFF, send], cache.request_timeout)
            cache.counters.add("repaired_out", len(send))

    async def answer(self, sender: str, digests: Any) -> list[Any]:
        """The peer side: which buckets differ, our (key, version) pairs in
        them, and our entries there (the sender takes those newer than its own)."""
        if not isinstance(digests, list) or len(digests) != BUCKETS:
            raise ValueError(f"a digest is {BUCKETS} numbers")
        cache = self.cache
        mine = (await self.shared(sender)).get(sender, {})
        ours = self.digests(mine)
        differing = [b for b in range(BUCKETS) if ours[b] != digests[b]]
        pairs: list[list[Any]] = []
        entries: list[list[Any]] = []
        budget = cache.frame_limit // 2
        now = cache.now()
        for bucket in differing:
            for key in mine.get(bucket, []):
                entry = cache.store.get(key, touch=False)
                if entry is None:
                    continue
                pairs.append(m.key_version_to_wire(key, entry.version))
                size = m.entry_wire_size(key, entry.value)
                if size <= budget:
                    budget -= size
                    entries.append(m.entry_to_wire(key, entry.value, entry.version, entry.ttl_left(now)))
        if entries:
            cache.counters.add("repaired_out", len(entries))
        return ["ok", pairs, differing, entries]
