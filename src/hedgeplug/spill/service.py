"""The member side of spill-over stores: one service per node, on the node
channel "spill", holding pieces for any writer within this node's own limits.

Requests (msgpack maps, field "op"): put (answers the tier, or "full"),
touch (answers the stores it no longer holds), remove, drop, find (does
this node write the store named so?). Writers send pieces on a stream
against credit (sink.py); readers on other nodes get a store's index from
its writer on a stream (index.py). Reads are a stream: the opener names a
store and a range of pieces, the service sends ``["piece", seq, data]`` for
each in order (TCP's flow control paces it), ``["missing", seq]`` for one it
lacks, then ``["done"]``.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..channels import NodeChannel
from ..contracts import Message
from ..errors import HedgeplugError
from ..options import parse_size
from .errors import SpillError
from .holder import LocalSpill
from .index import index_pages
from .sink import serve_writes

if TYPE_CHECKING:
    from .store import SpillStore

log = logging.getLogger("hedgeplug.spill")

SPILL_CHANNEL = "spill"
FRAME_OVERHEAD = 4096  # envelope, seal and request fields around one piece
MAX_NAME = 200
SWEEP_AT_MOST = 1.0  # seconds between expiry sweeps, at most
# A piece on its way in or out exists several times over (the frame being
# read, its body, the decoded value, and the allocator's slack after them):
# that much of the memory budget is kept free of held pieces, so the process
# grows by about `memory`, not more (benchmarks/spill_bench.py measures it).
IN_FLIGHT_COPIES = 6

_services: weakref.WeakKeyDictionary[Any, SpillService] = weakref.WeakKeyDictionary()


def service_of(node: Any) -> SpillService | None:
    """The spill service running on `node`, if any."""
    return _services.get(node)


def spill_channel(node: Any) -> NodeChannel:
    return node.parts.dispatcher.channel(SPILL_CHANNEL)


def piece_size(node: Any) -> int:
    """The largest piece one frame of this node's transport carries."""
    return max(1, int(node.parts.transport.max_frame) - FRAME_OVERHEAD)


def held_memory(budget: int, piece: int) -> int:
    """What held pieces may take of a memory budget: the rest is for pieces in flight."""
    return budget - min(IN_FLIGHT_COPIES * piece, budget // 4)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise SpillError(f"a spill store name is a string of 1 to {MAX_NAME} characters, not {name!r:.80}")
    return name


def size_option(value: Any, what: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise SpillError(f"spill {what}: {exc}") from None


class SpillService:
    """Holds pieces for writers (this node's own stores included)."""

    def __init__(self, node: Any, local: LocalSpill, budget: int) -> None:
        self.node = node
        self.local = local
        self.piece_size = piece_size(node)
        self.budget = budget
        self.writing: dict[str, SpillStore] = {}  # this node's open stores, by name
        channel = spill_channel(node)
        channel.handle(self._request)
        channel.handle_streams(self._stream)

    def stats(self) -> dict[str, int]:
        """The tiers' figures; memory_limit is what held pieces may take of memory_budget."""
        return {**self.local.stats(), "memory_budget": self.budget}

    # ------------------------------------------------------------ requests

    async def _request(self, msg: Message) -> Any:
        request = msg.payload
        if not isinstance(request, dict):
            raise HedgeplugError(f"spill request must be a map, not {type(request).__name__}")
        op = request.get("op")
        store = request.get("store")
        if op == "find":
            return request.get("name") in self.writing
        if op == "touch":
            stores = request.get("stores")
            if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
                raise HedgeplugError("spill touch needs a list of store keys")
            return [s for s in stores if not self.local.touch(s)]
        if not isinstance(store, str) or not store or len(store) > 2 * MAX_NAME + 64:
            raise HedgeplugError(f"spill {op!r}: bad store key {store!r:.80}")
        if op == "put":
            seq, data, ttl = request.get("seq"), request.get("data"), request.get("ttl")
            if not isinstance(seq, int) or not isinstance(data, bytes) or not isinstance(ttl, int | float):
                raise HedgeplugError("spill put needs seq (int), data (bytes) and ttl (seconds)")
            return await self.local.put(store, seq, data, float(ttl)) or "full"
        if op == "remove":
            seqs = request.get("seqs")
            if not isinstance(seqs, list) or not all(isinstance(s, int) for s in seqs):
                raise HedgeplugError("spill remove needs a list of seqs")
            for seq in seqs:
                self.local.remove(store, seq)
            return len(seqs)
        if op == "drop":
            return self.local.drop(store)
        raise HedgeplugError(f"unknown spill operation {op!r}")

    async def _stream(self, msg: Message, stream: Any) -> None:
        request = msg.payload
        if isinstance(request, dict) and request.get("op") == "write":
            store, ttl = request.get("store"), request.get("ttl")
            if isinstance(store, str) and isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
                await serve_writes(self.local, store, float(ttl), stream)
            else:
                await stream.send(["error", f"malformed spill write {request!r:.80}"])
            return
        if isinstance(request, dict) and request.get("op") == "index":
            await self._index(request.get("name"), stream)
            return
        await self._read(request, stream)

    async def _index(self, name: Any, stream: Any) -> None:
        store = self.writing.get(name) if isinstance(name, str) else None
        if store is None:
            await stream.send(["absent"])
            return
        try:
            store.used()
            pieces = await store.snapshot()
        except SpillError as exc:  # deleted or expired meanwhile
            await stream.send(["error", str(exc)])
            return
        await stream.send(["index", store.key, len(pieces)])
        for page in index_pages(pieces):
            await stream.send(page)

    async def _read(self, request: Any, stream: Any) -> None:
        store = request.get("store") if isinstance(request, dict) else None
        first = request.get("first") if isinstance(request, dict) else None
        last = request.get("last") if isinstance(request, dict) else None
        if not isinstance(store, str) or not isinstance(first, int) or not isinstance(last, int):
            await stream.send(["error", f"malformed spill read {request!r:.80}"])
            return
        own = self.writing.get(store.partition("/")[2])
        if own is not None and own.key == store:
            own.used()  # a reader elsewhere keeps this node's store from expiring
        for seq in range(first, last + 1):
            data = await self.local.get(store, seq)
            if data is None:
                await stream.send(["missing", seq])
                return
            await stream.send(["piece", seq, data])
        await stream.send(["done"])

    # ------------------------------------------------------------ expiry

    async def sweep(self) -> None:
        while True:
            wait = self.local.next_expiry()
            await anyio.sleep(min(max(wait if wait is not None else SWEEP_AT_MOST, 0.02), SWEEP_AT_MOST))
            for store in self.local.expire():
                log.info("%s: spill store %s expired unused", self.node.id, store)

    def stop(self) -> None:
        for store in self.local.stores:
            self.local.drop(store)

        async def stopped(msg: Message) -> Any:
            raise HedgeplugError(f"{self.node.id} no longer serves spill-over stores")

        spill_channel(self.node).handle(stopped)


@asynccontextmanager
async def serve_spill(
    node: Any, *, memory: int | str = "256MiB", disk: int | str = "1GiB", directory: str | Path | None = None
) -> AsyncIterator[SpillService]:
    """Hold spill-over pieces for the cluster on `node` within these limits
    (hard: a piece that does not fit is refused). `memory` is the budget for
    held pieces and pieces in flight: held pieces get all of it but six
    pieces' worth (at most a quarter). Pieces live in a directory
    of their own under `directory` (default: the system's temp directory),
    removed with everything else when the block exits."""
    if node in _services:
        raise SpillError(f"node {node.id} already serves spill-over stores")
    memory_limit = size_option(memory, "memory")
    disk_limit = size_option(disk, "disk")
    base = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "hedgeplug-spill"
    try:
        base.mkdir(parents=True, exist_ok=True)
        own = Path(tempfile.mkdtemp(prefix=re.sub(r"[^A-Za-z0-9_.-]", "_", node.id) + "-", dir=base))
    except OSError as exc:
        raise SpillError(f"spill directory {str(base)!r} is not usable: {exc}") from None
    local = LocalSpill(held_memory(memory_limit, piece_size(node)), disk_limit, own, anyio.current_time)
    service = SpillService(node, local, memory_limit)
    _services[node] = service
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.sweep)
            try:
                yield service
            finally:
                tg.cancel_scope.cancel()
    finally:
        service.stop()
        _services.pop(node, None)
        shutil.rmtree(own, ignore_errors=True)
