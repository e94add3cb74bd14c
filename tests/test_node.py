"""The node runtime end to end over the in-process (simulator) lock and
transport: these are fakes of the store and the network, named so, used here
to test the runtime's logic quickly on both async backends. The same
behaviours run over real processes, sqlite and sockets in
test_cluster_processes.py."""

from __future__ import annotations

import itertools

import anyio
import pytest

import hedgeplug
from hedgeplug.hookspecs import hookimpl
from hedgeplug.lock.memory import get_store
from hedgeplug.registry import Registry

TTL = 1.0
INTERVAL = 0.2
_names = itertools.count()


def make_config(name: str, cluster: str, **extra: str) -> dict:
    cfg = {
        "node": {"id": name, "cluster": cluster, "stop_timeout": "1s"},
        "lock": {"use": "memory", "store": cluster, "ttl": TTL},
        "transport": {"use": "memory", "network": cluster},
        "membership": {"use": "heartbeat", "interval": INTERVAL, "missed": 3},
        "broadcast": {"use": "direct"},
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        cfg[section][field] = value
    return cfg


class Cluster:
    """Several nodes in this process, each in its own cancel scope so one can
    be stopped gracefully or killed while the others keep running."""

    def __init__(self, tg, registry=None) -> None:
        self.tg = tg
        self.cluster = f"c{next(_names)}"
        self.nodes: dict[str, hedgeplug.Node] = {}
        self._stops: dict[str, anyio.Event] = {}
        self.registry = registry

    async def start(self, name: str) -> hedgeplug.Node:
        ready = anyio.Event()
        stop = anyio.Event()
        self._stops[name] = stop

        async def run() -> None:
            async with hedgeplug.open_node(make_config(name, self.cluster), registry=self.registry) as node:
                self.nodes[name] = node
                ready.set()
                await stop.wait()
            self.nodes.pop(name, None)

        self.tg.start_soon(run)
        await ready.wait()
        return self.nodes[name]

    async def stop(self, name: str) -> None:
        self._stops[name].set()
        with anyio.fail_after(5):
            while name in self.nodes:
                await anyio.sleep(0.01)

    def kill(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.kill()

    def live(self):
        return list(self.nodes.values())

    def leaders(self):
        return [n.id for n in self.live() if n.is_leader]

    def agreed(self) -> bool:
        nodes = self.live()
        ids = {n.id for n in nodes}
        return all(n.view.ids == ids for n in nodes) and len({n.view.version for n in nodes}) == 1

    async def settle(self, timeout: float) -> float:
        start = anyio.current_time()
        with anyio.fail_after(timeout):
            while not (len(self.leaders()) == 1 and self.agreed()):
                assert len(self.leaders()) <= 1, "two nodes believe they lead"
                await anyio.sleep(0.02)
        return anyio.current_time() - start


@pytest.fixture
def anyio_backend(request):
    return "trio"


@pytest.fixture(params=["trio", "asyncio"])
def backend(request):
    return request.param


async def _with_cluster(body, n=3, registry=None):
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, registry)
        for i in range(n):
            await c.start(f"n{i}")
        try:
            await body(c)
        finally:
            for name in list(c.nodes):
                c._stops[name].set()


def run(backend, body, **kw):
    anyio.run(_with_cluster, body, *kw.values(), backend=backend)


def test_one_leader_and_one_view(backend):
    async def body(c: Cluster):
        await c.settle(5)
        (leader,) = c.leaders()
        for node in c.live():
            assert node.leader.holder == leader
            assert node.view.version.token == node.leader.token
        assert {m.id for m in c.nodes["n0"].members} == {"n0", "n1", "n2"}

    run(backend, body)


def test_send_reaches_the_leader_and_broadcast_everyone(backend):
    async def body(c: Cluster):
        await c.settle(5)
        for node in c.live():
            node.on_send(lambda payload, sender, me=node.id: {"leader": me, "got": payload, "from": sender})
            node.on_broadcast(lambda payload, me=node.id: f"{me}:{payload}")
        reply = await c.nodes["n2"].send("hi", timeout=3)
        assert reply == {"leader": c.leaders()[0], "got": "hi", "from": "n2"}
        replies = await c.nodes["n1"].broadcast_all("ping", timeout=2)
        assert sorted(r.payload for r in replies) == ["n0:ping", "n1:ping", "n2:ping"]
        assert all(r.ok for r in replies)
        others = await c.nodes["n1"].broadcast_all("x", include_self=False, targets=["n0", "n1"])
        assert [r.member for r in others] == ["n0"]

    run(backend, body)


def test_a_reader_may_stop_a_broadcast_early(backend):
    """Breaking out of `node.broadcast(...)` after the first reply closes it
    cleanly (no error from the requests still in flight) and the node goes on."""

    async def body(c: Cluster):
        await c.settle(5)
        for node in c.live():
            node.on_broadcast(lambda payload, me=node.id: f"{me}:{payload}")
        sender = c.nodes["n0"]
        stream = sender.broadcast("first", timeout=2)
        try:
            async for reply in stream:
                assert reply.ok
                break
        finally:
            await stream.aclose()
        replies = await sender.broadcast_all("second", timeout=2)
        assert sorted(r.payload for r in replies) == ["n0:second", "n1:second", "n2:second"]

    run(backend, body)


def test_handler_errors_are_reported_not_raised(backend):
    async def body(c: Cluster):
        await c.settle(5)

        def boom(payload):
            raise ValueError("bad payload")

        for node in c.live():
            node.on_broadcast(boom)
            node.on_send(boom)
        replies = await c.nodes["n0"].broadcast_all(1)
        assert len(replies) == 3 and not any(r.ok for r in replies)
        assert all("bad payload" in r.error for r in replies)
        with pytest.raises(hedgeplug.RemoteError, match="bad payload"):
            await c.nodes["n1"].send(1, timeout=2)

    run(backend, body)


def test_graceful_leader_stop_fails_over_and_leaves_the_view(backend):
    async def body(c: Cluster):
        await c.settle(5)
        (old,) = c.leaders()
        token = c.nodes[old].token
        await c.stop(old)
        took = await c.settle(TTL + 2 * INTERVAL + 1)
        (new,) = c.leaders()
        assert new != old and c.nodes[new].token > token
        assert all(old not in n.view.ids for n in c.live())
        # A released lease is taken over without waiting for expiry.
        assert took < TTL

    run(backend, body)


def test_killed_leader_is_replaced_within_ttl_and_two_intervals(backend):
    async def body(c: Cluster):
        await c.settle(5)
        (old,) = c.leaders()
        c.kill(old)
        took = await c.settle(TTL + 2 * INTERVAL + 1)
        assert took <= TTL + 2 * INTERVAL + 0.5
        assert all(old not in n.view.ids for n in c.live())

    run(backend, body)


def test_follower_leave_is_seen_at_once_and_crash_after_missed_beats(backend):
    async def body(c: Cluster):
        await c.settle(5)
        followers = [n for n in sorted(c.nodes) if n not in c.leaders()]
        await c.stop(followers[0])
        took = await c.settle(INTERVAL)
        assert took < INTERVAL
        c.kill(followers[1])
        took = await c.settle(3 * INTERVAL + INTERVAL + 1)
        assert took <= 3 * INTERVAL + INTERVAL / 2 + 0.3

    run(backend, body)


def test_new_node_joins_within_one_interval(backend):
    async def body(c: Cluster):
        await c.settle(5)
        await c.start("n9")
        took = await c.settle(INTERVAL + 1)
        assert took <= INTERVAL + 0.2

    run(backend, body)


def test_store_outage_makes_the_leader_step_down_and_recover(backend):
    async def body(c: Cluster):
        await c.settle(5)
        store = get_store(c.cluster)
        store.set_down(True)
        with anyio.fail_after(TTL * 2):
            while c.leaders():
                await anyio.sleep(0.02)
        store.set_down(False)
        await c.settle(TTL * 3)

    run(backend, body)


def test_events_iterator_and_observer_hooks(backend):
    seen: list[tuple[str, object]] = []

    class Observer:
        @staticmethod
        @hookimpl
        def hedgeplug_members_changed(node, view, joined, left):
            if node.id == "n0":
                seen.append(("members", tuple(sorted(m.id for m in joined))))

        @staticmethod
        @hookimpl
        def hedgeplug_leader_changed(node, lease, previous):
            if node.id == "n0":
                seen.append(("leader", lease.holder if lease else None))

        @staticmethod
        @hookimpl
        def hedgeplug_node_started(node):
            seen.append(("started", node.id))

        @staticmethod
        @hookimpl
        def hedgeplug_node_stopping(node):
            seen.append(("stopping", node.id))

    registry = Registry.load(extra=[Observer])

    async def body(c: Cluster):
        events = []

        async def collect():
            async for event in c.nodes["n0"].events():
                events.append(event)

        c.tg.start_soon(collect)
        await c.settle(5)
        await c.start("n5")
        await c.settle(5)
        await c.stop("n5")
        await c.settle(5)
        kinds = [type(e).__name__ for e in events]
        assert "MembersChanged" in kinds
        assert any(isinstance(e, hedgeplug.MembersChanged) and [m.id for m in e.left] == ["n5"] for e in events)
        assert ("started", "n5") in seen and ("stopping", "n5") in seen
        assert any(k == "leader" for k, _ in seen) and any(k == "members" for k, _ in seen)
        c.tg.cancel_scope.cancel()

    run(backend, body, n=2, registry=registry)


def test_wrong_cluster_frames_are_dropped_and_counted(backend):
    async def body(c: Cluster):
        await c.settle(5)
        node = c.nodes["n0"]
        from hedgeplug.wire import Codec, Envelope, Kind

        codec = Codec("another-cluster")
        frame = codec.encode(Envelope("another-cluster", "x", "heartbeat", 1, Kind.MESSAGE, {"op": "beat"}))
        assert await node.parts.dispatcher.on_frame(frame, "test") is None
        assert await node.parts.dispatcher.on_frame(b"garbage", "test") is None
        assert node.counters["drop.wrong-cluster"] == 1
        assert node.counters["drop.not-hedgeplug"] == 1
        assert c.agreed()

    run(backend, body)


def test_no_two_leaders_while_leadership_moves(backend):
    """Invariant 1 sampled densely while the leader is killed and stopped."""

    async def body(c: Cluster):
        violations = []

        async def watch():
            while True:
                if len(c.leaders()) > 1:
                    violations.append(c.leaders())
                await anyio.sleep(0.005)

        c.tg.start_soon(watch)
        await c.settle(5)
        tokens = [c.nodes[c.leaders()[0]].token]
        c.kill(c.leaders()[0])
        await c.start("n7")
        await c.settle(5)
        tokens.append(c.nodes[c.leaders()[0]].token)
        await c.stop(c.leaders()[0])
        await c.settle(5)
        tokens.append(c.nodes[c.leaders()[0]].token)
        assert violations == []
        assert tokens == sorted(set(tokens))
        c.tg.cancel_scope.cancel()

    run(backend, body, n=4)


def test_streams_carry_ordered_values_both_ways(backend):
    async def body(c: Cluster):
        await c.settle(5)

        async def echo(message, stream):
            assert message.payload == {"hello": "n1"}
            async for value in stream:
                await stream.send(value * 2)

        c.nodes["n0"].channel("numbers").handle_streams(echo)
        async with await c.nodes["n1"].open_stream("n0", "numbers", {"hello": "n1"}) as stream:
            got = []
            for i in range(50):
                await stream.send(i)
                got.append(await stream.receive())
        assert got == [i * 2 for i in range(50)]

    run(backend, body)


def test_metadata_updates_reach_every_view(backend):
    async def body(c: Cluster):
        await c.settle(5)
        follower = next(n for n in c.live() if not n.is_leader)
        leader = next(n for n in c.live() if n.is_leader)
        await follower.set_meta({"zone": "b"})
        await leader.set_meta({"role": "primary"})
        with anyio.fail_after(3):
            while not all(
                n.view.get(follower.id).metadata == {"zone": "b"}
                and n.view.get(leader.id).metadata == {"role": "primary"}
                for n in c.live()
            ):
                await anyio.sleep(0.02)
        with pytest.raises(hedgeplug.HedgeplugError, match="strings"):
            await follower.set_meta({"n": 1})
        with pytest.raises(hedgeplug.HedgeplugError, match="4 KiB"):
            await follower.set_meta({"big": "x" * 5000})

    run(backend, body)
