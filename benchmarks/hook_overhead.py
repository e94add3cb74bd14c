"""What the timing hooks cost on the send path.

Two real nodes in this process (tcp over loopback, the lease in a sqlite
file); the follower sends to the leader, one request at a time, in rounds.
Each round times the same number of sends four ways, interleaved so the
machine's load hits all alike:

    baseline   Node.send without its metering wrapper (the code before the hooks)
    idle       Node.send with the wrapper, no plugin implementing the hooks
    observed   Node.send on nodes whose registry has hedgeplug-prometheus
    wrapper    (separately) the metering wrapper around a coroutine that does
               nothing, off and on (on: hedgeplug-prometheus records it), against
               the bare coroutine: the hooks' own cost without network noise
    tally      (separately) the per-channel traffic tally, per call

    .venv/bin/python benchmarks/hook_overhead.py [--sends 2000] [--rounds 5]

Not a test: it prints figures (median of rounds, microseconds per send).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit
from pathlib import Path
from typing import Any

import anyio

import hedgeplug
from hedgeplug.channels import Dispatcher
from hedgeplug.node.metering import Meter, metered_call
from hedgeplug.registry import Registry


def config(name: str, cluster: str, lease: Path) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": cluster, "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(lease), "ttl": "3s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "1s"},
    }


async def pair(registry: Registry, cluster: str, lease: Path, ready: Any) -> None:
    async with hedgeplug.open_node(config(f"{cluster}-a", cluster, lease), registry=registry) as a:
        a.on_send(lambda payload: payload)
        await a.wait_leader(10)
        async with hedgeplug.open_node(config(f"{cluster}-b", cluster, lease), registry=registry) as b:
            b.on_send(lambda payload: payload)
            await b.wait_leader(10)
            await ready(a if not a.is_leader else b)


async def per_send(send: Any, node: hedgeplug.Node, count: int) -> float:
    started = anyio.current_time()
    for i in range(count):
        await send(node, i, timeout=5)
    return (anyio.current_time() - started) / count * 1e6


class Bare:
    """Just enough of a node for the metering wrapper: an id, a cluster, a Meter."""

    def __init__(self, registry: Registry, node_id: str) -> None:
        self.id, self.cluster, self.address = node_id, "bench", ""
        self._meter = Meter(registry.observers(), self)

    async def nothing(self) -> None:
        return None

    metered = metered_call("send")(nothing)


async def per_call(call: Any, count: int) -> float:
    started = anyio.current_time()
    for _ in range(count):
        await call()
    return (anyio.current_time() - started) / count * 1e6


async def wrapper_figures(plain: Registry, observed: Registry, count: int, rounds: int) -> None:
    off, on = Bare(plain, "off"), Bare(observed, "on")
    figures: dict[str, list[float]] = {"bare": [], "wrapper off": [], "wrapper on": []}
    for _ in range(rounds):
        figures["bare"].append(await per_call(off.nothing, count))
        figures["wrapper off"].append(await per_call(off.metered, count))
        figures["wrapper on"].append(await per_call(on.metered, count))
    base = statistics.median(figures["bare"])
    print(f"metering wrapper around a no-op coroutine, {count} calls x {rounds} rounds:")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:11s} {median:7.3f} us/call   +{median - base:6.3f} us over bare")


async def main(sends: int, rounds: int) -> None:
    plain = Registry.load(only=["sqlite", "tcp", "heartbeat", "direct"])
    observed = Registry.load()
    assert not plain.pm.hook.hedgeplug_messaging_call.get_hookimpls()
    assert observed.pm.hook.hedgeplug_messaging_call.get_hookimpls(), "install hedgeplug-prometheus"
    figures: dict[str, list[float]] = {"baseline": [], "idle": [], "observed": []}
    with tempfile.TemporaryDirectory() as tmp:
        followers: dict[str, hedgeplug.Node] = {}
        done = anyio.Event()
        got = {"plain": anyio.Event(), "observed": anyio.Event()}

        def waiter(key: str) -> Any:
            async def ready(follower: hedgeplug.Node) -> None:
                followers[key] = follower
                got[key].set()
                await done.wait()

            return ready

        async with anyio.create_task_group() as tg:
            tg.start_soon(pair, plain, "plain", Path(tmp) / "plain.db", waiter("plain"))
            tg.start_soon(pair, observed, "observed", Path(tmp) / "observed.db", waiter("observed"))
            with anyio.fail_after(30):
                await got["plain"].wait()
                await got["observed"].wait()
            unwrapped = hedgeplug.Node.send.__wrapped__  # type: ignore[attr-defined]
            wrapped = hedgeplug.Node.send
            await per_send(wrapped, followers["plain"], 200)  # warm up
            await per_send(wrapped, followers["observed"], 200)
            for _ in range(rounds):
                figures["baseline"].append(await per_send(unwrapped, followers["plain"], sends))
                figures["idle"].append(await per_send(wrapped, followers["plain"], sends))
                figures["observed"].append(await per_send(wrapped, followers["observed"], sends))
            done.set()
    base = statistics.median(figures["baseline"])
    print(f"send round trip over loopback tcp, {sends} sends x {rounds} rounds (median of rounds):")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:9s} {median:8.1f} us/send   {median / base:5.3f} x baseline")
    await wrapper_figures(plain, observed, 20_000, rounds)
    dispatcher = Dispatcher.__new__(Dispatcher)
    dispatcher.traffic = {}
    n = 200_000
    tally = timeit.timeit(lambda: dispatcher._tally("app.send", 2, 100), number=n) / n * 1e6
    empty = timeit.timeit(lambda: None, number=n) / n * 1e6
    print(f"  per-channel tally: {tally - empty:.3f} us per message (a lambda call, {empty:.3f} us, subtracted)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.sends, args.rounds, backend="trio")
