"""The cache across real node processes while the cluster scales and members
crash: what `benchmarks/cache_scaling.py` measures and its test checks.

`run_scaling(cluster, load, ...)` starts `start` cache workers, writes every
key once, then, with the load running, scales up to `peak` members
gracefully, SIGKILLs `crash` members at once, scales down to `end` members
gracefully (all leavers at once), holding `hold` seconds between changes and
waiting after each change until the hand-off has settled (every member
agrees on the view and holds only keys it owns). Then it stops the load and
reads back every key whose write was acknowledged, through a member as a
client would, and where that does not return the acknowledged value (or a
newer one), asks every member for its copy:

- `lost`: no running member holds the value or a newer one, though not all
  of the key's owners were SIGKILLed (owners as of the view just before the
  kill): a broken promise; 0 expected, for graceful changes and for crashes of
  fewer than R owners alike;
- `lost_all_owners_crashed`: lost, and every owner was SIGKILLed at once:
  the stated bound of a cache with R copies;
- `superseded_by_failed_write`: what is held is a write that did not return
  ok (it may still become visible, as documented) with a newer version;
- `unreadable_but_held`: a member holds it, but a read through a member did
  not find it: a read-path problem.
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio
import attrs

from ..cache.placement import Placement
from ..cache.values import unpack
from ..errors import HedgeplugError
from ..processes import NodeProcess, ProcessError
from .cache_processes import CacheProcessCluster, Load, PhaseFigures


@attrs.define
class ScalingRun:
    phases: list[PhaseFigures]
    settle_seconds: dict[str, float]
    acked_keys: int = 0
    all_owners_crashed: int = 0  # keys whose every owner was among the SIGKILLed
    lost: list[str] = attrs.field(factory=list)
    lost_all_owners_crashed: list[str] = attrs.field(factory=list)
    superseded_by_failed_write: list[str] = attrs.field(factory=list)
    unreadable_but_held: list[str] = attrs.field(factory=list)
    readback_errors: int = 0
    final_copies: int = 0  # entries held across the members at the end (R per surviving key)
    load_average: float = 0.0
    anomalies: list[dict[str, Any]] = attrs.field(factory=list)  # the load's stale reads and misses
    problems: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["phases"] = [p.to_json() for p in self.phases]
        return data


async def wait_settled(cluster: CacheProcessCluster, timeout: float) -> float:
    """Seconds until the live members agree on one view and each holds only
    the keys it owns (hand-off done, released keys dropped)."""
    start = anyio.current_time()
    await cluster.wait_agreed(timeout)
    size = len(cluster.live)
    last: dict[str, Any] = {}
    with anyio.move_on_after(max(1.0, timeout - (anyio.current_time() - start))):
        while True:
            last = await cluster.cache_stats()
            if all(
                s is not None and s["members"] == size and s["entries"] == s["owned_keys"]
                for s in last.values()
            ):
                return anyio.current_time() - start
            await anyio.sleep(0.2)
    held = {
        k: (s and (s["members"], s["entries"], s["owned_keys"])) for k, s in sorted(last.items())
    }
    raise ProcessError(
        f"hand-off not settled within {timeout}s among {size} members; "
        f"(members, entries, owned) per node: {held}"
    )


async def _change(load: Load, name: str, change: Any, run: ScalingRun, timeout: float) -> None:
    load.phase(name)
    await change()
    load.refresh()
    run.settle_seconds[name] = round(await wait_settled(load.cluster, timeout), 2)


async def run_scaling(
    cluster: CacheProcessCluster,
    load: Load,
    *,
    start: int = 5,
    peak: int = 20,
    crash: int = 2,
    end: int = 5,
    hold: float = 5.0,
    settle_timeout: float = 120.0,
    seed: int = 1,
) -> ScalingRun:
    rng = random.Random(seed)
    run = ScalingRun(load.phases, {})
    replicas = int(cluster.cache_options.get("replicas", 2))
    await cluster.start(start)
    await wait_settled(cluster, settle_timeout)
    load.refresh()
    load.phase("prefill")
    await load.prefill()
    crashed_owners: set[bytes] = set()
    async with load.running():
        load.phase(f"{start} nodes")
        await anyio.sleep(hold)

        async def scale_up() -> None:
            await cluster.start(peak - start)

        await _change(load, f"scale-up {start}->{peak}", scale_up, run, settle_timeout)
        load.phase(f"{peak} nodes")
        await anyio.sleep(hold)

        victims = rng.sample(cluster.live, crash)
        before = Placement([n.id for n in cluster.live], replicas)
        ids = {v.id for v in victims}
        crashed_owners = {k for k in load.keys if set(before.owners(k)) <= ids}

        async def kill() -> None:
            load.avoid(victims)
            for victim in victims:
                cluster.kill(victim)

        size = peak - crash
        await _change(load, f"SIGKILL {crash} ({peak}->{size})", kill, run, settle_timeout)
        load.phase(f"{size} nodes")
        await anyio.sleep(hold)

        leavers = rng.sample(cluster.live, size - end)

        async def scale_down() -> None:
            load.avoid(leavers)
            async with anyio.create_task_group() as tg:
                for node in leavers:
                    tg.start_soon(cluster.stop, node, 30.0)

        await _change(load, f"scale-down {size}->{end}", scale_down, run, settle_timeout)
        load.phase(f"{end} nodes, after")
        await anyio.sleep(hold)
    run.all_owners_crashed = len(crashed_owners)
    final = await cluster.cache_stats()
    run.final_copies = sum(s["entries"] for s in final.values() if s is not None)
    await read_back(cluster, load, run, crashed_owners)
    run.load_average = round(os.getloadavg()[0], 1)
    run.anomalies = load.anomalies
    if run.lost:
        run.problems.append(f"{len(run.lost)} acknowledged writes lost: {run.lost[:5]}")
    if run.unreadable_but_held:
        run.problems.append(
            f"{len(run.unreadable_but_held)} acknowledged values held but not read: "
            f"{run.unreadable_but_held[:5]}"
        )
    return run


async def _held(cluster: CacheProcessCluster, nodes: list[NodeProcess], key: bytes) -> int | None:
    """The newest sequence number any of `nodes` holds for `key` (raw owner read)."""
    best: int | None = None
    for node in nodes:
        try:
            reply = await cluster.call(node, ["r", key], 4.0)
        except (HedgeplugError, OSError, TimeoutError):
            continue
        if isinstance(reply, list) and reply and reply[0] == "hit":
            value = unpack(reply[1])
            if isinstance(value, int) and (best is None or value > best):
                best = value
    return best


async def read_back(
    cluster: CacheProcessCluster, load: Load, run: ScalingRun, crashed_owners: set[bytes],
    concurrency: int = 8,
) -> None:
    """Read every acknowledged key; sort what does not come back (see the module)."""
    nodes = list(cluster.live)
    pending = sorted(load.acked)
    run.acked_keys = len(pending)
    rng = random.Random(0)

    async def check(key: bytes) -> None:
        expected = load.acked[key]
        value: Any = None
        for node in rng.sample(nodes, min(3, len(nodes))):
            try:
                value = await cluster.call(node, ["cget", key], 4.0)
                break
            except (HedgeplugError, OSError, TimeoutError):
                run.readback_errors += 1
        if isinstance(value, int) and value >= expected:
            return
        held = await _held(cluster, nodes, key)
        name = key.decode()
        if held is not None and held >= expected:
            run.unreadable_but_held.append(name)
        elif held is not None and held in load.failed.get(key, ()):
            run.superseded_by_failed_write.append(name)
        elif key in crashed_owners:
            run.lost_all_owners_crashed.append(name)
        else:
            run.lost.append(name)

    async def worker() -> None:
        while pending:
            await check(pending.pop())

    with anyio.fail_after(max(60.0, len(pending) / 20)):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
