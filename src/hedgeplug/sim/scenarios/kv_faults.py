"""Key/value log under faults: writers and readers on every node while the
leader is frozen past its lease, then killed, then the store goes down, then
the leader is cut off by a partition. The kv checkers (kv_checks.py) judge
the recorded history against the store's own record at the end.

A writer on the frozen leader keeps running (the simulator's freeze holds a
process's frames and store calls, not its tasks), so the frozen leader sends
appends with its old token that reach the store only after the thaw: those
must be refused. `sim.kv` holds the history and figures afterwards.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..kv_checks import GetOp, KvHistory, PutOp, kv_checkers

NAME = "kv-faults"
DESCRIPTION = "writes and reads through a leader freeze, a leader kill, a store outage and a partition"
PARAMS = {
    "size": (5, "cluster size"),
    "writers": (5, "writer tasks (one per node to begin with)"),
    "readers": (3, "reader tasks"),
    "keys": (4, "distinct keys written"),
    "every": (0.1, "seconds between one writer's puts"),
    "timeout": (3.0, "seconds a put may take"),
    "settle": (10.0, "seconds after the last fault"),
}


async def run(sim: Any, *, size: int, writers: int, readers: int, keys: int, every: float,
              timeout: float, settle: float) -> None:
    nodes = await sim.start(size)
    await sim.sleep(10.0)
    history = KvHistory()
    lock = nodes[0].node.ctx.lock_name
    sim.checkers.extend(kv_checkers(history, lambda: sim.store, lock))
    stats = {"put_ok": 0, "put_failed": 0, "reads": 0}
    sim.kv = {"history": history, "stats": stats}
    stop = anyio.Event()
    ttl = nodes[0].node.config.election.ttl

    def through(index: int) -> Any:
        running = sorted(sim.running(), key=lambda sn: sn.id)
        if not running:
            return None
        preferred = nodes[index % len(nodes)]
        return preferred if preferred.running else running[index % len(running)]

    async def writer(index: int) -> None:
        n = 0
        while not stop.is_set():
            sn = through(index)
            if sn is not None:
                key, value = f"k{(index + n) % keys}", f"w{index}-{n}".encode()
                n += 1
                invoked, entry = sim.now(), None
                # A bound beyond the freeze: a put of the frozen leader to its own
                # store must stay in flight until the thaw, as a real request would.
                with anyio.move_on_after(timeout + 4 * ttl):
                    try:
                        entry = await sn.node.kv.put(key, value, timeout=timeout)
                    except Exception as exc:
                        sim.log(sn.id, f"kv put {key} failed: {type(exc).__name__}")
                acked = sim.now() if entry is not None else None
                history.puts.append(PutOp(sn.id, key, value, invoked, acked, entry))
                stats["put_ok" if entry is not None else "put_failed"] += 1
            await anyio.sleep(every)

    async def reader(index: int) -> None:
        n = 0
        while not stop.is_set():
            sn = through(index + 1)
            if sn is not None and not sn.frozen:
                key = f"k{n % keys}"
                n += 1
                invoked = sim.now()
                with anyio.move_on_after(timeout):
                    try:
                        entry = await sn.node.kv.get(key)
                    except Exception:
                        entry = False
                    if entry is not False:
                        history.gets.append(GetOp(sn.id, key, invoked, sim.now(), entry))
                        stats["reads"] += 1
            await anyio.sleep(every / 2)

    tg = sim.fleet.task_group
    for i in range(writers):
        tg.start_soon(writer, i)
    for i in range(readers):
        tg.start_soon(reader, i)

    await sim.sleep(3.0)
    leader = sim.leader()
    if leader is not None:
        sim.faults.freeze(leader, 3 * ttl)  # well past its lease
    await sim.sleep(3 * ttl + 3.0)
    leader = sim.leader()
    if leader is not None:
        sim.faults.crash(leader)
    await sim.sleep(2 * ttl + 3.0)
    sim.faults.store_outage(2.0)
    await sim.sleep(2.0 + 2 * ttl)
    leader = sim.leader()
    if leader is not None:
        sim.faults.partition([leader])
        await sim.sleep(2 * ttl)
        sim.faults.heal()
    await sim.sleep(settle)
    stop.set()
    await sim.sleep(timeout + 1.5)  # let the last puts finish before the checks
    stats["refused_appends"] = sim.store.log.refused
    stats["accepted_appends"] = len(sim.store.log.accepted)
    sim.log("kv", " ".join(f"{k}={v}" for k, v in sorted(stats.items())))
