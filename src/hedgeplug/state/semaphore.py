"""A distributed counting semaphore whose state lives in the lock store.

    sem = semaphore(node, "reports", 3)      # Node.semaphore(name, limit)
    async with sem as permit:                # one of 3 slots for the body
        await write_report(fence=permit.token)

    permit = await sem.acquire(timeout=10)   # SemaphoreTimeout after 10 s
    permit = await sem.try_acquire()         # None at once when all slots are taken
    await sem.release(permit)

Guarantees (see docs/semaphore.md):

- never more than `limit` holders believe they hold at one instant, across
  leader changes, store outages, partitions and frozen holders: each slot is
  a lease under the election's safety rule (see permit.py);
- a holder that crashes gives its slot back when the slot's lease expires:
  at most the lock ttl after its last renewal reached the store, by the
  store's clock; a waiter then needs up to one retry period to notice (less
  on stores that notify changes);
- waiters are NOT served in arrival order: whoever tries first after a slot
  frees takes it. Each waiter retries all slots, from a random first slot,
  after a jittered retry period or as soon as a watch reports a change.

In an ``async with`` body the slot is checked for you: the body is cancelled
the instant the belief would end (its cancel scope's deadline follows the
lease), and SlotLost is raised after it. After a bare `acquire`, check
`permit.held` before acting, or pass `permit.token` to the resource.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel

from hedgeplug.contracts import Lease
from hedgeplug.errors import HedgeplugError, StoreError

from .permit import Permit, SlotLost, valid_until
from .slots import SemaphoreError, SlotSet, check_limit, check_name

RELEASE_TIMEOUT_SHARE = 0.5  # of the ttl: how long a release may take before we let the lease expire


class SemaphoreTimeout(SemaphoreError, TimeoutError):
    """No slot became free within the timeout."""


# One SlotSet per (node, name): every handle of a name on a node shares the
# store connections; `close_semaphores(node)` closes them when the node stops.
_slot_sets: weakref.WeakKeyDictionary[Any, dict[str, SlotSet]] = weakref.WeakKeyDictionary()
# Held permits per node, in acquisition order (a dict, not a set: iteration
# order must not depend on object addresses, or simulated runs would not replay).
_permits: weakref.WeakKeyDictionary[Any, dict[Permit, None]] = weakref.WeakKeyDictionary()
_closed: weakref.WeakSet[Any] = weakref.WeakSet()  # nodes whose semaphores were closed


def _slot_set(node: Any, name: str) -> SlotSet:
    if node in _closed:
        raise SemaphoreError(f"semaphore {name!r}: its node has stopped")
    per_node = _slot_sets.setdefault(node, {})
    found = per_node.get(name)
    if found is None:
        found = per_node[name] = SlotSet(node, name)
    return found


class Semaphore:
    """A handle on semaphore `name` of `limit` slots, through `node`'s lock store."""

    def __init__(self, node: Any, name: str, limit: int, *, watch: bool = True) -> None:
        self.node = node
        self.name = check_name(name)
        self.limit = check_limit(limit)
        self._slots = _slot_set(node, self.name)
        self._settings = node.config.election
        self._held: dict[Any, list[Any]] = {}  # task id -> open `async with` blocks
        self._watch = watch  # False: waiters only poll (saves one store connection per watched slot)

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit}>"

    # ------------------------------------------------------------ acquiring

    async def acquire(self, timeout: float | None = None) -> Permit:
        """Wait for a slot (forever, or up to `timeout` seconds: SemaphoreTimeout)."""
        errors: list[Exception] = []
        permit = await self._acquire(timeout, waiting=True, errors=errors)
        if permit is None:
            self._count("semaphore.timeouts")
            why = f" (the store failed meanwhile: {errors[-1]})" if errors else ""
            raise SemaphoreTimeout(f"semaphore {self.name!r}: no slot of {self.limit} free within {timeout}s{why}")
        return permit

    async def try_acquire(self, timeout: float = 0.0) -> Permit | None:
        """One pass over the slots (timeout 0), or keep trying up to `timeout` seconds; None if none freed."""
        return await self._acquire(timeout, waiting=timeout > 0)

    async def _acquire(
        self, timeout: float | None, *, waiting: bool, errors: list[Exception] | None = None
    ) -> Permit | None:
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise SemaphoreError(f"semaphore timeout must be a number of seconds >= 0, got {timeout!r}")
        ctx = self.node.ctx
        deadline = float("inf") if timeout is None else ctx.now() + timeout
        # A holder id of its own per acquisition: two waiters of one node must
        # not count as "the same holder" to a store that lets a holder re-take its lease.
        holder = f"{self.node.id}~{ctx.random.getrandbits(48):012x}"
        self._count("semaphore.acquire-calls")
        last_error: Exception | None = None
        passes = 0
        watching = waiting and self._watch
        async with self._slots.watch.waiting(self.limit, self._spawn, enabled=watching) as changes:
            while True:
                # Taken BEFORE the pass, so a change during the pass still wakes us.
                changed = changes.event if watching else None
                freed = self._slots.freed
                try:
                    await self._slots.ensure_limit(self.limit)
                    permit = await self._one_pass(holder, read_first=passes > 0)
                    passes += 1
                    if permit is not None:
                        return permit
                except StoreError as exc:
                    last_error = exc
                    if errors is not None:
                        errors[:] = [exc]  # the latest is enough to explain a timeout
                    self._count("semaphore.store-errors")
                    ctx.log.debug("semaphore %s: store error while acquiring: %s", self.name, exc)
                now = ctx.now()
                if not waiting or now >= deadline:
                    if last_error is not None and not waiting:
                        raise last_error
                    return None
                pause = self._settings.retry_every * (0.5 + ctx.random.random())
                with anyio.move_on_after(min(pause, deadline - now)):
                    await _first_of(freed, changed)

    async def _one_pass(self, holder: str, *, read_first: bool) -> Permit | None:
        """Try the slots from a random one. After the first pass a waiter reads a
        slot before writing: a read is cheaper than a refused write on every
        store (sqlite's write lock, the Spanner emulator's one writer)."""
        ctx = self.node.ctx
        first = ctx.random.randrange(self.limit)
        for step in range(self.limit):
            index = (first + step) % self.limit
            backend = self._slots.slot(index)
            if read_first:
                current = await backend.current()
                if current is not None and current.holder != holder:
                    continue
            sent_at = ctx.now()
            lease: Lease | None = None
            # Shielded (and bounded: an answer after the validity is useless anyway), so a
            # caller cancelled mid-call never leaves a granted slot behind for a whole ttl.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(valid_until(sent_at, self._settings) - sent_at):
                    lease = await backend.acquire(holder, self.node.address, self._settings.ttl)
            if lease is None or lease.holder != holder:
                await anyio.lowlevel.checkpoint_if_cancelled()
                continue
            permit = Permit(
                self.name, index, lease, backend, self._settings,
                sent_at=sent_at, now=ctx.now, count=self._count, on_end=self._ended,
            )
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except anyio.get_cancelled_exc_class():
                await permit.release(self._settings.ttl * RELEASE_TIMEOUT_SHARE)
                raise
            if not permit.held:
                # Granted, but the answer came too late to believe it: give it straight back.
                await permit.release(self._settings.ttl * RELEASE_TIMEOUT_SHARE)
                continue
            self._count("semaphore.acquired")
            _permits.setdefault(self.node, {})[permit] = None
            self._spawn(permit.keep)
            return permit
        return None

    def _spawn(self, task: Any) -> None:
        try:
            self.node.spawn(task)
        except HedgeplugError as exc:
            raise SemaphoreError(str(exc)) from None

    def _ended(self, permit: Permit) -> None:
        held = _permits.get(self.node)
        if held is not None:
            held.pop(permit, None)
        self._slots.slot_freed()

    # ------------------------------------------------------------ releasing

    async def release(self, permit: Permit | None = None) -> None:
        """Give a slot back: `permit`, or this node's only permit of this name."""
        if permit is None:
            mine = [p for p in _permits.get(self.node, ()) if p.name == self.name]
            if len(mine) != 1:
                raise SemaphoreError(
                    f"semaphore {self.name!r}: this node holds {len(mine)} permits of it; "
                    "say which one to release"
                )
            permit = mine[0]
        if permit.name != self.name:
            raise SemaphoreError(f"permit of {permit.name!r} given to semaphore {self.name!r}")
        await permit.release(self._settings.ttl * RELEASE_TIMEOUT_SHARE)

    # ------------------------------------------------------------ async with

    @asynccontextmanager
    async def hold(self, timeout: float | None = None) -> AsyncIterator[Permit]:
        """Hold one slot for the body; the body is cancelled when the slot is lost
        (SlotLost is raised then), and the slot is released when the body ends."""
        permit = await self.acquire(timeout)
        try:
            with anyio.CancelScope(deadline=permit.valid_until) as scope:

                def follow() -> None:
                    scope.deadline = permit.valid_until

                permit.on_renewed(follow)
                permit.on_lost(scope.cancel)
                yield permit
            if scope.cancelled_caught and not permit.held:
                # The deadline may fire a moment before the renewal task notices.
                permit.mark_lost("its lease ran out before a renewal came back")
        finally:
            await self.release(permit)
        if scope.cancelled_caught:
            raise SlotLost(
                f"semaphore {self.name!r}: slot {permit.slot} (token {permit.token}) lost: {permit.lost_reason}"
            )

    async def __aenter__(self) -> Permit:
        block = self.hold()
        permit = await block.__aenter__()
        self._held.setdefault(anyio.get_current_task().id, []).append(block)
        return permit

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        task = anyio.get_current_task().id
        blocks = self._held.get(task)
        if not blocks:
            raise SemaphoreError(f"semaphore {self.name!r}: exit without a matching enter in this task")
        block = blocks.pop()
        if not blocks:
            del self._held[task]
        return await block.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------ looking

    async def status(self) -> dict[str, Any]:
        return await semaphore_status(self.node, self.name)

    def _count(self, what: str) -> None:
        self.node.ctx.count(what)


def semaphore(node: Any, name: str, limit: int, *, watch: bool = True) -> Semaphore:
    """The semaphore `name` of `limit` slots, through `node`'s lock store (Node.semaphore)."""
    return Semaphore(node, name, limit, watch=watch)


async def _first_of(*events: anyio.Event | None) -> None:
    """Return when any of `events` is set (None entries never are)."""
    waiting = [e for e in events if e is not None]
    if not waiting:
        await anyio.sleep_forever()
    async with anyio.create_task_group() as tg:
        for event in waiting:

            async def wait(event: anyio.Event = event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait)


async def semaphore_status(node: Any, name: Any) -> dict[str, Any]:
    """The store's view of semaphore `name`: its limit and every slot's holder.

    Answers the control operation {"op": "semaphore-status", "name": NAME}."""
    name = check_name(name)
    slots = _slot_set(node, name)
    limit = await slots.read_limit()
    if limit is None:
        raise SemaphoreError(f"semaphore {name!r} is not known to the store (nobody has used it yet)")
    leases = await slots.holders(limit)
    holders = [
        {"slot": i, "holder": lease.holder, "address": lease.address, "token": lease.token,
         "remaining": round(lease.remaining, 3)}
        for i, lease in enumerate(leases) if lease is not None
    ]
    return {"name": name, "limit": limit, "held": len(holders), "free": limit - len(holders), "holders": holders}


def semaphore_snapshot(node: Any) -> list[dict[str, Any]]:
    """The permits this node holds now (for the node's status)."""
    return sorted((p.snapshot() for p in _permits.get(node, ())), key=lambda s: (s["name"], s["slot"]))


async def close_semaphores(node: Any, *, release: bool = True, timeout: float = 2.0) -> None:
    """At node stop: give back the slots `node` holds (unless `release` is False,
    as after a kill: their leases then expire), bounded by `timeout`, and close
    the store connections of its semaphores."""
    _closed.add(node)
    held = list(_permits.pop(node, ()))
    if release and held:
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                for permit in held:
                    tg.start_soon(permit.release, timeout)
    for slots in _slot_sets.pop(node, {}).values():
        await slots.aclose()


async def control_semaphore_status(node: Any, payload: Any) -> dict[str, Any]:
    """The control channel's "semaphore-status" operation."""
    if not isinstance(payload, dict):
        raise HedgeplugError("semaphore-status needs a mapping with a 'name'")
    return await semaphore_status(node, payload.get("name"))
