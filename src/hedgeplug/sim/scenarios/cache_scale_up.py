"""The cache under a sudden scale-up: a settled pair holding every key, then
`k` new nodes within `spread` seconds; keys move to their new owners at a
bounded rate while reads and writes go on."""

from __future__ import annotations

from typing import Any

from hedgeplug.sim.cache_world import CacheWorld

NAME = "cache-scale-up"
DESCRIPTION = "cache on 2 settled nodes, then k new ones; hand-off under load"
PARAMS = {
    "initial": (2, "nodes started first"),
    "k": (40, "nodes added at once"),
    "spread": (1.0, "seconds over which the k nodes start"),
    "keys": (300, "distinct keys in the workload"),
    "replicas": (2, "owners per key"),
    "op_every": (0.05, "seconds between workload operations"),
    "warmup": (10.0, "seconds before the scale-up"),
    "settle": (30.0, "seconds simulated after the last start"),
    "plot": ("", "write hit rate and owned keys per node to this PNG"),
}


async def run(
    sim: Any,
    *,
    initial: int,
    k: int,
    spread: float,
    keys: int,
    replicas: int,
    op_every: float,
    warmup: float,
    settle: float,
    plot: str,
) -> None:
    world = CacheWorld(sim, keys=keys, replicas=replicas, op_every=op_every)
    async with world.running():
        await world.start(initial)
        await world.prefill()
        await sim.sleep(warmup)
        begin = sim.now()
        for offset in sorted(sim.random.uniform(0.0, spread) for _ in range(k)):
            delay = begin + offset - sim.now()
            if delay > 0:
                await sim.sleep(delay)
            await world.start(1)
        await sim.sleep(settle)
    sim.log("cache", str(world.summary()))
    if plot:
        world.plot(plot)
