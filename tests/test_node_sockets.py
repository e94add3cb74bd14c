"""Nodes in this process over the real sqlite lock and real loopback sockets,
with a cluster key: sealed frames, sealed streams, and the blocking facade."""

from __future__ import annotations

import re
import threading

import anyio
import pytest

import hedgeplug
from hedgeplug.plugin import TransportError


def config(tmp_path, name, transport="tcp", key="s3cret"):
    return {
        "node": {"id": name, "cluster": "sockets", "key": key, "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": transport, "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


async def settle(nodes, timeout=10):
    with anyio.fail_after(timeout):
        while True:
            ids = {n.id for n in nodes}
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) == 1 and all(n.view.ids == ids for n in nodes):
                return leaders[0]
            await anyio.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_sealed_cluster_over_real_sockets(tmp_path, transport):
    async with (
        hedgeplug.open_node(config(tmp_path, "a", transport)) as a,
        hedgeplug.open_node(config(tmp_path, "b", transport)) as b,
        hedgeplug.open_node(config(tmp_path, "c", transport)) as c,
    ):
        leader = await settle([a, b, c])
        for n in (a, b, c):
            n.on_send(lambda payload, sender, me=n.id: [me, sender, payload])
            n.on_broadcast(lambda payload, me=n.id: me)
        follower = next(n for n in (a, b, c) if n is not leader)
        assert await follower.send({"x": 1}, timeout=5) == [leader.id, follower.id, {"x": 1}]
        replies = await follower.broadcast_all("hi")
        assert sorted(r.payload for r in replies) == ["a", "b", "c"]

        async def doubler(message, stream):
            async for value in stream:
                await stream.send(value * 2)

        leader.channel("s").handle_streams(doubler)
        async with await follower.open_stream(leader.id, "s") as stream:
            for i in range(20):
                await stream.send(i)
                assert await stream.receive() == 2 * i
        assert not any(k.startswith("drop.") for k in leader.counters)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_a_malformed_peer_address_is_an_error_not_a_crash(tmp_path, transport):
    async with hedgeplug.open_node(config(tmp_path, "a", transport)) as a:
        await settle([a])
        for bad in ("no-port-here", "[not-v6]:1", "host:99999"):
            with pytest.raises(TransportError, match=re.escape(repr(bad))):
                await a.open_stream(bad)
        assert a.is_leader and a.view.ids == {"a"}


@pytest.mark.anyio
async def test_a_node_with_the_wrong_key_is_not_admitted(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        # The intruder joins once a or b holds the lease (while it is valid,
        # nobody else can take it): its beats fail authentication.
        leader = await settle([a, b])
        async with hedgeplug.open_node(config(tmp_path, "intruder", key="guess")) as intruder:
            with anyio.fail_after(5):
                while leader.counters.get("drop.auth", 0) < 3:
                    await anyio.sleep(0.05)
            assert "intruder" not in a.view.ids and "intruder" not in b.view.ids
            assert intruder.view.ids <= {"intruder"}


def test_blocking_facade_from_threads(tmp_path):
    with hedgeplug.BlockingNode(config(tmp_path, "solo", key="")) as node:
        node.on_send(lambda payload: payload.upper())
        lease = node.wait_leader(timeout=10)
        assert lease.holder == "solo" and node.is_leader
        results = []

        def worker():
            results.append(node.send("hello", timeout=5))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == ["HELLO"] * 4
        assert node.status()["is_leader"] is True
        assert [r.member for r in node.broadcast("x")] == ["solo"]
