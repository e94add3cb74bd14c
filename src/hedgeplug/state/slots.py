"""The store side of a semaphore: one lease per slot, plus the recorded limit.

A semaphore NAME of limit L lives in the node's own lock store as L lock
names ``<cluster lock>/sem/<NAME>/<i>`` (i in 0..L-1), each an ordinary
lease with its own fencing token, and one row ``limit`` beside the lock name
``<cluster lock>/sem/<NAME>`` that records L the first time anyone uses the
name. Every backend is built through the registry exactly as the node builds
its own lock, so every store that can hold the leader's lease can hold a
semaphore.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio

from hedgeplug.contracts import Lease, LockBackend, RowStorage
from hedgeplug.errors import HedgeplugError, StoreError

from .waiting import SlotWatch

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_LIMIT = 1000
LIMIT_KEY = "limit"


class SemaphoreError(HedgeplugError):
    """A semaphore was misused or its record disagrees with the caller."""


class LimitMismatch(SemaphoreError):
    """The name is already recorded in the store with another limit."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SemaphoreError(
            f"semaphore name {name!r} is not allowed: use 1 to 128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SemaphoreError(f"semaphore limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def slot_lock_name(base: str, name: str, index: int) -> str:
    return f"{base}/sem/{name}/{index}"


def record_lock_name(base: str, name: str) -> str:
    return f"{base}/sem/{name}"


class SlotContext:
    """The node's context with another lock name: what a lock factory reads
    (id, cluster, lock_name, log, random, now, sleep, ...) for one slot."""

    def __init__(self, base: Any, lock_name: str) -> None:
        self._base = base
        self.lock_name = lock_name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._base, attr)


class SlotSet:
    """The backends of one semaphore name on one node, built on first use."""

    def __init__(self, node: Any, name: str) -> None:
        self.node = node
        self.name = name
        self._backends: dict[int, LockBackend] = {}
        self._record: LockBackend | None = None
        self.limit: int | None = None  # as recorded in the store, once read
        self._closed = False
        self.watch = SlotWatch(self.slot, node.config.election, node.ctx.random)
        self.freed = anyio.Event()  # set when a permit of this node and name ends

    def slot_freed(self) -> None:
        """A permit of this node ended: its waiters (through any handle) retry at once."""
        self.freed.set()
        self.freed = anyio.Event()

    def _build(self, lock_name: str) -> LockBackend:
        if self._closed:
            raise SemaphoreError(f"semaphore {self.name!r}: its node has stopped")
        node = self.node
        section = node.config.lock
        impl = node.registry.get("lock", section.use)
        try:
            made: LockBackend = impl.create(section.options, SlotContext(node.ctx, lock_name))
        except HedgeplugError:
            raise
        except Exception as exc:
            raise StoreError(
                f"semaphore {self.name!r}: lock {section.use!r} failed to open {lock_name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return made

    def slot(self, index: int) -> LockBackend:
        backend = self._backends.get(index)
        if backend is None:
            backend = self._backends[index] = self._build(
                slot_lock_name(self.node.ctx.lock_name, self.name, index)
            )
        return backend

    def record(self) -> RowStorage:
        if self._record is None:
            self._record = self._build(record_lock_name(self.node.ctx.lock_name, self.name))
        if not isinstance(self._record, RowStorage):
            raise SemaphoreError(
                f"semaphore {self.name!r}: lock {self.node.config.lock.use!r} has no row storage,"
                " which a semaphore needs to record its limit"
            )
        return self._record

    async def read_limit(self) -> int | None:
        """The recorded limit, or None when the name was never used."""
        row = await self.record().row_get(LIMIT_KEY)
        if row is None:
            return None
        return _decode_limit(self.name, row.value)

    async def ensure_limit(self, limit: int) -> int:
        """Record `limit` if the name is new; raise LimitMismatch if another one is recorded."""
        if self.limit is None:
            recorded = await self.read_limit()
            if recorded is None:
                value = json.dumps({"limit": limit}).encode()
                put = await self.record().row_put(LIMIT_KEY, value, expect=0)
                # Someone recorded it between our read and write: theirs counts.
                recorded = limit if put is not None else await self.read_limit()
            if recorded is None:
                raise StoreError(f"semaphore {self.name!r}: limit record vanished while reading it")
            self.limit = recorded
        if self.limit != limit:
            raise LimitMismatch(
                f"semaphore {self.name!r} is recorded with limit {self.limit}, not {limit}:"
                " every user of a name must ask for the same limit (use another name to change it)"
            )
        return self.limit

    async def holders(self, limit: int) -> list[Lease | None]:
        """The lease of every slot now (None for a free slot), read from the store."""
        out: list[Lease | None] = [None] * limit

        async def read(i: int) -> None:
            out[i] = await self.slot(i).current()

        async with anyio.create_task_group() as tg:
            for i in range(limit):
                tg.start_soon(read, i)
        return out

    async def aclose(self) -> None:
        self._closed = True
        backends = [*self._backends.values(), *([self._record] if self._record else [])]
        self._backends.clear()
        self._record = None
        for backend in backends:
            try:
                await backend.aclose()
            except Exception as exc:
                self.node.ctx.log.debug("semaphore %s: close failed: %s", self.name, exc)


def _decode_limit(name: str, raw: bytes) -> int:
    try:
        value = json.loads(raw)["limit"]
    except (ValueError, KeyError, TypeError):
        raise SemaphoreError(f"semaphore {name!r}: the stored limit record is unreadable: {raw[:80]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SemaphoreError(f"semaphore {name!r}: the stored limit {value!r} is not a positive number")
    return value
