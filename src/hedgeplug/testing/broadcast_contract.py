"""The broadcast contract: what every broadcast strategy promises, checked on
real nodes in this process that talk over loopback tcp (sqlite lock in a
temporary directory, heartbeat membership).

A strategy author subclasses `BroadcastContract` and points one fixture at
the strategy, by registered name and options; a strategy that is not an
installed entry point comes in as a plugin object (with a
`hedgeplug_register_broadcasts` hook implementation)::

    import pytest
    from hedgeplug.testing.broadcast_contract import BroadcastContract, BroadcastUnderTest
    import my_plugin

    class TestMyBroadcast(BroadcastContract):
        @pytest.fixture
        def broadcast(self):
            return BroadcastUnderTest("tree", {"fanout": 3}, plugins=(my_plugin,))

The sender's strategy is built the way a node builds it, `factory(options,
context)` on the sender's node context, and asked to deliver on the channel
of the node's own `broadcast`; every node answers through `on_broadcast`.
Targets are given as members directly (not taken from a view), so dead
and unreachable ones can be among them. What is checked, one test each:

- every target gets the payload exactly once and answers; the sender gets
  exactly one ok Reply per target, naming its member id and address;
- replies are yielded as they arrive (a fast target's reply comes before a
  slow one has answered), and targets are asked concurrently;
- a target that does not answer within the timeout is an ok=False Reply
  with an error, not an exception, and does not hold up the others;
- partial failure: a crashed node, an address nobody listens at and a
  target whose handler raises each give an ok=False Reply with an error,
  while the live targets answer ok;
- an empty target list yields nothing and returns at once;
- the sender may be among the targets and answers itself.

Each check is also a plain coroutine function (`check_delivers_to_every_target`,
...) taking a `BroadcastCluster`, raising AssertionError with what went wrong.
The tests run under pytest's anyio plugin (`anyio_backend` picks the backend).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from hedgeplug import Member, Node, Registry, Reply, open_node
from hedgeplug.node import APP_BROADCAST

__all__ = [
    "BroadcastCluster",
    "BroadcastContract",
    "BroadcastUnderTest",
    "Target",
    "broadcast_cluster",
    "check_delivers_to_every_target",
    "check_empty_targets",
    "check_partial_failure",
    "check_replies_as_they_arrive",
    "check_sender_among_targets",
    "check_timeout_is_a_failed_reply",
    "free_loopback_address",
]

CHANNEL = APP_BROADCAST  # the channel a node's own broadcast uses
SIZE = 5  # nodes in the cluster; the first one sends
BOUND = 10.0  # no check may take longer than this (wall seconds)


@attrs.frozen
class BroadcastUnderTest:
    """The strategy the contract runs: `name` as in `[broadcast] use = ...`,
    its `options` (config keys), `plugins` to add to the registry when
    the strategy is not an installed entry point, and the [membership]
    section of the nodes (a strategy may need a particular membership)."""

    name: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    plugins: Sequence[Any] = attrs.field(default=(), converter=tuple)
    membership: Mapping[str, Any] = attrs.field(
        factory=lambda: {"use": "heartbeat", "interval": "0.5s"}, converter=dict
    )


@attrs.define
class Target:
    """How one node answers on the test channel, and what it received."""

    node: Node
    delay: float = 0.0
    fail: bool = False
    received: list[tuple[Any, str]] = attrs.Factory(list)

    @property
    def member(self) -> Member:
        return Member(self.node.id, self.node.address)

    async def handle(self, payload: Any, sender: str) -> Any:
        self.received.append((payload, sender))
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise RuntimeError(f"{self.node.id} refuses on purpose")
        return {"from": self.node.id, "got": payload}


@attrs.define
class BroadcastCluster:
    """Running nodes; `targets[0]` is the sender, `deliver` uses its strategy."""

    strategy: BroadcastUnderTest
    targets: list[Target]
    sender_strategy: Any
    stops: dict[str, anyio.Event]
    done: dict[str, anyio.Event]

    @property
    def sender(self) -> Target:
        return self.targets[0]

    @property
    def others(self) -> list[Target]:
        return self.targets[1:]

    async def deliver(
        self, payload: Any, members: Sequence[Member], timeout: float
    ) -> list[tuple[float, Reply]]:
        """Replies with the seconds after the start each arrived at (bounded)."""
        started = anyio.current_time()
        got: list[tuple[float, Reply]] = []
        with anyio.fail_after(BOUND):
            async for reply in self.sender_strategy.deliver(CHANNEL, payload, members, timeout):
                got.append((anyio.current_time() - started, reply))
        return got

    async def crash(self, target: Target) -> None:
        """Crash a node (no goodbye) and wait until it is down and its port closed."""
        target.node.kill()
        with anyio.fail_after(BOUND):
            await self.done[target.node.id].wait()


def free_loopback_address() -> str:
    """A loopback tcp address nothing listens at (a port just freed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def _config(strategy: BroadcastUnderTest, node_id: str, cluster: str, db: Path) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": cluster, "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(db), "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "connect_timeout": "1s"},
        "membership": dict(strategy.membership),
        "broadcast": {"use": strategy.name, **strategy.options},
    }


@asynccontextmanager
async def broadcast_cluster(
    strategy: BroadcastUnderTest, directory: Path, size: int = SIZE
) -> AsyncIterator[BroadcastCluster]:
    """`size` nodes over loopback tcp, each answering on the test channel."""
    registry = Registry.load(extra=list(strategy.plugins))
    db = directory / "broadcast-contract.db"
    targets: list[Target] = []
    stops: dict[str, anyio.Event] = {}
    done: dict[str, anyio.Event] = {}
    async with anyio.create_task_group() as tg:

        async def run_node(node_id: str, *, task_status: Any) -> None:
            stop = stops[node_id] = anyio.Event()
            finished = done[node_id] = anyio.Event()
            config = _config(strategy, node_id, "bcast", db)
            try:
                async with open_node(config, registry=registry) as node:
                    target = Target(node)
                    node.on_broadcast(target.handle)
                    targets.append(target)
                    task_status.started()
                    await stop.wait()
            finally:
                finished.set()

        with anyio.fail_after(BOUND):
            for i in range(size):
                await tg.start(run_node, f"b{i}")
        sender = targets[0].node
        impl = registry.get("broadcast", strategy.name)
        built = impl.create(sender.config.broadcast.options, sender.ctx)
        try:
            yield BroadcastCluster(strategy, targets, built, stops, done)
        finally:
            for stop in stops.values():
                stop.set()


def _by_member(replies: list[tuple[float, Reply]]) -> dict[str, Reply]:
    ids = [r.member for _, r in replies]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicated, f"more than one reply from {duplicated}: {replies}"
    return {r.member: r for _, r in replies}


def _expect_ok(reply: Reply, target: Target, payload: Any) -> None:
    assert reply.ok, f"{target.node.id} answered but its reply is not ok: {reply}"
    assert reply.error is None, reply
    assert reply.address == target.node.address, reply
    assert reply.payload == {"from": target.node.id, "got": payload}, reply


def _expect_failed(reply: Reply, what: str) -> None:
    assert not reply.ok, f"{what}: the reply should have ok=False: {reply}"
    assert isinstance(reply.error, str) and reply.error, f"{what}: no error text: {reply}"


# ---------------------------------------------------------------- checks


async def check_delivers_to_every_target(cluster: BroadcastCluster) -> None:
    payload = {"n": 1, "text": "to all"}
    replies = _by_member(await cluster.deliver(payload, [t.member for t in cluster.others], 5.0))
    expected = sorted(t.node.id for t in cluster.others)
    assert sorted(replies) == expected, f"replies from {sorted(replies)}, targets {expected}"
    for target in cluster.others:
        _expect_ok(replies[target.node.id], target, payload)
        assert target.received == [(payload, cluster.sender.node.id)], (
            f"{target.node.id} received {target.received}, wanted the payload once"
        )
    assert cluster.sender.received == [], "the sender was not a target but received the payload"


async def check_replies_as_they_arrive(cluster: BroadcastCluster) -> None:
    # Slowest first in the target list: arrival order must follow the delays.
    step = 0.5
    slow_first = list(reversed(cluster.others))
    for i, target in enumerate(cluster.others):
        target.delay = i * step
    replies = await cluster.deliver("hurry", [t.member for t in slow_first], 5.0)
    order = [r.member for _, r in replies]
    assert order == [t.node.id for t in cluster.others], (
        f"replies came in order {order}; delays were {[(t.node.id, t.delay) for t in cluster.others]}"
    )
    first_at, slowest = replies[0][0], cluster.others[-1].delay
    assert first_at < slowest, (
        f"the first reply was yielded {first_at:.2f}s after the start, not before the "
        f"slowest target answered ({slowest}s): replies must be yielded as they arrive"
    )
    total = sum(t.delay for t in cluster.others)
    assert replies[-1][0] < total, (
        f"all replies took {replies[-1][0]:.2f}s, the delays add up to {total}s: "
        "targets must be asked concurrently"
    )
    assert all(r.ok for _, r in replies), replies


async def check_timeout_is_a_failed_reply(cluster: BroadcastCluster) -> None:
    silent, *answering = cluster.others
    silent.delay = 60.0
    timeout = 0.5
    replies = await cluster.deliver("anyone?", [t.member for t in cluster.others], timeout)
    by_member = _by_member(replies)
    assert sorted(by_member) == sorted(t.node.id for t in cluster.others), replies
    _expect_failed(by_member[silent.node.id], f"{silent.node.id} never answers")
    for target in answering:
        _expect_ok(by_member[target.node.id], target, "anyone?")
    assert replies[-1][0] < timeout + 3.0, (
        f"the broadcast took {replies[-1][0]:.2f}s with a {timeout}s timeout per target"
    )
    assert replies[-1][1].member == silent.node.id, "the timed-out reply should come last"


async def check_partial_failure(cluster: BroadcastCluster) -> None:
    crashed, refusing, *alive = cluster.others
    await cluster.crash(crashed)
    refusing.fail = True
    nowhere = Member("nowhere", free_loopback_address())
    members = [crashed.member, refusing.member, nowhere, *(t.member for t in alive)]
    replies = _by_member(await cluster.deliver("partial", members, 3.0))
    assert sorted(replies) == sorted(m.id for m in members), replies
    _expect_failed(replies[crashed.node.id], f"{crashed.node.id} crashed")
    _expect_failed(replies[refusing.node.id], f"{refusing.node.id}'s handler raised")
    _expect_failed(replies["nowhere"], f"nothing listens at {nowhere.address}")
    assert replies["nowhere"].address == nowhere.address, replies["nowhere"]
    for target in alive:
        _expect_ok(replies[target.node.id], target, "partial")


async def check_empty_targets(cluster: BroadcastCluster) -> None:
    with anyio.fail_after(1.0):
        replies = await cluster.deliver("to nobody", [], 5.0)
    assert replies == [], replies
    assert all(t.received == [] for t in cluster.targets)


async def check_sender_among_targets(cluster: BroadcastCluster) -> None:
    replies = _by_member(await cluster.deliver("me too", [t.member for t in cluster.targets], 5.0))
    assert sorted(replies) == sorted(t.node.id for t in cluster.targets), replies
    for target in cluster.targets:
        _expect_ok(replies[target.node.id], target, "me too")
    sender = cluster.sender
    assert sender.received == [("me too", sender.node.id)], sender.received


# ---------------------------------------------------------------- the suite

Check = Callable[[BroadcastCluster], Awaitable[None]]


@pytest.mark.anyio
class BroadcastContract:
    """Subclass and provide the `broadcast` fixture (a BroadcastUnderTest)."""

    @pytest.fixture
    def broadcast(self) -> BroadcastUnderTest:
        raise NotImplementedError("a BroadcastContract subclass must provide the broadcast fixture")

    async def _run(self, strategy: BroadcastUnderTest, directory: Path, check: Check) -> None:
        async with broadcast_cluster(strategy, directory) as cluster:
            await check(cluster)

    async def test_delivers_to_every_target(
        self, broadcast: BroadcastUnderTest, tmp_path: Path
    ) -> None:
        await self._run(broadcast, tmp_path, check_delivers_to_every_target)

    async def test_replies_as_they_arrive(
        self, broadcast: BroadcastUnderTest, tmp_path: Path
    ) -> None:
        await self._run(broadcast, tmp_path, check_replies_as_they_arrive)

    async def test_timeout_is_a_failed_reply(
        self, broadcast: BroadcastUnderTest, tmp_path: Path
    ) -> None:
        await self._run(broadcast, tmp_path, check_timeout_is_a_failed_reply)

    async def test_partial_failure(self, broadcast: BroadcastUnderTest, tmp_path: Path) -> None:
        await self._run(broadcast, tmp_path, check_partial_failure)

    async def test_empty_targets(self, broadcast: BroadcastUnderTest, tmp_path: Path) -> None:
        await self._run(broadcast, tmp_path, check_empty_targets)

    async def test_sender_among_targets(
        self, broadcast: BroadcastUnderTest, tmp_path: Path
    ) -> None:
        await self._run(broadcast, tmp_path, check_sender_among_targets)
