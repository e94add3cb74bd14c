"""A cluster that behaves like pods: every `hedgeplug run` process lives in
its own Linux network namespace with its own address on a bridge, and
PostgreSQL (the lock store) in another. The cluster scales 2 -> 30 -> 2 in
bursts, loses its leader to SIGKILL and one follower's link to a cut, and
after each step must be one group with one leader whose views all agree.

Bounds (lease ttl T = 3s, heartbeat interval I = 1s, missed M = 3, batch
B = 0.05s, from the heartbeat strategy's documentation) plus TOLERANCE for
thirty processes on a shared two-core machine:
  new leader after SIGKILL   T + T/4 (expiry, then one contender poll)
  agreed view after SIGKILL  T + 2*I
  cut node out of the views  M*I + I/2 + B
  join / graceful leave      I (one beat and one batch after listening)
The figures are printed (pytest -s) and written as JSON to the test's tmp dir.

Needs root: it fails, never skips, when it cannot create namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import psycopg
import pytest
from netns_kit import LabError, NamespacedPostgres, NetnsCluster, NetnsLab, remove_stale

from hedgeplug.testing.processes import NodeProcess, Status, agreement, summarize

pytestmark = pytest.mark.slow

TTL = 3.0
INTERVAL = 1.0
MISSED = 3
BATCH = 0.05
TOLERANCE = 3.0  # scheduling slack on a busy shared machine, stated once
START_NODES = 2
PEAK_NODES = 30
UP_BURSTS = (9, 9, 10)
DOWN_BURSTS = 3
POLL = 0.2  # status poll period: the resolution of every figure
START_TIMEOUT = 90.0  # bounded wait for a burst of processes to listen
SETTLE_TIMEOUT = 30.0
WALL_BOUND = 420.0  # the whole scenario, so nothing can hang

FAILOVER_LEADER_BOUND = TTL + TTL / 4 + TOLERANCE
FAILOVER_AGREED_BOUND = TTL + 2 * INTERVAL + TOLERANCE
DETECTION_BOUND = MISSED * INTERVAL + INTERVAL / 2 + BATCH + TOLERANCE
JOIN_BOUND = INTERVAL + TOLERANCE
LEAVE_BOUND = INTERVAL + TOLERANCE
REJOIN_TIMEOUT = 30.0  # a figure, bounded only: TCP retransmission backoff after a long cut
CUT_HOLD = TTL + 2 * INTERVAL  # long enough that a node believing the leader gone would contend


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    if os.geteuid() != 0:
        pytest.fail("the multi-host test creates network namespaces and needs root", pytrace=False)
    made = NetnsLab()
    try:
        remove_stale()
        made.create()
    except LabError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:  # outside the handler: the message alone, no chained traceback
        made.destroy()
        pytest.fail(f"cannot create network namespaces: {problem}", pytrace=False)
    try:
        yield made
    finally:
        errors = made.destroy()
        assert not errors, errors
        assert not made.leftovers(), made.leftovers()


@pytest.fixture
def postgres(lab: NetnsLab) -> Iterator[NamespacedPostgres]:
    try:
        netns, address = lab.add_host("pg", 2)
    except LabError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        pytest.fail(f"cannot create the PostgreSQL namespace: {problem}", pytrace=False)
    server = NamespacedPostgres(netns, address, lab.subnet)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def settings(dsn: str) -> str:
    return (
        f'[lock]\nuse = "postgres"\ndsn = "{dsn}"\nttl = "{TTL}s"\n\n'
        f'[membership]\nuse = "heartbeat"\ninterval = "{INTERVAL}s"\nmissed = {MISSED}\n'
    )


async def wait_among(
    cluster: NetnsCluster,
    nodes: Sequence[NodeProcess],
    condition: Callable[[dict[str, Status | None]], bool],
    timeout: float,
    what: str,
) -> tuple[float, dict[str, Status | None]]:
    """Poll only `nodes` until `condition`; (seconds it took, last statuses). Fails at `timeout`."""
    start = anyio.current_time()
    last: dict[str, Status | None] = {}
    with anyio.move_on_after(timeout):
        while True:
            last = await cluster.statuses(nodes)
            if condition(last):
                return anyio.current_time() - start, last
            await anyio.sleep(POLL)
    pytest.fail(f"{what} not reached within {timeout}s; last statuses:\n{summarize(last)}")


async def wait_one_group(
    cluster: NetnsCluster, nodes: Sequence[NodeProcess], timeout: float, what: str
) -> tuple[float, dict[str, Status | None]]:
    """One leader among `nodes`, holding a valid lease, and every view exactly `nodes`."""
    ids = {n.id for n in nodes}
    return await wait_among(cluster, nodes, lambda s: agreement(s, ids)[0], timeout, what)


def leader_of(cluster: NetnsCluster, statuses: dict[str, Status | None]) -> NodeProcess:
    leader = cluster.leader_process(statuses)
    assert leader is not None, summarize(statuses)
    return leader


def token_of(statuses: dict[str, Status | None], node: NodeProcess) -> int:
    status = statuses.get(node.id)
    assert status is not None, f"no status from {node.id}"
    return int(status["token"])


def lease_row(dsn: str, lock: str) -> tuple[str, int, bool]:
    """(holder, token, still valid) as the database sees it."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT holder, token, expires_at > clock_timestamp() FROM hedgeplug_lease "
            "WHERE name = %s",
            (lock,),
        ).fetchone()
    assert row is not None, "no lease row"
    return str(row[0]), int(row[1]), bool(row[2])


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


@pytest.mark.anyio
async def test_pods_scale_fail_over_partition_and_scale_down(
    lab: NetnsLab, postgres: NamespacedPostgres, tmp_path: Path
) -> None:
    began = time.monotonic()
    figures: dict[str, object] = {
        "ttl": TTL, "interval": INTERVAL, "missed": MISSED, "tolerance": TOLERANCE,
        "subnet": str(lab.subnet),
    }
    cluster = NetnsCluster(
        tmp_path, lab, cluster=f"multihost-{secrets.token_hex(4)}", key=secrets.token_hex(16),
        settings=settings(postgres.dsn),
    )
    try:
        with anyio.fail_after(WALL_BOUND):
            async with cluster:
                await scenario(cluster, postgres, figures)
    finally:
        figures["wall_seconds"] = round(time.monotonic() - began, 1)
        path = tmp_path / "multihost-figures.json"
        path.write_text(json.dumps(figures, indent=1) + "\n")
        print("\nmulti-host figures:\n" + json.dumps(figures, indent=1))
        print(f"figures written to {path}")


async def scenario(
    cluster: NetnsCluster, postgres: NamespacedPostgres, figures: dict[str, object]
) -> None:
    # -- two pods settle
    t0 = anyio.current_time()
    await cluster.start(START_NODES, ready_timeout=START_TIMEOUT)
    seconds, _ = await wait_one_group(cluster, cluster.live, SETTLE_TIMEOUT, "two nodes settle")
    figures["settle_two"] = {
        "spawn_to_agreed": round(anyio.current_time() - t0, 2), "listening_to_agreed": round(seconds, 2)
    }

    # -- scale up in bursts; each burst joins one group within a beat of listening
    bursts = []
    for size in UP_BURSTS:
        t0 = anyio.current_time()
        await cluster.start(size, ready_timeout=START_TIMEOUT)
        listening = anyio.current_time() - t0
        seconds, statuses = await wait_one_group(
            cluster, cluster.live, JOIN_BOUND, f"a burst of {size} joining"
        )
        bursts.append({
            "size": size, "members": len(cluster.live), "spawn_to_listening": round(listening, 2),
            "listening_to_agreed": round(seconds, 2),
        })
    assert len(cluster.live) == PEAK_NODES
    figures["scale_up"] = bursts
    figures["join_seconds"] = spread(list(cluster.join_seconds.values()))
    leaders = [s for s in statuses.values() if s and s["is_leader"]]
    assert len(leaders) == 1 and len({s["view_digest"] for s in statuses.values() if s}) == 1

    # -- SIGKILL the leader: another holds a valid lease, all views agree, within bounds
    leader = leader_of(cluster, statuses)
    old_token = token_of(statuses, leader)
    cluster.kill(leader)
    t0 = anyio.current_time()
    new_leader_seconds, _ = await wait_among(
        cluster, cluster.live,
        lambda s: any(x and x["is_leader"] and x["id"] != leader.id for x in s.values()),
        FAILOVER_AGREED_BOUND, "a new leader",
    )
    _, statuses = await wait_one_group(cluster, cluster.live, FAILOVER_AGREED_BOUND, "failover")
    agreed_seconds = anyio.current_time() - t0
    leader = leader_of(cluster, statuses)
    token = token_of(statuses, leader)
    assert token > old_token
    figures["failover"] = {
        "new_leader": round(new_leader_seconds, 2), "new_leader_bound": FAILOVER_LEADER_BOUND,
        "agreed": round(agreed_seconds, 2), "agreed_bound": FAILOVER_AGREED_BOUND,
    }
    assert new_leader_seconds < FAILOVER_LEADER_BOUND
    assert agreed_seconds < FAILOVER_AGREED_BOUND

    # -- cut one follower's link: the others drop it, it never leads, the lease never moves
    cut = next(n for n in reversed(cluster.live) if n is not leader)
    others = [n for n in cluster.live if n is not cut]
    cluster.lab.cut(cluster.netns_of[cut.id])
    t0 = anyio.current_time()
    detection, _ = await wait_one_group(cluster, others, DETECTION_BOUND, "the cut node's removal")
    holders: set[str] = set()
    tokens: set[int] = set()
    lapses = 0  # samples where the leader's lease had expired
    with anyio.move_on_after(max(0.0, CUT_HOLD - (anyio.current_time() - t0))):
        while True:
            holder, row_token, valid = await anyio.to_thread.run_sync(
                lease_row, postgres.dsn, cluster.cluster
            )
            holders.add(holder)
            tokens.add(row_token)
            lapses += not valid
            await anyio.sleep(0.25)
    inside = await cluster.status_inside(cut)
    assert inside is not None, "the cut node did not answer inside its namespace:\n" + cut.log_tail()
    assert not inside["is_leader"], inside
    assert holders == {leader.id} and tokens == {token} and not lapses, (holders, tokens, lapses)
    cut_seconds = anyio.current_time() - t0

    # -- restore: it rejoins the same group under the same leader and token
    cluster.lab.restore(cluster.netns_of[cut.id])
    rejoin, statuses = await wait_one_group(cluster, cluster.live, REJOIN_TIMEOUT, "rejoin")
    assert leader_of(cluster, statuses) is leader and token_of(statuses, leader) == token
    figures["partition"] = {
        "detection": round(detection, 2), "detection_bound": DETECTION_BOUND,
        "cut_held": round(cut_seconds, 2), "lease_holders_during_cut": sorted(holders),
        "cut_node_leader_inside": inside["is_leader"], "rejoin": round(rejoin, 2),
        "rejoin_timeout": REJOIN_TIMEOUT,
    }
    assert detection < DETECTION_BOUND

    # -- scale down to two in bursts of SIGTERM; followers leave gracefully
    downs = []
    followers = [n for n in cluster.live if n is not leader]
    to_stop = followers[: len(cluster.live) - START_NODES]
    size = -(-len(to_stop) // DOWN_BURSTS)
    for start in range(0, len(to_stop), size):
        burst = to_stop[start : start + size]
        for node in burst:
            cluster.terminate(node)
        t0 = anyio.current_time()
        seconds, statuses = await wait_one_group(
            cluster, cluster.live, LEAVE_BOUND, f"a burst of {len(burst)} leaving"
        )
        codes = [await cluster.wait_exit(node, 15.0) for node in burst]
        assert codes == [0] * len(burst), [(n.id, n.log_tail(5)) for n in burst]
        downs.append({
            "size": len(burst), "members": len(cluster.live),
            "sigterm_to_agreed": round(seconds, 2), "all_exited": round(anyio.current_time() - t0, 2),
        })
    figures["scale_down"] = downs
    assert len(cluster.live) == START_NODES
    assert leader_of(cluster, statuses) is leader and token_of(statuses, leader) == token
