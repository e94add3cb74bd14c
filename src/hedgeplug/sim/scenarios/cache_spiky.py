"""The cache under spiky load: the size walks between `low` and `high` with
sudden jumps, a share of removals crashes, the rest leave gracefully (and
hand their keys off); then the cluster settles."""

from __future__ import annotations

from typing import Any

from hedgeplug.sim.cache_world import CacheWorld

NAME = "cache-spiky"
DESCRIPTION = "cache while the size walks between low and high with crashes"
PARAMS = {
    "low": (2, "smallest size"),
    "high": (150, "largest size"),
    "duration": (120.0, "virtual seconds of changes"),
    "every": (5.0, "seconds between size changes"),
    "step": (3, "largest ordinary change of size"),
    "jump": (0.1, "chance that a change is a jump to a random size"),
    "crash_share": (0.5, "share of removals that are crashes"),
    "keys": (300, "distinct keys in the workload"),
    "replicas": (2, "owners per key"),
    "op_every": (0.05, "seconds between workload operations"),
    "settle": (40.0, "seconds simulated after the last change"),
    "plot": ("", "write hit rate and owned keys per node to this PNG"),
}


async def run(
    sim: Any,
    *,
    low: int,
    high: int,
    duration: float,
    every: float,
    step: int,
    jump: float,
    crash_share: float,
    keys: int,
    replicas: int,
    op_every: float,
    settle: float,
    plot: str,
) -> None:
    world = CacheWorld(sim, keys=keys, replicas=replicas, op_every=op_every)
    rng = sim.random
    async with world.running():
        size = low
        await world.start(size)
        await world.prefill()
        end = sim.now() + duration
        while sim.now() + every <= end:
            await sim.sleep(every)
            if rng.random() < jump:
                target = rng.randint(low, high)
            else:
                target = min(high, max(low, size + rng.randint(-step, step)))
            await world.resize(target, crash_share=crash_share)
            size = target
        await sim.sleep(settle)
    sim.log("cache", str(world.summary()))
    if plot:
        world.plot(plot)
