"""How the protocol applies records from peers: refutation, confirmations,
second-hand deaths, and the published view. No network: the node context is
a plain object that records what the protocol publishes and counts."""

from __future__ import annotations

import logging
from random import Random
from typing import Any

from hedgeplug.membership.gossip.messages import record_to_wire
from hedgeplug.membership.gossip.protocol import Gossip
from hedgeplug.membership.gossip.settings import GossipOptions, resolve
from hedgeplug.view import Member, MemberState, View

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def handle(self, handler: Any) -> None:
        self.handler = handler

    async def send(self, address: str, payload: Any) -> None:
        self.sent.append((address, payload))


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


# ---------------------------------------------------------------- after a mass crash


def probe_with(g: Gossip, replies: dict[tuple[str, str], Any], target: str = "m1") -> list[str]:
    """Run one probe of `target` with canned replies by (address, message type);
    returns the addresses asked, in order."""
    import anyio

    asked: list[str] = []

    async def request(address: str, payload: Any, timeout: float) -> Any:
        asked.append(address)
        return replies.get((address, payload["t"]))

    g.request = request  # type: ignore[method-assign]
    anyio.run(g.prober.probe, g.table.get(target))  # type: ignore[union-attr]
    return asked


NACK = {"t": "ack", "ok": False}


def crowd(g: Gossip, n: int) -> None:
    for i in range(n):
        g.apply(rec(f"m{i}"), "me")


def test_relays_are_drawn_from_the_members_heard_from_most_recently() -> None:
    g, ctx = gossip()
    crowd(g, 30)
    ctx.time = 10.0
    for mid in ("m5", "m6", "m7"):
        g.heard_from(mid)
    relays, fresh = g.prober.pick_relays(rec("m1"))
    assert {m.id for m in relays} == {"m5", "m6", "m7"} and fresh
    ctx.time = 20.0  # heard too long ago to expect an answer, still the best bet
    relays, fresh = g.prober.pick_relays(rec("m1"))
    assert {m.id for m in relays} == {"m5", "m6", "m7"} and not fresh


def test_nacks_confirm_and_heal_local_health_silent_fresh_relays_hurt_it() -> None:
    g, ctx = gossip()
    crowd(g, 30)
    g.awareness.apply(3)
    for mid in ("m5", "m6", "m7"):
        g.heard_from(mid)
    asked = probe_with(g, {(f"m{i}:1", "ping-req"): NACK for i in (5, 6, 7)})
    assert asked[0] == "m1:1" and sorted(asked[1:]) == ["m5:1", "m6:1", "m7:1"]
    assert g.awareness.score == 2  # a nack is a timely answer: we are not the slow one
    sus = g.suspicions.get("m1")
    # Three witnesses; the first two already bring the timeout to its minimum.
    assert sus is not None and sus.confirmations == 2 and abs(sus.timeout() - sus.low) < 1e-9
    # The same relays, heard a moment ago, now silent: the trouble may be ours.
    ctx.time = 0.5
    for mid in ("m5", "m6", "m7"):
        g.heard_from(mid)
    probe_with(g, {}, target="m2")
    assert g.awareness.score == 3


def test_silent_relays_we_never_heard_from_say_nothing_about_us() -> None:
    g, _ = gossip()
    crowd(g, 30)  # after a mass crash most of these would be dead
    probe_with(g, {})
    assert g.awareness.score == 0
    assert "m1" in g.suspicions


def test_a_member_we_suspect_is_left_to_its_suspicion_not_probed_again() -> None:
    import anyio

    g, _ = gossip()
    crowd(g, 4)
    g.suspect(rec("m1"))
    pinged: list[str] = []

    async def request(address: str, payload: Any, timeout: float) -> Any:
        pinged.append(payload["to"])
        return {"t": "ack", "ok": True}

    g.request = request  # type: ignore[method-assign]

    async def probes() -> None:
        for _ in range(9):
            await g.prober.probe_next()

    anyio.run(probes)
    assert sorted(set(pinged)) == ["m0", "m2", "m3"]
    # Someone else's suspicion still short of witnesses gets our probe (and,
    # failing, our confirmation); a fully confirmed one does not.
    g.apply(rec("m2", SUSPECT), "m0")
    g.apply(rec("m3", SUSPECT), "m0")
    g.suspicions.confirm("m3", 0, "m1")
    g.suspicions.confirm("m3", 0, "m2")
    pinged.clear()
    anyio.run(probes)
    assert sorted(set(pinged)) == ["m0", "m2"]


def test_one_gossip_target_is_among_the_members_heard_from_most_recently() -> None:
    g, ctx = gossip()
    crowd(g, 40)
    ctx.time = 5.0
    for mid in ("m1", "m2", "m3", "m4", "m5", "m6"):
        g.heard_from(mid)
    recent = {"m1", "m2", "m3", "m4", "m5", "m6"}
    rounds = [g.dissemination.targets(g.table.live_others()) for _ in range(50)]  # type: ignore[union-attr]
    assert all(len({m.id for m in r}) == 3 and r[0].id in recent for r in rounds)
    # The others stay random: over 50 rounds they reach well beyond the recent six.
    assert len({m.id for r in rounds for m in r[1:]} - recent) > 20


def test_suspicion_timeouts_are_sized_by_the_members_nobody_suspects() -> None:
    from hedgeplug.membership.gossip.suspicion import suspicion_bounds

    g, _ = gossip()
    crowd(g, 149)
    first = g.suspicions.start("x", 0, "me", 0.0, g.healthy_size(), 1.0)
    for i in range(140):
        g.apply(rec(f"m{i}", SUSPECT), "m148")
    g.suspect(rec("m145"))
    after = g.suspicions.get("m145")
    assert g.healthy_size() == 9  # me and m140..m147 but m145
    # The unconfirmed maximum is what the size changes (the confirmed minimum
    # is capped at confirmed_suspicion, 2s on lan).
    assert after is not None and after.high == suspicion_bounds(9, 1.0, 4, 6)[1] == 24.0
    assert first.high > 6 * 8.5  # 150 members: 6 * 4 * log10(150)
    assert after.low == first.low == 2.0


def test_stated_bounds_grow_with_the_cluster_and_cover_a_join_repair() -> None:
    g, _ = gossip()
    small, large = g.bounds(10), g.bounds(150)
    # lan: 150 probes of 1s, the longest suspicion 6 * 8.7s, one last-chance ping,
    # 12 retransmission rounds of 0.2s.
    assert abs(large["detection"] - (150 + 6 * 4 * 2.1761 + 1 + 12 * 0.2)) < 0.1
    assert small["detection"] < large["detection"]
    assert small["convergence"] >= 1.1 * 5 + 5 + 5  # an anchor repair of a missed join
    assert large["convergence"] == large["detection"]


def test_a_gossiped_death_that_ends_a_suspicion_we_hold_is_believed() -> None:
    g, ctx = gossip()
    g.apply(rec("a"), "me")
    g.apply(rec("a", SUSPECT), "b")
    g.apply(rec("a", DEAD), "b")  # too soon after the accusation for any refutation
    assert g.table.get("a").state is SUSPECT
    ctx.time = 1.0
    g.apply(rec("a", DEAD), "b")
    assert g.table.get("a").state is DEAD and ctx.counters["gossip.dead"] == 1
    # A peer saying "dead" twice: the first claim only made it a suspect.
    g.apply(rec("e"), "me")
    g.apply(rec("e", DEAD), "hostile")
    ctx.time = 5.0
    g.apply(rec("e", DEAD), "hostile")
    assert g.table.get("e").state is SUSPECT
    # A death at another incarnation, or in a full-state exchange, is only suspected.
    g.apply(rec("c"), "me")
    g.apply(rec("c", SUSPECT), "b")
    g.apply(rec("c", DEAD), "b", from_state=True)
    g.apply(rec("d"), "me")
    g.apply(rec("d", SUSPECT, 0), "b")
    g.apply(rec("d", DEAD, 1), "b")
    assert g.table.get("c").state is SUSPECT and g.table.get("d").state is SUSPECT


def test_an_accusation_is_answered_straight_back_to_whoever_made_it() -> None:
    import anyio

    from hedgeplug.plugin import Message

    g, ctx = gossip()
    g.apply(rec("accuser"), "me")
    accusation = {"t": "gossip", "u": [record_to_wire(Member("me", "me:1", {}, SUSPECT, 0), "accuser")]}
    anyio.run(g.handle, Message("accuser", "gossip", accusation, 1))
    assert g.me.incarnation == 1 and ctx.counters["gossip.refuted"] == 1
    address, payload = ctx.gossip_channel.sent[-1]
    assert address == "accuser:1" and payload["u"][0][0] == "me" and payload["u"][0][4] == 1
    # A stale accusation (the accuser missed our refutation) is answered again, not refuted again.
    ctx.gossip_channel.sent.clear()
    anyio.run(g.handle, Message("accuser", "gossip", accusation, 2))
    assert g.me.incarnation == 1 and ctx.gossip_channel.sent[-1][1]["u"][0][4] == 1
