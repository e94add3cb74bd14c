"""Sudden scale-up: a settled pair, then K new processes within `spread` seconds.

The case that splits gossip clusters: each new process gets ONE join address
by the `--join` rule (one-random: any running process, itself included).
"""

from __future__ import annotations

from typing import Any

NAME = "scale-up"
DESCRIPTION = "2 settled nodes, then k new ones within `spread` seconds"
PARAMS = {
    "initial": (2, "nodes started first"),
    "k": (148, "nodes added at once"),
    "spread": (1.0, "seconds over which the k nodes start"),
    "warmup": (10.0, "seconds the initial nodes run alone"),
    "settle": (30.0, "seconds simulated after the last start"),
}


async def run(
    sim: Any, *, initial: int, k: int, spread: float, warmup: float, settle: float
) -> None:
    await sim.start(initial)
    await sim.sleep(warmup)
    begin = sim.now()
    offsets = sorted(sim.random.uniform(0.0, spread) for _ in range(k))
    for offset in offsets:
        delay = begin + offset - sim.now()
        if delay > 0:
            await sim.sleep(delay)
        await sim.start(1)
    await sim.sleep(settle)
