"""The running `gossip` membership: owns the member table and wires the
concerns together (probing, suspicion, dissemination, full-state exchange,
anchoring on the lease holder), answers peers, and publishes the view.

Every record that wins against the table is queued for dissemination, so
news spreads on the next messages whoever learned it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import attrs

from hedgeplug.plugin import Member, MemberState, Message, NodeContext, View, ViewVersion

from . import messages as wire
from .anchor import Anchor
from .awareness import Awareness
from .dissemination import Dissemination
from .notices import Notice
from .probe import Prober
from .pushpull import PushPull
from .queue import TransmitQueue
from .settings import Settings, stated_bounds
from .state import GONE, MemberTable
from .suspicion import Suspicions
from .watch import SuspectChecks, ends_known_suspicion

CHANNEL = "gossip"


class Gossip:
    """SWIM with Lifeguard, anchored on the lock's lease holder."""

    def __init__(self, settings: Settings, ctx: NodeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.channel = ctx.channel(CHANNEL)
        self.queue = TransmitQueue(settings.retransmit_mult)
        self.awareness = Awareness(settings.awareness_max_multiplier)
        self.suspicions = Suspicions(
            settings.suspicion_mult,
            settings.suspicion_max_timeout_mult,
            settings.confirmed_suspicion,
        )
        self.prober = Prober(self)
        self.checks = SuspectChecks(self, self.prober.ping, self.declare_dead, self._restart_suspicion)
        self.pushpull = PushPull(self)
        self.anchor = Anchor(self, self.pushpull.exchange)
        self.dissemination = Dissemination(self)
        self.table: MemberTable | None = None
        self.leaving = False
        self._dirty = False
        self._view = View()
        self._view_seq = 0
        self.heard: dict[str, float] = {}  # member id -> last time a message from it arrived
        self._notices_sent = 0

    # ------------------------------------------------------------ life cycle

    def start(self) -> MemberTable:
        """Create the table once the node's address is known and start answering peers."""
        if self.table is None:
            me = Member(self.ctx.id, self.ctx.address, dict(self.ctx.meta))
            self.table = MemberTable(me, self.ctx.now())
            self._dirty = True
            self.publish()
            self.channel.handle(self.handle)
        return self.table

    async def run(self) -> None:
        self.start()
        async with anyio.create_task_group() as tg:
            self.checks.tasks = tg
            tg.start_soon(self.prober.run)
            tg.start_soon(self.dissemination.run)
            tg.start_soon(self.pushpull.run)
            tg.start_soon(self.anchor.run)

    async def leave(self) -> None:
        """Tell everyone we leave, then keep gossiping the goodbye for a moment."""
        table = self.table
        if table is None or self.leaving:
            return
        self.leaving = True
        me = attrs.evolve(table.me, state=MemberState.LEFT)
        table.set_self(me, self.ctx.now())
        self.enqueue(me, me.id)
        self._dirty = True
        self.publish()
        goodbye = {"t": wire.GOSSIP, "u": [wire.record_to_wire(me, me.id)]}
        with anyio.move_on_after(self.settings.leave_wait):
            # A goodbye to every live member is cheap and makes the leave visible in one round.
            for member in table.live_others():
                await self.send(member.address, goodbye)
        await self.ctx.sleep(self.settings.leave_wait)

    async def set_meta(self, meta: dict[str, str]) -> None:
        """Change this node's metadata: a new incarnation carries it to everyone."""
        table = self.start()
        me = attrs.evolve(table.me, meta=meta, incarnation=table.me.incarnation + 1)
        table.set_self(me, self.ctx.now())
        self.enqueue(me, me.id)
        self._dirty = True
        self.publish()

    # ------------------------------------------------------------ state

    @property
    def me(self) -> Member:
        assert self.table is not None
        return self.table.me

    @property
    def view(self) -> View:
        return self._view

    def cluster_size(self) -> int:
        return self.table.live_count() if self.table else 1

    def healthy_size(self) -> int:
        """Members not under suspicion, this node included: the ones a refutation
        has to reach. After a mass crash the suspects are mostly the dead, and
        sizing suspicion timeouts by them would stretch every detection."""
        if self.table is None:
            return 1
        return sum(1 for m in self.table if m.state is MemberState.ALIVE)

    def bounds(self, cluster_size: int) -> dict[str, float]:
        """Stated detection and convergence bounds for `cluster_size` members
        (docs/gossip.md, "Bounds"); the simulator checks against them."""
        return stated_bounds(self.settings, cluster_size)

    async def notify(self, channel: str, payload: Any, targets: frozenset[str] | None) -> str:
        """Spread `payload` to every member's handler of `channel` (or those in
        `targets`) through the gossip rounds, fire-and-forget; returns its id.
        The random part keeps ids unique across restarts of this node."""
        self._notices_sent += 1
        notice_id = f"{self.ctx.id}:{self._notices_sent}:{self.ctx.random.getrandbits(32):08x}"
        await self.dissemination.spread(Notice(notice_id, channel, self.ctx.id, payload, targets))
        return notice_id

    def heard_from(self, member_id: str) -> None:
        self.heard[member_id] = self.ctx.now()

    def count(self, what: str, n: int = 1) -> None:
        self.ctx.count(f"gossip.{what}", n)

    def enqueue(self, member: Member, origin: str) -> None:
        self.queue.push(member.id, wire.record_to_wire(member, origin))

    def piggyback(self) -> list[list[Any]]:
        return self.queue.take(self.settings.packet_budget, self.cluster_size())

    def apply(self, member: Member, origin: str, *, from_state: bool = False) -> None:
        """Merge one record from a peer (or our own verdict) into the table."""
        table = self.start()
        now = self.ctx.now()
        if member.id == table.me_id:
            self._about_me(member)
            return
        current = table.get(member.id)
        if current is None and member.state in GONE:
            # News of the death of someone we never knew: nothing to remember,
            # and remembering it would let tombstones bounce between tables forever.
            return
        second_hand_death = (
            member.state in GONE
            and origin != table.me_id  # our own verdict, not a peer's word
            and not (member.state is MemberState.LEFT and origin == member.id)  # its own goodbye
            and current is not None
            and current.live
            and not ends_known_suspicion(
                current, member, from_state, self.suspicions.get(member.id), now, self.settings
            )
        )
        if second_hand_death:
            # Another node's word (gossip or its table) is not first-hand evidence:
            # suspect, and check at once instead of believing the death outright,
            # so one confused or hostile peer cannot make live members vanish.
            member = attrs.evolve(member, state=MemberState.SUSPECT)
        if (
            member.state is MemberState.SUSPECT
            and current is not None
            and current.state is MemberState.SUSPECT
            and current.incarnation == member.incarnation
        ):
            if self.suspicions.confirm(member.id, member.incarnation, origin):
                self.count("suspect.confirmed")
                self.enqueue(member, origin)
            if second_hand_death:
                self.check_now(current)  # a claimed death: our last-chance ping decides now
            return
        change = table.apply(member, now)
        if change is None:
            return
        after = change.after
        if after.state is MemberState.SUSPECT:
            self.suspicions.cancel(after.id)
            started = self.suspicions.start(
                after.id,
                after.incarnation,
                origin,
                now,
                self.healthy_size(),
                self.settings.probe_interval,
            )
            started.from_claimed_death = second_hand_death
        else:
            self.suspicions.cancel(after.id)
        if change.state_changed and after.state is MemberState.DEAD:
            self.count("dead")
        self.enqueue(after, origin)
        self._dirty = True
        if second_hand_death:
            # A node that joined late or healed a split can otherwise carry a
            # dead member for a whole suspicion timeout after everyone else.
            self.check_now(after)

    def _about_me(self, record: Member) -> None:
        assert self.table is not None
        me = self.table.me
        if self.leaving:
            return
        accused = record.state is not MemberState.ALIVE and record.incarnation >= me.incarnation
        outdated = record.state is MemberState.ALIVE and record.incarnation > me.incarnation
        if not (accused or outdated):
            return
        # Refute with an incarnation nobody has used for us yet.
        me = attrs.evolve(me, state=MemberState.ALIVE, incarnation=record.incarnation + 1)
        self.table.set_self(me, self.ctx.now())
        self.enqueue(me, me.id)
        if accused:
            self.awareness.apply(1)  # being suspected hints that we are the slow one
            self.count("refuted")
        self._dirty = True

    def absorb(self, records: Any, *, from_state: bool = False) -> bool:
        """Apply a list of wire records from a peer; bad ones are counted and
        skipped. True when one of them accused this node (at any incarnation)."""
        good, bad = wire.records_from_wire(records)
        if bad:
            self.count("drop.record", bad)
        accused = False
        for member, origin in good:
            if member.id == self.me.id and member.state is not MemberState.ALIVE:
                accused = True
            self.apply(member, origin, from_state=from_state)
        self.publish()
        return accused

    def suspect(self, member: Member, confirmed_by: Sequence[str] = ()) -> None:
        """Our own probe failed: accuse `member` at the incarnation we know.

        `confirmed_by` are the relays that tried the member for us and failed
        (they nacked): independent witnesses, so they count as confirmations
        and shorten the suspicion as much as accusations by them would.
        """
        current = self.table.get(member.id) if self.table else None
        if current is None or not current.live or current.incarnation != member.incarnation:
            return
        self.count("suspect")
        self.apply(attrs.evolve(current, state=MemberState.SUSPECT), self.me.id)
        for witness in confirmed_by:
            self.suspicions.confirm(member.id, member.incarnation, witness)
        self.publish()
        suspect = self.table.get(member.id) if self.table else None
        if suspect is not None and suspect.state is MemberState.SUSPECT:
            self.checks.start(suspect, watch=True)

    def expire_suspicions(self) -> None:
        assert self.table is not None
        for s in self.suspicions.expired(self.ctx.now()):
            current = self.table.get(s.member)
            if (
                current
                and current.state is MemberState.SUSPECT
                and current.incarnation == s.incarnation
                and not self.checks.start(current, watch=False)
            ):
                self.declare_dead(current)  # not running (tests): no check possible
        for gone in self.table.forget_gone(self.ctx.now(), self.settings.dead_retention):
            self.suspicions.cancel(gone.id)
            self.queue.discard(gone.id)
            self.heard.pop(gone.id, None)
            self._dirty = True

    def check_now(self, suspect: Member) -> None:
        """Start a last-chance ping of `suspect` unless a check of it runs."""
        self.checks.start(suspect, watch=False)

    def declare_dead(self, member: Member) -> None:
        self.apply(attrs.evolve(member, state=MemberState.DEAD), self.me.id)
        self.publish()

    def _restart_suspicion(self, current: Member) -> None:
        self.suspicions.start(
            current.id,
            current.incarnation,
            self.me.id,
            self.ctx.now(),
            self.healthy_size(),
            self.settings.probe_interval,
        )

    def publish(self) -> None:
        if not self._dirty or self.table is None:
            return
        self._dirty = False
        members = tuple(sorted(self.table.members(), key=lambda m: m.id))
        if members == self._view.members:
            return
        self._view_seq += 1
        self._view = View(members, ViewVersion(0, self._view_seq))
        self.ctx.publish_view(self._view)

    # ------------------------------------------------------------ messages

    async def handle(self, msg: Message) -> Any:
        payload = msg.payload
        self.heard_from(msg.sender)
        try:
            kind = wire.message_type(payload)
            if kind == wire.PING:
                target = wire.field_text(payload, "to")
                if self.absorb(payload.get("u")) and target == self.me.id:
                    await self.checks.answer(msg.sender)
                return self._on_ping(target, msg.sender)
            if kind == wire.PING_REQ:
                return await self.prober.relay(payload)
            if kind == wire.GOSSIP:
                if self.absorb(payload.get("u")):
                    await self.checks.answer(msg.sender)
                self.dissemination.receive_notices(payload.get("n"))
                accused = self.accusation(msg.sender)
                if accused is not None:
                    await self.send(
                        accused.address, {"t": wire.GOSSIP, "u": [self._record(accused)]}
                    )
                return None
            if kind == wire.PUSH_PULL:
                return self.pushpull.answer(payload)
            if kind == wire.DIGEST:
                return {"t": wire.DIGEST, "d": self._view.digest()}
        except wire.BadPayload as exc:
            self.count(f"drop.{exc.reason}")
            self.ctx.log.debug("gossip: dropped payload from %s: %s", msg.sender, exc)
        return None

    def accusation(self, sender: str) -> Member | None:
        """Our record of `sender` if it accuses it: a member that can talk to
        us should hear at once that we suspect it (or think it dead), so it
        refutes in one round trip instead of whenever gossip happens to reach it."""
        known = self.table.get(sender) if self.table else None
        if known is not None and known.state in (MemberState.SUSPECT, MemberState.DEAD):
            return known
        return None

    def _record(self, member: Member) -> list[Any]:
        return wire.record_to_wire(member, self.me.id)

    def _on_ping(self, target: str, sender: str) -> dict[str, Any]:
        if target != self.me.id:
            self.count("drop.wrong-target")
            return {"t": wire.ACK, "ok": False}
        # An ack can arrive after the prober gave up (a slow node's usually
        # does) and is then dropped with its cargo, so it rides along uncounted.
        records = self.queue.peek(self.settings.packet_budget)
        accused = self.accusation(sender)
        if accused is not None:
            records.insert(0, self._record(accused))
        return {"t": wire.ACK, "ok": True, "u": records}

    async def send(self, address: str, payload: Any) -> None:
        try:
            await self.channel.send(address, payload)
        except Exception as exc:  # best effort by contract; never let a send kill a loop
            self.count("send-errors")
            self.ctx.log.debug("gossip: send to %s failed: %s", address, exc)

    async def request(self, address: str, payload: Any, timeout: float) -> Any:
        """A request that returns None instead of raising on any failure or timeout."""
        with anyio.move_on_after(timeout):
            try:
                return await self.channel.request(address, payload, timeout)
            except Exception as exc:
                self.ctx.log.debug("gossip: request to %s failed: %s", address, exc)
        return None
