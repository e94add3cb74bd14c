"""Reading a spill-over store from any node: `read_spill(node, name)`.

On the writer's node this is the store's own read. Elsewhere the reader
finds the writer (or is told it), gets the index from it (index.py) and
fetches every run of pieces from the member holding it: its own tiers, the
writer, or any other member. A writer that is gone is a WriterGone naming
it; a holder that is gone is a ChunkLost naming it. Never a short read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .holder import LocalSpill
from .index import fetch_index, find_writer
from .reading import read_pieces
from .service import check_name, service_of, spill_channel


class _RemoteStore:
    """A store as a reader on another node sees it: a name, a key and the
    writer's index; the holders keep track of use themselves."""

    def __init__(self, node: Any, name: str, key: str) -> None:
        self.node = node
        self.name = name
        self.key = key

    @property
    def local(self) -> LocalSpill | None:
        service = service_of(self.node)
        return service.local if service is not None else None

    def check_open(self) -> None:
        pass  # the writer's state is its own; a freed piece reads as ChunkLost

    def used(self) -> None:
        pass  # every holder (the writer included) counts our reads as use


async def read_spill(node: Any, name: str, *, writer: str | None = None) -> AsyncIterator[bytes]:
    """Every chunk of the store `name`, in write order, read from `node`.

    `writer` is the id of the member writing it; when left out, the live
    members are asked which one does. Raises WriterGone when the writer
    cannot give the index, ChunkLost naming the member when a holder is
    gone. Use it to the end, or inside `contextlib.aclosing`.
    """
    check_name(name)
    service = service_of(node)
    own = service.writing.get(name) if service is not None else None
    if own is not None and writer in (None, node.id):
        async for chunk in own.read():
            yield chunk
        return
    channel = spill_channel(node)
    if writer is None:
        writer = await find_writer(node, channel, name)
    key, pieces = await fetch_index(node, channel, name, writer)
    async for chunk in read_pieces(_RemoteStore(node, name, key), pieces):
        yield chunk
