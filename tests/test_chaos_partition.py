"""A partition between network namespaces, healed after 30 s: five chaos
workers (real nodes recording their fencing tokens), each in its own
namespace, and PostgreSQL in another, on one bridge (netns_kit). The leader
and one follower are cut off from the three others and from PostgreSQL
(silently: see chaos_netns.Partition), for CUT_SECONDS.

While cut: the old leader stops acting within its lease, the majority
elects a leader of its own and agrees on a view of three, the minority
never acts as leader; the records of all five show no overlapping
leadership and growing tokens. After the heal: one leader (the majority's,
same token) and one view of all five.

Bounds (lease ttl T, heartbeat interval I, missed M, batch B, from the lock
and heartbeat documentation) plus TOLERANCE for a loaded two-core machine.
Needs root: it fails, never skips, when it cannot create namespaces.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from chaos_kit import acts_between, check_windows, leaders, sample_leaders, wait_among
from chaos_netns import NetnsWorkerCluster, Partition
from netns_kit import LabError, NamespacedPostgres, NetnsLab, remove_stale

from hedgeplug.errors import StoreError
from hedgeplug.testing.processes import Status, agreement
from hedgeplug.worker import INTERRUPT_BOUND

pytestmark = pytest.mark.slow

TTL = 2.0
INTERVAL = 0.5
MISSED = 3
BATCH = 0.05
NODES = 5
CUT_SECONDS = 30.0
TOLERANCE = 3.0  # scheduling slack on a busy shared machine, stated once
SETTLE_TIMEOUT = 60.0
STEP_DOWN_BOUND = TTL  # the lease; belief ends at ttl*(1 - margin) after the last renewal sent
MAJORITY_BOUND = TTL + TTL / 4 + (MISSED + 2) * INTERVAL + BATCH + TOLERANCE
REJOIN_TIMEOUT = 45.0  # a figure, bounded only: the next TCP retransmission after the heal (finding in docs/chaos.md)
WALL_BOUND = 180.0


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    if os.geteuid() != 0:
        pytest.fail("the partition test creates network namespaces and needs root", pytrace=False)
    made = NetnsLab()
    try:
        remove_stale()
        made.create()
    except LabError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
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
    netns, address = lab.add_host("pg", 2)
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


@pytest.mark.anyio
async def test_partition_of_the_leader_and_one_follower_healed_after_30s(
    lab: NetnsLab, postgres: NamespacedPostgres, tmp_path: Path
) -> None:
    cluster = NetnsWorkerCluster(
        tmp_path, lab, cluster=f"chaos-part-{secrets.token_hex(4)}", key=secrets.token_hex(16),
        settings=settings(postgres.dsn),
    )
    partition = Partition()
    try:
        with anyio.fail_after(WALL_BOUND):
            async with cluster:
                await scenario(cluster, postgres, partition)
    finally:
        errors = partition.heal()
        assert not errors, errors


async def scenario(cluster: NetnsWorkerCluster, postgres: NamespacedPostgres, partition: Partition) -> None:
    await cluster.start(NODES, ready_timeout=SETTLE_TIMEOUT)
    await cluster.wait_agreed(SETTLE_TIMEOUT, poll=0.2)
    statuses = await cluster.statuses()
    leader = cluster.leader_process(statuses)
    assert leader is not None
    minority = [leader, next(n for n in cluster.live if n is not leader)]
    majority = [n for n in cluster.live if n not in minority]
    minority_ids = {n.id for n in minority}
    majority_ids = {n.id for n in majority}

    t_cut = time.monotonic()
    partition.cut(
        {cluster.netns_of[n.id]: cluster.address_of[n.id] for n in minority},
        {**{cluster.netns_of[n.id]: cluster.address_of[n.id] for n in majority},
         postgres.netns: postgres.host},
    )
    try:
        majority_agreed, _ = await wait_among(
            cluster, majority, lambda s: agreement(s, majority_ids)[0], MAJORITY_BOUND + 10.0,
            "one leader and one view in the majority", poll=0.1,
        )
        samples = await sample_leaders(cluster, cluster.live, CUT_SECONDS - (time.monotonic() - t_cut), poll=0.2)
        inside: dict[str, Status | None] = await cluster.statuses(minority)
    finally:
        t_heal = time.monotonic()
        errors = partition.heal()
    assert not errors, errors
    rejoined = await cluster.wait_agreed(REJOIN_TIMEOUT, poll=0.2)
    statuses = await cluster.statuses()

    windows = cluster.windows()
    handovers = check_windows(windows)
    old = [w for w in windows if w.node == leader.id and w.t_enter < t_cut][-1]
    taken = next(w for w in windows if w.t_enter > t_cut)
    minority_during = [w for w in acts_between(windows, t_cut + STEP_DOWN_BOUND, t_heal) if w.node in minority_ids]
    sampled_minority = [who for t, who in samples if t > t_cut + STEP_DOWN_BOUND and set(who) & minority_ids]
    after = leaders(statuses)
    at_heal = [w for w in windows if w.node in majority_ids and w.t_enter < t_heal][-1]
    figures = {
        "cut_held": round(t_heal - t_cut, 1), "old_leader_last_act": round(old.t_leave - t_cut, 3),
        "old_leader_belief_end": round(old.until - t_cut, 3),
        "majority_first_act": round(taken.t_enter - t_cut, 3),
        "majority_agreed": round(majority_agreed, 2), "minority_acts_during_cut": len(minority_during),
        "minority_views": {i: sorted(m["id"] for m in s["members"]) if s else None for i, s in inside.items()},
        "rejoined_after_heal": round(rejoined, 2), "leader_after": after, **handovers.figures(),
    }
    print(f"\nchaos partition (postgres, netns): {figures}")
    assert old.t_leave - t_cut < STEP_DOWN_BOUND, "the cut leader kept acting past its lease"
    assert taken.node in majority_ids and taken.t_enter > old.until
    assert not minority_during and not sampled_minority, (minority_during, sampled_minority)
    assert majority_agreed < MAJORITY_BOUND
    assert not any(s and s["is_leader"] for s in inside.values()), inside
    assert len(after) == 1 and after[0] in majority_ids
    assert (after[0], statuses[after[0]]["token"]) == (at_heal.node, at_heal.token), (
        "the heal disturbed the majority's leader"
    )


GIVE_UP = 1.0  # the caller's own bound on one store call
HEAL_AFTER = 5.0


@pytest.mark.anyio
async def test_a_postgres_call_given_up_during_a_silent_partition_returns_promptly(
    lab: NetnsLab, postgres: NamespacedPostgres
) -> None:
    """Why the partitioned nodes above rejoin only after a TCP retransmission:
    this process's own PostgreSQL connection, cut silently (PostgreSQL's
    namespace drops everything from the bridge's host side), then one
    `current()` given up after GIVE_UP. It comes back within GIVE_UP plus the
    interrupt bound: the cancel request cannot get through, so the plugin
    breaks the connection's socket instead of waiting for the heal."""
    from hedgeplug_postgres import open_lock

    lock = open_lock(postgres.dsn, "chaos-hang", watch=False)
    partition = Partition()
    returned = None
    try:
        with anyio.fail_after(HEAL_AFTER + 30.0):
            await lock.current()  # connected and the tables made
            partition.drop_from(postgres.netns, [lab.gateway])
            start = time.monotonic()

            async def heal_later() -> None:
                await anyio.sleep(HEAL_AFTER)
                partition.heal()

            async with anyio.create_task_group() as tg:
                tg.start_soon(heal_later)
                with anyio.move_on_after(GIVE_UP):
                    try:
                        await lock.current()
                    except StoreError:
                        pass
                returned = time.monotonic() - start
    finally:
        partition.heal()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await lock.aclose()
    print(f"\npostgres call given up after {GIVE_UP}s during a silent cut returned after {returned:.2f}s")
    assert returned < GIVE_UP + INTERRUPT_BOUND + 1.0
