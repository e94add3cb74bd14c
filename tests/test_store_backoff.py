"""Store trouble: nodes that do not lead back off (exponential, jittered,
bounded) instead of calling a failing store at a fixed period; the leader's
safety rule and renewal cadence stay as they were."""

from __future__ import annotations

from random import Random
from typing import Any

from hedgeplug.election import Backoff
from hedgeplug.sim.harness import Simulation


def test_backoff_grows_to_its_cap_with_jitter_from_the_given_random() -> None:
    first, second = Backoff(0.5, 4.0, Random(7)), Backoff(0.5, 4.0, Random(7))
    delays = [first.failed() for _ in range(8)]
    assert delays == [second.failed() for _ in range(8)]  # seeded: reproducible
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[3:])) > 1  # jittered, not a fixed period at the cap
    first.succeeded()
    assert 0.25 <= first.failed() <= 0.5  # a success starts over


def outage_calls(**lock_options: Any) -> tuple[int, bool, float]:
    """Store calls during a 20 s outage of 10 nodes (ttl 3 s), whether a
    leader is back 20 s after it, and the leaderless seconds of the run."""
    seen: dict[str, Any] = {}

    async def scenario(sim: Simulation) -> None:
        await sim.start(10)
        await sim.sleep(10.0)
        assert sim.store is not None and sim.leader() is not None
        before = sim.store.calls
        sim.faults.store_outage(20.0)
        await sim.sleep(20.0)
        seen["calls"] = sim.store.calls - before
        await sim.sleep(20.0)
        seen["leader"] = sim.leader() is not None

    result = Simulation(3, lock_options=lock_options).run(scenario)
    assert result.ok, result.first_violation
    return seen["calls"], seen["leader"], result.metrics["leaderless_seconds"]


def test_store_outage_calls_drop_with_backoff_and_the_cluster_recovers() -> None:
    # backoff_max equal to the retry period is the old fixed-period behaviour.
    fixed_calls, fixed_back, fixed_leaderless = outage_calls(backoff_max=0.75)
    calls, back, leaderless = outage_calls()
    assert fixed_back and back
    # Fixed period: about 10 nodes * 20 s / 0.75 s; backed off toward the
    # 3 s cap (mean wait 2.25 s): well under half of that.
    assert fixed_calls > 200
    assert calls < fixed_calls / 2, (calls, fixed_calls)
    # Recovery costs at most one capped back-off more than before.
    assert leaderless <= fixed_leaderless + 3.0
