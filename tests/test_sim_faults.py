"""Each fault injector of the simulator does what it says, on real nodes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hedgeplug.sim.harness import Result, SimNode, Simulation
from hedgeplug.sim.network import Latency


def simulate(scenario: Callable[[Simulation], Awaitable[None]], seed: int = 1, **kw: Any) -> Result:
    return Simulation(seed, **kw).run(scenario)


def follower(sim: Simulation) -> SimNode:
    return next(n for n in sim.running() if not n.is_leader)


def in_every_view(sim: Simulation, node_id: str) -> bool:
    return all(node_id in n.view_ids for n in sim.running())


def in_no_view(sim: Simulation, node_id: str) -> bool:
    return all(node_id not in n.view_ids for n in sim.running())


def test_crash_removes_the_node_from_every_view() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(4)
        await sim.sleep(5)
        victim = follower(sim)
        assert in_every_view(sim, victim.id)
        sim.faults.crash(victim)
        assert victim.state == "crashed" and not sim.is_running(victim.id)
        await sim.sleep(10)
        assert in_no_view(sim, victim.id)

    result = simulate(scenario)
    assert result.ok and result.metrics["detection_time"]["count"] == 1


def test_freezing_the_leader_hands_leadership_over_and_it_returns() -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Simulation) -> None:
        await sim.start(4)
        await sim.sleep(5)
        old = sim.leader()
        assert old is not None and old.node is not None
        frames_before = old.node.parts.transport.stats.frames_in
        sim.faults.freeze(old, 12)
        await sim.sleep(10)
        # Paused: no frame got in, it no longer believes it leads, someone else does.
        assert old.node.parts.transport.stats.frames_in == frames_before
        assert not old.is_leader
        new = sim.leader()
        assert new is not None and new is not old
        seen["new"] = new.id
        await sim.sleep(15)
        assert not old.frozen and old.running
        assert in_every_view(sim, old.id)

    result = simulate(scenario)
    assert result.ok, result.first_violation
    assert result.metrics["failover_time"]["count"] == 1


def test_restart_comes_back_as_a_new_process() -> None:
    async def scenario(sim: Simulation) -> None:
        nodes = await sim.start(3)
        await sim.sleep(5)
        fresh = await sim.restart(nodes[2])
        assert fresh.id == "n0002.r1" and fresh.running and nodes[2].state == "crashed"
        await sim.sleep(10)
        assert in_every_view(sim, fresh.id) and in_no_view(sim, nodes[2].id)

    assert simulate(scenario).ok


def test_partition_cuts_and_heal_restores() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(5)
        await sim.sleep(5)
        cut = follower(sim)
        sim.faults.partition([cut])
        await sim.sleep(10)
        leader = sim.leader()
        assert leader is not None and cut.id not in leader.view_ids
        assert sim.network is not None and sim.network.stats.dropped["partition"] > 0
        sim.faults.heal()
        await sim.sleep(10)
        assert in_every_view(sim, cut.id)

    result = simulate(scenario)
    assert result.ok, result.first_violation
    assert result.metrics["final_groups"] == 1


def test_store_outage_ends_leadership_until_the_store_returns() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(3)
        await sim.sleep(5)
        assert sim.leader() is not None
        sim.faults.store_outage(10)
        await sim.sleep(4)  # longer than the ttl (3s): nobody may still lead
        assert sim.leader() is None
        assert all(
            n.node is not None
            and n.node.counters.get("renew-errors", 0) + n.node.counters.get("store-errors", 0) > 0
            for n in sim.running()
        )
        await sim.sleep(10)
        assert sim.leader() is not None

    assert simulate(scenario).ok


def test_total_loss_on_a_node_looks_like_a_crash_and_clearing_it_brings_it_back() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(4)
        await sim.sleep(5)
        cut = follower(sim)
        sim.faults.links(loss=1.0, src=cut)
        sim.faults.links(loss=1.0, dst=cut)
        await sim.sleep(10)
        leader = sim.leader()
        assert leader is not None and cut.id not in leader.view_ids
        assert sim.network is not None and sim.network.stats.dropped["loss"] > 0
        sim.faults.clear_links()
        await sim.sleep(10)
        assert in_every_view(sim, cut.id)

    assert simulate(scenario).ok


def test_duplication_and_reordering_happen_and_are_survived() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(5)
        sim.faults.links(duplicate=0.3, reorder=0.3, reorder_delay=0.2)
        await sim.sleep(20)
        sim.faults.clear_links()
        await sim.sleep(10)

    result = simulate(scenario)
    assert result.network["duplicated"] > 20 and result.network["reordered"] > 20
    assert result.ok and result.metrics["final_groups"] == 1


def test_latency_slows_joins_down() -> None:
    async def scenario(sim: Simulation) -> None:
        await sim.start(3)
        await sim.sleep(5)
        sim.faults.links(latency=Latency(0.25, 0.0, "fixed"))
        await sim.start(1)
        await sim.sleep(10)

    fast = simulate(lambda sim: _join_one(sim))
    slow = simulate(scenario)
    # The late joiner needs at least one round trip (2 x 250ms) before the leader adds it.
    assert max(slow.metrics["join_time"]["max"], 0) >= 0.5
    assert slow.metrics["join_time"]["max"] > fast.metrics["join_time"]["max"]


async def _join_one(sim: Simulation) -> None:
    await sim.start(3)
    await sim.sleep(5)
    await sim.start(1)
    await sim.sleep(10)


def test_lock_store_latency_applies_to_every_call() -> None:
    async def scenario(sim: Simulation) -> None:
        nodes = await sim.start(1)
        await sim.sleep(2)
        sim.faults.store_latency(0.4)
        assert nodes[0].node is not None
        started = sim.now()
        await nodes[0].node.ctx.read_leader()
        assert abs(sim.now() - started - 0.4) < 1e-6

    assert simulate(scenario).ok


def test_garbage_is_dropped_and_counted_never_fatal() -> None:
    async def scenario(sim: Simulation) -> None:
        nodes = await sim.start(3)
        await sim.sleep(5)
        for node in nodes:
            sim.faults.garbage(node, 40)
        await sim.sleep(5)
        for node in nodes:
            assert node.running and node.node is not None
            drops = sum(v for k, v in node.node.counters.items() if k.startswith("drop."))
            drops += sum(node.node.parts.transport.stats.dropped.values())
            assert drops >= 40, (node.node.counters, node.node.parts.transport.stats.dropped)
            assert in_every_view(sim, node.id)

    result = simulate(scenario)
    assert result.ok, result.first_violation
