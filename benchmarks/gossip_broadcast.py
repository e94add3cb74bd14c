"""Broadcast `gossip` beside `direct`: time until every live member handled a
broadcast, and what one broadcast costs, on one cluster of gossip members.

    .venv/bin/python benchmarks/gossip_broadcast.py --size 150 --broadcasts 10 --loss 0.05

Every node is a real `open_node` node with the gossip membership (lan
profile), all in this process, on the in-memory network (1-5 ms per message,
`--loss` on every link) under trio's virtual clock: 150 nodes of real
processes do not fit on two shared cores, and virtual time makes the
figures independent of the machine's load. The same cluster runs both
strategies, one after the other, in the same run (`direct` is the
baseline): `--broadcasts` broadcasts from different members, one every
`--every` seconds, each timed from the call to the last live member's
handler. Cost: frames and bytes every transport sent during the
broadcasts, minus those of an idle window of the same length measured just
before (the membership's own traffic, with its periodic full-state
exchanges moved out of the way: `--push-pull`), per broadcast; and the
sender's frames per broadcast. `direct` includes the replies it waits for; `gossip`
has none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import zlib
from typing import Any

import anyio
import trio
import trio.testing

from hedgeplug import open_node
from hedgeplug.lock.memory import new_store
from hedgeplug.membership.gossip.notices import delivery_bound
from hedgeplug.membership.gossip.settings import PROFILES
from hedgeplug.node import Node
from hedgeplug.registry import Registry
from hedgeplug.sim.network import Latency, LinkFaults, new_network

LAN = PROFILES["lan"]


def _sent(nodes: dict[str, Node]) -> tuple[int, int]:
    frames = sum(n.parts.transport.stats.frames_out for n in nodes.values())
    return frames, sum(n.parts.transport.stats.bytes_out for n in nodes.values())


async def one_strategy(
    strategy: str, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    net_name, store_name = f"gbb-net-{run}", f"gbb-store-{run}"
    net = new_network(net_name, seed=args.seed)
    new_store(store_name)
    registry = Registry.load()
    nodes: dict[str, Node] = {}
    handled: dict[str, dict[str, float]] = {}  # payload -> node -> first handling time
    calls: dict[str, int] = {}
    done = anyio.Event()
    out: dict[str, Any] = {"strategy": strategy}

    async def life(node_id: str, started: anyio.Event) -> None:
        cfg = {
            "node": {"id": node_id, "cluster": "gbb", "seed": zlib.crc32(f"{args.seed}/{node_id}".encode())},
            "lock": {"use": "memory", "store": store_name, "ttl": "3s"},
            "transport": {"use": "memory", "network": net_name},
            # Full-state exchanges (kilobytes each, at random moments) would
            # drown a broadcast's bytes in the idle window's noise.
            "membership": {"use": "gossip", "push_pull_interval": f"{args.push_pull}s"},
            "broadcast": {"use": strategy},
        }
        async with open_node(cfg, registry=registry) as node:

            def on(payload: Any, sender: str) -> str:
                handled.setdefault(payload, {}).setdefault(node_id, trio.current_time())
                calls[payload] = calls.get(payload, 0) + 1
                return "ok"

            node.on_broadcast(on)
            nodes[node_id] = node
            started.set()
            await done.wait()

    async with anyio.create_task_group() as tg:
        for i in range(args.size):
            ev = anyio.Event()
            tg.start_soon(life, f"n{i}", ev)
            await ev.wait()
        with anyio.fail_after(300):
            while not all(len(x.view.ids) == args.size for x in nodes.values()):
                await anyio.sleep(0.5)
        net.set_faults(LinkFaults(latency=Latency(0.001, 0.004), loss=args.loss))
        window = args.broadcasts * args.every + args.drain
        await anyio.sleep(5.0)
        idle_before = _sent(nodes)
        await anyio.sleep(window)
        idle = [a - b for a, b in zip(_sent(nodes), idle_before, strict=True)]
        busy_before = _sent(nodes)
        started_at: dict[str, float] = {}
        sender_frames = []
        for i in range(args.broadcasts):
            sender = nodes[f"n{(i * 37 + 1) % args.size}"]
            payload = f"b{i}"
            frames_before = sender.parts.transport.stats.frames_out
            started_at[payload] = trio.current_time()

            async def send(sender: Node = sender, payload: str = payload) -> None:
                with anyio.move_on_after(args.every * 0.9):
                    await sender.broadcast_all(payload, timeout=args.every * 0.8)

            tg.start_soon(send)
            await anyio.sleep(args.every)
            sender_frames.append(sender.parts.transport.stats.frames_out - frames_before)
        await anyio.sleep(args.drain)
        busy = [a - b for a, b in zip(_sent(nodes), busy_before, strict=True)]
        times = [
            max(handled[p].values()) - t
            for p, t in started_at.items()
            if len(handled.get(p, {})) == args.size
        ]
        out["delivered_to_all"] = f"{len(times)}/{args.broadcasts}"
        out["handled_per_member_max"] = max(
            (calls[p] / len(handled[p]) for p in handled), default=0
        )
        if times:
            out["time_to_all_s"] = {
                "median": round(statistics.median(times), 3),
                "max": round(max(times), 3),
            }
        out["frames_per_broadcast"] = round((busy[0] - idle[0]) / args.broadcasts, 1)
        out["bytes_per_broadcast"] = round((busy[1] - idle[1]) / args.broadcasts)
        out["sender_frames_per_broadcast"] = round(statistics.mean(sender_frames), 1)
        out["idle_frames_per_s"] = round(idle[0] / window, 1)
        done.set()
        tg.cancel_scope.cancel()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "size": args.size,
        "loss": args.loss,
        "gossip_stated_bound_s": round(
            delivery_bound(LAN["gossip_nodes"], LAN["gossip_interval"], args.size), 2
        ),
    }
    for run, strategy in enumerate(("direct", "gossip")):
        figures[strategy] = await one_strategy(strategy, args, run)
    return figures


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--broadcasts", type=int, default=10)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between broadcasts")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds after the last one")
    parser.add_argument("--loss", type=float, default=0.0, help="loss on every link")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--push-pull", type=float, default=1000.0, help="membership push_pull_interval (seconds)"
    )
    args = parser.parse_args()
    if not 2 <= args.size <= 500 or args.broadcasts < 1 or not 0 <= args.loss < 1:
        parser.error("--size in [2, 500], --broadcasts >= 1, --loss in [0, 1)")
    figures = trio.run(main, args, clock=trio.testing.MockClock(autojump_threshold=0))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
