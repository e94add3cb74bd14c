"""Real chaos over sqlite, PostgreSQL and etcd: three chaos-worker processes
(real nodes whose application records every act as leader with its fencing
token, see chaos_worker.py) per store, and two faults each.

SIGSTOP of the leader past its lease, then SIGCONT: another node takes
over; the frozen leader's own belief (its `until`) ended before the
successor's first act, and once thawed it never acts with its old token.

The store stopped and restarted under the running cluster (PostgreSQL and
etcd: the server process stopped and started on the same port; sqlite: a
connection holding the database's write lock, which is how an embedded
store becomes unavailable): the leader stops acting within its lease,
nobody acts while the store is gone, and after it returns there is one
leader and one agreed view again.

Every time is the host's CLOCK_MONOTONIC, which all processes share.
Bounds (lease ttl T, margin 0.25, retry T/4, heartbeat interval I) plus
TOLERANCE for a loaded two-core machine; the figures are printed (pytest -s)
and docs/chaos.md tabulates them.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from chaos_kit import (
    STORES,
    SqliteOutage,
    WorkerCluster,
    acts_between,
    check_windows,
    leaders,
    sample_leaders,
    store_overrides,
    wait_among,
)

from hedgeplug.testing.processes import Status, agreement, summarize
from hedgeplug.testing.supervise import ServerError

pytestmark = pytest.mark.slow

TTL = 2.0  # etcd's shortest lease with its default election timeout
MARGIN = 0.25
INTERVAL = 0.5
NODES = 3
TOLERANCE = 3.0  # scheduling slack on a busy shared machine, stated once
SETTLE_TIMEOUT = 60.0
TAKEOVER_BOUND = TTL + TTL / 4 + 0.5 + TOLERANCE  # expiry, one contender poll, etcd's sweep
HOLD_AFTER_TAKEOVER = 1.0  # the successor acts a while before the old leader thaws
OUTAGE = 2 * TTL + 1.0  # the store stays away well past every lease
RECOVERY_BOUND = TTL + TTL / 4 + 0.5 + 2 * INTERVAL + TOLERANCE


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("trio") as p:
        yield p


@attrs.define
class Rig:
    store: str
    cluster: WorkerCluster
    outage: Any  # stop() / start(): the store goes away and comes back


@pytest.fixture(scope="module", params=STORES)
def rig(request, portal, tmp_path_factory) -> Iterator[Rig]:
    store = request.param
    workdir = tmp_path_factory.mktemp(f"chaos-{store}")
    server: Any = None
    try:
        if store == "postgres":
            from hedgeplug_postgres.testing import start_postgres

            server = start_postgres()
        elif store == "etcd":
            from hedgeplug_etcd.testing import start_etcd

            server = start_etcd()
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster = WorkerCluster(
        workdir,
        cluster=f"chaos-{store}-{uuid.uuid4().hex[:6]}",
        overrides=[
            *store_overrides(store, server), f"lock.ttl={TTL}s", f"lock.margin={MARGIN}",
            f"membership.interval={INTERVAL}s",
        ],
    )
    outage = server if server is not None else SqliteOutage(workdir / "lock.sqlite3")
    try:
        portal.call(cluster.start, NODES)
        yield Rig(store, cluster, outage)
    finally:
        try:
            if isinstance(outage, SqliteOutage):
                outage.start()
            portal.call(cluster.aclose)
        finally:
            if server is not None:
                server.cleanup()


def settled(rig: Rig, portal: BlockingPortal) -> dict[str, Status | None]:
    portal.call(rig.cluster.wait_agreed, SETTLE_TIMEOUT)
    ok, why, statuses = portal.call(rig.cluster.agreed)
    assert ok, why + "\n" + summarize(statuses)
    return statuses


def test_sigstop_of_the_leader_past_its_lease_then_sigcont(rig: Rig, portal: BlockingPortal):
    cluster = rig.cluster
    statuses = settled(rig, portal)
    leader = cluster.leader_process(statuses)
    assert leader is not None
    others = [n for n in cluster.live if n is not leader]
    t_stop = time.monotonic()
    os.kill(leader.pid, signal.SIGSTOP)
    try:
        portal.call(
            wait_among, cluster, others, lambda s: bool(leaders(s)), TAKEOVER_BOUND + 5.0,
            "a new leader while the old one is stopped",
        )
        time.sleep(HOLD_AFTER_TAKEOVER)
    finally:
        t_cont = time.monotonic()
        os.kill(leader.pid, signal.SIGCONT)
    thawed = portal.call(cluster.status_of, leader)
    rejoined = portal.call(cluster.wait_agreed, SETTLE_TIMEOUT)

    windows = cluster.windows()
    handovers = check_windows(windows)
    old = [w for w in windows if w.node == leader.id and w.t_enter < t_stop][-1]
    successor = next(w for w in windows if w.t_enter > t_stop)
    figures = {
        "store": rig.store, "stopped_for": round(t_cont - t_stop, 2),
        "own_belief_ended_after_stop": round(old.until - t_stop, 3),
        "successor_first_act_after_stop": round(successor.t_enter - t_stop, 3),
        "belief_end_to_successor": round(successor.t_enter - old.until, 3),
        "thawed_says_leader": thawed and thawed["is_leader"], "agreed_after_sigcont": round(rejoined, 2),
        **handovers.figures(),
    }
    print(f"\nchaos SIGSTOP ({rig.store}): {figures}")
    assert successor.node != leader.id and successor.token > old.token
    assert old.t_leave < t_stop, f"the stopped leader acted with token {old.token} after SIGCONT"
    assert old.until < successor.t_enter, "the old leader still believed it led when another took over"
    assert old.until - t_stop <= TTL * (1 - MARGIN) + 0.05
    assert successor.t_enter - t_stop < TAKEOVER_BOUND
    assert thawed is None or not thawed["is_leader"] or thawed["token"] > old.token, thawed


def test_store_stopped_and_restarted_under_a_running_cluster(rig: Rig, portal: BlockingPortal):
    cluster = rig.cluster
    statuses = settled(rig, portal)
    leader = cluster.leader_process(statuses)
    assert leader is not None
    t_stop = time.monotonic()
    rig.outage.stop()
    t_down = time.monotonic()
    try:
        samples = portal.call(sample_leaders, cluster, cluster.live, OUTAGE - (t_down - t_stop))
    finally:
        t_start = time.monotonic()
        rig.outage.start()
        t_up = time.monotonic()
    recovered, statuses = portal.call(
        wait_among, cluster, cluster.live, lambda s: agreement(s, {n.id for n in cluster.live})[0],
        RECOVERY_BOUND + 10.0, "one leader and one view after the store returned",
    )

    windows = cluster.windows()
    handovers = check_windows(windows)
    last_act = max((w.t_leave for w in acts_between(windows, t_stop, t_start)), default=t_stop)
    during = acts_between(windows, t_down + TTL, t_start)
    sampled = [who for t, who in samples if t > t_down + TTL and who]
    figures = {
        "store": rig.store, "stop_took": round(t_down - t_stop, 2), "store_away": round(t_up - t_stop, 2),
        "start_took": round(t_up - t_start, 2),
        "last_act_after_store_gone": round(last_act - t_down, 3),
        "acts_while_gone": len(during), "agreed_after_store_back": round(recovered, 2),
        "leader_after": leaders(statuses), **handovers.figures(),
    }
    print(f"\nchaos store outage ({rig.store}): {figures}")
    assert last_act - t_down < TTL, "the leader kept acting past its lease without the store"
    assert not during, f"leadership while the store was gone: {during}"
    assert not sampled, f"statuses claimed leadership while the store was gone: {sampled}"
    assert recovered < RECOVERY_BOUND
