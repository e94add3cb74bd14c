"""The distributed semaphore through real nodes: the sqlite store (a real
file shared by the nodes) for limits, tokens and errors; the in-process
memory store (a simulator part, named so) where a test must switch the store
off or kill a holder at a chosen instant."""

from __future__ import annotations

import itertools

import anyio
import pytest

import hedgeplug
from hedgeplug.lock.memory import get_store
from hedgeplug.state import (
    LimitMismatch,
    SemaphoreError,
    SemaphoreTimeout,
    SlotLost,
    close_semaphores,
    semaphore,
    semaphore_snapshot,
    semaphore_status,
)

TTL = 1.0
_names = itertools.count()


def config(node_id: str, cluster: str, lock: dict) -> dict:
    return {
        "node": {"id": node_id, "cluster": cluster, "stop_timeout": "1s"},
        "lock": {"ttl": TTL, **lock},
        "transport": {"use": "memory", "network": cluster},
        "membership": {"use": "heartbeat", "interval": 0.2, "missed": 3},
        "broadcast": {"use": "direct"},
    }


class Nodes:
    """Nodes of one cluster in this process, each killable on its own."""

    def __init__(self, tg, lock: dict) -> None:
        self.tg = tg
        self.cluster = f"sem{next(_names)}"
        self.lock = dict(lock)
        if self.lock["use"] == "memory":
            self.lock["store"] = self.cluster
        self.nodes: dict[str, hedgeplug.Node] = {}
        self._stop: dict[str, anyio.Event] = {}

    async def start(self, node_id: str) -> hedgeplug.Node:
        ready, stop = anyio.Event(), anyio.Event()
        self._stop[node_id] = stop

        async def run() -> None:
            async with hedgeplug.open_node(config(node_id, self.cluster, self.lock)) as node:
                self.nodes[node_id] = node
                ready.set()
                try:
                    await stop.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await close_semaphores(node)

        self.tg.start_soon(run)
        with anyio.fail_after(10):
            await ready.wait()
        return self.nodes[node_id]

    def stop_all(self) -> None:
        for event in self._stop.values():
            event.set()


@pytest.fixture
def sqlite_lock(tmp_path):
    return {"use": "sqlite", "path": str(tmp_path / "store.sqlite")}


@pytest.mark.anyio
async def test_never_more_than_limit_then_a_release_frees_a_slot(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        a, b = await nodes.start("a"), await nodes.start("b")
        first = await semaphore(a, "jobs", 2).acquire(timeout=5)
        second = await semaphore(b, "jobs", 2).acquire(timeout=5)
        assert {first.slot, second.slot} == {0, 1}
        assert first.held and second.held
        assert await semaphore(a, "jobs", 2).try_acquire() is None
        assert await semaphore(b, "jobs", 2).try_acquire(timeout=0.3) is None
        status = await semaphore_status(b, "jobs")
        assert status["limit"] == 2 and status["held"] == 2 and status["free"] == 0
        assert {h["token"] for h in status["holders"]} == {first.token, second.token}
        await semaphore(a, "jobs", 2).release(first)
        assert not first.held
        third = await semaphore(b, "jobs", 2).acquire(timeout=5)
        assert third.slot == first.slot and third.token > first.token  # fencing token moved on
        assert a.counters["semaphore.acquired"] == 1 and a.counters["semaphore.released"] == 1
        assert [p["slot"] for p in semaphore_snapshot(b)] == sorted([second.slot, third.slot])
        nodes.stop_all()


@pytest.mark.anyio
async def test_async_with_holds_for_the_body_and_renews_past_the_ttl(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        a = await nodes.start("a")
        sem = semaphore(a, "long", 1)
        async with sem as permit:
            await anyio.sleep(TTL * 2)  # several renewals
            assert permit.held and permit.renewals >= 2
            assert await semaphore(a, "long", 1).try_acquire() is None
        assert not permit.held and permit.lost_reason is None
        again = await sem.try_acquire()
        assert again is not None
        await sem.release()  # the node's only permit of the name
        nodes.stop_all()


@pytest.mark.anyio
async def test_a_different_limit_for_a_recorded_name_is_refused(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        a, b = await nodes.start("a"), await nodes.start("b")
        permit = await semaphore(a, "fixed", 3).acquire(timeout=5)
        with pytest.raises(LimitMismatch, match="recorded with limit 3, not 4"):
            await semaphore(b, "fixed", 4).acquire(timeout=1)
        with pytest.raises(SemaphoreError, match="semaphore name"):
            semaphore(a, "no/slashes", 1)
        with pytest.raises(SemaphoreError, match="whole number from 1"):
            semaphore(a, "ok", 0)
        with pytest.raises(SemaphoreError, match="not known to the store"):
            await semaphore_status(a, "never-used")
        await permit.release()
        nodes.stop_all()


@pytest.mark.anyio
async def test_acquire_times_out_when_every_slot_stays_held(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        a, b = await nodes.start("a"), await nodes.start("b")
        held = await semaphore(a, "busy", 1).acquire(timeout=5)
        started = anyio.current_time()
        with pytest.raises(SemaphoreTimeout, match="no slot of 1 free within 0.8s"):
            await semaphore(b, "busy", 1).acquire(timeout=0.8)
        assert 0.8 <= anyio.current_time() - started < 3.0
        assert b.counters["semaphore.timeouts"] == 1
        await held.release()
        nodes.stop_all()


@pytest.mark.anyio
async def test_a_waiter_is_woken_by_a_release_before_its_retry_period(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, {**sqlite_lock, "retry": "5s"})
        a, b = await nodes.start("a"), await nodes.start("b")
        held = await semaphore(a, "quick", 1).acquire(timeout=5)
        got: list[float] = []

        async def wait() -> None:
            await semaphore(b, "quick", 1).acquire(timeout=10)
            got.append(anyio.current_time())

        tg.start_soon(wait)
        await anyio.sleep(1.0)  # b has made its first pass and is waiting now
        released_at = anyio.current_time()
        await held.release()
        with anyio.fail_after(4):
            while not got:
                await anyio.sleep(0.02)
        # The sqlite watch polls every 100 ms; the retry period is 5 s (jittered from 2.5 s).
        assert got[0] - released_at < 1.0
        nodes.stop_all()


@pytest.mark.anyio
async def test_a_store_outage_cancels_the_body_when_the_belief_ends():
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, {"use": "memory"})
        a = await nodes.start("a")
        entered = anyio.Event()
        outcome: list[object] = []

        async def body() -> None:
            try:
                async with semaphore(a, "outage", 1) as permit:
                    entered.set()
                    await anyio.sleep(30)
            except SlotLost as exc:
                outcome.extend([exc, anyio.current_time(), permit])

        tg.start_soon(body)
        await entered.wait()
        get_store(nodes.cluster).set_down(True)
        down_at = anyio.current_time()
        with anyio.fail_after(5):
            while not outcome:
                await anyio.sleep(0.02)
        error, lost_at, permit = outcome
        assert "lost" in str(error)
        # The belief ends ttl*(1-margin) after the last renewal was sent: before the store could reassign.
        assert lost_at - down_at <= TTL * 0.75 + 0.1
        assert not permit.held  # type: ignore[attr-defined]
        assert a.counters["semaphore.lost"] == 1
        get_store(nodes.cluster).set_down(False)
        nodes.stop_all()


@pytest.mark.anyio
async def test_a_killed_holder_gives_its_slot_back_within_the_ttl():
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, {"use": "memory"})
        a, b = await nodes.start("a"), await nodes.start("b")
        held = await semaphore(a, "crash", 1).acquire(timeout=5)
        a.kill()
        killed_at = anyio.current_time()
        permit = await semaphore(b, "crash", 1).acquire(timeout=5)
        waited = anyio.current_time() - killed_at
        # Bound: the slot's lease expires at most a ttl after the kill (memory store watch wakes at once).
        assert waited <= TTL + 0.2
        assert permit.token > held.token
        nodes.stop_all()


@pytest.mark.anyio
async def test_many_contenders_in_one_process_never_overlap_beyond_the_limit(sqlite_lock):
    limit, contenders = 2, 6
    intervals: list[tuple[float, float]] = []
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        started = [await nodes.start(f"n{i}") for i in range(3)]

        async def contend(node: hedgeplug.Node) -> None:
            sem = semaphore(node, "crowd", limit)
            for _ in range(4):
                async with sem as permit:
                    entered = anyio.current_time()
                    await anyio.sleep(0.05)
                    assert permit.held
                    intervals.append((entered, anyio.current_time()))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as inner:
                for i in range(contenders):
                    inner.start_soon(contend, started[i % 3])
        nodes.stop_all()
    assert len(intervals) == contenders * 4
    events = sorted([(t, 1) for t, _ in intervals] + [(t, -1) for _, t in intervals])
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert peak == limit  # the limit is reached, never passed


@pytest.mark.anyio
async def test_closing_a_nodes_semaphores_gives_its_slots_back(sqlite_lock):
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, sqlite_lock)
        a, b = await nodes.start("a"), await nodes.start("b")
        held = await semaphore(a, "leaving", 2).acquire(timeout=5)
        await semaphore(a, "leaving", 2).acquire(timeout=5)
        assert (await semaphore_status(b, "leaving"))["held"] == 2
        await close_semaphores(a)  # what the node does when it stops gracefully
        assert not held.held and semaphore_snapshot(a) == []
        assert (await semaphore_status(b, "leaving"))["held"] == 0
        with pytest.raises(SemaphoreError, match="its node has stopped"):
            await semaphore(a, "other", 1).acquire(timeout=1)
        nodes.stop_all()


@pytest.mark.anyio
async def test_acquiring_while_the_store_is_down_times_out_naming_the_store():
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, {"use": "memory"})
        a = await nodes.start("a")
        get_store(nodes.cluster).set_down(True)
        with pytest.raises(SemaphoreTimeout, match="the store failed meanwhile: memory store .* is down"):
            await semaphore(a, "down", 1).acquire(timeout=0.5)
        with pytest.raises(hedgeplug.StoreError, match="is down"):
            await semaphore(a, "down", 1).try_acquire()  # one pass: the store's own error
        get_store(nodes.cluster).set_down(False)
        assert await semaphore(a, "down", 1).try_acquire() is not None
        nodes.stop_all()


@pytest.mark.anyio
async def test_a_waiter_cancelled_mid_call_leaves_no_slot_behind():
    async with anyio.create_task_group() as tg:
        nodes = Nodes(tg, {"use": "memory", "latency": "200ms"})  # every store call takes 200 ms
        a = await nodes.start("a")
        # limit read 0-0.2 s, limit write 0.2-0.4 s, slot acquire 0.4-0.6 s (granted at 0.5 s):
        with anyio.move_on_after(0.55):  # cancelled after the grant, before the answer arrives
            await semaphore(a, "cancel", 1).acquire()
        # The slot it may have been granted was given straight back, not left for a ttl.
        status = await semaphore_status(a, "cancel")
        assert status["held"] == 0, status
        permit = await semaphore(a, "cancel", 1).try_acquire()
        assert permit is not None
        nodes.stop_all()
