"""Reading a spill-over store back: every chunk, in write order, or an error.

Works on any node: the writer reads its own index; a reader elsewhere first
gets the index from the writer (index.py). The index is cut into runs of
consecutive pieces on one holder; runs held by the reading node come from
its own tiers, the others as one stream from the holder (its sends are
paced by our reading). Before the first chunk is yielded every holder is
checked against the reader's view, so a store with a piece on a member that
left fails at once with ChunkLost naming it; a holder that fails (or cannot
be reached) during the read is named the same way. A read never ends short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import groupby
from typing import Any, Protocol

import anyio

from ..errors import HedgeplugError
from .errors import ChunkLost, SpillError
from .holder import LocalSpill
from .index import Piece
from .service import spill_channel

RECEIVE_TIMEOUT = 30.0


class Readable(Protocol):
    """What a read needs: the store's names, its index and this node's tiers."""

    node: Any
    name: str
    key: str

    @property
    def local(self) -> LocalSpill | None: ...

    def check_open(self) -> None: ...

    def used(self) -> None: ...


def _lost(store: Readable, piece: Piece, why: str) -> ChunkLost:
    return ChunkLost(
        f"chunk {piece.chunk} of store {store.name!r} was held by member {piece.holder}, {why}",
        member=piece.holder,
        chunk=piece.chunk,
    )


def _runs(pieces: list[Piece]) -> list[tuple[str, int, int]]:
    runs: list[tuple[str, int, int]] = []
    seq = 0
    for holder, group in groupby(pieces, key=lambda p: p.holder):
        count = sum(1 for _ in group)
        runs.append((holder, seq, seq + count - 1))
        seq += count
    return runs


async def read_pieces(store: Readable, pieces: list[Piece]) -> AsyncIterator[bytes]:
    """Every chunk of `pieces` (a snapshot of the store's index), in order."""
    me = store.node.id
    live = store.node.view.ids
    for piece in pieces:
        if piece.holder != me and piece.holder not in live:
            raise _lost(store, piece, "which left the cluster")
    parts: list[bytes] = []
    for holder, first, last in _runs(pieces):
        fetch = _local(store, pieces, first, last) if holder == me else _remote(store, pieces, holder, first, last)
        async for seq, data in fetch:
            store.check_open()
            if not pieces[seq].last:
                parts.append(data)
                continue
            if parts:
                parts.append(data)
                data = b"".join(parts)
                parts = []
            store.used()
            yield data


async def _local(store: Readable, pieces: list[Piece], first: int, last: int) -> AsyncIterator[tuple[int, bytes]]:
    local = store.local
    for seq in range(first, last + 1):
        data = await local.get(store.key, seq) if local is not None else None
        if data is None:
            store.check_open()
            raise _lost(store, pieces[seq], "this node, which no longer holds it")
        yield seq, data


async def _remote(
    store: Readable, pieces: list[Piece], holder: str, first: int, last: int
) -> AsyncIterator[tuple[int, bytes]]:
    member = store.node.view.get(holder)
    if member is None:
        raise _lost(store, pieces[first], "which left the cluster")
    try:
        stream = await spill_channel(store.node).open_stream(
            member.address, {"store": store.key, "first": first, "last": last}
        )
    except (HedgeplugError, OSError) as exc:
        raise _lost(store, pieces[first], f"which could not be reached: {exc}") from None
    async with stream:
        expect = first
        while expect <= last:
            try:
                with anyio.fail_after(RECEIVE_TIMEOUT):
                    message = await stream.receive()
            except (HedgeplugError, anyio.EndOfStream, OSError, TimeoutError) as exc:
                why = "which left the cluster" if store.node.view.get(holder) is None else "which failed"
                raise _lost(store, pieces[expect], f"{why} while it was read ({exc!r})") from None
            if isinstance(message, list) and len(message) == 3 and message[:2] == ["piece", expect]:
                yield expect, message[2]
                expect += 1
            elif isinstance(message, list) and message[:1] == ["missing"]:
                store.check_open()
                raise _lost(store, pieces[expect], "which no longer holds it (it expired there or restarted)")
            else:
                raise SpillError(f"spill store {store.name!r}: {holder} answered {message!r:.80}")
