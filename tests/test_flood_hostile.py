"""A hostile member: a peer that speaks the right cluster name (the cluster
runs without a key) and, for several seconds, tells every real node that
every other member is dead or has left - in gossip messages, pings and
full-state exchanges, or in heartbeat updates, goodbyes and forged beats.

The real members are `hedgeplug run` processes; their views are polled all
along and must never lose a live member (no false death), and they must
still agree afterwards. The hostile peer sends under its own name, as a
confused or compromised node would; a peer that also forges its sender
name and the records' origins is beyond what an unkeyed cluster can tell
apart (docs/hostile-input.md: use a cluster key).
"""

from __future__ import annotations

import struct
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import pytest

from hedgeplug.testing.processes import ProcessCluster
from hedgeplug.wire import Codec, Envelope, Kind

pytestmark = [pytest.mark.anyio]

CLUSTER = "hostile"
FRAME_HEADER = struct.Struct("!IBI")
ONEWAY, REQUEST = 1, 2
ATTACK_SECONDS = 4.0
GOSSIP_FAST = [
    "membership.use=gossip",
    "membership.profile=local",
    "membership.probe_interval=200ms",
    "membership.probe_timeout=100ms",
    "membership.gossip_interval=50ms",
    "membership.anchor_interval=500ms",
    "membership.heal_after=500ms",
    "lock.ttl=2s",
]
HEARTBEAT_FAST = ["membership.use=heartbeat", "membership.interval=200ms", "lock.ttl=2s"]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class HostilePeer:
    """One-way frames and requests to any node, from a peer named "hostile"."""

    def __init__(self) -> None:
        self.codec = Codec(CLUSTER)
        self.ids = count(1)
        self.streams: dict[str, Any] = {}
        self.sent = 0

    async def send(self, address: str, channel: str, payload: Any, request: bool = False) -> None:
        stream = self.streams.get(address)
        if stream is None:
            host, _, port = address.rpartition(":")
            stream = self.streams[address] = await anyio.connect_tcp(host, int(port))
            await stream.send(b"HPT\x01F")
        msg_id = next(self.ids)
        frame = self.codec.encode(Envelope(CLUSTER, "hostile", channel, msg_id, Kind.MESSAGE, payload))
        await stream.send(FRAME_HEADER.pack(len(frame), REQUEST if request else ONEWAY, msg_id) + frame)
        self.sent += 1

    async def drain(self) -> None:
        # Replies to requests are read and thrown away so no socket buffer fills.
        for stream in list(self.streams.values()):
            with anyio.move_on_after(0):
                try:
                    await stream.receive(1 << 20)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass

    async def aclose(self) -> None:
        for stream in self.streams.values():
            await anyio.aclose_forcefully(stream)


def gossip_lies(receiver: dict[str, Any], members: list[dict[str, Any]]) -> list[tuple[str, Any, bool]]:
    """Every other member dead or left, at its current incarnation, in every gossip message kind."""
    others = [m for m in members if m["id"] != receiver["id"]]
    dead = [[m["id"], m["address"], m["meta"], "dead", m["incarnation"], "hostile"] for m in others]
    left = [[m["id"], m["address"], m["meta"], "left", m["incarnation"], "hostile"] for m in others]
    return [
        ("gossip", {"t": "gossip", "u": dead}, False),
        ("gossip", {"t": "gossip", "u": left}, False),
        ("gossip", {"t": "ping", "to": receiver["id"], "u": dead}, True),
        ("gossip", {"t": "pp", "join": False, "s": left + dead}, True),
    ]


def heartbeat_lies(receiver: dict[str, Any], members: list[dict[str, Any]], token: int) -> list[tuple[str, Any, bool]]:
    """A view of the receiver alone, goodbyes for the others, beats moving them elsewhere."""
    me = [receiver["id"], receiver["address"], {}, "alive", 0]
    lies: list[tuple[str, Any, bool]] = [
        ("heartbeat", {"op": "update", "v": [token, 1 << 40], "members": [me]}, False),
        ("heartbeat", {"op": "update", "v": [token + 1, 1], "members": [me]}, False),
    ]
    for m in members:
        if m["id"] != receiver["id"]:
            lies.append(("heartbeat", {"op": "leave", "id": m["id"]}, True))
            lies.append(("heartbeat", {"op": "beat", "m": [m["id"], "127.0.0.1:9", {}, "alive", 0], "v": [0, 0]}, True))
    return lies


@pytest.mark.parametrize("membership", ["gossip", "heartbeat"])
async def test_a_member_claiming_everyone_dead_causes_no_false_death(tmp_path: Path, membership: str) -> None:
    overrides = GOSSIP_FAST if membership == "gossip" else HEARTBEAT_FAST
    async with ProcessCluster(tmp_path, cluster=CLUSTER, overrides=overrides) as cluster:
        await cluster.start(3)
        await cluster.wait_agreed(timeout=20)
        live = {n.id for n in cluster.live}
        hostile = HostilePeer()
        worst: dict[str, set[str]] = {}  # node -> members it ever lost sight of
        polls = 0

        async def attack() -> None:
            with anyio.move_on_after(ATTACK_SECONDS):
                while True:
                    fresh = await cluster.statuses()
                    for status in fresh.values():
                        if status is None:
                            continue
                        members = status["members"]
                        if membership == "gossip":
                            lies = gossip_lies(status, members)
                        else:
                            lies = heartbeat_lies(status, members, status["newest_token"])
                        for channel, payload, request in lies:
                            await hostile.send(status["address"], channel, payload, request)
                    await hostile.drain()
                    await anyio.sleep(0.02)

        async def watch() -> None:
            nonlocal polls
            with anyio.move_on_after(ATTACK_SECONDS + 1):
                while True:
                    for node_id, status in (await cluster.statuses()).items():
                        assert status is not None, f"{node_id} stopped answering"
                        seen = {m["id"] for m in status["members"]}
                        if live - seen:
                            worst.setdefault(node_id, set()).update(live - seen)
                    polls += 1
                    await anyio.sleep(0.05)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(attack)
                tg.start_soon(watch)
        finally:
            await hostile.aclose()
        print(f"\n{membership}: {hostile.sent} hostile messages, {polls} view polls, lost sight of: {worst}")
        assert polls > 10 and hostile.sent > 100
        assert not worst, f"false deaths seen: {worst}"
        await cluster.wait_agreed(timeout=10)
        for node_id, status in (await cluster.statuses()).items():
            assert status is not None, f"{node_id} stopped answering"
            # The hijacking beats must not have moved anyone to the hostile address.
            assert all(m["address"] != "127.0.0.1:9" for m in status["members"]), status["members"]
