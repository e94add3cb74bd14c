"""Gossip nodes over real loopback sockets and the real sqlite lock, real time.

Timings are shortened (probe every 0.2s) so a join, a leave and a crash fit
in a few seconds; the bounds asserted follow from those timings.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from hedgeplug import open_node
from hedgeplug.membership.gossip.suspicion import suspicion_bounds
from hedgeplug.node import Node
from hedgeplug.registry import Registry
from hedgeplug.view import MemberState

REGISTRY = Registry.load()
FAST = {
    "use": "gossip",
    "profile": "local",
    "probe_interval": "200ms",
    "probe_timeout": "100ms",
    "gossip_interval": "50ms",
    "anchor_interval": "500ms",
    "heal_after": "500ms",
    "leave_wait": "200ms",
}
TRANSPORTS = [t for t in ("tcp", "udp") if t in REGISTRY.names("transport")]


def config(node_id: str, transport: str, db: str) -> dict[str, Any]:
    return {
        # Bulky metadata makes a full-state exchange larger than one datagram.
        "node": {
            "id": node_id,
            "cluster": "gossip-real",
            "stop_timeout": "2s",
            "meta": {"blob": node_id * 100},
        },
        "lock": {"use": "sqlite", "path": db, "ttl": "2s"},
        "transport": {"use": transport},
        "membership": FAST,
    }


async def settle(nodes: dict[str, Node], limit: float) -> float:
    start = anyio.current_time()
    with anyio.move_on_after(limit):
        while not all(n.view.ids == frozenset(nodes) for n in nodes.values()):
            await anyio.sleep(0.02)
        return anyio.current_time() - start
    views = {k: sorted(n.view.ids) for k, n in nodes.items()}
    raise AssertionError(f"views did not agree within {limit}s: {views}")


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_join_leave_and_crash_over_real_sockets(transport: str, tmp_path) -> None:
    db = str(tmp_path / "lock.db")
    nodes: dict[str, Node] = {}
    stops: dict[str, anyio.Event] = {}

    async def life(node_id: str, started: anyio.Event) -> None:
        async with open_node(config(node_id, transport, db), registry=REGISTRY) as node:
            nodes[node_id] = node
            started.set()
            await stops[node_id].wait()

    async with anyio.create_task_group() as tg:
        for i in range(4):
            started = anyio.Event()
            stops[f"r{i}"] = anyio.Event()
            tg.start_soon(life, f"r{i}", started)
            await started.wait()
        await settle(nodes, 5.0)
        assert all(n.address.startswith("127.0.0.1:") for n in nodes.values())
        for n in nodes.values():
            assert all(m.metadata == {"blob": m.id * 100} for m in n.view.members)

        leaver = nodes.pop("r1")
        stops["r1"].set()
        took = await settle(nodes, 2.0)
        assert took < 1.0
        assert all(n.view.get("r1").state is MemberState.LEFT for n in nodes.values())
        assert leaver.view.get("r1").state is MemberState.LEFT

        nodes.pop("r2").kill()
        _, worst = suspicion_bounds(3, 0.2, 3, 6)
        bound = 3 * 0.2 + worst + 1.0
        took = await settle(nodes, bound)
        assert all(n.view.get("r2").state is MemberState.DEAD for n in nodes.values())
        for n in nodes.values():
            assert n.counters.get("gossip.refuted", 0) == 0
            assert not any(k.startswith("gossip.drop.") for k in n.counters)
        for stop in stops.values():
            stop.set()
