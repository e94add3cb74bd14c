"""The version rule of hedgeplug.versions: what a node advertises, which wire
version it sends to whom, the control protocol's versions, and a mixed
cluster of real nodes in this process (loopback tcp, the sqlite lock) that
moves to the newest wire version by itself once its pinned members come
back unpinned. (tests/test_wire_versions_processes.py does the same with
`hedgeplug run` processes and the command.)"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import hedgeplug
from hedgeplug import versions, wire
from hedgeplug.errors import ConfigError, HedgeplugError, TransportError
from hedgeplug.versions import (
    ADVERTISED_KEY,
    WireVersions,
    advertised,
    control_answer,
    control_request,
    control_result,
    request_version,
    with_advertisement,
)
from hedgeplug.view import Member, View
from hedgeplug.wire import Codec, Envelope, Kind, WireError

CLUSTER = "wire-versions"


def member(name: str, wire_version: int | None, *, meta: dict[str, str] | None = None) -> Member:
    extra = {} if wire_version is None else {ADVERTISED_KEY: f"w{wire_version}c2"}
    return Member(name, f"127.0.0.1:{1000 + ord(name[0])}", {**(meta or {}), **extra})


class Viewed:
    """A view that can change, read the way a node's selector reads it."""

    def __init__(self, *members: Member) -> None:
        self.view = View.of(members)

    def __call__(self) -> View:
        return self.view


# ------------------------------------------------------------ advertisement


def test_a_node_advertises_the_newest_versions_it_speaks_and_keeps_the_key_to_itself():
    meta = with_advertisement({"zone": "a", "hp.v": "w9c9", "hp.other": "x"}, 2, 2)
    assert meta == {"zone": "a", "hp.v": "w2c2"}
    m = Member("n", "addr", meta)
    assert advertised(m) == (2, 2)
    assert m.metadata == {"zone": "a"}  # the application sees its own keys only
    assert advertised(Member("old", "addr", {"zone": "a"})) == (1, 1)  # release 0.1.0
    for garbage in ("", "w", "wxc2", "w2", "w2c", "2c2c2", "w" + "9" * 20 + "c1"):
        assert advertised(Member("n", "addr", {"hp.v": garbage})) == (1, 1), garbage


def test_the_pin_names_the_variable_and_the_versions_it_allows():
    assert versions.pinned("X", (1, 2), {}) == 2
    assert versions.pinned("X", (1, 2), {"X": " 1 "}) == 1
    with pytest.raises(ConfigError, match=r"environment X='3': expected one of 1, 2"):
        versions.pinned("X", (1, 2), {"X": "3"})


# ------------------------------------------------------------ selection


def test_members_of_the_view_get_the_lowest_newest_version_and_strangers_the_older():
    a, b, old = member("a", 2), member("b", 2), member("c", 1)
    viewed = Viewed(a, b)
    changes: list[str] = []
    chooser = WireVersions(2, viewed, changes.append)
    assert chooser.for_address(b.address) == 2 and chooser.in_use == 2
    assert chooser.for_address("127.0.0.1:9") == 1  # not in the view: a seed, a joiner
    viewed.view = View.of((a, b, old), seq=1)
    assert chooser.for_address(b.address) == 1 and chooser.for_address(old.address) == 1
    viewed.view = View.of((a, b, member("d", None)), seq=2)  # advertises nothing: 0.1.0
    assert chooser.for_address(b.address) == 1
    viewed.view = View.of((a, b, member("c", 2)), seq=3)  # c came back upgraded
    assert chooser.for_address(b.address) == 2
    # Counted from the first view with other members (alone, a node writes nothing).
    assert changes == ["wire.now-v2", "wire.now-v1", "wire.now-v2"]


def test_a_member_newer_than_this_node_is_sent_this_nodes_newest():
    viewed = Viewed(member("a", 3), member("b", 3))
    assert WireVersions(2, viewed).for_address(member("a", 3).address) == 2


def test_a_pinned_node_sends_only_the_older_version():
    viewed = Viewed(member("a", 2), member("b", 2))
    pinned = WireVersions(1, viewed)
    assert pinned.for_address(member("a", 2).address) == 1 and pinned.in_use == 1


def test_a_view_shared_by_many_nodes_is_summarized_once(monkeypatch):
    read: list[str] = []

    def address_of(m: Member) -> str:
        read.append(m.id)
        return m.address

    monkeypatch.setattr(versions, "_ADDRESS", address_of)
    viewed = Viewed(*(member(chr(ord("a") + i), 2) for i in range(10)))
    choosers = [WireVersions(2, viewed) for _ in range(50)]
    assert {c.for_address(member("a", 2).address) for c in choosers} == {2}
    assert len(read) == 10  # one pass over the members, not one per node


# ------------------------------------------------------------ codec


def envelope(payload: object = None) -> Envelope:
    return Envelope(CLUSTER, "n", "ch", 1, Kind.MESSAGE, payload)


@pytest.mark.parametrize("key", ["", "k"])
def test_a_frame_says_its_version_and_a_pinned_codec_reads_only_the_older(key):
    current, pin = Codec(CLUSTER, key), Codec(CLUSTER, key, send_version=1)
    for version in (1, 2):
        frame = current.encode(envelope(version), version)
        assert frame[2] == version
        assert current.decode(frame).version == version
    assert pin.decode(current.encode(envelope(), 1)).version == 1
    with pytest.raises(WireError, match="protocol version 2 \\(this node is pinned to 1\\)") as info:
        pin.decode(current.encode(envelope(), 2))
    assert info.value.reason == "version"
    with pytest.raises(ValueError, match="wire version 2 is not one this codec speaks"):
        pin.encode(envelope(), 2)


# ------------------------------------------------------------ control protocol


def test_control_requests_and_answers_in_each_version():
    assert control_request({"op": "status"}, 1) == {"op": "status"}
    request = control_request({"op": "status"}, 2)
    assert request == {"op": "status", "control": 2}
    assert request_version({"op": "status"}, 2) == 1  # an older command names no version
    assert request_version(request, 2) == 2
    assert request_version({"op": "status", "control": 3}, 1) == 1  # pinned: ignores it, as 0.1.0 did
    assert control_answer("r", 1) == "r" and control_answer("r", 2) == {"control": 2, "result": "r"}
    assert control_result({"control": 2, "result": "r"}, 2, "a") == "r"
    assert control_result({"id": "n"}, 2, "a") == {"id": "n"}  # a 0.1.0 node's bare answer
    assert control_result({"control": 2, "result": "r"}, 1, "a") == {"control": 2, "result": "r"}


def test_a_newer_or_malformed_control_version_gets_an_error_naming_both():
    with pytest.raises(HedgeplugError, match=r"version 3 is newer than this node speaks \(1-2\)"):
        request_version({"op": "status", "control": 3}, 2)
    with pytest.raises(HedgeplugError, match=r"version 0 is older than this node speaks \(1-2\)"):
        request_version({"op": "status", "control": 0}, 2)
    for bad in ("2", 2.0, True, None):
        with pytest.raises(HedgeplugError, match="must be an integer"):
            request_version({"op": "status", "control": bad}, 2)
    with pytest.raises(TransportError, match=r"answered in control protocol version 3; .* speaks 1-2"):
        control_result({"control": 3, "result": "r"}, 2, "a")


# ------------------------------------------------------------ a mixed cluster in this process


def config(tmp_path: Path, name: str) -> dict:
    return {
        "node": {"id": name, "cluster": CLUSTER, "stop_timeout": "2s", "key": "k"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


async def settle(nodes, timeout=15):
    with anyio.fail_after(timeout):
        while True:
            ids = {n.id for n in nodes}
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) == 1 and all(n.view.ids == ids for n in nodes):
                return leaders[0]
            await anyio.sleep(0.05)


def drops(node) -> dict[str, int]:
    status = node.status()
    found = {k: v for k, v in status["counters"].items() if k.startswith("drop.")}
    found.update({f"transport.{k}": v for k, v in status["transport"]["dropped"].items()})
    return found


async def traffic_round(nodes, rounds: int = 3) -> None:
    everyone = sorted(n.id for n in nodes)
    for i in range(rounds):
        for n in nodes:
            assert (await n.send(i, timeout=5))[1:] == [n.id, i]
            replies = await n.broadcast_all(i, timeout=5)
            assert sorted(r.payload for r in replies if r.ok) == everyone, replies
            async with await n.open_stream(nodes[(nodes.index(n) + 1) % len(nodes)].id, "echo") as s:
                with anyio.fail_after(5):
                    await s.send(i)
                    assert await s.receive() == 2 * i


async def serve(tmp_path: Path, name: str, pinned: bool, monkeypatch, *, task_status=anyio.TASK_STATUS_IGNORED):
    """Run node `name` (pinned to wire version 1 or not) until the event it hands back is set."""
    if pinned:
        monkeypatch.setenv(wire.SEND_VERSION_ENV, "1")  # read while the node is built
    try:
        async with hedgeplug.open_node(config(tmp_path, name)) as node:
            monkeypatch.delenv(wire.SEND_VERSION_ENV, raising=False)

            async def doubler(message, stream):
                async for value in stream:
                    await stream.send(value * 2)

            node.on_send(lambda payload, sender, me=node.id: [me, sender, payload])
            node.on_broadcast(lambda payload, me=node.id: me)
            node.channel("echo").handle_streams(doubler)
            stop = anyio.Event()
            task_status.started((node, stop))
            await stop.wait()
    finally:
        monkeypatch.delenv(wire.SEND_VERSION_ENV, raising=False)


@pytest.mark.anyio
async def test_a_mixed_cluster_speaks_the_older_version_until_its_pinned_members_come_back_upgraded(
    tmp_path, monkeypatch
):
    sent: dict[tuple[str, int], int] = {}
    encode = wire.Codec.encode

    def recording_encode(self, env, version=None):
        frame = encode(self, env, version)
        if env.cluster == CLUSTER:
            sent[(env.sender, frame[2])] = sent.get((env.sender, frame[2]), 0) + 1
        return frame

    monkeypatch.setattr(wire.Codec, "encode", recording_encode)
    plan = (("a", True), ("b", False), ("c", True), ("d", False))
    async with anyio.create_task_group() as tg:
        running = {name: await tg.start(serve, tmp_path, name, pinned, monkeypatch) for name, pinned in plan}
        nodes = {name: node for name, (node, _) in running.items()}
        await settle(list(nodes.values()))
        await traffic_round(list(nodes.values()))
        print(f"\nmixed: frames sent by (node, wire version): {dict(sorted(sent.items()))}")
        # Pinned members in every view: everyone writes version 1, and nothing is dropped
        # (a pinned node refuses version 2, so one frame of it would show as drop.version).
        assert {v for (_, v) in sent} == {1}
        assert all(sent.get((name, 1), 0) > 20 for name, _ in plan)
        assert {n: drops(node) for n, node in nodes.items()} == {n: {} for n in nodes}
        assert {n: node.status()["protocols"]["wire_in_use"] for n, node in nodes.items()} == dict.fromkeys(nodes, 1)

        for name in ("a", "c"):  # the rolling upgrade: each pinned node comes back unpinned
            running[name][1].set()
            with anyio.fail_after(10):
                while any(name in n.view.ids for n in nodes.values() if n.id != name):
                    await anyio.sleep(0.05)
            running[name] = await tg.start(serve, tmp_path, name, False, monkeypatch)
            nodes[name] = running[name][0]
            await settle(list(nodes.values()))
            await traffic_round(list(nodes.values()), rounds=1)
        sent.clear()
        await traffic_round(list(nodes.values()))
        print(f"upgraded: frames sent by (node, wire version): {dict(sorted(sent.items()))}")
        assert {n: node.status()["protocols"] for n, node in nodes.items()} == dict.fromkeys(
            nodes, {"wire": 2, "wire_in_use": 2, "control": 2}
        )
        assert {v for (_, v) in sent} == {2}  # no restart of b and d needed
        # b and d moved once, when the last pinned member left their views.
        assert [nodes[n].counters.get("wire.now-v2") for n in "bd"] == [1, 1]
        assert {n: drops(node) for n, node in nodes.items()} == {n: {} for n in nodes}
        tg.cancel_scope.cancel()
