"""Idle cost in the simulator (virtual time, so counts, not timings): a
follower whose lock is Watchable reads the store about once per lease
rather than every retry period, heartbeat members beat one-way once the
leader takes ticks, and a leader kill and a member missing pushes are still
handled within the stated bounds (the simulator's checkers)."""

from __future__ import annotations

from typing import Any

from hedgeplug.sim.harness import Simulation

NODES = 10
TTL = 3.0
RETRY = TTL / 4  # the default contender/follower poll period


def test_followers_with_a_watch_read_the_store_about_once_per_lease() -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Simulation) -> None:
        await sim.start(NODES)
        await sim.sleep(10.0)
        assert sim.store is not None and sim.leader() is not None
        before = sim.store.calls
        await sim.sleep(30.0)
        seen["calls"] = sim.store.calls - before
        old = sim.leader()
        assert old is not None
        sim.kill(old)
        await sim.sleep(3 * TTL)
        seen["new_leader"] = sim.leader()

    result = Simulation(5, ttl=TTL).run(scenario)
    assert result.ok, result.first_violation
    # Polling every retry period: (NODES-1) * 30 / RETRY = 360 reads, plus
    # the leader's 40 renewals (446 measured). Reading at the lease's expiry:
    # 140.
    polling = (NODES - 1) * 30.0 / RETRY
    assert seen["calls"] < polling / 2, seen
    assert seen["new_leader"] is not None


def test_members_tick_one_way_and_catch_up_after_lost_pushes() -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Simulation) -> None:
        await sim.start(NODES)
        await sim.sleep(10.0)
        assert sim.network is not None
        before = sim.network.stats.sent
        await sim.sleep(20.0)
        seen["frames"] = sim.network.stats.sent - before
        # The leader loses a third of what it sends while members join and
        # leave: pushes go missing and the members catch up from their ticks.
        leader = sim.leader()
        assert leader is not None
        sim.faults.links(loss=0.3, src=leader)
        await sim.resize(NODES + 3)
        await sim.sleep(5.0)
        await sim.resize(NODES - 2, crash_share=0.5)
        await sim.sleep(5.0)
        sim.faults.clear_links()
        await sim.sleep(20.0)

    result = Simulation(6, ttl=TTL, membership_options={"interval": 1.0}).run(scenario)
    assert result.ok, result.first_violation
    # A beat with a reply is two frames per member and interval; a tick one.
    beats = (NODES - 1) * 20.0
    assert seen["frames"] < beats * 1.2, seen
