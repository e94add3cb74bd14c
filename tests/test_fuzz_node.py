"""Hostile messages to a real node's handlers: heartbeat, gossip and control.

A node runs with real sockets on loopback (the blocking facade, tcp,
the sqlite lock); the test speaks the public wire format from a plain
socket, as a peer without a key that knows the cluster name would, and
sends hypothesis-chosen payloads on each channel. Every request must be
answered: by the handler (a REPLY envelope), or for control by a refusal
that is a HedgeplugError - never by an error from an exception a handler
did not expect, and the node keeps answering status afterwards.

Addresses inside the payloads are loopback or unparseable text (no ':'), so
whatever the node does with them stays on this machine.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from itertools import count
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hedgeplug
from hedgeplug.wire import Codec, Envelope, Kind

CLUSTER = "fuzz"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Refusals a control request may get: the node's own errors, by class name.
EXPECTED_REFUSALS = ("HedgeplugError:", "NoLeader:", "RemoteError:", "TransportError:", "RequestTimeout:")


class RawPeer:
    """A hostile peer: a plain tcp socket speaking the frame layout by hand."""

    HEADER = struct.Struct("!IBI")

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.sock.sendall(b"HPT\x01F")
        self.codec = Codec(CLUSTER)
        self.ids = count(1)

    def request(self, channel: str, payload: Any, sender: str = "hostile") -> Envelope:
        msg_id = next(self.ids)
        frame = self.codec.encode(Envelope(CLUSTER, sender, channel, msg_id, Kind.MESSAGE, payload))
        self.sock.sendall(self.HEADER.pack(len(frame), 2, msg_id) + frame)
        length, kind, reply_id = self.HEADER.unpack(self._exactly(self.HEADER.size))
        body = self._exactly(length)
        assert reply_id == msg_id
        assert kind == 3, f"transport-level error: {body!r}"  # 3 = REPLY, 4 = the handler raised
        return self.codec.decode(body)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the node closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def running_node(folder: Any, membership: str) -> Iterator[tuple[Any, RawPeer]]:
    config = {
        "node": {"id": "target", "cluster": CLUSTER, "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(folder / "lock.db"), "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": membership},
    }
    with hedgeplug.BlockingNode(config) as node:
        node.wait_leader(timeout=10)
        peer = RawPeer(node.address)
        try:
            yield node, peer
        finally:
            peer.close()


@pytest.fixture(scope="module")
def heartbeat_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, RawPeer]]:
    yield from running_node(tmp_path_factory.mktemp("fuzz-heartbeat"), "heartbeat")


@pytest.fixture(scope="module")
def gossip_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, RawPeer]]:
    yield from running_node(tmp_path_factory.mktemp("fuzz-gossip"), "gossip")


@pytest.fixture(params=["heartbeat", "gossip"])
def any_node(request: pytest.FixtureRequest) -> tuple[Any, RawPeer]:
    return request.getfixturevalue(f"{request.param}_node")


# ------------------------------------------------------------ strategies

# Text without ':' never parses as host:port, so no payload can aim the node off this machine.
texts = st.text(alphabet=st.characters(blacklist_characters=":"), max_size=12)
addresses = st.sampled_from(["127.0.0.1:9", "127.0.0.1:1", "[::1]:9", "127.0.0.1:99999", "[::1]"]) | texts
hashable = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | texts
    | st.binary(max_size=8)
)
values = st.recursive(
    hashable,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hashable, inner, max_size=4),
    max_leaves=12,
)
states = st.sampled_from(["alive", "suspect", "dead", "left"]) | values
incarnations = st.integers(-1, 2**63) | st.floats() | values
metas = st.dictionaries(texts, texts, max_size=3) | values
members = st.tuples(texts, addresses, metas, states, incarnations).map(list) | values  # heartbeat form
records = st.tuples(texts, addresses, metas, states, incarnations, texts).map(list) | values  # gossip form
versions = st.tuples(st.integers(-1, 2**63), st.integers(-1, 2**63)).map(list) | values


def shaped(kind_key: str, kinds: list[str], fields: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Payloads near the real ones: a known type, some of its fields fuzzed, maybe junk."""
    known = st.fixed_dictionaries(
        {kind_key: st.sampled_from(kinds) | values},
        optional={k: v for k, v in fields.items()},
    )
    return known | st.dictionaries(hashable, values, max_size=4) | values


heartbeat_payloads = shaped(
    "op",
    ["beat", "tick", "leave", "update"],
    {
        "m": members,
        "v": versions,
        "id": values,
        "members": st.lists(members, max_size=3) | values,
        "changes": st.lists(st.tuples(st.integers(-1, 5) | values, st.lists(members, max_size=2) | values, st.lists(texts, max_size=2) | values).map(list), max_size=3) | values,
        "not_leader": values,
    },
)
gossip_payloads = shaped(
    "t",
    ["ping", "ping-req", "gossip", "pp", "digest", "ack"],
    {
        "to": st.just("target") | texts | values,
        "addr": addresses | values,
        "u": st.lists(records, max_size=4) | values,
        "s": st.lists(records, max_size=4) | values,
        "join": values,
    },
)
control_payloads = shaped(
    "op",
    ["status", "send", "broadcast"],
    {"payload": values, "timeout": st.floats(0.01, 0.5) | values},
)


def packable(payload: Any) -> bool:
    try:
        msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def claimed_sender(payload: Any) -> str:
    """The sender a heartbeat message must come from to reach the handler's
    parsing (a member speaks for itself; the target itself leads), so the
    fuzzing gets past the impostor check."""
    if not isinstance(payload, dict):
        return "hostile"
    member = payload.get("m")
    if payload.get("op") in ("beat", "tick") and isinstance(member, list) and member and isinstance(member[0], str):
        return member[0]
    if payload.get("op") == "leave" and isinstance(payload.get("id"), str):
        return payload["id"]
    return "target" if payload.get("op") == "update" else "hostile"


def still_serving(peer: RawPeer) -> dict[str, Any]:
    reply = peer.request("control", {"op": "status"})
    assert reply.kind is Kind.REPLY and reply.payload["id"] == "target"
    return reply.payload


# ------------------------------------------------------------ properties


def test_heartbeat_rejects_an_infinite_incarnation(heartbeat_node: tuple[Any, RawPeer]) -> None:
    # Found by fuzzing: int(inf) raised OverflowError out of the handler.
    _, peer = heartbeat_node
    for payload in (
        {"op": "beat", "m": ["x", "127.0.0.1:9", {}, "alive", float("inf")], "v": [0, 0]},
        {"op": "update", "v": [2**62, 9], "members": [["x", "127.0.0.1:9", {}, "alive", float("-inf")]]},
        # Found by fuzzing in a full run: an incarnation at msgpack's limit was
        # kept, and a reply carrying it past the limit could not be encoded.
        {"op": "beat", "m": ["y", "127.0.0.1:9", {}, "alive", 2**64 - 1], "v": [0, 0]},
        {"op": "tick", "m": ["z", "127.0.0.1:9", {}, "alive", -(2**63)], "v": [0, 0]},
    ):
        assert peer.request("heartbeat", payload, sender=claimed_sender(payload)).kind is Kind.REPLY


def test_heartbeat_leader_ignores_a_forged_update_in_its_own_name(heartbeat_node: tuple[Any, RawPeer]) -> None:
    # Found by fuzzing in a clean-clone run: an "update" whose envelope named
    # the leader itself as sender, with a newer version and no members,
    # replaced the leader's own view; the node led a view without itself.
    node, peer = heartbeat_node
    forged = {"op": "update", "v": [2**40, 1], "members": []}
    assert peer.request("heartbeat", forged, sender="target").kind is Kind.REPLY
    status = still_serving(peer)
    assert "target" in {m["id"] for m in status["members"]}


@FUZZ
@given(payload=heartbeat_payloads)
def test_heartbeat_handler_answers_anything(heartbeat_node: tuple[Any, RawPeer], payload: Any) -> None:
    _, peer = heartbeat_node
    if not packable(payload):
        return
    reply = peer.request("heartbeat", payload, sender=claimed_sender(payload))
    assert reply.kind is Kind.REPLY, reply.payload


@FUZZ
@given(payload=gossip_payloads)
def test_gossip_handler_answers_anything(gossip_node: tuple[Any, RawPeer], payload: Any) -> None:
    _, peer = gossip_node
    if not packable(payload):
        return
    reply = peer.request("gossip", payload)
    assert reply.kind is Kind.REPLY, reply.payload


@FUZZ
@given(payload=control_payloads)
def test_control_handler_answers_or_refuses_cleanly(any_node: tuple[Any, RawPeer], payload: Any) -> None:
    _, peer = any_node
    if not packable(payload):
        return
    reply = peer.request("control", payload)
    if reply.kind is Kind.ERROR:
        assert isinstance(reply.payload, str) and reply.payload.startswith(EXPECTED_REFUSALS), reply.payload


def test_nodes_survived_the_fuzzing(any_node: tuple[Any, RawPeer]) -> None:
    # Runs after the properties (pytest keeps file order; the nodes are module-scoped).
    node, peer = any_node
    status = still_serving(peer)
    assert status["is_leader"] and node.is_leader
    assert "target" in {m["id"] for m in status["members"]}
