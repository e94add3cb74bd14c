"""How the protocol applies records from peers: refutation, confirmations,
second-hand deaths, and the published view. No network: the node context is
a plain object that records what the protocol publishes and counts."""

from __future__ import annotations

import logging
from random import Random
from typing import Any

from hedgeplug.membership.gossip.messages import record_to_wire
from hedgeplug.membership.gossip.plugin import GossipOptions, resolve
from hedgeplug.membership.gossip.protocol import Gossip
from hedgeplug.view import Member, MemberState, View

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


class Channel:
    def handle(self, handler: Any) -> None:
        self.handler = handler


class Context:
    id = "me"
    address = "me:1"
    meta = {"role": "test"}
    leader = None

    def __init__(self) -> None:
        self.random = Random(1)
        self.log = logging.getLogger("test")
        self.time = 0.0
        self.views: list[View] = []
        self.counters: dict[str, int] = {}
        self.gossip_channel = Channel()

    def now(self) -> float:
        return self.time

    def channel(self, name: str) -> Channel:
        return self.gossip_channel

    def publish_view(self, view: View) -> None:
        self.views.append(view)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


def gossip(**options: Any) -> tuple[Gossip, Context]:
    ctx = Context()
    g = Gossip(resolve(GossipOptions(**options)), ctx)  # type: ignore[arg-type]
    g.start()
    return g, ctx


def rec(mid: str, state: MemberState = ALIVE, inc: int = 0) -> Member:
    return Member(mid, f"{mid}:1", {}, state, inc)


def test_start_publishes_this_node_with_its_metadata() -> None:
    g, ctx = gossip()
    assert ctx.views[-1].ids == {"me"} and ctx.views[-1].get("me").metadata == {"role": "test"}


def test_an_accusation_is_refuted_with_a_higher_incarnation() -> None:
    g, ctx = gossip()
    g.absorb([record_to_wire(rec("me", SUSPECT, 3), "x")])
    assert g.me.state is ALIVE and g.me.incarnation == 4
    assert g.awareness.score == 1 and ctx.counters["gossip.refuted"] == 1
    assert g.queue.pending() == {"me": 0}  # the refutation is queued for everyone


def test_a_leaving_node_does_not_refute() -> None:
    g, _ = gossip()
    g.leaving = True
    g.apply(rec("me", DEAD, 0), "x")
    assert g.me.incarnation == 0


def test_suspicion_starts_and_independent_confirmations_are_spread() -> None:
    g, ctx = gossip()
    for i in range(10):
        g.apply(rec(f"m{i}"), "me")
    g.apply(rec("m1", SUSPECT), "a")
    assert "m1" in g.suspicions
    timeout = g.suspicions.get("m1").timeout()
    g.queue.take(10_000, 10)
    g.apply(rec("m1", SUSPECT), "b")
    assert g.suspicions.get("m1").timeout() < timeout
    assert ctx.counters["gossip.suspect.confirmed"] == 1
    g.apply(rec("m1", ALIVE, 1), "m1")  # the suspect refuted
    assert "m1" not in g.suspicions


def test_expired_suspicion_declares_dead_then_forgets_after_retention() -> None:
    g, ctx = gossip(profile="local")
    g.apply(rec("a"), "me")
    g.apply(rec("a", SUSPECT), "b")
    ctx.time = 100.0
    g.expire_suspicions()
    assert g.table.get("a").state is DEAD and ctx.counters["gossip.dead"] == 1
    g.publish()
    assert "a" not in ctx.views[-1].ids and ctx.views[-1].get("a").state is DEAD
    ctx.time = 100.0 + g.settings.dead_retention
    g.expire_suspicions()
    assert g.table.get("a") is None


def test_second_hand_deaths_of_strangers_are_ignored() -> None:
    g, _ = gossip()
    g.apply(rec("ghost", DEAD, 2), "x")
    g.apply(rec("gone", LEFT, 0), "x")
    assert g.table.get("ghost") is None and g.table.get("gone") is None


def test_a_full_state_death_only_starts_our_own_suspicion() -> None:
    g, _ = gossip()
    g.apply(rec("a"), "me")
    g.apply(rec("a", DEAD), "peer", from_state=True)
    assert g.table.get("a").state is SUSPECT and "a" in g.suspicions


def test_metadata_change_raises_the_incarnation() -> None:
    import anyio

    g, ctx = gossip()
    anyio.run(g.set_meta, {"role": "new"})
    assert g.me.incarnation == 1 and ctx.views[-1].get("me").metadata == {"role": "new"}


def test_relays_that_failed_too_confirm_our_own_suspicion() -> None:
    g, _ = gossip()
    for i in range(10):
        g.apply(rec(f"m{i}"), "me")
    g.suspect(rec("m1"), confirmed_by=["m2", "m3"])
    sus = g.suspicions.get("m1")
    assert sus is not None and sus.confirmations == 2 and sus.timeout() == sus.low
    g.suspect(rec("m4", inc=5))  # not the incarnation we know: no accusation
    assert "m4" not in g.suspicions
