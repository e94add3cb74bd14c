"""Leader pause: freeze the leader (a long GC pause) longer than its lease, then thaw it."""

from __future__ import annotations

from typing import Any

NAME = "leader-freeze"
DESCRIPTION = "pause the leader longer than its lease; nobody may lead twice"
PARAMS = {
    "size": (10, "cluster size"),
    "freeze": (10.0, "seconds the leader is paused"),
    "settle": (30.0, "seconds simulated after the thaw"),
}


async def run(sim: Any, *, size: int, freeze: float, settle: float) -> None:
    await sim.start(size)
    await sim.sleep(15.0)
    leader = sim.leader()
    if leader is not None:
        sim.faults.freeze(leader, freeze)
    await sim.sleep(freeze + settle)
