"""Real nodes in this process (tcp over loopback, the lease in a sqlite file),
the plugin loaded from its entry point: the metrics follow what the nodes do."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import anyio
import hedgeplug
import pytest
from hedgeplug.node.routes import answer, plugin_routes
from hedgeplug.registry import Registry
from scrape import families, parse, scrape, value

import hedgeplug_prometheus

_names = itertools.count()

# Every family the plugin promises (names as the parser reports them: counters without _total).
FAMILIES = {
    "hedgeplug_is_leader",
    "hedgeplug_fencing_token",
    "hedgeplug_newest_token",
    "hedgeplug_view_members",
    "hedgeplug_view_version_token",
    "hedgeplug_view_version_seq",
    "hedgeplug_uptime_seconds",
    "hedgeplug_step_downs",
    "hedgeplug_node_events",
    "hedgeplug_transport_frames",
    "hedgeplug_transport_bytes",
    "hedgeplug_channel_frames",
    "hedgeplug_channel_bytes",
    "hedgeplug_dropped_frames",
    "hedgeplug_joins",
    "hedgeplug_leaves",
    "hedgeplug_leader_changes",
    "hedgeplug_failovers",
    "hedgeplug_store_call_seconds",
    "hedgeplug_store_errors",
    "hedgeplug_send_seconds",
    "hedgeplug_send_errors",
    "hedgeplug_broadcast_seconds",
    "hedgeplug_broadcast_errors",
}


def config(name: str, cluster: str, lease: Path) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": cluster, "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(lease), "ttl": "1s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "100ms", "missed": 3},
    }


class Cluster:
    """Nodes of one cluster, each in its own task so one can stop or be killed."""

    def __init__(self, tg: Any, tmp_path: Path) -> None:
        self.tg = tg
        self.cluster = f"prom{os.getpid()}x{next(_names)}"
        self.lease = tmp_path / "lease.db"
        self.registry = Registry.load()
        self.nodes: dict[str, hedgeplug.Node] = {}
        self._stops: dict[str, anyio.Event] = {}

    async def start(self, short: str) -> hedgeplug.Node:
        name = f"{self.cluster}-{short}"
        ready, stop = anyio.Event(), anyio.Event()
        self._stops[name] = stop

        async def run() -> None:
            cfg = config(name, self.cluster, self.lease)
            async with hedgeplug.open_node(cfg, registry=self.registry) as node:
                node.on_send(lambda payload: {"echo": payload})
                node.on_broadcast(lambda payload: payload)
                self.nodes[name] = node
                ready.set()
                await stop.wait()
            self.nodes.pop(name, None)

        self.tg.start_soon(run)
        with anyio.fail_after(10):
            await ready.wait()
        return self.nodes[name]

    async def stop(self, node: hedgeplug.Node) -> None:
        self._stops[node.id].set()
        with anyio.fail_after(10):
            while node.id in self.nodes:
                await anyio.sleep(0.01)

    def kill(self, node: hedgeplug.Node) -> None:
        self.nodes.pop(node.id)
        node.kill()

    async def wait(self, what: str, check: Any, timeout: float = 10.0) -> None:
        with anyio.move_on_after(timeout):
            while not check():
                await anyio.sleep(0.02)
            return
        raise AssertionError(f"not within {timeout}s: {what}")

    async def leader(self) -> hedgeplug.Node:
        await self.wait("one leader", lambda: sum(n.is_leader for n in self.nodes.values()) == 1)
        return next(n for n in self.nodes.values() if n.is_leader)


def metrics_of(node: hedgeplug.Node) -> dict:
    """Scrape through the node's route, as its health server would, on its loop."""
    status, content_type, body = answer(plugin_routes(node)["/metrics"])
    assert status == 200 and content_type.startswith("text/plain")
    return parse(body.decode())


def labels(node: hedgeplug.Node) -> dict[str, str]:
    return {"cluster": node.cluster, "node": node.id}


@pytest.mark.anyio
async def test_every_family_is_served_and_follows_leadership_and_joins(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        first = await cluster.start("a")
        assert await cluster.leader() is first
        routes = plugin_routes(first)
        assert set(routes) == {"/metrics"}
        text = answer(routes["/metrics"])[2].decode()
        assert FAMILIES <= families(text), FAMILIES - families(text)
        m = metrics_of(first)
        me = labels(first)
        assert value(m, "hedgeplug_is_leader", **me) == 1.0
        # newest_token: first.token reads 0 for an instant if a late renewal
        # (a loaded machine, ttl 1s) makes the leader step down and take it back.
        assert value(m, "hedgeplug_fencing_token", **me) == first.status()["newest_token"] > 0
        joins_before = value(m, "hedgeplug_joins_total", **me)
        assert value(m, "hedgeplug_store_call_seconds_count", operation="acquire", **me) >= 1

        second = await cluster.start("b")
        await cluster.wait("both see two members", lambda: all(len(n.view) == 2 for n in (first, second)))
        # Heartbeat frames by channel, either way. (Two clean-clone runs read
        # "in" as 0 right after the view changed although the join came in as
        # a beat; not understood yet, so the test waits for traffic either way.)
        def heartbeat_frames() -> float:
            now = metrics_of(first)
            return sum(
                value(now, "hedgeplug_channel_frames_total", 0.0, channel="heartbeat", direction=d, **me)
                for d in ("in", "out")
            )

        await cluster.wait("the leader counted heartbeat frames", lambda: heartbeat_frames() > 0)
        m = metrics_of(first)
        assert value(m, "hedgeplug_joins_total", **me) == joins_before + 1
        assert value(m, "hedgeplug_view_members", **me) == 2
        assert value(m, "hedgeplug_view_version_token", **me) == first.view.version.token
        assert value(m, "hedgeplug_view_version_seq", **me) == first.view.version.seq
        assert value(m, "hedgeplug_transport_frames_total", direction="in", **me) > 0
        follower = metrics_of(second)
        assert value(follower, "hedgeplug_is_leader", **labels(second)) == 0.0
        # The follower learns a retaken lease (a late renewal on a loaded
        # machine) one poll later: wait for it to agree rather than race it.
        await cluster.wait(
            "the follower reports the leader's token",
            lambda: value(metrics_of(second), "hedgeplug_fencing_token", **labels(second))
            == first.status()["newest_token"],
        )

        await cluster.stop(second)
        await cluster.wait("the leader sees one member", lambda: len(first.view) == 1)
        assert value(metrics_of(first), "hedgeplug_leaves_total", **me) >= 1
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_failover_counts_on_the_survivor(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        old = await cluster.start("a")
        assert await cluster.leader() is old
        survivor = await cluster.start("b")
        await cluster.wait("the follower knows the leader", lambda: survivor.leader is not None)
        me = labels(survivor)
        before = metrics_of(survivor)
        assert value(before, "hedgeplug_failovers_total", default=0.0, **me) == 0.0
        changes = value(before, "hedgeplug_leader_changes_total", **me)

        cluster.kill(old)  # no release: the survivor takes over once the lease expires
        assert await cluster.leader() is survivor
        after = metrics_of(survivor)
        assert value(after, "hedgeplug_failovers_total", **me) == 1.0
        assert value(after, "hedgeplug_leader_changes_total", **me) > changes
        assert value(after, "hedgeplug_is_leader", **me) == 1.0
        assert value(after, "hedgeplug_newest_token", **me) == survivor.token
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_send_and_broadcast_are_timed(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        leader = await cluster.start("a")
        await cluster.leader()
        follower = await cluster.start("b")
        await cluster.wait("both see two members", lambda: all(len(n.view) == 2 for n in (leader, follower)))
        me = labels(follower)
        before = metrics_of(follower)
        sends = value(before, "hedgeplug_send_seconds_count", default=0.0, **me)

        assert await follower.send("ping", timeout=5) == {"echo": "ping"}
        replies = await follower.broadcast_all("hello", timeout=5)
        assert sorted(r.ok for r in replies) == [True, True]

        after = metrics_of(follower)
        assert value(after, "hedgeplug_send_seconds_count", **me) == sends + 1
        assert value(after, "hedgeplug_send_seconds_sum", **me) > value(before, "hedgeplug_send_seconds_sum", default=0.0, **me)
        assert value(after, "hedgeplug_broadcast_seconds_count", **me) == 1
        assert value(after, "hedgeplug_channel_frames_total", channel="app.send", direction="out", **me) == 1
        assert value(after, "hedgeplug_channel_bytes_total", channel="app.send", direction="out", **me) > 0

        # The leader's handler raising is a RemoteError: counted by kind.
        leader.on_send(lambda payload: 1 / 0)
        with pytest.raises(hedgeplug.RemoteError):
            await follower.send("boom", timeout=5)
        failed = metrics_of(follower)
        assert value(failed, "hedgeplug_send_errors_total", kind="RemoteError", **me) == 1
        assert value(failed, "hedgeplug_send_seconds_count", **me) == sends + 2
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_fallback_listener_serves_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hedgeplug_prometheus.LISTEN_ENV, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        node = await cluster.start("a")
        await cluster.leader()
        address = hedgeplug_prometheus.LISTENER.address
        assert address is not None
        # The scrape runs in the listener's thread; the node is read on its own loop.
        status, content_type, text = await scrape(f"http://{address[0]}:{address[1]}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert value(parse(text), "hedgeplug_is_leader", **labels(node)) == 1.0
        await cluster.stop(node)
        assert hedgeplug_prometheus.LISTENER.address is None  # the last node closed it
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_bad_listen_address_is_named_and_the_node_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(hedgeplug_prometheus.LISTEN_ENV, "localhost")
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        node = await cluster.start("a")
        await cluster.leader()
        assert hedgeplug_prometheus.LISTENER.address is None
        assert hedgeplug_prometheus.LISTEN_ENV in caplog.text
        assert value(metrics_of(node), "hedgeplug_is_leader", **labels(node)) == 1.0
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_metrics_are_served_on_the_health_port(tmp_path: Path) -> None:
    """With [health] listen set, /metrics sits beside /livez and /readyz."""
    cfg = config("h1", "health-metrics", tmp_path / "lease.db")
    cfg["health"] = {"listen": "127.0.0.1:0"}
    async with hedgeplug.open_node(cfg) as node:
        await node.wait_leader(5)
        status, _, text = await scrape(f"http://{node.lifecycle.health_address}/metrics")
        assert status == 200 and "hedgeplug_is_leader" in families(text)
        assert value(parse(text), "hedgeplug_is_leader", node="h1") == 1.0


@pytest.mark.anyio
async def test_a_stopped_nodes_series_are_gone(tmp_path: Path) -> None:
    """A process that runs nodes one after another must not keep the finished
    ones' series: /metrics (rendered on a node's loop) would grow without end."""
    async with anyio.create_task_group() as tg:
        cluster = Cluster(tg, tmp_path)
        stays = await cluster.start("a")
        await cluster.leader()
        goes = await cluster.start("b")
        assert await goes.send("x", timeout=5) == {"echo": "x"}
        assert f'node="{goes.id}"' in answer(plugin_routes(stays)["/metrics"])[2].decode()
        await cluster.stop(goes)
        text = answer(plugin_routes(stays)["/metrics"])[2].decode()
        assert f'node="{goes.id}"' not in text
        assert f'node="{stays.id}"' in text
        tg.cancel_scope.cancel()
