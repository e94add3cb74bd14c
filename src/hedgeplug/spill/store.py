"""The writer's side of one spill-over store: placement, the index, expiry.

A chunk is cut into pieces that fit one frame. Each piece goes to this
node's memory, else its disk, else the first member (in rendezvous order for
the store's name, from the agreed view) that has room; pieces travel to a
member on one stream against credit it grants (sink.py); a member that
grants nothing or cannot be reached is not asked again by this store. The index
(piece seq -> holder, chunk number, last piece of its chunk?) stays with the
writer, which hands it to readers on other nodes (index.py); reading walks
it in order (reading.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from ..errors import HedgeplugError
from .errors import SpillError, SpillExpired, SpillFull
from .holder import LocalSpill
from .index import Piece
from .placement import rendezvous_order
from .reading import read_pieces
from .service import SpillService, spill_channel
from .sink import RemoteSink

log = logging.getLogger("hedgeplug.spill")

DROP_TIMEOUT = 2.0
CREDIT_PIECES = 8  # credit asked of a member at a time, in pieces


class SpillStore:
    """One named store written by this node. Use it inside `open_spill`."""

    def __init__(self, node: Any, service: SpillService, name: str, ttl: float) -> None:
        self.node = node
        self.name = name
        self.ttl = ttl
        self.key = f"{node.id}/{name}"
        self.service = service
        self.pieces: list[Piece] = []
        self.chunks = 0
        self.size = 0
        self.last_used = anyio.current_time()
        self.state = "open"
        self._refused: dict[str, str] = {}  # member -> why it is not asked again
        self._lock = anyio.Lock()
        self._sinks: dict[str, RemoteSink] = {}  # open write streams, by member

    # ------------------------------------------------------------ state

    def check_open(self) -> None:
        if self.state == "expired":
            raise SpillExpired(f"spill store {self.name!r} expired after {self.ttl:g}s unused")
        if self.state != "open":
            raise SpillError(f"spill store {self.name!r} was {self.state}")

    def used(self) -> None:
        self.last_used = anyio.current_time()

    def holders(self) -> dict[str, int]:
        """Bytes held per member id, in write order of first use."""
        held: dict[str, int] = {}
        for piece in self.pieces:
            held[piece.holder] = held.get(piece.holder, 0) + piece.size
        return held

    @property
    def local(self) -> LocalSpill:
        return self.service.local

    async def read(self) -> AsyncIterator[bytes]:
        """Every chunk appended so far, in write order (ChunkLost rather than a
        short read). Use it to the end, or inside `contextlib.aclosing`."""
        self.check_open()
        self.used()
        pieces = await self.snapshot()
        async for chunk in read_pieces(self, pieces):
            yield chunk

    async def snapshot(self) -> list[Piece]:
        """The index as it is once every member stored what it was sent
        (so a read cannot overtake a piece in flight)."""
        await self.flush()
        self.check_open()
        return list(self.pieces)

    # ------------------------------------------------------------ writing

    async def append(self, data: bytes | bytearray | memoryview) -> int:
        """Add one chunk; returns its number (0, 1, ...). SpillFull when no
        tier anywhere has room (the chunk is then not stored at all)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SpillError(f"spill store {self.name!r} takes bytes, not {type(data).__name__}")
        self.check_open()
        view = memoryview(data).cast("B")
        step = self.service.piece_size
        cuts = [view[i : i + step] for i in range(0, len(view), step)] or [view]
        async with self._lock:
            self.check_open()
            chunk = self.chunks
            start = len(self.pieces)
            try:
                for i, cut in enumerate(cuts):
                    holder = await self._place(len(self.pieces), bytes(cut), chunk)
                    self.pieces.append(Piece(holder, len(cut), chunk, i == len(cuts) - 1))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._forget(start)
                raise
            self.chunks += 1
            self.size += len(view)
            self.used()
            return chunk

    async def _place(self, seq: int, data: bytes, chunk: int) -> str:
        me = self.node.id
        if await self.service.local.put(self.key, seq, data, self.ttl):
            return str(me)
        live = {m.id: m.address for m in self.node.view.live if m.id != me}
        for member in rendezvous_order(self.name, [m for m in live if m not in self._refused]):
            try:
                if await self._place_remote(member, live[member], seq, data):
                    return member
                self._refused[member] = "full"
            except (HedgeplugError, TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                self._refused[member] = f"unreachable or not serving spill ({exc!r})"
            await self._close_sink(member)
        stats = self.service.stats()
        others = ", ".join(f"{m}: {why}" for m, why in sorted(self._refused.items())) or "no other members"
        raise SpillFull(
            f"spill store {self.name!r}: no room for chunk {chunk} ({len(data)} bytes):"
            f" this node's memory ({stats['memory_used']}/{stats['memory_limit']} bytes)"
            f" and disk ({stats['disk_used']}/{stats['disk_limit']} bytes) are full; {others}"
        )

    async def _place_remote(self, member: str, address: str, seq: int, data: bytes) -> bool:
        sink = self._sinks.get(member)
        if sink is None:
            stream = await spill_channel(self.node).open_stream(
                address, {"op": "write", "store": self.key, "ttl": self.ttl}
            )
            sink = self._sinks[member] = RemoteSink(member, stream)
        if await sink.put(seq, data):
            return True
        want = max(len(data), CREDIT_PIECES * self.service.piece_size)
        return await sink.refill(want) and await sink.put(seq, data)

    async def _close_sink(self, member: str) -> None:
        """Wait (bounded) until the member stored what it was sent, then end
        its stream, which frees the credit it still held for us."""
        sink = self._sinks.pop(member, None)
        if sink is None:
            return
        try:
            with anyio.move_on_after(DROP_TIMEOUT):
                await sink.sync()
        except (HedgeplugError, TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            log.debug("spill %s: %s did not confirm its pieces: %r", self.name, member, exc)
        finally:
            await sink.close()

    async def flush(self) -> None:
        """Wait until every member stored the pieces sent to it (before a read)."""
        async with self._lock:
            for member, sink in list(self._sinks.items()):
                try:
                    await sink.sync()
                except (HedgeplugError, TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                    await self._close_sink(member)  # the read will name what it lost

    async def _forget(self, start: int) -> None:
        """Undo the pieces of a chunk that could not be stored whole."""
        undone = self.pieces[start:]
        del self.pieces[start:]
        by_holder: dict[str, list[int]] = {}
        for offset, piece in enumerate(undone):
            by_holder.setdefault(piece.holder, []).append(start + offset)
        for holder, seqs in by_holder.items():
            if holder == self.node.id:
                for seq in seqs:
                    self.service.local.remove(self.key, seq)
            elif holder in self._sinks:
                try:
                    await self._sinks[holder].remove(seqs)
                except (HedgeplugError, OSError, anyio.BrokenResourceError):
                    await self._close_sink(holder)
            else:
                await self._tell(holder, {"op": "remove", "store": self.key, "seqs": seqs})

    async def _tell(self, member: str, request: dict[str, Any]) -> Any:
        found = self.node.view.get(member)
        if found is None:
            return None
        with anyio.move_on_after(DROP_TIMEOUT):
            try:
                return await spill_channel(self.node).request(found.address, request, DROP_TIMEOUT)
            except (HedgeplugError, TimeoutError, OSError) as exc:
                log.debug("spill %s: %s did not take %s: %s", self.name, member, request.get("op"), exc)
        return None

    # ------------------------------------------------------------ freeing

    def _remote_holders(self) -> list[str]:
        return [h for h in self.holders() if h != self.node.id]

    async def _free_everywhere(self) -> None:
        # Sinks first: a member stores everything sent before it is told to drop.
        for member in list(self._sinks):
            await self._close_sink(member)
        self.service.local.drop(self.key)
        async with anyio.create_task_group() as tg:
            for member in self._remote_holders():
                tg.start_soon(self._tell, member, {"op": "drop", "store": self.key})
        self.pieces = []

    async def delete(self) -> None:
        """Free every tier on every member now; later use raises SpillError."""
        if self.state in ("deleted", "expired"):
            return
        self.state = "deleted"
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._free_everywhere()

    async def keep(self) -> None:
        """Runs while the store is open: expires it after ttl unused, and
        tells the members holding pieces that it is still in use."""
        interval = max(0.02, min(self.ttl / 4, 5.0))
        while self.state == "open":
            await anyio.sleep(interval)
            if self.state != "open":
                return
            if anyio.current_time() - self.last_used > self.ttl:
                log.info("spill store %s expired after %gs unused", self.name, self.ttl)
                async with self._lock:
                    self.state = "expired"
                    await self._free_everywhere()
                return
            self.service.local.touch(self.key)
            for member in self._remote_holders():
                await self._tell(member, {"op": "touch", "stores": [self.key]})
