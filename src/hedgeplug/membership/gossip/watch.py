"""Checking a suspect before it is declared dead.

Three measures; the pings carry the accusation (see
Prober.ping), so a live suspect refutes in its ack:

- a **watch**, started by the node whose own probe failed: it pings the
  suspect again and again (one ping per `probe_timeout`) until the
  suspicion runs out, then declares it dead if none was answered and tells
  every live member so at once (one message each). This is
  what lets a fully confirmed suspicion be short (`confirmed_suspicion`):
  the suspect hears the accusation at once and directly, not whenever
  gossip reaches it, and its answer comes straight back;
- a **straight answer**: a live member that hears it is accused (at any
  incarnation, in a ping or in gossip) sends its own record back to the
  accuser at once;
- a **last chance**, when a suspicion this node did not start runs out, or
  a peer claims a death we cannot vouch for: one ping, up to one
  `probe_interval`. Without it, a refutation that missed one node (the
  epidemic reaches everyone only with high probability) would get a live
  member killed there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from hedgeplug.plugin import Member, MemberState

from . import messages as wire
from .host import GossipHost
from .settings import Settings
from .suspicion import Suspicion


def ends_known_suspicion(
    current: Member,
    claim: Member,
    from_state: bool,
    suspicion: Suspicion | None,
    now: float,
    settings: Settings,
) -> bool:
    """A gossiped death that ends a suspicion we hold at the same incarnation
    is believed: the suspect had the suspicion to refute, and the node that
    declared it watched it meanwhile. Checking again would add a ping
    timeout to every detection. Not believed, but checked with a last-chance
    ping: deaths in a full-state exchange (a late joiner, a healed split:
    perhaps old news), deaths of members we hold alive, deaths ending a
    suspicion that itself came from a claimed death (a peer repeating "dead"
    must not get its way by saying it twice), and deaths that follow the
    accusation by less than a probe timeout (too soon for any refutation)."""
    return (
        not from_state
        and claim.state is MemberState.DEAD
        and current.state is MemberState.SUSPECT
        and current.incarnation == claim.incarnation
        and suspicion is not None
        and suspicion.incarnation == claim.incarnation
        and not suspicion.from_claimed_death
        and now - suspicion.start >= settings.probe_timeout
    )


class SuspectChecks:
    def __init__(
        self,
        gossip: GossipHost,
        ping: Callable[[str, str, float], Awaitable[bool]],
        declare_dead: Callable[[Member], None],
        restart: Callable[[Member], None],
    ) -> None:
        self.gossip = gossip
        self._ping = ping
        self._declare_dead = declare_dead
        self._restart = restart
        self._running: set[str] = set()
        self.tasks: TaskGroup | None = None

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._running

    def start(self, suspect: Member, *, watch: bool) -> bool:
        """Start checking `suspect` unless a check of it runs; False without a task group."""
        if self.tasks is None:
            return False
        if suspect.id not in self._running:
            self._running.add(suspect.id)
            self.tasks.start_soon(self._check, suspect, watch)
        return True

    async def answer(self, accuser: str) -> None:
        """Send our own record straight back to a member that accused us (in
        its own task when running: an ack must not wait for a connection).
        An ack that arrives after the prober gave up is dropped with our
        refutation, and gossip takes a few rounds, while its suspicion of
        us may be short."""
        g = self.gossip
        known = g.table.get(accuser) if g.table else None
        if known is None or g.leaving:
            return
        message = {"t": wire.GOSSIP, "u": [wire.record_to_wire(g.me, g.me.id)]}
        if self.tasks is not None:
            self.tasks.start_soon(g.send, known.address, message)
        else:
            await g.send(known.address, message)

    async def _announce(self, member_id: str) -> None:
        """The watcher tells every live member of the death at once, as a
        leaving node tells its goodbye: gossip alone takes about log(N)
        rounds to reach everyone (1-1.5s at 150 members), one message each
        takes one delay. Those that hold the same suspicion believe it; the
        others check it with a last-chance ping. Gossip still spreads it."""
        g = self.gossip
        dead = g.table.get(member_id) if g.table else None
        if dead is None or dead.state is not MemberState.DEAD or g.table is None:
            return
        message = {"t": wire.GOSSIP, "u": [wire.record_to_wire(dead, g.me.id)]}
        with anyio.move_on_after(g.settings.probe_interval):
            for member in g.table.live_others():
                await g.send(member.address, message)

    def _still_suspect(self, suspect: Member) -> Member | None:
        g = self.gossip
        current = g.table.get(suspect.id) if g.table else None
        if current is None or current.state is not MemberState.SUSPECT:
            return None
        return current if current.incarnation == suspect.incarnation else None

    async def _check(self, suspect: Member, watch: bool) -> None:
        g = self.gossip
        s = g.settings
        try:
            while True:
                started = g.ctx.now()
                wait = s.probe_timeout if watch else s.probe_interval
                answered = await self._ping(suspect.address, suspect.id, g.awareness.scale(wait))
                current = self._still_suspect(suspect)
                if current is None:
                    return  # refuted (its ack carried the new incarnation) or settled elsewhere
                if answered:
                    # Alive, but its refutation has not reached us yet: give it another round.
                    g.count("suspect.spared")
                    self._restart(current)
                    return
                if not watch:
                    break
                # One ping per probe_timeout, even when a send fails at once.
                await g.ctx.sleep(max(0.0, started + g.awareness.scale(wait) - g.ctx.now()))
                current = self._still_suspect(suspect)
                if current is None:
                    return
                if current.id not in g.suspicions:
                    break  # the suspicion ran out and none of our pings was answered
            self._declare_dead(current)
            if watch:
                await self._announce(current.id)
        except Exception:  # a bug here must not take the membership task down
            g.count("errors")
            g.ctx.log.exception("gossip suspect check failed")
        finally:
            self._running.discard(suspect.id)
