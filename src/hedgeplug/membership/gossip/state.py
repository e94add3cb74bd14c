"""The member table: what this node believes about every member, and the
rule that decides which of two records about one member wins.

The rule is a total order on records, so merging is a join: applying the same
updates in any order, any number of times, ends in the same table. A record
wins when its (incarnation, state rank) is higher; only the member itself
raises its incarnation (to refute a suspicion, or to change its metadata),
so "alive at a higher incarnation" is the member's own word and beats any
older accusation. Ties between records that differ only in address or
metadata (which the member never produces at one incarnation) are broken by
comparing those fields, only so that the order stays total.

Dead and left members are remembered for `retention` seconds: a stale
"alive" record still travelling in gossip then loses against the remembered
death instead of bringing the member back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from hedgeplug.plugin import Member, MemberState

# Higher rank wins at equal incarnation: an accusation beats the older claim
# of health, a confirmed death beats a suspicion, a goodbye beats everything.
RANK = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}
GONE = (MemberState.DEAD, MemberState.LEFT)


def precedence(member: Member) -> tuple[int, int, str, tuple[tuple[str, str], ...]]:
    return (member.incarnation, RANK[member.state], member.address, member.meta)


def supersedes(new: Member, old: Member) -> bool:
    """True when record `new` replaces record `old` about the same member."""
    return precedence(new) > precedence(old)


@attrs.define
class Entry:
    """A member record and the local time its state last changed."""

    member: Member
    since: float


@attrs.frozen
class Change:
    """What one applied record changed; `before` is None for a new member."""

    before: Member | None
    after: Member

    @property
    def state_changed(self) -> bool:
        return self.before is None or self.before.state is not self.after.state


class MemberTable:
    """Every known member including this node itself.

    Records about this node are never merged here: the protocol answers them
    (refutes an accusation) and sets its own record with `set_self`.
    """

    def __init__(self, me: Member, now: float) -> None:
        self.me_id = me.id
        self._entries: dict[str, Entry] = {me.id: Entry(me, now)}

    # ------------------------------------------------------------ reading

    @property
    def me(self) -> Member:
        return self._entries[self.me_id].member

    def get(self, member_id: str) -> Member | None:
        entry = self._entries.get(member_id)
        return entry.member if entry else None

    def since(self, member_id: str) -> float | None:
        entry = self._entries.get(member_id)
        return entry.since if entry else None

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._entries

    def __iter__(self) -> Iterator[Member]:
        return (e.member for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def members(self) -> list[Member]:
        return [e.member for e in self._entries.values()]

    def live_others(self) -> list[Member]:
        """Alive and suspect members other than this node (probe and gossip targets)."""
        return [m for m in self if m.live and m.id != self.me_id]

    def live_count(self) -> int:
        return sum(1 for m in self if m.live)

    def recently_gone(self, now: float, window: float) -> list[Member]:
        """Dead members whose death is younger than `window` (gossip to them lets them refute)."""
        return [
            e.member
            for e in self._entries.values()
            if e.member.state is MemberState.DEAD and now - e.since < window
        ]

    # ------------------------------------------------------------ writing

    def apply(self, update: Member, now: float) -> Change | None:
        """Merge one record about another member; the Change if it won, else None."""
        if update.id == self.me_id:
            return None
        entry = self._entries.get(update.id)
        if entry is None:
            self._entries[update.id] = Entry(update, now)
            return Change(None, update)
        if not supersedes(update, entry.member):
            return None
        before = entry.member
        if before.state is not update.state:
            entry.since = now
        entry.member = update
        return Change(before, update)

    def apply_all(self, updates: Iterable[Member], now: float) -> list[Change]:
        return [c for c in (self.apply(u, now) for u in updates) if c is not None]

    def set_self(self, me: Member, now: float) -> None:
        entry = self._entries[self.me_id]
        if entry.member.state is not me.state:
            entry.since = now
        entry.member = me

    def forget_gone(self, now: float, retention: float) -> list[Member]:
        """Drop dead and left members remembered for longer than `retention`."""
        old = [
            e.member
            for e in self._entries.values()
            if e.member.state in GONE and e.member.id != self.me_id and now - e.since >= retention
        ]
        for m in old:
            del self._entries[m.id]
        return old
