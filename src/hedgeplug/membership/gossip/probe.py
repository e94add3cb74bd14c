"""Failure detection: probe one member per period, round-robin over a
shuffled list, directly and then through others.

A probe is a direct ping with `probe_timeout`; without an ack, up to
`indirect_checks` other members ping the target for us and answer ack or
nack. Only when nobody got an ack by the end of the period is the target
suspected. The nacks tell us whether our own messages get through: a relay
that does not even answer counts against our local health (Lifeguard), and
all our timeouts grow with it.
"""

from __future__ import annotations

from random import Random
from typing import Any

import anyio

from hedgeplug.plugin import Member, MemberState

from . import messages as wire
from .host import GossipHost

# A relay answers with a nack before the asker gives up on it (memberlist uses 80%).
RELAY_SHARE = 0.8
# A relay heard from within this many probe intervals was expected to answer.
RECENT_PROBES = 2


class ProbeOrder:
    """Round-robin over the members, reshuffled on every pass so each is
    probed once per pass in an order no one can predict or synchronise on."""

    def __init__(self, random: Random) -> None:
        self._random = random
        self._order: list[str] = []
        self._next = 0

    def next(self, candidates: dict[str, Member]) -> Member | None:
        for _ in range(2):
            while self._next < len(self._order):
                member_id = self._order[self._next]
                self._next += 1
                if member_id in candidates:
                    return candidates[member_id]
            self._order = sorted(candidates)
            self._random.shuffle(self._order)
            self._next = 0
            if not self._order:
                return None
        return None


class Prober:
    def __init__(self, gossip: GossipHost) -> None:
        self.gossip = gossip
        self.order = ProbeOrder(gossip.ctx.random)

    async def run(self) -> None:
        g = self.gossip
        s = g.settings
        # Start at a random point of the first period so nodes do not probe in lockstep.
        await g.ctx.sleep(g.ctx.random.uniform(0, s.probe_interval))
        while True:
            started = g.ctx.now()
            try:
                await self.probe_next()
            except Exception:
                g.count("errors")
                g.ctx.log.exception("gossip probe failed")
            period = g.awareness.scale(s.probe_interval)
            await g.ctx.sleep(max(0.0, started + period - g.ctx.now()))

    async def probe_next(self) -> bool | None:
        g = self.gossip
        if g.leaving or g.table is None:
            return None
        # A suspicion we share or that needs no more confirmations is left to
        # run (it ends with a last-chance ping): after a mass crash the
        # survivors' probes then cover the members nobody suspects yet instead
        # of the same dead ones. One still short of witnesses gets our probe.
        candidates = {m.id: m for m in g.table.live_others() if not self._settled(m.id)}
        target = self.order.next(candidates)
        if target is None:
            return None
        return await self.probe(target)

    def _settled(self, member_id: str) -> bool:
        suspicion = self.gossip.suspicions.get(member_id)
        if suspicion is None:
            return False
        return (
            self.gossip.me.id in suspicion.accusers
            or suspicion.confirmations >= suspicion.expected
        )

    async def ping(self, address: str, target: str, timeout: float) -> bool:
        g = self.gossip
        records = g.piggyback()
        known = g.table.get(target) if g.table else None
        if known is not None and known.state is MemberState.SUSPECT:
            # Tell a suspect it is suspected: it can refute at once instead of
            # waiting for the accusation to reach it by chance.
            records.insert(0, wire.record_to_wire(known, g.me.id))
        reply = await g.request(address, {"t": wire.PING, "to": target, "u": records}, timeout)
        if not isinstance(reply, dict) or reply.get("t") != wire.ACK:
            return False
        if reply.get("ok") is True:
            g.heard_from(target)
        try:
            g.absorb(reply.get("u"))
        except wire.BadPayload as exc:
            g.count(f"drop.{exc.reason}")
        return reply.get("ok") is True

    async def probe(self, target: Member) -> bool:
        """One probe of `target`; True when it answered directly or through others."""
        g = self.gossip
        s = g.settings
        started = g.ctx.now()
        if await self.ping(target.address, target.id, g.awareness.scale(s.probe_timeout)):
            g.awareness.apply(-1)
            g.count("probe.ok")
            return True
        assert g.table is not None
        relays, fresh = self.pick_relays(target)
        deadline = started + g.awareness.scale(s.probe_interval)
        acked = False
        nackers: list[str] = []
        request = {"t": wire.PING_REQ, "to": target.id, "addr": target.address}

        async def ask(relay: Member, scope: anyio.CancelScope) -> None:
            nonlocal acked
            reply = await g.request(relay.address, request, max(0.01, deadline - g.ctx.now()))
            if isinstance(reply, dict) and reply.get("t") == wire.ACK:
                g.heard_from(relay.id)
                if reply.get("ok") is True:
                    acked = True
                    scope.cancel()
                else:
                    nackers.append(relay.id)

        if relays:
            async with anyio.create_task_group() as tg:
                for relay in relays:
                    tg.start_soon(ask, relay, tg.cancel_scope)
        if acked:
            g.count("probe.indirect-ok")
            return True
        # No answer from any relay suggests the trouble is on our side, but only
        # if we expected answers: relays we heard from lately. A nack shows our
        # messages get through in time, as an ack would: the target and the
        # silent relays are then more likely down themselves (a mass crash
        # would otherwise slow every survivor's probing down exactly when there
        # is most to detect, and keep it slow: acks are rare then).
        if nackers:
            g.awareness.apply(-1)
        elif fresh:
            g.awareness.apply(1)
        g.count("probe.failed")
        g.suspect(target, confirmed_by=nackers)
        return False

    def pick_relays(self, target: Member) -> tuple[list[Member], bool]:
        """Up to `indirect_checks` relays, drawn from the healthy members we
        heard from most recently (twice as many as needed, so the load
        spreads), and whether any of them was heard within RECENT_PROBES
        probe intervals. Random members would be mostly dead after a mass
        crash: no nacks, so no confirmations, and our own health would take
        the blame and slow all our probing down."""
        g = self.gossip
        assert g.table is not None
        want = g.settings.indirect_checks
        others = [m for m in g.table.live_others() if m.id != target.id]
        heard = [
            (g.heard[m.id], m.id, m)
            for m in others
            if m.state is MemberState.ALIVE and m.id in g.heard
        ]
        heard.sort(reverse=True)
        best = [m for _, _, m in heard[: 2 * want]]
        picked = g.ctx.random.sample(best, min(want, len(best)))
        recent = g.ctx.now() - RECENT_PROBES * g.settings.probe_interval
        fresh = any(g.heard[m.id] >= recent for m in picked)
        for state in (MemberState.ALIVE, MemberState.SUSPECT):
            if len(picked) >= want:
                break
            rest = [m for m in others if m.state is state and m not in picked]
            picked += g.ctx.random.sample(rest, min(want - len(picked), len(rest)))
        return picked, fresh

    async def relay(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Ping a member for someone else; ack or nack before they give up."""
        g = self.gossip
        target = wire.field_text(payload, "to")
        address = wire.field_text(payload, "addr")
        known = g.table.get(target) if g.table else None
        if known is None or known.address != address:
            # Only ping addresses we know for that member: a peer cannot aim us elsewhere.
            g.count("drop.relay-unknown")
            return {"t": wire.ACK, "ok": False}
        ok = await self.ping(address, target, g.settings.probe_timeout * RELAY_SHARE)
        return {"t": wire.ACK, "ok": ok}
