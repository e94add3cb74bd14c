"""Mass crash: a settled cluster loses most of its members at one instant
(no goodbyes); the few survivors must find every victim themselves."""

from __future__ import annotations

from typing import Any

NAME = "mass-crash"
DESCRIPTION = "crash most members at once (never the first node); measures detection"
PARAMS = {
    "size": (40, "cluster size before the crash"),
    "crashed": (30, "members crashed at the same instant"),
    "warmup": (20.0, "seconds before the crash"),
    "settle": (200.0, "seconds simulated after the crash"),
}


async def run(sim: Any, *, size: int, crashed: int, warmup: float, settle: float) -> None:
    if not 0 <= crashed < size:
        raise ValueError(f"crashed must be between 0 and size - 1, got {crashed} of {size}")
    nodes = await sim.start(size)
    await sim.sleep(warmup)
    for sn in sim.random.sample(nodes[1:], crashed):
        sim.faults.crash(sn)
    await sim.sleep(settle)
