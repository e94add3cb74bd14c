"""A sudden scale-up with Service-style joins, on the memory network under a
virtual clock: 2 running nodes, then K new ones at once, each given ONE join
address chosen uniformly among all processes running at that moment (new
ones included, possibly itself), the way a Kubernetes Service routes.

Plain SWIM (heal = false) splits under this; anchored gossip must end with
exactly one group whose views all equal the live set. Larger runs:
``python tests/test_gossip_scaleup.py 48 148 --seeds 10``.
"""

from __future__ import annotations

import sys
import zlib
from itertools import count
from random import Random
from typing import Any

import anyio
import attrs
import trio
import trio.testing

from hedgeplug import open_node
from hedgeplug.lock.memory import new_store
from hedgeplug.node import Node
from hedgeplug.registry import Registry
from hedgeplug.sim.network import Latency, LinkFaults, new_network

REGISTRY = Registry.load()
_runs = count()


@attrs.frozen
class Outcome:
    groups: int
    settled_after: float | None  # virtual seconds from the scale-up to one agreed view
    refuted: int
    dead: int


def components(views: dict[str, frozenset[str]]) -> int:
    """Connected components of "a has b in its view" over live nodes."""
    parent = {x: x for x in views}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, ids in views.items():
        for b in ids:
            if b in parent:
                parent[find(a)] = find(b)
    return len({find(x) for x in views})


def scale_up(k: int, seed: int, limit: float = 90.0, **membership: Any) -> Outcome:
    async def main() -> Outcome:
        run = next(_runs)
        net_name, store_name = f"scaleup-net-{run}", f"scaleup-store-{run}"
        net = new_network(net_name, seed=seed)
        net.set_faults(LinkFaults(latency=Latency(0.001, 0.004)))
        new_store(store_name)
        pick = Random(seed)
        nodes: dict[str, Node] = {}
        done = anyio.Event()

        async def life(node_id: str, seeds: list[str], started: anyio.Event) -> None:
            cfg = {
                "node": {
                    "id": node_id,
                    "cluster": "s",
                    "seed": zlib.crc32(f"{seed}/{node_id}".encode()),
                },
                "lock": {"use": "memory", "store": store_name, "ttl": "3s"},
                "transport": {"use": "memory", "network": net_name},
                "membership": {"use": "gossip", "seeds": seeds} | membership,
            }
            async with open_node(cfg, registry=REGISTRY) as node:
                nodes[node_id] = node
                started.set()
                await done.wait()

        async with anyio.create_task_group() as tg:
            first = anyio.Event()
            tg.start_soon(life, "old-0", [], first)
            await first.wait()
            await anyio.sleep(2)
            second = anyio.Event()
            tg.start_soon(life, "old-1", ["mem://old-0"], second)
            await second.wait()
            await anyio.sleep(10)
            # All K processes start at once: each is routed to one of 2 + K processes.
            everyone = ["old-0", "old-1"] + [f"new-{i}" for i in range(k)]
            events = []
            for i in range(k):
                ev = anyio.Event()
                events.append(ev)
                tg.start_soon(life, f"new-{i}", [f"mem://{pick.choice(everyone)}"], ev)
            for ev in events:
                await ev.wait()
            start = trio.current_time()
            settled: float | None = None
            live = frozenset(everyone)
            with anyio.move_on_after(limit):
                while True:
                    if all(n.view.ids == live for n in nodes.values()):
                        settled = trio.current_time() - start
                        break
                    await anyio.sleep(0.25)
            views = {nid: n.view.ids for nid, n in nodes.items()}
            outcome = Outcome(
                components(views),
                settled,
                sum(n.counters.get("gossip.refuted", 0) for n in nodes.values()),
                sum(n.counters.get("gossip.dead", 0) for n in nodes.values()),
            )
            done.set()
            tg.cancel_scope.cancel()
        return outcome

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_anchored_scale_up_ends_in_one_group() -> None:
    for seed in (1, 2):
        out = scale_up(16, seed)
        assert out.groups == 1 and out.settled_after is not None, out
        assert out.dead == 0, out


def test_healing_alone_merges_the_groups_a_scale_up_makes() -> None:
    # Joins ignore the holder, so groups do form; the anchor checks merge them.
    out = scale_up(16, 3, anchor_join=False)
    assert out.groups == 1 and out.settled_after is not None, out


def test_plain_swim_splits_under_the_same_scale_up() -> None:
    splits = sum(scale_up(16, seed, limit=30.0, heal=False).groups > 1 for seed in (1, 2, 3))
    assert splits >= 2


if __name__ == "__main__":
    args = sys.argv[1:]
    n_seeds = 5
    if "--seeds" in args:
        i = args.index("--seeds")
        n_seeds = int(args[i + 1])
        del args[i : i + 2]
    for k in [int(a) for a in args] or [48]:
        for label, opts in (
            ("anchored", {}),
            ("heal-only", {"anchor_join": False}),
            ("heal=false", {"heal": False}),
        ):
            outs = [scale_up(k, s, **opts) for s in range(1, n_seeds + 1)]
            one = sum(o.groups == 1 for o in outs)
            times = sorted(o.settled_after for o in outs if o.settled_after is not None)
            worst = f"{times[-1]:.1f}s" if times else "-"
            print(
                f"K={k} {label}: one group in {one}/{len(outs)} runs, groups "
                f"{[o.groups for o in outs]}, settle max {worst}, "
                f"dead {sum(o.dead for o in outs)}, refuted {sum(o.refuted for o in outs)}",
                flush=True,
            )
