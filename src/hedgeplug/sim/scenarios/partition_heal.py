"""Partition and heal: a share of the nodes (the leader among them, or not) is
cut off for a while, then the network heals."""

from __future__ import annotations

from typing import Any

NAME = "partition-heal"
DESCRIPTION = "cut a minority off for `duration` seconds, then heal"
PARAMS = {
    "size": (10, "cluster size"),
    "minority": (0.3, "share of nodes cut off"),
    "with_leader": (False, "put the leader in the cut-off group"),
    "duration": (20.0, "seconds of partition"),
    "settle": (30.0, "seconds simulated after the heal"),
}


async def run(
    sim: Any, *, size: int, minority: float, with_leader: bool, duration: float, settle: float
) -> None:
    await sim.start(size)
    await sim.sleep(15.0)
    running = sim.running()
    leader = sim.leader()
    others = [n for n in running if n is not leader]
    count = max(1, int(len(running) * minority))
    cut = sim.random.sample(others, min(len(others), count - 1 if with_leader else count))
    if with_leader and leader is not None:
        cut.append(leader)
    sim.faults.partition(cut)
    await sim.sleep(duration)
    sim.faults.heal()
    await sim.sleep(settle)
