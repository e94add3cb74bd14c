"""Gossip nodes built by `open_node`, run in one process.

The fault scenarios (kill, partition, split) run on the in-memory network and
lock under trio's MockClock: virtual time makes long timeouts cheap and the
runs reproducible. Bounds asserted here are the ones docs/gossip.md states.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import anyio
import trio
import trio.testing

from hedgeplug import open_node
from hedgeplug.lock.memory import new_store
from hedgeplug.membership.gossip.settings import PROFILES
from hedgeplug.membership.gossip.suspicion import suspicion_bounds
from hedgeplug.node import Node
from hedgeplug.registry import Registry
from hedgeplug.sim.network import new_network
from hedgeplug.view import MemberState

_runs = count()
REGISTRY = Registry.load()
LOCAL = PROFILES["local"]


class Cluster:
    """Nodes on one in-memory network and store, each in its own task."""

    def __init__(self, tg: Any, seed: int = 1, **membership: Any) -> None:
        run = next(_runs)  # fresh names only; the seed alone decides the run
        self.tg = tg
        self.net_name, self.store_name = f"gossip-net-{run}", f"gossip-store-{run}"
        self.network = new_network(self.net_name, seed=seed)
        new_store(self.store_name)
        self.membership = {"use": "gossip", "profile": "local"} | membership
        self.nodes: dict[str, Node] = {}
        self._stops: dict[str, anyio.Event] = {}

    def config(self, node_id: str, **membership: Any) -> dict[str, Any]:
        return {
            "node": {"id": node_id, "cluster": "g", "seed": zlib.crc32(node_id.encode())},
            "lock": {"use": "memory", "store": self.store_name, "ttl": "2s"},
            "transport": {"use": "memory", "network": self.net_name},
            "membership": self.membership | membership,
        }

    async def start(self, node_id: str, **membership: Any) -> Node:
        started = anyio.Event()
        stop = self._stops[node_id] = anyio.Event()

        async def life() -> None:
            async with open_node(self.config(node_id, **membership), registry=REGISTRY) as node:
                self.nodes[node_id] = node
                started.set()
                await stop.wait()

        self.tg.start_soon(life)
        await started.wait()
        return self.nodes[node_id]

    async def stop(self, node_id: str) -> None:
        self._stops[node_id].set()
        node = self.nodes.pop(node_id)
        while (tg := node.lifecycle.task_group) is not None and not tg.cancel_scope.cancel_called:
            await anyio.sleep(0.01)

    def kill(self, node_id: str) -> None:
        self.nodes.pop(node_id).kill()

    def views(self) -> dict[str, frozenset[str]]:
        return {nid: n.view.ids for nid, n in self.nodes.items()}

    def agreed(self) -> bool:
        live = frozenset(self.nodes)
        return all(ids == live for ids in self.views().values())


async def wait_for(cond: Callable[[], bool], limit: float, step: float = 0.05) -> float:
    """Virtual seconds until `cond` holds; fails the test after `limit`."""
    start = trio.current_time()
    with anyio.move_on_after(limit):
        while not cond():
            await anyio.sleep(step)
        return trio.current_time() - start
    raise AssertionError(f"condition not met within {limit}s")


def virtual(test: Callable[..., Awaitable[None]]) -> Callable[[], None]:
    def run() -> None:
        async def main() -> None:
            async with anyio.create_task_group() as tg:
                await test(tg)
                tg.cancel_scope.cancel()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    run.__name__ = test.__name__
    return run


JOIN_BOUND = LOCAL["anchor_interval"] * 1.1 + LOCAL["heal_after"] + 1.0


def detection_bound(n: int) -> float:
    """Crash detection bound for the local profile: a full probe pass to reach
    the victim, one unconfirmed suspicion (the worst case), and dissemination."""
    _, high = suspicion_bounds(n, LOCAL["probe_interval"], LOCAL["suspicion_mult"], 6)
    return n * LOCAL["probe_interval"] + high + 2.0


@virtual
async def test_nodes_join_through_the_lease_holder_and_agree(tg: Any) -> None:
    c = Cluster(tg)
    await c.start("n0")
    await wait_for(lambda: c.nodes["n0"].is_leader, 5)
    for i in range(1, 6):
        await c.start(f"n{i}")
    # Gossip usually spreads a join in a few rounds; a member the epidemic
    # missed is repaired by its next check against the holder.
    took = await wait_for(c.agreed, JOIN_BOUND)
    assert took < JOIN_BOUND
    assert all(n.counters.get("gossip.joined", 0) == 1 for nid, n in c.nodes.items() if nid != "n0")
    for node in c.nodes.values():
        assert all(m.state is MemberState.ALIVE for m in node.view.members)


@virtual
async def test_a_killed_node_is_declared_dead_everywhere_within_the_bound(tg: Any) -> None:
    c = Cluster(tg)
    for i in range(5):
        await c.start(f"n{i}")
    await wait_for(c.agreed, 10)
    c.kill("n3")
    took = await wait_for(c.agreed, detection_bound(5))
    assert took < detection_bound(5)
    for node in c.nodes.values():
        assert node.view.get("n3").state is MemberState.DEAD
        assert node.counters.get("gossip.refuted", 0) == 0  # nobody healthy was accused


@virtual
async def test_a_graceful_leave_is_seen_within_one_round(tg: Any) -> None:
    c = Cluster(tg)
    for i in range(4):
        await c.start(f"n{i}")
    await wait_for(c.agreed, 10)
    await c.stop("n2")
    took = await wait_for(c.agreed, 1.0)
    assert took <= LOCAL["gossip_interval"] * 2
    assert all(n.view.get("n2").state is MemberState.LEFT for n in c.nodes.values())


@virtual
async def test_a_suspect_that_is_reachable_again_refutes_and_is_not_declared_dead(tg: Any) -> None:
    c = Cluster(tg)
    for i in range(5):
        await c.start(f"n{i}")
    await wait_for(c.agreed, 10)
    victim = c.nodes["n4"]
    c.network.set_down(victim.address)

    def suspected() -> bool:
        return any(
            n.view.get("n4").state is MemberState.SUSPECT for k, n in c.nodes.items() if k != "n4"
        )

    await wait_for(suspected, 10)
    c.network.set_down(victim.address, False)  # back well before the suspicion runs out
    await anyio.sleep(10)
    assert c.agreed()
    assert victim.counters.get("gossip.refuted", 0) >= 1
    assert all(n.counters.get("gossip.dead", 0) == 0 for n in c.nodes.values())
    assert all(n.view.get("n4").state is MemberState.ALIVE for n in c.nodes.values())


async def two_groups(c: Cluster, per_group: int, **membership: Any) -> None:
    """Two groups that only know their own seed (what a sudden scale-up makes)."""
    await c.start("a0", **membership)
    await wait_for(lambda: c.nodes["a0"].is_leader, 5)
    await c.start("b0", **membership)
    for i in range(1, per_group):
        await c.start(f"a{i}", seeds=[c.nodes["a0"].address], **membership)
        await c.start(f"b{i}", seeds=[c.nodes["b0"].address], **membership)


def groups(c: Cluster) -> int:
    seen: set[str] = set()
    n = 0
    views = c.views()
    for start in views:
        if start in seen:
            continue
        n += 1
        todo = [start]
        while todo:
            x = todo.pop()
            if x in seen or x not in views:
                continue
            seen.add(x)
            todo.extend(views[x])
            todo.extend(y for y, ids in views.items() if x in ids)
    return n


@virtual
async def test_without_healing_a_split_stays_split(tg: Any) -> None:
    c = Cluster(tg)
    await two_groups(c, 4, heal=False)
    await anyio.sleep(60)
    assert groups(c) == 2


@virtual
async def test_healing_merges_a_split_within_the_bound(tg: Any) -> None:
    c = Cluster(tg)
    await two_groups(c, 4, anchor_join=False)  # joins ignore the holder: the split forms
    bound = LOCAL["anchor_interval"] * 1.1 + LOCAL["heal_after"] + 3.0
    took = await wait_for(c.agreed, bound)
    assert took < bound
    assert sum(n.counters.get("gossip.heal.missing", 0) for n in c.nodes.values()) >= 1


@virtual
async def test_bad_payloads_are_counted_and_change_nothing(tg: Any) -> None:
    c = Cluster(tg)
    for i in range(3):
        await c.start(f"n{i}")
    await wait_for(c.agreed, 10)
    target = c.nodes["n1"]
    sender = c.nodes["n0"].parts.dispatcher.channel("gossip")
    junk = [
        None,
        42,
        "x",
        [],
        {"t": "nope"},
        {"t": "ping"},
        {"t": "ping", "to": 5},
        {"t": "gossip", "u": "not-a-list"},
        {"t": "gossip", "u": [["bad"], [1, 2, 3, 4, 5, 6]]},
        {"t": "pp", "s": {"a": 1}},
        {"t": "ping-req", "to": "n2", "addr": "mem://elsewhere"},
        {"t": "gossip", "u": [["n2", "mem://n2", {}, "dead", -5, "x"]]},
    ]
    for payload in junk:
        await sender.send(target.address, payload)
    reply = await sender.request(target.address, {"t": "ping-req", "to": "zz", "addr": "x"}, 1.0)
    assert reply == {"t": "ack", "ok": False}
    await anyio.sleep(3)
    drops = {k: v for k, v in target.counters.items() if k.startswith("gossip.drop.")}
    assert sum(drops.values()) >= len(junk), drops
    assert c.agreed()
