"""The cache across a partition: a share of the nodes is cut off while reads
and writes go on on both sides, then the network heals and the views and
the keys settle."""

from __future__ import annotations

from typing import Any

from hedgeplug.sim.cache_world import CacheWorld

NAME = "cache-partition"
DESCRIPTION = "cache while a minority is cut off for `duration` seconds, then healed"
PARAMS = {
    "size": (10, "cluster size"),
    "minority": (0.3, "share of nodes cut off"),
    "with_leader": (False, "put the leader in the cut-off group"),
    "duration": (20.0, "seconds of partition"),
    "keys": (300, "distinct keys in the workload"),
    "replicas": (2, "owners per key"),
    "op_every": (0.05, "seconds between workload operations"),
    "settle": (40.0, "seconds simulated after the heal"),
    "plot": ("", "write hit rate and owned keys per node to this PNG"),
}


async def run(
    sim: Any,
    *,
    size: int,
    minority: float,
    with_leader: bool,
    duration: float,
    keys: int,
    replicas: int,
    op_every: float,
    settle: float,
    plot: str,
) -> None:
    world = CacheWorld(sim, keys=keys, replicas=replicas, op_every=op_every)
    async with world.running():
        await world.start(size)
        await world.prefill()
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
    sim.log("cache", str(world.summary()))
    if plot:
        world.plot(plot)
