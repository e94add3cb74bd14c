"""Steady churn: every `every` seconds one node goes (crash or leave) and a new one comes."""

from __future__ import annotations

from typing import Any

NAME = "churn"
DESCRIPTION = "constant size, one node replaced every `every` seconds"
PARAMS = {
    "size": (20, "cluster size"),
    "duration": (120.0, "virtual seconds of churn"),
    "every": (2.0, "seconds between replacements"),
    "crash_share": (0.5, "share of departures that are crashes"),
    "settle": (30.0, "seconds simulated after the last change"),
}


async def run(
    sim: Any, *, size: int, duration: float, every: float, crash_share: float, settle: float
) -> None:
    await sim.start(size)
    await sim.sleep(10.0)
    end = sim.now() + duration
    while sim.now() + every <= end:
        await sim.sleep(every)
        running = sim.running()
        if running:
            victim = sim.random.choice(running)
            if sim.random.random() < crash_share:
                sim.faults.crash(victim)
            else:
                await sim.stop(victim)
        await sim.start(1)
    await sim.sleep(settle)
