"""Store outage: the lock store refuses every call for a while."""

from __future__ import annotations

from typing import Any

NAME = "store-outage"
DESCRIPTION = "the lock store is down for `outage` seconds"
PARAMS = {
    "size": (10, "cluster size"),
    "outage": (10.0, "seconds the store is down"),
    "settle": (30.0, "seconds simulated after the store returns"),
}


async def run(sim: Any, *, size: int, outage: float, settle: float) -> None:
    await sim.start(size)
    await sim.sleep(15.0)
    sim.faults.store_outage(outage)
    await sim.sleep(outage + settle)
