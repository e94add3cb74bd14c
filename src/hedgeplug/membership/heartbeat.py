"""Membership `heartbeat`: the leader owns the view.

Followers find the leader in the lock store and heartbeat it every
`interval`. The leader adds a member on its first beat, removes it after
`missed` intervals without one (or at once on a goodbye), stamps every new
view with (its fencing token, seq) and pushes only the changes to every
member, gathered for `batch` so a burst of joins costs one message per
member instead of one per join. A member that missed a change catches up
from its next beat's reply (the changes since its version, or the whole
view). Once a leader said it takes them (the "ticks" flag of a beat
reply), a member beats it one-way ("tick": the same member and view
version, no reply): the leader answers only a member that lags behind what
it already pushed, with a push. That halves the frames per beat; the
period, and so every bound below, is unchanged. A node ignores any view
stamped with a token lower than the newest lease token it has seen, so a
deposed leader cannot overwrite its successor's view.

Bounds (interval I, missed M, lease ttl T, batch B): join within one round
trip of the first beat plus B; graceful leave within one round trip plus B;
crash detection within M*I + I/2 + B; after a leader crash an agreed view
within about T + 2*I. `bounds()` states them for the simulator's checkers:
detection T + T/4 + (M + 2)*I + B (a crash around a leader crash, counting
the lease expiry, one contender poll and a new leader's first M beats),
convergence the same.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from hedgeplug.plugin import (
    Duration,
    Member,
    NodeContext,
    View,
    ViewVersion,
    at_least,
    hookimpl,
    positive,
)

from .leader_view import LeaderState

CHANNEL = "heartbeat"
UNKNOWN_TTL = 5.0  # the lock's default ttl, for bounds asked before any lease is known


@attrs.frozen
class HeartbeatOptions:
    interval: Duration = attrs.field(
        default=Duration(1.0),
        validator=positive,
        metadata={"help": "heartbeat period"},
    )
    missed: int = attrs.field(
        default=3,
        validator=at_least(1),
        metadata={"help": "beats a member may miss before the leader removes it"},
    )
    timeout: Duration | None = attrs.field(
        default=None, metadata={"help": "heartbeat request timeout; default: the interval"}
    )
    batch: Duration = attrs.field(
        default=Duration(0.05),
        validator=at_least(0),
        metadata={"help": "the leader gathers changes this long before pushing them in one message"},
    )


class Heartbeat:
    def __init__(self, options: HeartbeatOptions, ctx: NodeContext) -> None:
        self.options = options
        self.ctx = ctx
        self.channel = ctx.channel(CHANNEL)
        self.channel.handle(self._on_message)
        self._lead: LeaderState | None = None
        self._last_leader: str | None = None  # holder we last saw before taking over
        self._beat_now = anyio.Event()
        self._leaving = False
        self._tg: Any = None  # the strategy's task group, for background pushes
        self._push_wanted = anyio.Event()
        self._pushed: ViewVersion | None = None  # last version pushed to the members
        self._ticks_token = -1  # the lease token of the leader that said it takes one-way ticks

    @property
    def interval(self) -> float:
        return self.options.interval

    @property
    def request_timeout(self) -> float:
        return self.options.timeout or self.options.interval

    def bounds(self, cluster_size: int) -> dict[str, float]:
        """Stated detection and convergence bounds (seconds); see the module docstring."""
        lease = self.ctx.leader
        ttl = lease.ttl if lease is not None else UNKNOWN_TTL
        o = self.options
        detection = ttl * 1.25 + (o.missed + 2) * o.interval + o.batch
        return {"detection": detection, "convergence": detection}

    def _me(self) -> Member:
        return Member(self.ctx.id, self.ctx.address, dict(self.ctx.meta))

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._watch_leader)
            tg.start_soon(self._pusher)
            while True:
                if self.ctx.is_leader and not self._leaving:
                    await self._lead_round()
                    await self._wait(self.interval / 2)
                else:
                    self._lead = None
                    lease = self.ctx.leader
                    if lease is not None and lease.holder != self.ctx.id:
                        self._last_leader = lease.holder
                    await self._follow_round()
                    await self._wait(self.interval)

    async def _wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._beat_now.wait()
        self._beat_now = anyio.Event()

    async def _watch_leader(self) -> None:
        # Beat a new leader at once instead of waiting for the next round. The
        # comparison also catches a leader learned before this task first ran.
        seen: tuple[str, int] | None = None
        while True:
            lease = self.ctx.leader
            current = None if lease is None else (lease.holder, lease.token)
            if current != seen:
                seen = current
                self._beat_now.set()
            await self.ctx.wait_leader_change()

    # ------------------------------------------------------------ follower

    async def _follow_round(self) -> None:
        lease = self.ctx.leader
        if lease is None or lease.holder == self.ctx.id or self._leaving:
            return
        beat = {"op": "beat", "m": self._me().to_wire(), "v": list(self.ctx.view.version.as_tuple())}
        if self._ticks_token == lease.token:
            # One-way: nothing to read back; the leader pushes what we lack.
            await self.channel.send(lease.address, {**beat, "op": "tick"})
            return
        try:
            reply = await self.channel.request(lease.address, beat, self.request_timeout)
        except Exception as exc:
            self.ctx.count("heartbeat.beat-failures")
            self.ctx.log.debug("heartbeat to %s failed: %s", lease.address, exc)
            return
        if isinstance(reply, dict) and reply.get("ticks"):
            self._ticks_token = lease.token
        self._apply_reply(reply)

    def _apply_reply(self, reply: Any) -> None:
        try:
            if isinstance(reply, dict) and not reply.get("not_leader"):
                self._accept(reply)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:  # OverflowError: int(inf)
            self.ctx.count("heartbeat.drop.malformed")
            self.ctx.log.debug("malformed heartbeat reply: %s", exc)

    def _accept(self, update: dict[str, Any]) -> None:
        """Apply a whole view ("members") or the changes after some version
        ("changes": [[seq, joined, left], ...]), both stamped "v" = [token, seq]."""
        version = ViewVersion(*update["v"])
        if version.token < self.ctx.newest_token:
            self.ctx.count("heartbeat.stale-views")
            return
        current = self.ctx.view
        if version <= current.version:
            return  # we already have this view or a newer one
        if "members" in update:
            members = tuple(Member.from_wire(m) for m in update["members"])
            self.ctx.publish_view(View(members, version).shared())
            return
        steps = []
        at = current.version
        for seq, joined, left in update["changes"]:
            if (version.token, seq - 1) != at.as_tuple():
                continue  # not the next change for us: the next beat's reply catches us up
            steps.append(([Member.from_wire(raw) for raw in joined], left))
            at = ViewVersion(version.token, seq)
        if at != current.version:
            # Applied by every follower alike: View.changed computes it once per process.
            self.ctx.publish_view(current.changed(steps, at))

    # ------------------------------------------------------------ leader

    def _take_over(self, token: int) -> LeaderState:
        now = self.ctx.now()
        members = {m.id: m for m in self.ctx.view.live}
        # The previous holder lost the lease: it crashed or stepped down. If it
        # is alive it beats us and comes back within one interval.
        if self._last_leader and self._last_leader != self.ctx.id:
            members.pop(self._last_leader, None)
        me = self._me()
        members[me.id] = me
        state = LeaderState(token, members, now)
        self.ctx.log.info("leading view %s with %d members", state.version, len(members))
        return state

    async def _lead_round(self) -> None:
        lease = self.ctx.leader
        if lease is None:
            return
        if self._lead is None or self._lead.token != lease.token:
            self._lead = self._take_over(lease.token)
            self._publish_and_push_full()
            return
        lead = self._lead
        now = self.ctx.now()
        lead.last_seen[self.ctx.id] = now
        deadline = self.options.missed * self.interval
        gone = sorted(mid for mid, seen in lead.last_seen.items() if now - seen > deadline)
        if gone:
            self.ctx.count("heartbeat.removed", len(gone))
            self._change([], gone)

    def _change(self, joined: list[Member], left: list[str]) -> None:
        """Apply a change to the leader's view and publish it; the pusher
        sends it to the others after the batching window."""
        lead = self._lead
        assert lead is not None
        if lead.apply(joined, left) is None:
            return
        self.ctx.publish_view(lead.view())
        self._push_wanted.set()

    def _publish_and_push_full(self) -> None:
        lead = self._lead
        assert lead is not None
        self.ctx.publish_view(lead.view())
        self._pushed = None  # the pusher sends the whole view
        self._push_wanted.set()

    async def _pusher(self) -> None:
        while True:
            await self._push_wanted.wait()
            await self.ctx.sleep(self.options.batch)
            self._push_wanted = anyio.Event()
            lead = self._lead
            if lead is None or not self.ctx.is_leader or self._leaving:
                continue
            update = self._update_since(self._pushed) if self._pushed else None
            if update is None:
                update = self._full_reply()
            self._pushed = lead.version
            self._send_to_members({"op": "update", **update})

    def _send_to_members(self, payload: dict[str, Any]) -> None:
        lead, tg = self._lead, self._tg
        if lead is None or tg is None:
            return
        for m in sorted(lead.members.values(), key=lambda m: m.id):
            if m.id != self.ctx.id:
                tg.start_soon(self.channel.send, m.address, payload)

    def _update_since(self, version: ViewVersion) -> dict[str, Any] | None:
        """The changes after `version` as a message, or None when only the whole view will do."""
        lead = self._lead
        assert lead is not None
        changes = lead.changes_since(version)
        if changes is None:
            return None
        return {
            "v": [lead.token, lead.seq],
            "changes": [c.wire for c in changes],
        }

    def _full_reply(self) -> dict[str, Any]:
        lead = self._lead
        assert lead is not None
        return {"v": [lead.token, lead.seq], "members": list(lead.wire.values())}

    # ------------------------------------------------------------ inbound

    async def _on_message(self, msg: Any) -> Any:
        payload = msg.payload
        if not isinstance(payload, dict):
            self.ctx.count("heartbeat.drop.malformed")
            return None
        op = payload.get("op")
        if not _from_its_source(op, payload, msg.sender, self.ctx.leader) or (
            # The leader's views come from its own lead loop, never over the
            # wire: an update naming this node as its sender is forged (found
            # by fuzzing: it replaced a leader's view with an empty one).
            op == "update" and msg.sender == self.ctx.id
        ):
            self.ctx.count("heartbeat.drop.impostor")
            return None
        try:
            if op == "beat":
                return self._on_beat(Member.from_wire(payload["m"]), ViewVersion(*payload["v"]))
            if op == "tick":
                self._on_tick(Member.from_wire(payload["m"]), ViewVersion(*payload["v"]))
                return None
            if op == "leave":
                return self._on_leave(str(payload["id"]))
            if op == "update":
                self._accept(payload)
                return None
        except (TypeError, ValueError, KeyError, OverflowError) as exc:  # OverflowError: int(inf)
            self.ctx.count("heartbeat.drop.malformed")
            self.ctx.log.debug("malformed heartbeat message from %s: %s", msg.sender, exc)
            return None
        self.ctx.count("heartbeat.drop.unknown-op")
        return None

    def _on_beat(self, member: Member, version: ViewVersion) -> Any:
        if not self._beaten(member):
            return {"not_leader": True}
        reply = self._update_since(version) or self._full_reply()
        reply["ticks"] = 1  # this leader takes one-way ticks
        return reply

    def _on_tick(self, member: Member, version: ViewVersion) -> None:
        """A one-way beat: no reply, unless the member lags behind what was
        already pushed (a lost push); then the catch-up goes to it as a push."""
        if not self._beaten(member) or self._tg is None:
            return
        if self._pushed is not None and version < self._pushed:
            self.ctx.count("heartbeat.catch-ups")
            update = self._update_since(version) or self._full_reply()
            self._tg.start_soon(self.channel.send, member.address, {"op": "update", **update})

    def _beaten(self, member: Member) -> bool:
        """Count a beat of `member` if we lead: it stays (or joins, or its meta changes)."""
        lease = self.ctx.leader
        if not self.ctx.is_leader or self._leaving or lease is None:
            return False
        if self._lead is None or self._lead.token != lease.token:
            return False  # taking over; the full view is pushed next round
        lead = self._lead
        lead.last_seen[member.id] = self.ctx.now()
        if lead.members.get(member.id) != member:
            self._change([member], [])
        return True

    def _on_leave(self, member_id: str) -> Any:
        if self.ctx.is_leader and self._lead is not None and member_id in self._lead.members:
            self._change([], [member_id])
        return True

    # ------------------------------------------------------------ metadata

    async def set_meta(self, meta: dict[str, str]) -> None:
        """The node changed its metadata (ctx.meta): the leader applies its own
        at once, a follower beats now so the leader learns it."""
        if self.ctx.is_leader and self._lead is not None:
            self._change([self._me()], [])
        else:
            self._beat_now.set()

    # ------------------------------------------------------------ leave

    async def leave(self) -> None:
        self._leaving = True
        lease = self.ctx.leader
        if self.ctx.is_leader and self._lead is not None:
            # Tell everyone we are gone before the lease is released.
            lead = self._lead
            change = lead.apply([], [self.ctx.id])
            if change is not None:
                payload = {"op": "update", "v": [lead.token, change.seq], "changes": [[change.seq, [], [self.ctx.id]]]}
                with anyio.move_on_after(self.request_timeout):
                    async with anyio.create_task_group() as tg:
                        for m in sorted(lead.members.values(), key=lambda m: m.id):
                            tg.start_soon(self.channel.send, m.address, payload)
            return
        if lease is not None:
            with anyio.move_on_after(self.request_timeout):
                try:
                    await self.channel.request(lease.address, {"op": "leave", "id": self.ctx.id}, self.request_timeout)
                except Exception as exc:
                    self.ctx.log.debug("goodbye to leader failed: %s", exc)


def _from_its_source(op: Any, payload: dict[str, Any], sender: str, lease: Any) -> bool:
    """A member beats and says goodbye only for itself, and only the lease
    holder pushes views: without this a confused or hostile peer could make
    live members vanish. (A peer forging its sender name needs a cluster key.)"""
    if op == "update":
        return lease is not None and sender == lease.holder
    if op == "beat" or op == "tick":
        member = payload.get("m")
        return isinstance(member, list | tuple) and len(member) > 0 and member[0] == sender
    if op == "leave":
        return payload.get("id") == sender
    return True


def make(options: HeartbeatOptions, ctx: NodeContext) -> Heartbeat:
    return Heartbeat(options, ctx)


@hookimpl
def hedgeplug_register_memberships(register: Any) -> None:
    register("heartbeat", make, HeartbeatOptions)
