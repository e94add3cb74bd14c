"""Broadcast `gossip`: notices spread through the gossip membership.

Fire-and-forget, so of the broadcast contract kit only the empty-target
check applies as written (every other check is about replies); the
fire-and-forget counterparts of the others run here on the kit's cluster
(real nodes over loopback tcp): every target handles the payload exactly
once with the sender as its sender, dead and unreachable targets hold up
nobody, a failing handler hurts nobody else, the sender among the targets
handles it itself. Larger clusters run on the in-memory network under a
virtual clock, with loss, against the stated delivery bound.
"""

from __future__ import annotations

import zlib
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from hedgeplug import open_node
from hedgeplug.errors import ConfigError, HedgeplugError
from hedgeplug.lock.memory import new_store
from hedgeplug.membership.gossip.messages import BadPayload
from hedgeplug.membership.gossip.notices import Notice, Notices, delivery_bound
from hedgeplug.membership.gossip.settings import PROFILES
from hedgeplug.node import Node
from hedgeplug.registry import Registry
from hedgeplug.sim.determinism import reproducible_scheduling
from hedgeplug.sim.network import Latency, LinkFaults, new_network
from hedgeplug.testing.broadcast_contract import (
    BroadcastCluster,
    BroadcastUnderTest,
    Target,
    broadcast_cluster,
    check_empty_targets,
    free_loopback_address,
)
from hedgeplug.view import Member

REGISTRY = Registry.load()
LAN = PROFILES["lan"]
GOSSIP = BroadcastUnderTest(
    "gossip",
    membership={
        "use": "gossip",
        "profile": "local",
        "probe_interval": "300ms",
        "gossip_interval": "50ms",
        "anchor_interval": "300ms",
        "heal_after": "300ms",
    },
)
_runs = count()


# ---------------------------------------------------------------- notices alone


def notice(nid: str, targets: frozenset[str] | None = None) -> list[Any]:
    return Notice(nid, "ch", "origin", {"x": nid}, targets).to_wire()


def test_each_notice_is_new_once_and_the_memory_of_ids_is_bounded() -> None:
    counted: dict[str, int] = {}

    def count_(what: str, n: int) -> None:
        counted[what] = counted.get(what, 0) + n

    notices = Notices(retransmit_mult=4, memory=3)
    fresh = notices.receive([notice("a"), notice("a"), notice("b")], count_)
    assert [n.id for n in fresh] == ["a", "b"] and counted == {"notice.duplicate": 1}
    assert notices.receive([notice("a")], count_) == []
    notices.receive([notice("c"), notice("d")], count_)  # "a" is the oldest: forgotten
    assert [n.id for n in notices.receive([notice("a")], count_)] == ["a"]
    assert len(notices._seen) == 3


def test_bad_notices_are_counted_and_skipped() -> None:
    counted: dict[str, int] = {}
    notices = Notices(retransmit_mult=4)
    bad = [["only", "three", "items"], [1, "ch", "o", None, None], ["id", "ch", "o", 1, "x"]]
    fresh = notices.receive([*bad, notice("ok")], lambda w, n: counted.update({w: n + counted.get(w, 0)}))
    assert [n.id for n in fresh] == ["ok"] and counted == {"drop.notice": 3}
    with pytest.raises(BadPayload):
        notices.receive({"not": "a list"}, lambda w, n: None)


def test_each_holder_sends_a_notice_a_bounded_number_of_times() -> None:
    notices = Notices(retransmit_mult=4)
    notices.publish(Notice("big", "ch", "me", "x" * 5000, None), lambda w, n: None)
    sent = 0
    for _ in range(100):
        if not notices.take(1200, 150):  # a notice larger than the budget still goes alone
            break
        sent += 1
    assert sent == 12  # ceil(ln(150) + ln(1000))


def test_the_queue_of_notices_to_send_on_is_bounded() -> None:
    from hedgeplug.membership.gossip.notices import MAX_QUEUED

    counted: dict[str, int] = {}
    notices = Notices(retransmit_mult=4)
    notices.publish(Notice("first", "ch", "me", 1, None), lambda w, n: None)
    notices.take(10_000, 150)  # "first" has been sent once: it goes first
    items = [notice(f"n{i}") for i in range(MAX_QUEUED + 10)]
    notices.receive(items, lambda w, n: counted.update({w: n + counted.get(w, 0)}))
    assert len(notices) == MAX_QUEUED and counted == {"notice.overflow": 11}
    assert "first" not in notices.queue.pending()


def test_the_delivery_bound_grows_with_log_n() -> None:
    small = delivery_bound(3, 0.2, 10)
    large = delivery_bound(3, 0.2, 150)
    assert small == pytest.approx((4 + 2) * 4 * 0.2)  # ceil(10 / 3) = 4 rounds per hop
    assert large == pytest.approx((8 + 2) * 4 * 0.2)  # ceil(12 / 3) = 4 rounds per hop


# ---------------------------------------------------------------- on the kit's cluster


async def settled(cluster: BroadcastCluster) -> None:
    with anyio.fail_after(20):
        while not all(len(t.node.view.ids) == len(cluster.targets) for t in cluster.targets):
            await anyio.sleep(0.05)


async def received_by(targets: list[Target], wanted: int, limit: float = 10.0) -> None:
    with anyio.move_on_after(limit):
        while not all(len(t.received) >= wanted for t in targets):
            await anyio.sleep(0.02)
    await anyio.sleep(0.5)  # and nothing more arrives (each member handles a notice once)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.mark.anyio
async def test_kit_empty_targets(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        await settled(cluster)
        await check_empty_targets(cluster)


@pytest.mark.anyio
async def test_every_target_handles_it_once_from_the_sender_without_replies(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        await settled(cluster)
        payload = {"n": 1, "text": "to all"}
        with anyio.fail_after(5.0):  # fire-and-forget: returns once the first copies are out
            replies = await cluster.deliver(payload, [t.member for t in cluster.others], 5.0)
        assert replies == []
        await received_by(cluster.others, 1)
        sender = cluster.sender.node.id
        for target in cluster.others:
            assert target.received == [(payload, sender)], (target.node.id, target.received)
        assert cluster.sender.received == []


@pytest.mark.anyio
async def test_the_sender_among_the_targets_handles_it_itself(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        await settled(cluster)
        await cluster.deliver("me too", [t.member for t in cluster.targets], 5.0)
        await received_by(cluster.targets, 1)
        sender = cluster.sender.node.id
        assert all(t.received == [("me too", sender)] for t in cluster.targets), [
            (t.node.id, t.received) for t in cluster.targets
        ]


@pytest.mark.anyio
async def test_a_subset_of_targets_is_honoured(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        await settled(cluster)
        chosen, skipped = cluster.others[:2], cluster.others[2:]
        await cluster.deliver("some", [t.member for t in chosen], 5.0)
        await received_by(chosen, 1)
        assert all(t.received == [("some", cluster.sender.node.id)] for t in chosen)
        assert all(t.received == [] for t in skipped)


@pytest.mark.anyio
async def test_dead_unreachable_and_failing_targets_hold_up_nobody(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        await settled(cluster)
        crashed, refusing, *alive = cluster.others
        await cluster.crash(crashed)
        refusing.fail = True
        nowhere = Member("nowhere", free_loopback_address())
        members = [crashed.member, refusing.member, nowhere, *(t.member for t in alive)]
        with anyio.fail_after(5.0):  # nobody to wait for: no timeouts of 3s here
            assert await cluster.deliver("partial", members, 30.0) == []
        await received_by([refusing, *alive], 1)
        for target in [refusing, *alive]:  # the refusing one handled it (and raised)
            assert target.received == [("partial", cluster.sender.node.id)], target.node.id


@pytest.mark.anyio
async def test_an_oversized_payload_is_refused_with_the_limit_named(tmp_path: Path) -> None:
    async with broadcast_cluster(GOSSIP, tmp_path) as cluster:
        with pytest.raises(HedgeplugError, match="at most 8192 bytes"):
            await cluster.deliver("x" * 10_000, [t.member for t in cluster.others], 1.0)


@pytest.mark.anyio
async def test_without_the_gossip_membership_the_node_does_not_start(tmp_path: Path) -> None:
    config = {
        "node": {"id": "solo", "cluster": "c"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "db")},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat"},
        "broadcast": {"use": "gossip"},
    }
    with pytest.raises(ConfigError, match=r"membership\] use = 'heartbeat'"):
        async with open_node(config, registry=REGISTRY):
            pass


# ---------------------------------------------------------------- 40 nodes, lossy links


def lossy_cluster_delivery(n: int, broadcasts: int, seed: int, loss: float) -> dict[str, Any]:
    """n gossip nodes (lan profile) on the in-memory network under a virtual
    clock; after they agree, `loss` on every link, then `broadcasts` notices
    from random members, one per second: seconds until each reached every
    live member (None if it did not within twice the stated bound)."""

    async def main() -> dict[str, Any]:
        run = next(_runs)
        net_name, store_name = f"gb-net-{run}", f"gb-store-{run}"
        net = new_network(net_name, seed=seed)
        new_store(store_name)
        nodes: dict[str, Node] = {}
        got: dict[str, dict[str, float]] = {}  # payload -> node -> time
        handled: dict[str, int] = {}  # payload -> handler calls, cluster-wide
        done = anyio.Event()

        async def life(node_id: str, started: anyio.Event) -> None:
            cfg = {
                "node": {"id": node_id, "cluster": "gb", "seed": zlib.crc32(f"{seed}/{node_id}".encode())},
                "lock": {"use": "memory", "store": store_name, "ttl": "3s"},
                "transport": {"use": "memory", "network": net_name},
                "membership": {"use": "gossip"},
                "broadcast": {"use": "gossip"},
            }
            async with open_node(cfg, registry=REGISTRY) as node:
                def on(payload: Any, sender: str) -> None:
                    got.setdefault(payload, {}).setdefault(node_id, trio.current_time())
                    handled[payload] = handled.get(payload, 0) + 1

                node.on_broadcast(on)
                nodes[node_id] = node
                started.set()
                await done.wait()

        async with anyio.create_task_group() as tg:
            for i in range(n):
                ev = anyio.Event()
                tg.start_soon(life, f"n{i}", ev)
                await ev.wait()
            with anyio.fail_after(60):
                while not all(len(x.view.ids) == n for x in nodes.values()):
                    await anyio.sleep(0.5)
            net.set_faults(LinkFaults(latency=Latency(0.001, 0.004), loss=loss))
            bound = delivery_bound(LAN["gossip_nodes"], LAN["gossip_interval"], n)
            sent: dict[str, float] = {}
            for i in range(broadcasts):
                sender = nodes[f"n{(i * 7) % n}"]
                sent[f"b{i}"] = trio.current_time()
                assert await sender.broadcast_all(f"b{i}") == []
                await anyio.sleep(1.0)
            await anyio.sleep(2 * bound)
            times = {
                p: (max(got[p].values()) - t if len(got.get(p, {})) == n else None)
                for p, t in sent.items()
            }
            done.set()
            tg.cancel_scope.cancel()
        return {"bound": bound, "times": times, "handled": handled}

    # trio shuffles runnable tasks; without its reproducible mode the same
    # seed gave other losses in other runs (and one notice in about fifteen
    # runs never reached one of the 40 members: see docs/gossip.md).
    with reproducible_scheduling(seed):
        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_forty_members_under_five_percent_loss_all_get_every_notice_within_the_bound() -> None:
    out = lossy_cluster_delivery(40, broadcasts=5, seed=3, loss=0.05)
    assert all(t is not None and t <= out["bound"] for t in out["times"].values()), out
    assert set(out["handled"].values()) == {40}, out  # each member once, the sender included
