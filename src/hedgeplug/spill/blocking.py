"""Spill-over stores for threaded programs (through a BlockingNode's portal)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal

from . import open_spill, read_spill, serve_spill
from .service import SpillService
from .store import SpillStore


class BlockingSpill:
    """`open_spill` used from a thread: `with node.spill("x") as store:`."""

    def __init__(self, portal: BlockingPortal, node: Any, name: str, options: dict[str, Any]) -> None:
        self._portal = portal
        self._context: AbstractContextManager[SpillStore] = portal.wrap_async_context_manager(
            open_spill(node, name, **options)
        )
        self._store: SpillStore | None = None

    @property
    def store(self) -> SpillStore:
        assert self._store is not None, "use the spill store inside its with block"
        return self._store

    def __enter__(self) -> BlockingSpill:
        self._store = self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def append(self, data: bytes | bytearray | memoryview) -> int:
        return self._portal.call(self.store.append, data)

    def read(self) -> Iterator[bytes]:
        return iterate_in_portal(self._portal, self.store.read())

    def delete(self) -> None:
        self._portal.call(self.store.delete)

    def holders(self) -> dict[str, int]:
        return self.store.holders()


def blocking_serve_spill(portal: BlockingPortal, node: Any, options: dict[str, Any]) -> AbstractContextManager[SpillService]:
    return portal.wrap_async_context_manager(serve_spill(node, **options))


def iterate_in_portal(portal: BlockingPortal, chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
    """An async iterator of the node's loop, stepped from this thread."""

    async def step() -> tuple[bool, bytes]:
        try:
            return True, await chunks.__anext__()
        except StopAsyncIteration:
            return False, b""

    async def close() -> None:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    try:
        while True:
            more, chunk = portal.call(step)
            if not more:
                return
            yield chunk
    finally:  # left early (break, an error): the reader's requests end on the loop too
        portal.call(close)


def blocking_read_spill(portal: BlockingPortal, node: Any, name: str, writer: str | None) -> Iterator[bytes]:
    return iterate_in_portal(portal, read_spill(node, name, writer=writer))
