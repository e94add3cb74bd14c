"""The timing hooks (store calls, send, broadcast) and the HTTP route hook,
on real nodes over loopback tcp with the lease in a sqlite file."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

import hedgeplug
from hedgeplug.errors import StoreError
from hedgeplug.hookspecs import hookimpl
from hedgeplug.node.metering import MeteredLock, error_kind, timed, timed_stream
from hedgeplug.node.routes import answer, plugin_routes
from hedgeplug.registry import Registry

BUILT_IN = ["sqlite", "tcp", "heartbeat", "direct"]
_names = itertools.count()


def config(name: str, lease: Path) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": lease.stem, "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(lease), "ttl": "1s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "100ms"},
    }


class Recorder:
    """A plugin implementing the timing hooks, recording what they report."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.store: list[tuple[str, str, float, str | None]] = []
        self.messaging: list[tuple[str, str, float, str | None]] = []

    @hookimpl
    def hedgeplug_store_call(self, node: Any, operation: str, seconds: float, error: str | None) -> None:
        self.store.append((node.id, operation, seconds, error))

    @hookimpl
    def hedgeplug_messaging_call(self, node: Any, operation: str, seconds: float, error: str | None) -> None:
        self.messaging.append((node.id, operation, seconds, error))


@pytest.mark.anyio
async def test_without_an_implementation_nothing_is_wrapped(tmp_path: Path) -> None:
    registry = Registry.load(only=BUILT_IN)
    async with hedgeplug.open_node(config("plain", tmp_path / "plain.db"), registry=registry) as node:
        assert node.parts.election.lock is node.parts.lock
        assert not node._meter.messaging
        assert plugin_routes(node) == {}


@pytest.mark.anyio
async def test_store_calls_send_and_broadcast_are_reported(tmp_path: Path) -> None:
    recorder = Recorder()
    registry = Registry.load(only=BUILT_IN, extra=[recorder])
    lease = tmp_path / f"timed{next(_names)}.db"
    async with hedgeplug.open_node(config("leader", lease), registry=registry) as leader:
        assert isinstance(leader.parts.election.lock, MeteredLock)
        leader.on_send(lambda payload: payload)
        leader.on_broadcast(lambda payload: payload)
        await leader.wait_leader(10)
        async with hedgeplug.open_node(config("follower", lease), registry=registry) as follower:
            with anyio.fail_after(10):
                while len(follower.view) < 2 or follower.leader is None:
                    await anyio.sleep(0.02)
            with anyio.fail_after(10):  # the leader renews every ttl/4
                while not any(op == "renew" for _n, op, _s, _e in recorder.store):
                    await anyio.sleep(0.02)
            assert await follower.send("x", timeout=5) == "x"
            assert len(await follower.broadcast_all("y", timeout=5)) == 2
            with pytest.raises(hedgeplug.RemoteError):
                leader.on_send(lambda payload: 1 / 0)
                await follower.send("boom", timeout=5)
    operations = {(node, op) for node, op, _s, error in recorder.store if error is None}
    assert {("leader", "current"), ("leader", "acquire"), ("leader", "renew"), ("leader", "release")} <= operations
    assert ("follower", "current") in operations
    assert all(seconds >= 0 for *_rest, seconds, _e in recorder.store)
    messaging = [(node, op, error) for node, op, _s, error in recorder.messaging]
    assert messaging == [
        ("follower", "send", None),
        ("follower", "broadcast", None),
        ("follower", "send", "RemoteError"),
    ]


@pytest.mark.anyio
async def test_error_kinds() -> None:
    reported: list[tuple[str, str | None]] = []

    def report(operation: str, seconds: float, error: str | None) -> None:
        reported.append((operation, error))

    async def fail(exc: Exception) -> None:
        raise exc

    with pytest.raises(StoreError):
        await timed("acquire", fail(StoreError("down")), report)
    with pytest.raises(TimeoutError):
        await timed("renew", fail(TimeoutError()), report)
    with anyio.move_on_after(0.01):
        await timed("current", anyio.sleep(5), report)
    assert reported == [("acquire", "StoreError"), ("renew", "timeout"), ("current", "cancelled")]
    assert error_kind(ConnectionRefusedError()) == "ConnectionRefusedError"


@pytest.mark.anyio
async def test_a_stream_read_to_its_end_or_closed_early() -> None:
    reported: list[tuple[str, str | None]] = []

    def report(operation: str, seconds: float, error: str | None) -> None:
        reported.append((operation, error))

    async def three() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    assert [i async for i in timed_stream("broadcast", three(), report)] == [0, 1, 2]
    async with aclosing(timed_stream("broadcast", three(), report)) as items:
        async for _item in items:
            break  # the caller stops reading early
    assert reported == [("broadcast", None), ("broadcast", "closed")]


class Routes:
    __name__ = "routes"

    @hookimpl
    def hedgeplug_http_routes(self, node: Any) -> dict[str, Any]:
        return {
            "/readyz": lambda: (200, "text/plain", b"not mine"),  # a core path: refused
            "no-slash": lambda: (200, "text/plain", b""),
            "/fine": lambda: (200, "text/plain; charset=utf-8", node.id.encode()),
            "/broken": lambda: 1 / 0,
            "/malformed": lambda: ("200", "text/plain", "text"),
        }


class Raising:
    __name__ = "raising"

    @hookimpl
    def hedgeplug_http_routes(self, node: Any) -> dict[str, Any]:
        raise RuntimeError("no routes today")


@pytest.mark.anyio
async def test_plugin_routes_and_their_answers(tmp_path: Path) -> None:
    registry = Registry.load(only=BUILT_IN, extra=[Routes(), Raising()])
    async with hedgeplug.open_node(config("routed", tmp_path / "routes.db"), registry=registry) as node:
        routes = plugin_routes(node)
        assert set(routes) == {"/fine", "/broken", "/malformed"}
        assert answer(routes["/fine"]) == (200, "text/plain; charset=utf-8", b"routed")
        status, content_type, body = answer(routes["/broken"])
        assert status == 500 and b"ZeroDivisionError" in body
        assert answer(routes["/malformed"])[0] == 500
        assert node._observers.errors == 1  # the raising plugin, switched off for this node
