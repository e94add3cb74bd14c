"""Spill-over stores for threaded programs (through a BlockingNode's portal)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal

from . import open_spill, serve_spill
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
        chunks: AsyncIterator[bytes] = self.store.read()

        async def step() -> tuple[bool, bytes]:
            try:
                return True, await chunks.__anext__()
            except StopAsyncIteration:
                return False, b""

        while True:
            more, chunk = self._portal.call(step)
            if not more:
                return
            yield chunk

    def delete(self) -> None:
        self._portal.call(self.store.delete)

    def holders(self) -> dict[str, int]:
        return self.store.holders()


def blocking_serve_spill(portal: BlockingPortal, node: Any, options: dict[str, Any]) -> AbstractContextManager[SpillService]:
    return portal.wrap_async_context_manager(serve_spill(node, **options))
