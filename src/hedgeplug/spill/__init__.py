"""Spill-over stores: bursty load-process-discard data spread over the pods.

One writer appends byte chunks; they fill this node's memory, then its
disk, then other members' memory and disk (each within its own hard
limits); readers get every chunk back in write order, or ChunkLost naming
the member that took chunks with it; `read_spill` reads a store from any
node (the writer hands out its index). A store expires after `ttl` unused
and is deleted, on every member, when its block exits. See docs/spill.md.

    async with serve_spill(node, memory="256MiB", disk="4GiB"):   # every member
        ...
    async with open_spill(node, "batch-7", ttl="10m") as store:    # the writer
        await store.append(b"...")
        async for chunk in store.read():
            ...
    async for chunk in read_spill(other_node, "batch-7"):          # any member
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from ..options import parse_duration
from .errors import ChunkLost, SpillError, SpillExpired, SpillFull, WriterGone
from .remote import read_spill
from .service import SpillService, check_name, serve_spill, service_of
from .store import SpillStore

__all__ = [
    "ChunkLost",
    "SpillError",
    "SpillExpired",
    "SpillFull",
    "SpillService",
    "SpillStore",
    "WriterGone",
    "open_spill",
    "read_spill",
    "serve_spill",
    "service_of",
]

DEFAULT_TTL = 600.0


def _ttl(value: Any) -> float:
    try:
        ttl = parse_duration(value)
    except ValueError as exc:
        raise SpillError(f"spill ttl: {exc}") from None
    if ttl <= 0:
        raise SpillError(f"spill ttl must be above zero, got {value!r}")
    return ttl


@asynccontextmanager
async def open_spill(
    node: Any,
    name: str,
    *,
    memory: int | str | None = None,
    disk: int | str | None = None,
    directory: str | Path | None = None,
    ttl: float | str = DEFAULT_TTL,
) -> AsyncIterator[SpillStore]:
    """Write (and read back) the spill-over store `name` from `node`.

    If the node does not serve spill yet, it does for the block, with the
    `memory`/`disk` limits and `directory` given (defaults: 256MiB, 1GiB,
    the temp directory); if it does, those are the service's and passing
    them is an error. The store is deleted on every member when the block
    exits, or earlier by `store.delete()`, or after `ttl` (default 10m)
    without an append or a read.
    """
    check_name(name)
    seconds = _ttl(ttl)
    service = service_of(node)
    if service is None:
        limits: dict[str, Any] = {"directory": directory}
        if memory is not None:
            limits["memory"] = memory
        if disk is not None:
            limits["disk"] = disk
        async with serve_spill(node, **limits) as started, _store(node, started, name, seconds) as store:
            yield store
        return
    if memory is not None or disk is not None or directory is not None:
        raise SpillError(
            f"node {node.id} already serves spill with its own limits; open_spill cannot change them"
        )
    async with _store(node, service, name, seconds) as store:
        yield store


@asynccontextmanager
async def _store(node: Any, service: SpillService, name: str, ttl: float) -> AsyncIterator[SpillStore]:
    if name in service.writing:
        raise SpillError(f"node {node.id} already writes a spill store named {name!r}")
    store = SpillStore(node, service, name, ttl)
    service.writing[name] = store
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.keep)
            try:
                yield store
            finally:
                tg.cancel_scope.cancel()
    finally:
        service.writing.pop(name, None)
        await store.delete()
