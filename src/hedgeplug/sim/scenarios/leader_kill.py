"""Leader crashes: kill whoever leads, `kills` times, `gap` seconds apart."""

from __future__ import annotations

from typing import Any

NAME = "leader-kill"
DESCRIPTION = "crash the leader repeatedly; measures failover and detection"
PARAMS = {
    "size": (10, "cluster size"),
    "kills": (3, "leader crashes"),
    "gap": (20.0, "seconds between crashes"),
    "settle": (30.0, "seconds simulated after the last crash"),
}


async def run(sim: Any, *, size: int, kills: int, gap: float, settle: float) -> None:
    await sim.start(size)
    await sim.sleep(gap)
    for _ in range(kills):
        leader = sim.leader()
        if leader is not None:
            sim.faults.crash(leader)
        await sim.sleep(gap)
    await sim.sleep(settle)
