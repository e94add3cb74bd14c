"""Lifeguard under trouble: 5% loss on every link and one slow node must not
get a healthy node declared dead, while a killed node still is, everywhere,
within the stated bound. Memory network, virtual clock, lan profile."""

from __future__ import annotations

import zlib
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
from hedgeplug.sim.network import Latency, LinkFaults, new_network
from hedgeplug.view import MemberState

REGISTRY = Registry.load()
LAN = PROFILES["lan"]
_runs = count()


def detection_bound(n: int) -> float:
    """One probe pass to reach the victim, the longest (unconfirmed) suspicion,
    and a few gossip rounds to spread the verdict."""
    _, high = suspicion_bounds(n, LAN["probe_interval"], LAN["suspicion_mult"], 6)
    return n * LAN["probe_interval"] + high + 10 * LAN["gossip_interval"]


def run_lossy(n: int, seed: int, soak: float) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        run = next(_runs)
        net_name, store_name = f"lg-net-{run}", f"lg-store-{run}"
        net = new_network(net_name, seed=seed)
        new_store(store_name)
        nodes: dict[str, Node] = {}
        done = anyio.Event()

        async def life(node_id: str, started: anyio.Event) -> None:
            cfg = {
                "node": {
                    "id": node_id,
                    "cluster": "lg",
                    "seed": zlib.crc32(f"{seed}/{node_id}".encode()),
                },
                "lock": {"use": "memory", "store": store_name, "ttl": "3s"},
                "transport": {"use": "memory", "network": net_name},
                "membership": {"use": "gossip"},
            }
            async with open_node(cfg, registry=REGISTRY) as node:
                nodes[node_id] = node
                started.set()
                await done.wait()

        async with anyio.create_task_group() as tg:
            for i in range(n):
                ev = anyio.Event()
                tg.start_soon(life, f"n{i}", ev)
                await ev.wait()
            with anyio.fail_after(30):
                while not all(len(x.view) == n for x in nodes.values()):
                    await anyio.sleep(0.5)
            # Trouble starts: every link loses 5%; n1 answers slowly (about 0.2-0.6s each way).
            net.set_faults(LinkFaults(latency=Latency(0.001, 0.004), loss=0.05))
            slow = LinkFaults(latency=Latency(0.2, 0.2, "exponential"), loss=0.05)
            net.set_faults(slow, src="mem://n1")
            net.set_faults(slow, dst="mem://n1")
            await anyio.sleep(soak)
            dead_while_healthy = sum(x.counters.get("gossip.dead", 0) for x in nodes.values())
            views_ok = all(x.view.ids == frozenset(nodes) for x in nodes.values())
            # Now a real crash, still under loss.
            victim = f"n{n - 1}"
            nodes.pop(victim).kill()
            start = trio.current_time()
            detected: float | None = None
            with anyio.move_on_after(detection_bound(n) * 2):
                while not all(
                    (m := x.view.get(victim)) is not None and m.state is MemberState.DEAD
                    for x in nodes.values()
                ):
                    await anyio.sleep(0.1)
                detected = trio.current_time() - start
            result = {
                "dead_while_healthy": dead_while_healthy,
                "views_ok": views_ok,
                "detected": detected,
                "refuted": sum(x.counters.get("gossip.refuted", 0) for x in nodes.values()),
                "slow_awareness": nodes["n1"].parts.membership.awareness.score,
            }
            done.set()
            tg.cancel_scope.cancel()
        return result

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_loss_and_a_slow_node_kill_nobody_healthy_but_a_crash_is_detected() -> None:
    n = 10
    out = run_lossy(n, seed=5, soak=120.0)
    assert out["dead_while_healthy"] == 0, out
    assert out["views_ok"], out
    assert out["detected"] is not None and out["detected"] < detection_bound(n), out


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for seed in range(1, int(sys.argv[2]) + 1 if len(sys.argv) > 2 else 4):
        print(
            n, seed, run_lossy(n, seed, soak=300.0), f"bound {detection_bound(n):.1f}s", flush=True
        )
