"""Semaphore under faults: every node loops acquire / hold / release on one
semaphore while the leader is frozen past its lease, the leader is killed,
the store goes down and the network splits. The semaphore checker (see
hedgeplug.sim.semaphore_checks) reports more than `limit` holders at once,
fencing tokens that go back, a crashed holder's slot not coming back within
ttl + a retry period, and a run that stops handing out slots.

The simulator freezes a process by holding its frames and store calls while
its tasks keep running on virtual time; a frozen holder here stays in its
body until it thaws, so nothing but the semaphore's own rule (the body is
cancelled when the belief ends) keeps it from overlapping the next holder.
"""

from __future__ import annotations

from typing import Any

import anyio

from hedgeplug.sim.semaphore_checks import SemaphoreChecker
from hedgeplug.state import SemaphoreError, SlotLost, semaphore
from hedgeplug.state.slots import slot_lock_name

NAME = "semaphore-faults"
DESCRIPTION = "nodes contend for a semaphore through freeze, kill, store outage and partition"
PARAMS = {
    "size": (6, "cluster size"),
    "limit": (3, "semaphore slots"),
    "hold": (4.0, "longest a holder keeps its slot (seconds; uniform from a tenth of it)"),
    "freeze": (8.0, "seconds the leader is paused (more than the lease ttl)"),
    "outage": (8.0, "seconds the store is down"),
    "partition": (8.0, "seconds the network is split in two"),
    "phase": (8.0, "seconds between faults"),
}
SEMAPHORE = "sim-jobs"


class _Workers:
    """One contending loop per node, each in its own cancel scope (a crash ends it)."""

    def __init__(self, sim: Any, tg: Any, checker: SemaphoreChecker, limit: int, hold: float) -> None:
        self.sim, self.tg, self.checker, self.limit, self.hold = sim, tg, checker, limit, hold
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.held: dict[str, Any] = {}  # node id -> its permit while in the body
        self.stopping = False

    def start(self, sn: Any) -> None:
        scope = self.scopes[sn.id] = anyio.CancelScope()
        self.tg.start_soon(self._loop, sn, scope)

    async def _loop(self, sn: Any, scope: anyio.CancelScope) -> None:
        node = sn.node
        rng = node.ctx.random
        sem = semaphore(node, SEMAPHORE, self.limit)
        with scope:
            while True:
                try:
                    async with sem as permit:
                        self.held[sn.id] = permit
                        self.checker.entered(sn.id, permit)
                        how = "crashed"
                        try:
                            await anyio.sleep(rng.uniform(self.hold / 10, self.hold))
                            while sn.frozen:
                                # A paused process cannot leave its body: only the
                                # permit's own deadline may end it (see the module note).
                                await anyio.sleep(0.05)
                            how = "released"
                        except anyio.get_cancelled_exc_class():
                            how = "stopped" if self.stopping else "crashed" if scope.cancel_called else "lost"
                            raise
                        finally:
                            self.held.pop(sn.id, None)
                            self.checker.left(sn.id, permit, how)
                except SlotLost:
                    pass
                except SemaphoreError as exc:
                    self.sim.report("semaphore-error", f"{sn.id}: {exc}")
                    return
                await anyio.sleep(rng.uniform(0.05, 0.5))

    def crash(self, sn: Any) -> None:
        """Kill the process: its store calls never arrive again, its loop ends now."""
        permit = self.held.get(sn.id)
        self.sim.store.pause_client(sn.id)
        self.sim.kill(sn)
        scope = self.scopes.pop(sn.id, None)
        if scope is not None:
            scope.cancel()
        if permit is not None and permit.held:
            # Lease expiry by the store: a ttl after the last renewal (at most now), then a
            # waiter's retry or watch wake-up (the memory store's watch fires at expiry).
            self.checker.expect_return(permit.slot, self.sim.ttl + 0.5)


async def _victims(sim: Any, workers: _Workers, wait: float) -> list[Any]:
    """The leader, once it holds a slot (waiting up to `wait`); if it holds
    none by then, the leader and the first holder by id."""
    deadline = sim.now() + wait
    while sim.now() < deadline:
        leader = sim.leader()
        if leader is not None and leader.id in workers.held:
            return [leader]
        await sim.sleep(0.1)
    chosen = [sim.leader()] if sim.leader() is not None else []
    holders = sorted(i for i in workers.held if sim.is_running(i) and sim.nodes[i] not in chosen)
    return chosen + ([sim.nodes[holders[0]]] if holders else [])


async def run(
    sim: Any, *, size: int, limit: int, hold: float, freeze: float, outage: float,
    partition: float, phase: float,
) -> None:
    nodes = await sim.start(size)
    lock = nodes[0].node.ctx.lock_name
    checker = SemaphoreChecker(sim, limit, [slot_lock_name(lock, SEMAPHORE, i) for i in range(limit)])
    sim.checkers.append(checker)
    async with anyio.create_task_group() as tg:
        workers = _Workers(sim, tg, checker, limit, hold)
        for sn in nodes:
            workers.start(sn)
        await sim.sleep(phase)

        # 1. The leader freezes past its lease; a frozen holder's belief must end on its own.
        for victim in await _victims(sim, workers, phase):
            sim.faults.freeze(victim, freeze)
        await sim.sleep(freeze + phase)

        # 2. The leader is killed; its slot (if any) must come back within the bound.
        for victim in await _victims(sim, workers, phase):
            workers.crash(victim)
            workers.start((await sim.start(1))[0])
        await sim.sleep(phase)

        # 3. The store is down: holders lose their slots when their belief ends, nobody gains one.
        sim.faults.store_outage(outage)
        await sim.sleep(outage + phase)

        # 4. The network splits in two halves (the store stays reachable from both).
        running = sorted(sim.running(), key=lambda sn: sn.id)
        sim.faults.partition(running[: len(running) // 2])
        await sim.sleep(partition)
        sim.faults.heal()
        checker.expect_progress_from(sim.now())
        await sim.sleep(phase * 2)
        workers.stopping = True
        tg.cancel_scope.cancel()
    sim.log("semaphore", " ".join(f"{k}={v}" for k, v in checker.summary().items()))
