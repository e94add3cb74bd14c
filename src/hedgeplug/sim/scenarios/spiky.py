"""Spiky load: the cluster size walks randomly between `low` and `high` with
sudden jumps, for `duration` virtual seconds, then settles."""

from __future__ import annotations

from typing import Any

NAME = "spiky"
DESCRIPTION = "random walk of the size between low and high with sudden jumps"
PARAMS = {
    "low": (2, "smallest size"),
    "high": (150, "largest size"),
    "duration": (600.0, "virtual seconds of changes"),
    "every": (5.0, "seconds between size changes"),
    "step": (3, "largest ordinary change of size"),
    "jump": (0.1, "chance that a change is a jump to a random size"),
    "crash_share": (0.5, "share of removals that are crashes (the rest leave gracefully)"),
    "settle": (30.0, "seconds simulated after the last change"),
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
    settle: float,
) -> None:
    rng = sim.random
    size = low
    await sim.start(size)
    end = sim.now() + duration
    while sim.now() + every <= end:
        await sim.sleep(every)
        if rng.random() < jump:
            target = rng.randint(low, high)
        else:
            target = min(high, max(low, size + rng.randint(-step, step)))
        await sim.resize(target, crash_share=crash_share)
        size = target
    await sim.sleep(settle)
