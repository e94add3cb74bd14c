"""Five real `hedgeplug run` processes on loopback over the embedded sqlite
lock (lease 3s, heartbeat 1s): election, failover, leave, join, messaging
through the command, and hostile frames, observed only through each node's
status as an operator would see it.

Bounds come from the heartbeat strategy's documentation plus TOLERANCE for a
machine whose two cores other test runs share; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hedgeplug.testing.processes import ProcessCluster, Status, agreement, summarize
from hedgeplug.transport import _framing

pytestmark = pytest.mark.slow

TTL = 3.0
INTERVAL = 1.0
TOLERANCE = 3.0  # scheduling slack on a busy shared machine, stated once
START_NODES = 5
CLUSTER = "proc-test"


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("trio") as p:
        yield p


@pytest.fixture(scope="module")
def cluster(portal, tmp_path_factory) -> Iterator[ProcessCluster]:
    workdir = tmp_path_factory.mktemp("proc-cluster")
    c = ProcessCluster(
        workdir, cluster=CLUSTER, overrides=[f"lock.ttl={TTL}s", f"membership.interval={INTERVAL}s"]
    )
    try:
        portal.call(c.start, START_NODES)
        yield c
    finally:
        portal.call(c.aclose)


def agreed_statuses(cluster: ProcessCluster, portal: BlockingPortal, timeout: float) -> dict:
    portal.call(cluster.wait_agreed, timeout)
    ok, why, statuses = portal.call(cluster.agreed)
    assert ok, why + "\n" + summarize(statuses)
    return statuses


def total_drops(status: Status) -> int:
    counted = sum(v for k, v in status["counters"].items() if k.startswith("drop."))
    return counted + sum(status["transport"]["dropped"].values())


def hedgeplug(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hedgeplug", *args], capture_output=True, text=True, timeout=60
    )


def test_one_leader_and_one_identical_view(cluster, portal):
    statuses = agreed_statuses(cluster, portal, 30.0)
    leaders = [s for s in statuses.values() if s["is_leader"]]
    assert len(leaders) == 1
    assert len({s["view_digest"] for s in statuses.values()}) == 1
    assert len({s["view_version"] for s in statuses.values()}) == 1
    assert all(len(s["members"]) == START_NODES for s in statuses.values())


def test_send_and_broadcast_round_trip_through_the_command(cluster, portal):
    statuses = agreed_statuses(cluster, portal, 30.0)
    leader = cluster.leader_process(statuses)
    follower = next(n for n in cluster.live if n is not leader)
    sent = hedgeplug("send", "-a", follower.address, "--cluster", CLUSTER, "--json", "ping")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"node": leader.id, "payload": "ping"}
    cast = hedgeplug("broadcast", "-a", follower.address, "--cluster", CLUSTER, "--json", "all")
    assert cast.returncode == 0, cast.stderr
    replies = json.loads(cast.stdout)
    assert sorted(r["member"] for r in replies) == sorted(n.id for n in cluster.live)
    assert all(r["ok"] and r["payload"]["payload"] == "all" for r in replies)


def _tcp_send_raw(address: str, data: bytes) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(2)
            while conn.recv(4096):  # until the node closes or answers
                pass
        except OSError:
            pass  # the node may reset a connection it rejects; that is fine


def test_garbage_and_oversized_tcp_frames_leave_the_node_and_view_intact(cluster, portal):
    statuses = agreed_statuses(cluster, portal, 30.0)
    target = cluster.live[0]
    before = statuses[target.id]
    preamble = _framing.preamble(_framing.PURPOSE_FRAMES)
    hostile = [
        os.urandom(512),  # not even a preamble
        b"HPT\x09F" + os.urandom(64),  # unknown layout version
        preamble + _framing.HEADER.pack(0x7FFFFFFF, _framing.FrameType.REQUEST, 1),  # 2 GiB claim
        preamble + _framing.encode_frame(_framing.FrameType.REQUEST, 7, os.urandom(300)),
        preamble
        + _framing.encode_frame(_framing.FrameType.ONEWAY, 0, b"HP\x01\x00" + b"\xc1" * 40),
        preamble + _framing.encode_frame(_framing.FrameType.REQUEST, 8, b"HP\x01\x01" + b"x" * 20),
    ]
    for data in hostile:
        _tcp_send_raw(target.address, data)
    after = portal.call(cluster.status_of, target)
    assert after is not None, "node stopped answering after hostile frames:\n" + target.log_tail()
    # One counted drop per hostile input, by the transport or by the frame decoder.
    assert total_drops(after) >= total_drops(before) + len(hostile), json.dumps(after, indent=1)
    assert {"bad-preamble", "frame-too-large"} <= set(after["transport"]["dropped"])
    assert target.process.returncode is None
    statuses = agreed_statuses(cluster, portal, 2 * INTERVAL + TOLERANCE)
    assert statuses[target.id]["view_digest"] == before["view_digest"]


def test_sigkill_of_the_leader_fails_over_within_ttl_plus_two_intervals(cluster, portal):
    statuses = agreed_statuses(cluster, portal, 30.0)
    leader = cluster.leader_process(statuses)
    old_token = statuses[leader.id]["token"]
    portal.call(cluster.kill, leader)
    bound = TTL + 2 * INTERVAL + TOLERANCE
    elapsed = portal.call(cluster.wait_agreed, bound)
    ok, why, statuses = portal.call(cluster.agreed)
    assert ok, why
    new_leader = cluster.leader_process(statuses)
    assert new_leader is not None and new_leader.id != leader.id
    assert statuses[new_leader.id]["token"] > old_token  # fencing token moved on
    assert leader.id not in {m["id"] for m in statuses[new_leader.id]["members"]}
    print(f"failover with agreed view after SIGKILL: {elapsed:.2f}s (bound {bound}s)")


def test_sigterm_of_a_follower_is_gone_from_every_view_within_one_interval(cluster, portal):
    statuses = agreed_statuses(cluster, portal, 30.0)
    leader = cluster.leader_process(statuses)
    follower = next(n for n in cluster.live if n is not leader)
    portal.call(cluster.terminate, follower)
    bound = INTERVAL + TOLERANCE
    live = {n.id for n in cluster.live}
    elapsed = portal.call(
        lambda: cluster.wait_for(lambda s: agreement(s, live)[0], bound, describe="leave")
    )
    assert portal.call(cluster.wait_exit, follower, 10.0) == 0, follower.log_tail()
    print(f"graceful leave visible everywhere after {elapsed:.2f}s (bound {bound}s)")


def test_a_new_process_is_in_every_view_within_one_interval(cluster, portal):
    agreed_statuses(cluster, portal, 30.0)
    newcomer = portal.call(cluster.add)
    bound = INTERVAL + TOLERANCE
    elapsed = portal.call(cluster.wait_agreed, bound)
    ok, _, statuses = portal.call(cluster.agreed)
    assert ok and all(newcomer.id in {m["id"] for m in s["members"]} for s in statuses.values())
    print(f"join visible everywhere {elapsed:.2f}s after the process listened (bound {bound}s)")


def test_hostile_datagrams_and_tcp_frames_leave_a_udp_node_intact(portal, tmp_path):
    udp = ProcessCluster(
        tmp_path,
        cluster="proc-udp",
        transport="udp",
        overrides=[f"lock.ttl={TTL}s", f"membership.interval={INTERVAL}s"],
    )
    try:
        portal.call(udp.start, 2)
        statuses = agreed_statuses(udp, portal, 30.0)
        target = udp.live[0]
        before = statuses[target.id]
        host, _, port = target.address.rpartition(":")
        hostile = [
            b"",  # empty datagram
            os.urandom(300),  # not a hedgeplug datagram
            b"HU\x01\x02" + b"\x00\x00\x00\x01" + os.urandom(100),  # request with a garbage body
            b"HU\x07\x02" + b"\x00\x00\x00\x02",  # unknown layout version
            b"HU\x01\x03" + b"\x00\x00\x00\x09" + b"reply nobody asked for",
            os.urandom(60_000),  # far over the datagram limit
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in hostile:
                sock.sendto(data, (host, int(port)))
        _tcp_send_raw(target.address, os.urandom(256))  # the udp node's tcp side
        after = None
        for _ in range(20):  # datagrams are processed asynchronously; give them a moment
            after = portal.call(udp.status_of, target)
            if after is not None and total_drops(after) >= total_drops(before) + len(hostile) + 1:
                break
            portal.call(lambda: anyio.sleep(0.1))
        assert after is not None, "udp node stopped answering:\n" + target.log_tail()
        # Every datagram and the tcp garbage is one counted drop.
        assert total_drops(after) >= total_drops(before) + len(hostile) + 1, json.dumps(
            after, indent=1
        )
        assert target.process.returncode is None
        statuses = agreed_statuses(udp, portal, 2 * INTERVAL + TOLERANCE)
        assert statuses[target.id]["view_digest"] == before["view_digest"]
    finally:
        portal.call(udp.aclose)
